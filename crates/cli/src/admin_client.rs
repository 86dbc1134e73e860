//! The one admin client: a running router's admin API (found through the
//! address it records in Redis, or the config's fixed addresses), or Redis
//! when no router runs. Used by the CLI (`status`, `dlq`, `consumer rewind`,
//! `reload`) and the MCP server.

use std::time::Duration;

use anyhow::Context;

use switchyard_config::Config;

/// With `[server.tls]`, the CLI trusts exactly the certificate the router
/// serves (it reads the same `server.tls.cert_file`), whatever host name
/// the certificate is for.
fn client(config: &Config) -> anyhow::Result<reqwest::Client> {
    let b = reqwest::Client::builder().timeout(Duration::from_secs(60));
    let b = match &config.server.tls {
        Some(t) => b.use_preconfigured_tls(switchyard_core::tls::pinned_client_config(
            "server.tls.cert_file",
            &t.cert_file,
        )?),
        None => b,
    };
    Ok(b.build()?)
}

// ---- The one admin client: a running router's admin API, or Redis ----

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use switchyard_store::admin::ConsumerAdmin;
use switchyard_store::log::Log;

use switchyard_router::admin_api::{entry_json, Selection};

/// Where the admin client sends its requests.
pub enum Target {
    /// A running router's admin API at `base` (`http://host:port`).
    Live {
        base: String,
        token: Option<String>,
        client: reqwest::Client,
    },
    /// No router answers: straight against Redis (`switchyard_store::admin`).
    Redis { log: Log },
}

/// What the CLI, the MCP server and `reload` use to act on a router: its
/// admin API when one answers (found through the address it records in
/// Redis, then the config's fixed addresses), otherwise Redis directly
/// (everything but `reload` works without a router).
pub struct AdminClient {
    pub config: Config,
    pub target: Target,
    /// Redis, when reachable (also with a router: for consumers of this
    /// config the router does not run).
    pub log: Option<Log>,
}

/// A router's answer that is not a 2xx: the status and the API's message.
fn api_error(status: u16, v: &Value) -> anyhow::Error {
    let msg = v["error"].as_str().unwrap_or("no message");
    match v["field"].as_str() {
        Some(f) if !f.is_empty() => {
            anyhow::anyhow!("router answered {status}: {msg} (field `{f}`)")
        }
        _ => anyhow::anyhow!("router answered {status}: {msg}"),
    }
}

fn answer_error((status, v): (http::StatusCode, Value)) -> anyhow::Error {
    api_error(status.as_u16(), &v)
}

fn fixed_url(addr: std::net::SocketAddr, scheme: &str) -> Option<String> {
    (addr.port() != 0).then(|| switchyard_router::admin_listener::url_of(addr, scheme))
}

impl AdminClient {
    /// Find a running router (the address it recorded in Redis, then
    /// `admin.listen` and `server.listen` when their port is fixed); without
    /// one, work against Redis.
    pub async fn connect(config: &Config) -> anyhow::Result<AdminClient> {
        let admin_token = config
            .admin
            .as_ref()
            .and_then(|a| a.token.clone())
            .or_else(|| config.server.admin_token.clone());
        let server_token = config.server.admin_token.clone();
        let log = Log::connect(&config.redis, &config.log).await;
        // (url, token of that listener)
        let mut candidates: Vec<(String, Option<String>)> = Vec::new();
        if let Ok(log) = &log {
            if let Ok(Some(rec)) = switchyard_store::router_addr::lookup(log).await {
                let rec: Value = serde_json::from_str(&rec).unwrap_or_default();
                if let Some(u) = rec["admin"].as_str() {
                    candidates.push((
                        u.to_string(),
                        admin_token.as_ref().map(|t| t.expose().to_string()),
                    ));
                }
                if let Some(u) = rec["server"].as_str() {
                    candidates.push((
                        u.to_string(),
                        server_token.as_ref().map(|t| t.expose().to_string()),
                    ));
                }
            }
        }
        if let Some(u) = config
            .admin
            .as_ref()
            .and_then(|a| fixed_url(a.listen, "http"))
        {
            candidates.push((u, admin_token.as_ref().map(|t| t.expose().to_string())));
        }
        let scheme = if config.server.tls.is_some() {
            "https"
        } else {
            "http"
        };
        if let Some(u) = fixed_url(config.server.listen, scheme) {
            candidates.push((u, server_token.as_ref().map(|t| t.expose().to_string())));
        }
        let http = client(config)?;
        for (base, token) in candidates {
            let probe = http
                .get(format!("{base}/healthz"))
                .timeout(Duration::from_secs(3))
                .send()
                .await;
            if matches!(&probe, Ok(r) if r.status().is_success()) {
                return Ok(AdminClient {
                    config: config.clone(),
                    target: Target::Live {
                        base,
                        token,
                        client: http,
                    },
                    log: log.ok(),
                });
            }
        }
        let log = log.context("no router answers and Redis is unreachable (redis.url)")?;
        Ok(AdminClient {
            config: config.clone(),
            target: Target::Redis { log: log.clone() },
            log: Some(log),
        })
    }

    /// Whether a running router answers the requests.
    pub fn is_live(&self) -> bool {
        matches!(self.target, Target::Live { .. })
    }

    /// One admin API request; `Err` only when the router cannot be reached.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let Target::Live {
            base,
            token,
            client,
        } = &self.target
        else {
            anyhow::bail!("no router is running (this needs one)");
        };
        let url = format!("{base}{path}");
        let mut req = client.request(method, &url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("no router answering at {url}; is it running?"))?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or_default()))
    }

    async fn ok(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let (status, v) = self.request(method, path, body).await?;
        if (200..300).contains(&status) {
            Ok(v)
        } else {
            Err(api_error(status, &v))
        }
    }

    fn known(&self, consumer: &str) -> anyhow::Result<()> {
        if self.config.consumers.contains_key(consumer) {
            return Ok(());
        }
        let known: Vec<&String> = self.config.consumers.keys().collect();
        anyhow::bail!("no consumer `{consumer}` in the config (known: {known:?})")
    }

    async fn consumer_admin(&self, consumer: &str) -> anyhow::Result<ConsumerAdmin> {
        self.known(consumer)?;
        match &self.target {
            Target::Redis { log } => ConsumerAdmin::connect(log.clone(), consumer).await,
            Target::Live { .. } => unreachable!("only used without a router"),
        }
    }

    fn seg(s: &str) -> String {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    }

    /// The status document (`GET /admin/status`, or read from Redis with
    /// `router.running` false).
    pub async fn status(&self) -> anyhow::Result<Value> {
        match &self.target {
            Target::Live { base, .. } => {
                let mut v = self.ok(reqwest::Method::GET, "/admin/status", None).await?;
                v["router"]["url"] = json!(base);
                // Consumers of this config the router does not run: from Redis.
                for (name, c) in &self.config.consumers {
                    if v["consumers"].get(name).is_none() {
                        if let Some(log) = &self.log {
                            v["consumers"][name] =
                                switchyard_router::admin_api::consumer_not_running(log, name, c)
                                    .await?;
                            v["consumers"][name]["running"] = json!(false);
                        }
                    }
                }
                Ok(v)
            }
            Target::Redis { log } => {
                switchyard_router::admin_api::status_from_redis(&self.config, log).await
            }
        }
    }

    /// DLQ entries (without event bodies).
    pub async fn dlq_list(
        &self,
        consumer: &str,
        account: Option<&str>,
        since: Option<DateTime<Utc>>,
    ) -> anyhow::Result<Vec<Value>> {
        self.known(consumer)?;
        if self.is_live() {
            let mut q = String::from("?limit=1000000");
            if let Some(a) = account {
                q.push_str(&format!("&account={}", Self::seg(a)));
            }
            if let Some(s) = since {
                q.push_str(&format!("&since={}", Self::seg(&s.to_rfc3339())));
            }
            let v = self
                .ok(
                    reqwest::Method::GET,
                    &format!("/admin/consumers/{}/dlq{q}", Self::seg(consumer)),
                    None,
                )
                .await?;
            return Ok(v["entries"].as_array().cloned().unwrap_or_default());
        }
        let mut admin = self.consumer_admin(consumer).await?;
        Ok(admin
            .dlq_list(account, since)
            .await?
            .iter()
            .map(|e| entry_json(e, false))
            .collect())
    }

    /// One DLQ entry with its event, by DLQ id or event id.
    pub async fn dlq_show(&self, consumer: &str, id: &str) -> anyhow::Result<Option<Value>> {
        self.known(consumer)?;
        if self.is_live() {
            let (status, v) = self
                .request(
                    reqwest::Method::GET,
                    &format!(
                        "/admin/consumers/{}/dlq/{}",
                        Self::seg(consumer),
                        Self::seg(id)
                    ),
                    None,
                )
                .await?;
            return match status {
                200 => Ok(Some(v)),
                404 if v["field"] == "id" => Ok(None),
                _ => Err(api_error(status, &v)),
            };
        }
        let mut admin = self.consumer_admin(consumer).await?;
        Ok(admin.dlq_show(id).await?.map(|e| entry_json(&e, true)))
    }

    /// Replay (`replay` true) or drop DLQ entries; returns how many events moved.
    pub async fn dlq_change(
        &self,
        consumer: &str,
        sel: &Selection,
        replay: bool,
    ) -> anyhow::Result<u64> {
        self.known(consumer)?;
        let action = if replay { "replay" } else { "drop" };
        if self.is_live() {
            let body = json!({"account": sel.account, "since": sel.since, "id": sel.id});
            let v = self
                .ok(
                    reqwest::Method::POST,
                    &format!("/admin/consumers/{}/dlq/{action}", Self::seg(consumer)),
                    Some(&body),
                )
                .await?;
            return Ok(v[if replay { "replayed" } else { "dropped" }]
                .as_u64()
                .unwrap_or(0));
        }
        let mut admin = self.consumer_admin(consumer).await?;
        let (account, since) = switchyard_router::admin_api::resolve(&mut admin, consumer, sel)
            .await
            .map_err(answer_error)?;
        if replay {
            admin.dlq_replay(account.as_deref(), since).await
        } else {
            admin.dlq_drop(account.as_deref(), since).await
        }
    }

    /// Move the consumer's position to `to` (`earliest` or RFC 3339); returns the stream id.
    pub async fn rewind(&self, consumer: &str, to: &str) -> anyhow::Result<String> {
        self.known(consumer)?;
        if self.is_live() {
            let v = self
                .ok(
                    reqwest::Method::POST,
                    &format!("/admin/consumers/{}/rewind", Self::seg(consumer)),
                    Some(&json!({"to": to})),
                )
                .await?;
            return Ok(v["rewound_to"].as_str().unwrap_or_default().to_string());
        }
        let to = switchyard_config::consumer::Start::parse(to).map_err(anyhow::Error::msg)?;
        let mut admin = self.consumer_admin(consumer).await?;
        admin.rewind(&to).await?;
        Ok(to.stream_id())
    }

    /// The newest events of an account, newest first (`{"stream_id", "partition", "event"}`).
    pub async fn recent_events(&self, account: &str, limit: usize) -> anyhow::Result<Vec<Value>> {
        match &self.target {
            Target::Live { .. } => {
                let v = self
                    .ok(
                        reqwest::Method::GET,
                        &format!(
                            "/admin/accounts/{}/events?limit={limit}",
                            Self::seg(account)
                        ),
                        None,
                    )
                    .await?;
                Ok(v["events"].as_array().cloned().unwrap_or_default())
            }
            Target::Redis { log } => Ok(switchyard_store::tail::recent_of_account(
                log, account, limit, 10_000,
            )
            .await?
            .into_iter()
            .filter_map(|e| {
                let ev = e.event.ok()?;
                Some(json!({"stream_id": e.stream_id, "partition": e.partition, "event": ev}))
            })
            .collect()),
        }
    }

    /// Ask the router to reload its chains (needs a running router).
    pub async fn reload(&self) -> anyhow::Result<(u16, Value)> {
        self.request(reqwest::Method::POST, "/admin/reload", None)
            .await
    }
}

/// `switchyard status` without `--json`: one line per consumer and source.
/// `[0,1,2,5]` → `0-2,5`.
fn partitions_text(ps: &Value) -> String {
    let ps: Vec<u64> = ps
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < ps.len() {
        let mut j = i;
        while j + 1 < ps.len() && ps[j + 1] == ps[j] + 1 {
            j += 1;
        }
        parts.push(if j > i {
            format!("{}-{}", ps[i], ps[j])
        } else {
            ps[i].to_string()
        });
        i = j + 1;
    }
    parts.join(",")
}

pub fn status_table(st: &Value) -> String {
    let mut out = String::new();
    let running = st["router"]["running"] == true;
    out.push_str(&format!(
        "router: {}   health: {}{}\n",
        if running {
            format!("running ({})", st["router"]["url"].as_str().unwrap_or("?"))
        } else {
            "not running (read from Redis)".into()
        },
        st["health"]["status"].as_str().unwrap_or("?"),
        st["health"]["reasons"]
            .as_array()
            .filter(|r| !r.is_empty())
            .map(|r| format!(
                " ({})",
                r.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
            .unwrap_or_default()
    ));
    let f = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::Number(n) if n.is_f64() => format!("{:.1}", n.as_f64().unwrap_or(0.0)),
        v => v.to_string().trim_matches('"').to_string(),
    };
    out.push_str(&format!(
        "{:<20} {:<8} {:>10} {:>9} {:>8} {:>9} {:>6} {:>7}  {}\n",
        "CONSUMER", "STATE", "LAG", "LAG(s)", "RATE/s", "P99(ms)", "DLQ", "PARKED", "LAST ERROR"
    ));
    if let Some(cs) = st["consumers"].as_object() {
        for (name, c) in cs {
            out.push_str(&format!(
                "{:<20} {:<8} {:>10} {:>9} {:>8} {:>9} {:>6} {:>7}  {}\n",
                name,
                f(&c["state"]),
                f(&c["lag_events"]),
                f(&c["lag_seconds"]),
                f(&c["delivery_rate"]),
                f(&c["p99_latency_ms"]),
                f(&c["dlq"]),
                f(&c["parked_accounts"]),
                c["last_error"]["reason"].as_str().unwrap_or("-"),
            ));
        }
    }
    // Many instances: who delivers which partitions, and each one's last renewal.
    out.push_str(&format!("{:<40} {:>16}\n", "INSTANCE", "RENEWED(s ago)"));
    if let Some(is) = st["instances"].as_array() {
        for i in is {
            out.push_str(&format!(
                "{:<40} {:>16}\n",
                f(&i["id"]),
                f(&i["age_seconds"])
            ));
        }
    }
    if let Some(cs) = st["consumers"].as_object() {
        for (name, c) in cs {
            let mut owners: Vec<String> = c["owners"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(inst, ps)| format!("{inst}: {}", partitions_text(ps)))
                        .collect()
                })
                .unwrap_or_default();
            if let Some(u) = c["unowned_partitions"].as_array().filter(|u| !u.is_empty()) {
                owners.push(format!(
                    "unowned: {}",
                    partitions_text(&Value::Array(u.clone()))
                ));
            }
            if !owners.is_empty() {
                out.push_str(&format!("{name} partitions: {}\n", owners.join("; ")));
            }
        }
    }
    out.push_str(&format!(
        "{:<20} {:<8} {:>10} {:>9}\n",
        "SOURCE", "TYPE", "RATE/s", "LAG(s)"
    ));
    if let Some(ss) = st["sources"].as_object() {
        for (name, s) in ss {
            out.push_str(&format!(
                "{:<20} {:<8} {:>10} {:>9}\n",
                name,
                f(&s["type"]),
                f(&s["rate"]),
                f(&s["lag_seconds"])
            ));
        }
    }
    out
}
