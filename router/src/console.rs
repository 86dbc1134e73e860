//! The web console at `/console` on the admin listener: server-rendered HTML,
//! a little inline vanilla JavaScript, no build step.
//!
//! - `GET /console` (no token): the page. It holds no data; it asks for the
//!   admin token (kept in `sessionStorage`), then loads the views below with
//!   `Authorization: Bearer …`, and calls the admin API for replay and drop
//!   (after a confirmation).
//! - `GET /console/view` (token): consumers (state, lag, p99, rate, last
//!   error, a chart of lag and p99 over the last hour from the monitor's
//!   samples) and each consumer's DLQ (reason, attempts, last status, age).
//! - `GET /console/payload?consumer=C&id=ID` (token): one DLQ entry's event,
//!   shown on request only.
//! - `GET /console/history?account=A&event=ID` (token): the event's delivery
//!   history from the audit trail (`/admin/accounts/A/audit?event=ID`): every
//!   consumer's outcomes with time, status, rule and the fields the policy
//!   changed (names only). Recorded for consumers with a privacy `policy`.
//!
//! Everything rendered goes through [`esc`] (event data, reasons, names:
//! all hostile input), and a nonce CSP lets only the page's own script run.

use bytes::Bytes;
use http::{header, Method, Response, StatusCode};
use http_body_util::Full;
use serde_json::Value;

use crate::admin_listener::{AdminCtx, Resp};

/// HTML-escape text for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            '`' => o.push_str("&#96;"),
            c => o.push(c),
        }
    }
    o
}

fn html(status: StatusCode, body: String, nonce: Option<&str>) -> Resp {
    let script = match nonce {
        Some(n) => format!("'nonce-{n}'"),
        None => "'none'".into(),
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .header("X-Content-Type-Options", "nosniff")
        .header("X-Frame-Options", "DENY")
        .header(
            "Content-Security-Policy",
            format!(
                "default-src 'none'; script-src {script}; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                 form-action 'none'; frame-ancestors 'none'"
            ),
        )
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

/// The page (no data in it).
pub fn page() -> Resp {
    let nonce = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    html(
        StatusCode::OK,
        PAGE.replace("{{NONCE}}", &nonce),
        Some(&nonce),
    )
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Switchyard console</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}
.state-failing{color:#b00;font-weight:bold}.state-blocked{color:#b60;font-weight:bold}
.state-behind{color:#a80}.state-current{color:#070}
pre{max-width:60em;white-space:pre-wrap;word-break:break-all;background:#f7f7f7;padding:.5em;margin:.25em 0}
#msg{margin:.5em 0;font-weight:bold}
.legend span{margin-right:1em}
</style></head>
<body>
<h1>Switchyard</h1>
<form id="login" hidden>
<label>Admin token <input id="token" type="password" autocomplete="off"></label>
<button type="submit">Open</button>
<span id="login-error"></span>
</form>
<div id="msg" role="status"></div>
<div id="view"></div>
<script nonce="{{NONCE}}">
(function () {
  "use strict";
  var KEY = "switchyard-admin-token";
  var view = document.getElementById("view");
  var login = document.getElementById("login");
  var msg = document.getElementById("msg");
  function headers(extra) {
    var h = extra || {};
    var t = sessionStorage.getItem(KEY);
    if (t) { h["Authorization"] = "Bearer " + t; }
    return h;
  }
  function load() {
    if (view.querySelector("[data-open='1']")) { return; } // a payload is shown: keep it
    return fetch("/console/view", { headers: headers() }).then(function (r) {
      if (r.status === 401) {
        login.hidden = false;
        view.textContent = "";
        document.getElementById("login-error").textContent =
          sessionStorage.getItem(KEY) ? "That token was refused." : "";
        return;
      }
      login.hidden = true;
      return r.text().then(function (t) { view.innerHTML = t; view.setAttribute("data-loaded", String(Date.now())); });
    }).catch(function (e) { msg.textContent = "Cannot reach the router: " + e; });
  }
  login.addEventListener("submit", function (e) {
    e.preventDefault();
    sessionStorage.setItem(KEY, document.getElementById("token").value);
    load();
  });
  view.addEventListener("click", function (e) {
    var b = e.target.closest("button[data-action]");
    if (!b) { return; }
    var c = b.getAttribute("data-consumer"), id = b.getAttribute("data-id"),
        account = b.getAttribute("data-account"), action = b.getAttribute("data-action");
    if (action === "payload" || action === "history") {
      var cell = document.getElementById(b.getAttribute("data-target"));
      var label = action === "payload" ? "payload" : "history";
      if (cell.getAttribute("data-open") === "1") {
        cell.textContent = ""; cell.setAttribute("data-open", "0"); b.textContent = "Show " + label; return;
      }
      var url = action === "payload"
        ? "/console/payload?consumer=" + encodeURIComponent(c) + "&id=" + encodeURIComponent(id)
        : "/console/history?account=" + encodeURIComponent(account) + "&event=" + encodeURIComponent(b.getAttribute("data-event"));
      fetch(url, { headers: headers() })
        .then(function (r) { return r.text(); })
        .then(function (t) { cell.innerHTML = t; cell.setAttribute("data-open", "1"); b.textContent = "Hide " + label; });
      return;
    }
    var what = action === "replay"
      ? "Replay the dead-lettered events of account " + account + " for " + c + " from this one on (parked events follow)?"
      : "Drop the dead-lettered events of account " + account + " for " + c + " from this one on? This cannot be undone.";
    if (!window.confirm(what)) { return; }
    fetch("/admin/consumers/" + encodeURIComponent(c) + "/dlq/" + action, {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify({ id: id })
    }).then(function (r) { return r.json().then(function (v) { return [r.status, v]; }); })
      .then(function (x) {
        msg.textContent = x[0] === 200
          ? (action === "replay" ? "Replayed " + x[1].replayed + " event(s) of account " + account + "."
                                 : "Dropped " + x[1].dropped + " event(s) of account " + account + ".")
          : "Failed (" + x[0] + "): " + (x[1].error || "");
        view.querySelectorAll("[data-open='1']").forEach(function (n) { n.setAttribute("data-open", "0"); });
        load();
      });
  });
  load();
  setInterval(load, 5000);
})();
</script>
</body></html>
"#;

fn query_get(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// `/console/view` and `/console/payload` (the token is checked before).
pub async fn view(ctx: &AdminCtx, path: &str, query: Option<&str>) -> Resp {
    let Some(rt) = &ctx.runtime else {
        return html(
            StatusCode::NOT_FOUND,
            "<p>no admin interface</p>".into(),
            None,
        );
    };
    let call = |path: String| rt.handle(Method::GET, path, Bytes::new());
    match path {
        "/console/view" => {
            let (st, status) = call("/admin/status".into()).await;
            if st != StatusCode::OK {
                return html(
                    st,
                    format!(
                        "<p>status failed: {}</p>",
                        esc(&status["error"].to_string())
                    ),
                    None,
                );
            }
            let mut out = String::new();
            render_status(&status, &mut out);
            let names: Vec<String> = status["consumers"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            for name in names {
                let seg = percent_encoding::utf8_percent_encode(
                    &name,
                    percent_encoding::NON_ALPHANUMERIC,
                );
                let (st, dlq) = call(format!("/admin/consumers/{seg}/dlq?limit=200")).await;
                render_dlq(&name, st, &dlq, &mut out);
            }
            html(StatusCode::OK, out, None)
        }
        "/console/payload" => {
            let (Some(c), Some(id)) = (query_get(query, "consumer"), query_get(query, "id")) else {
                return html(
                    StatusCode::BAD_REQUEST,
                    "<p>consumer and id are required</p>".into(),
                    None,
                );
            };
            let enc = |s: &str| {
                percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            };
            let (st, v) = call(format!("/admin/consumers/{}/dlq/{}", enc(&c), enc(&id))).await;
            if st != StatusCode::OK {
                return html(
                    st,
                    format!("<p>{}</p>", esc(v["error"].as_str().unwrap_or(""))),
                    None,
                );
            }
            let body = match v.get("event") {
                Some(ev) => serde_json::to_string_pretty(ev).unwrap_or_default(),
                None => "(the event does not decode)".into(),
            };
            html(
                StatusCode::OK,
                format!("<pre class=\"payload\">{}</pre>", esc(&body)),
                None,
            )
        }
        "/console/history" => {
            let (Some(account), Some(event)) =
                (query_get(query, "account"), query_get(query, "event"))
            else {
                return html(
                    StatusCode::BAD_REQUEST,
                    "<p>account and event are required</p>".into(),
                    None,
                );
            };
            let enc = |s: &str| {
                percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            };
            let (st, v) = call(format!(
                "/admin/accounts/{}/audit?event={}",
                enc(&account),
                enc(&event)
            ))
            .await;
            if st != StatusCode::OK {
                return html(
                    st,
                    format!("<p>{}</p>", esc(v["error"].as_str().unwrap_or(""))),
                    None,
                );
            }
            let mut out = String::new();
            render_history(&event, &v, &mut out);
            html(StatusCode::OK, out, None)
        }
        _ => html(
            StatusCode::NOT_FOUND,
            "<p>no such console view</p>".into(),
            None,
        ),
    }
}

/// An event's audit records as a table (ids, names, statuses: no values).
fn render_history(event: &str, v: &Value, out: &mut String) {
    let recs = v["records"].as_array().cloned().unwrap_or_default();
    if recs.is_empty() {
        out.push_str(&format!(
            "<p class=\"history-empty\">no audit record of {} (the trail records consumers with a privacy <code>policy</code>)</p>",
            esc(event)
        ));
        return;
    }
    out.push_str("<table class=\"history\"><tr><th>time</th><th>consumer</th><th>outcome</th><th>status</th><th>rule</th><th>fields changed</th><th>modules</th></tr>");
    for r in &recs {
        let s = |k: &str| esc(r[k].as_str().unwrap_or(""));
        let fields: Vec<String> = r["fields"]
            .as_array()
            .map(|a| a.iter().filter_map(|f| f.as_str()).map(esc).collect())
            .unwrap_or_default();
        out.push_str(&format!(
            "<tr class=\"history-entry\"><td>{}</td><td class=\"consumer\">{}</td><td class=\"outcome\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            s("time"),
            s("consumer"),
            s("outcome"),
            r["status"].as_u64().map(|n| n.to_string()).unwrap_or_default(),
            s("rule"),
            fields.join(", "),
            s("modules"),
        ));
    }
    out.push_str("</table>");
}

fn num(v: &Value) -> String {
    match v {
        Value::Null => "–".into(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.2}"),
            _ => n.to_string(),
        },
        other => esc(&other.to_string()),
    }
}

fn render_status(s: &Value, out: &mut String) {
    let health = &s["health"];
    out.push_str(&format!(
        "<p id=\"health\">Health: <b>{}</b> {}</p>",
        esc(health["status"].as_str().unwrap_or("?")),
        health["reasons"]
            .as_array()
            .map(|r| r
                .iter()
                .map(|x| esc(x.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join("; "))
            .unwrap_or_default()
    ));
    out.push_str("<h2>Consumers</h2><table id=\"consumers\"><tr><th>consumer</th><th>state</th><th>lag (events)</th><th>lag (s)</th><th>rate (ev/s)</th><th>p99 (ms)</th><th>DLQ</th><th>parked</th><th>modules</th><th>last error</th><th>last hour: lag (s) <span style=\"color:#c33\">—</span>, p99 (ms) <span style=\"color:#36c\">—</span></th></tr>");
    if let Some(cs) = s["consumers"].as_object() {
        for (name, c) in cs {
            let state = c["state"].as_str().unwrap_or("?");
            let last = match &c["last_error"] {
                Value::Object(e) => format!(
                    "{} <small>({})</small>",
                    esc(e.get("reason").and_then(Value::as_str).unwrap_or("")),
                    esc(e.get("at").and_then(Value::as_str).unwrap_or(""))
                ),
                _ => "–".into(),
            };
            let modules = c["modules"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .map(|x| esc(x.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join("<br>")
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "<tr data-consumer=\"{n}\"><td>{n}</td><td class=\"state-{st}\">{st}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{modules}</td><td>{last}</td><td>{}</td></tr>",
                num(&c["lag_events"]),
                num(&c["lag_seconds"]),
                num(&c["delivery_rate"]),
                num(&c["p99_latency_ms"]),
                num(&c["dlq"]),
                num(&c["parked_accounts"]),
                chart(name),
                n = esc(name),
                st = esc(state),
            ));
        }
    }
    out.push_str("</table>");
}

/// A small SVG of the consumer's lag (seconds) and p99 (ms) over the last
/// hour, each scaled to its own maximum (printed in the title).
fn chart(consumer: &str) -> String {
    let samples = crate::admin_api::history().of(consumer);
    let (w, h) = (240.0f64, 48.0f64);
    let now = chrono::Utc::now();
    let span = crate::admin_api::HISTORY.as_secs_f64();
    let x = |t: chrono::DateTime<chrono::Utc>| {
        let age = (now - t).num_milliseconds() as f64 / 1000.0;
        (w * (1.0 - age / span)).clamp(0.0, w)
    };
    let max_lag = samples.iter().map(|s| s.lag_seconds).fold(0.0, f64::max);
    let max_p99 = samples.iter().filter_map(|s| s.p99_ms).fold(0.0, f64::max);
    let line = |vals: Vec<(f64, f64)>, max: f64| -> String {
        vals.iter()
            .map(|(px, v)| {
                let py = if max > 0.0 {
                    h - 2.0 - (h - 4.0) * v / max
                } else {
                    h - 2.0
                };
                format!("{px:.1},{py:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let lag = line(
        samples.iter().map(|s| (x(s.at), s.lag_seconds)).collect(),
        max_lag,
    );
    let p99 = line(
        samples
            .iter()
            .filter_map(|s| s.p99_ms.map(|p| (x(s.at), p)))
            .collect(),
        max_p99,
    );
    format!(
        "<svg class=\"chart\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"lag and p99 over the last hour\"><title>{} samples; max lag {max_lag:.1} s, max p99 {max_p99:.1} ms</title><rect width=\"{w}\" height=\"{h}\" fill=\"#fafafa\" stroke=\"#ddd\"/><polyline fill=\"none\" stroke=\"#c33\" stroke-width=\"1.5\" points=\"{lag}\"/><polyline fill=\"none\" stroke=\"#36c\" stroke-width=\"1.5\" points=\"{p99}\"/></svg>",
        samples.len()
    )
}

fn render_dlq(consumer: &str, st: StatusCode, v: &Value, out: &mut String) {
    let c = esc(consumer);
    out.push_str(&format!("<h2>DLQ of {c}</h2>"));
    if st != StatusCode::OK {
        out.push_str(&format!(
            "<p>cannot read it: {}</p>",
            esc(v["error"].as_str().unwrap_or(""))
        ));
        return;
    }
    let entries = v["entries"].as_array().cloned().unwrap_or_default();
    if entries.is_empty() {
        out.push_str(&format!(
            "<p class=\"dlq-empty\" data-consumer=\"{c}\">empty</p>"
        ));
        return;
    }
    if let Some(total) = v["total"].as_u64().filter(|t| *t as usize > entries.len()) {
        out.push_str(&format!("<p>showing {} of {total}</p>", entries.len()));
    }
    out.push_str(&format!("<table class=\"dlq\" data-consumer=\"{c}\"><tr><th>event</th><th>account</th><th>topic</th><th>reason</th><th>attempts</th><th>last status</th><th>age</th><th></th></tr>"));
    for (i, e) in entries.iter().enumerate() {
        let f = &e["fields"];
        let s = |v: &Value| esc(v.as_str().unwrap_or(""));
        let id = s(&e["dlq_id"]);
        let account = s(&e["account"]).to_string();
        let account = if account.is_empty() {
            s(&f["account"])
        } else {
            account
        };
        let event = s(&f["event_id"]);
        let age = e["age_seconds"].as_i64().unwrap_or(0);
        let age = humantime::format_duration(std::time::Duration::from_secs(age.max(0) as u64));
        let target = format!(
            "payload-{}-{i}",
            c.replace(|ch: char| !ch.is_ascii_alphanumeric(), "_")
        );
        let history = format!("history-{}", &target["payload-".len()..]);
        out.push_str(&format!(
            "<tr class=\"dlq-entry\" data-id=\"{id}\"><td class=\"event-id\">{}</td><td class=\"account\">{account}</td><td class=\"topic\">{}</td><td class=\"reason\">{}</td><td class=\"attempts\">{}</td><td class=\"last-status\">{}</td><td class=\"age\">{age}</td><td>\
             <button data-action=\"replay\" data-consumer=\"{c}\" data-id=\"{id}\" data-account=\"{account}\">Replay</button> \
             <button data-action=\"drop\" data-consumer=\"{c}\" data-id=\"{id}\" data-account=\"{account}\">Drop</button> \
             <button data-action=\"payload\" data-consumer=\"{c}\" data-id=\"{id}\" data-target=\"{target}\">Show payload</button> \
             <button data-action=\"history\" data-consumer=\"{c}\" data-id=\"{id}\" data-account=\"{account}\" data-event=\"{event}\" data-target=\"{history}\">Show history</button></td></tr>\
             <tr><td colspan=\"8\" id=\"{target}\" data-open=\"0\"></td></tr>\
             <tr><td colspan=\"8\" id=\"{history}\" data-open=\"0\"></td></tr>",
            s(&f["event_id"]),
            s(&e["topic"]),
            s(&f["reason"]),
            s(&f["attempts"]),
            s(&f["status"]),
        ));
    }
    out.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_quotes_and_backticks() {
        assert_eq!(
            esc(r#"<img src=x onerror="a('b')">`&"#),
            "&lt;img src=x onerror=&quot;a(&#39;b&#39;)&quot;&gt;&#96;&amp;"
        );
    }

    #[test]
    fn hostile_dlq_fields_are_rendered_as_text() {
        let v = serde_json::json!({"total": 1, "entries": [{
            "dlq_id": "1-0\"><script>x</script>",
            "account": "<b>acct</b>",
            "topic": "t<svg onload=1>",
            "fields": {"event_id": "<i>e</i>", "reason": "HTTP 400 <script>alert(1)</script>", "attempts": "1", "last_status": "400"}
        }]});
        let mut out = String::new();
        render_dlq("c<1>", StatusCode::OK, &v, &mut out);
        for bad in ["<script", "<b>", "<i>", "<svg onload", "\"><script"] {
            assert!(!out.contains(bad), "{bad} in {out}");
        }
        assert!(out.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    }

    #[test]
    fn history_shows_each_outcome_and_escapes_names() {
        let v = serde_json::json!({"account": "a", "records": [
            {"event": "e1", "consumer": "esp", "topic": "t", "outcome": "dead_lettered", "rule": "HTTP 400", "status": 400, "time": "2026-12-01T07:00:00Z", "fields": ["data.phone:drop"]},
            {"event": "e1", "consumer": "sms<x>", "topic": "t", "outcome": "filtered", "rule": "consent:sms", "time": "2026-12-01T07:00:01Z"}
        ]});
        let mut out = String::new();
        render_history("e1", &v, &mut out);
        assert_eq!(out.matches("class=\"history-entry\"").count(), 2, "{out}");
        for want in [
            "dead_lettered",
            "400",
            "data.phone:drop",
            "consent:sms",
            "sms&lt;x&gt;",
        ] {
            assert!(out.contains(want), "{want} missing in {out}");
        }
        let mut none = String::new();
        render_history("e<2>", &serde_json::json!({"records": []}), &mut none);
        assert!(none.contains("no audit record of e&lt;2&gt;"), "{none}");
    }
}
