//! The HTTP destination: sends one prepared request to a consumer's endpoint and reports the
//! [`Attempt`]. Auth, signing, the idempotency header and the rate limit are
//! applied here, the same way for every consumer.
//!
//! Headers, from weakest to strongest: the configured ones
//! (`endpoint.headers`, the idempotency header, the `authorization` of
//! `endpoint.auth`), the request's content type, then the module's headers,
//! each of which *replaces* every header of the same name (case-insensitive;
//! a name the module gives twice is sent twice). Two kinds stay the
//! router's: the Standard Webhooks signature headers (they sign the body
//! actually sent) and the message framing (`content-length`,
//! `transfer-encoding`, hop-by-hop headers), which a module may not set. A
//! header name or value that is not valid HTTP makes the request
//! [`Attempt::Unsendable`]: no retry can fix it.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use sha2::Sha256;

use crate::classify::{parse_retry_after, Attempt};
use crate::config::{AuthConfig, EndpointConfig, RateLimitConfig};
use switchyard_core::outbound::OutRequest;
use switchyard_core::secret::read_secret as secret;

type Limiter = governor::DefaultDirectRateLimiter;

/// Headers a module may not set: the message framing and hop-by-hop
/// headers belong to the HTTP client (a wrong `content-length` would hang
/// the request until it times out, and be retried forever).
const ROUTER_ONLY: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// The Standard Webhooks headers of `auth.type = "hmac"`.
const WEBHOOK_HEADERS: [&str; 3] = ["webhook-id", "webhook-timestamp", "webhook-signature"];

pub struct Sender {
    client: reqwest::Client,
    base: String,
    method: reqwest::Method,
    /// `endpoint.headers` and the `authorization` of `endpoint.auth`.
    headers: HeaderMap,
    idem_header: HeaderName,
    /// Standard Webhooks signing key (`auth.type = "hmac"`).
    hmac: Option<Vec<u8>>,
    limiter: Option<Arc<Limiter>>,
}

/// A header value from the configuration, marked sensitive (not printed by
/// `Debug`).
fn secret_header(value: String, field: &str) -> anyhow::Result<HeaderValue> {
    let mut v = HeaderValue::from_str(&value).map_err(|_| {
        anyhow::anyhow!(
            "{field}: is not a valid HTTP header value (it contains a control character or non-ASCII text)"
        )
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// How a module-given string is shown in a reason: quoted, escaped, short.
fn shown(s: &str) -> String {
    let cut: String = s.chars().take(64).collect();
    if cut.len() < s.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

impl Sender {
    /// The sender of consumer `name`: `endpoint`, a per-request `timeout`,
    /// up to `concurrency` requests at once, and an optional rate limit
    /// shared by all its partitions.
    pub fn new(
        name: &str,
        endpoint: &EndpointConfig,
        timeout: Duration,
        concurrency: usize,
        rate_limit: Option<&RateLimitConfig>,
    ) -> anyhow::Result<Sender> {
        let mut headers = HeaderMap::new();
        for (k, v) in &endpoint.headers {
            let field = format!("consumers.{name}.endpoint.headers.{k}");
            let k = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| anyhow::anyhow!("{field}: is not a valid HTTP header name"))?;
            let v = HeaderValue::from_str(v)
                .map_err(|_| anyhow::anyhow!("{field}: is not a valid HTTP header value"))?;
            headers.insert(k, v);
        }
        let mut hmac = None;
        match &endpoint.auth {
            None => {}
            Some(AuthConfig::Bearer { token, token_file }) => {
                let field = format!("consumers.{name}.endpoint.auth.token");
                let t = secret(token, token_file).with_context(|| field.clone())?;
                headers.insert(AUTHORIZATION, secret_header(format!("Bearer {t}"), &field)?);
            }
            Some(AuthConfig::Basic {
                username,
                password,
                password_file,
            }) => {
                let field = format!("consumers.{name}.endpoint.auth.password");
                let p = secret(password, password_file).with_context(|| field.clone())?;
                let b64 =
                    base64::engine::general_purpose::STANDARD.encode(format!("{username}:{p}"));
                headers.insert(
                    AUTHORIZATION,
                    secret_header(format!("Basic {b64}"), &field)?,
                );
            }
            Some(AuthConfig::Hmac {
                secret: s,
                secret_file,
            }) => {
                let raw = secret(s, secret_file)
                    .with_context(|| format!("consumers.{name}.endpoint.auth.secret"))?;
                hmac = Some(webhook_key(&raw));
            }
        }
        let idem_header =
            HeaderName::from_bytes(endpoint.idempotency_header.as_bytes()).map_err(|_| {
                anyhow::anyhow!(
                    "consumers.{name}.endpoint.idempotency_header: is not a valid HTTP header name"
                )
            })?;
        let limiter = rate_limit.map(|rl| {
            let per = NonZeroU32::new(rl.per_second.max(1)).unwrap();
            let burst = NonZeroU32::new(rl.burst.unwrap_or(rl.per_second).max(1)).unwrap();
            Arc::new(governor::RateLimiter::direct(
                governor::Quota::per_second(per).allow_burst(burst),
            ))
        });
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(concurrency)
            .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Sender {
            client,
            base: endpoint.url.trim_end_matches('/').to_string(),
            method: reqwest::Method::from_bytes(endpoint.method.as_bytes())?,
            headers,
            idem_header,
            hmac,
            limiter,
        })
    }

    /// Every header of `req` for event `event_id`, or why the module's
    /// request cannot be sent (see the module docs for the precedence).
    fn headers_for(&self, event_id: &str, req: &OutRequest) -> Result<HeaderMap, String> {
        let mut h = self.headers.clone();
        // Event ids are checked at every entry into the log (`[A-Za-z0-9._:-]`).
        let id = HeaderValue::from_str(event_id)
            .map_err(|_| format!("event id {} is not a valid header value", shown(event_id)))?;
        h.insert(self.idem_header.clone(), id.clone());
        let ct = HeaderValue::from_bytes(req.content_type.as_bytes()).map_err(|_| {
            "invalid value for header \"content-type\" (its content type)".to_string()
        })?;
        h.insert(CONTENT_TYPE, ct);
        let mut set_by_module: Vec<HeaderName> = Vec::new();
        for (k, v) in &req.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("invalid header name {} in its request", shown(k)))?;
            if ROUTER_ONLY.contains(&name.as_str()) {
                return Err(format!(
                    "header \"{}\" is set by the router, not by a module",
                    name.as_str()
                ));
            }
            // The value is not quoted: it may be a secret or personal data.
            let value = HeaderValue::from_bytes(v.as_bytes()).map_err(|_| {
                format!(
                    "invalid value for header \"{}\" in its request",
                    name.as_str()
                )
            })?;
            if set_by_module.contains(&name) {
                h.append(name, value);
            } else {
                h.insert(name.clone(), value);
                set_by_module.push(name);
            }
        }
        if let Some(key) = &self.hmac {
            let ts = chrono::Utc::now().timestamp();
            let sig = sign_webhook(key, event_id, ts, &req.body);
            let [id_h, ts_h, sig_h] = WEBHOOK_HEADERS;
            h.insert(id_h, id);
            h.insert(ts_h, HeaderValue::from(ts));
            h.insert(
                sig_h,
                HeaderValue::from_str(&sig).expect("base64 is a valid header value"),
            );
        }
        Ok(h)
    }

    /// Send `req` for event `event_id`. Waits for the rate limiter first
    /// (after checking that the request can be sent at all).
    pub async fn send(&self, event_id: &str, req: &OutRequest) -> Attempt {
        let unsendable = |reason: String| Attempt::Unsendable {
            module: if req.module.is_empty() {
                "(none)".into()
            } else {
                req.module.clone()
            },
            reason,
        };
        let headers = match self.headers_for(event_id, req) {
            Ok(h) => h,
            Err(reason) => return unsendable(reason),
        };
        let url = match &req.path {
            Some(p) if p.starts_with('/') => format!("{}{}", self.base, p),
            Some(p) if !p.is_empty() => format!("{}/{}", self.base, p),
            _ => self.base.clone(),
        };
        let method = match &req.method {
            Some(m) => match reqwest::Method::from_bytes(m.as_bytes()) {
                Ok(m) => m,
                Err(_) => return unsendable(format!("{} is not an HTTP method", shown(m))),
            },
            None => self.method.clone(),
        };
        if let Some(l) = &self.limiter {
            l.until_ready().await;
        }
        let b = self
            .client
            .request(method, &url)
            .headers(headers)
            .body(req.body.clone());
        match b.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                // Up to 256 KiB: a batching module reads per-item results in
                // it (delivery keeps only the first 1 KiB in a DLQ entry).
                let body = match resp.bytes().await {
                    Ok(b) => {
                        String::from_utf8_lossy(&b[..b.len().min(RESPONSE_BODY_MAX)]).into_owned()
                    }
                    Err(e) if e.is_timeout() => return Attempt::Timeout,
                    Err(_) => String::new(),
                };
                Attempt::Response {
                    status,
                    retry_after,
                    body,
                }
            }
            Err(e) if e.is_timeout() => Attempt::Timeout,
            // Without the URL: its query may hold an API key.
            Err(e) if e.is_builder() => unsendable(format!(
                "the request cannot be built: {}",
                error_chain(&e.without_url())
            )),
            Err(e) => Attempt::Connect(error_chain(&e.without_url())),
        }
    }
}

/// The most of a response body kept in an [`Attempt::Response`].
pub const RESPONSE_BODY_MAX: usize = 256 * 1024;

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A Standard Webhooks secret: `whsec_<base64>` decodes to the key; anything else is used as bytes.
pub fn webhook_key(secret: &str) -> Vec<u8> {
    match secret.strip_prefix("whsec_") {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_else(|_| secret.as_bytes().to_vec()),
        None => secret.as_bytes().to_vec(),
    }
}

/// `v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`.
pub fn sign_webhook(key: &[u8], id: &str, ts: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender(extra: &str) -> Sender {
        let c: EndpointConfig =
            toml::from_str(&format!("url = \"http://127.0.0.1:9\"\n{extra}")).unwrap();
        Sender::new("c", &c, Duration::from_secs(5), 4, None).unwrap()
    }

    fn req(headers: &[(&str, &str)]) -> OutRequest {
        OutRequest {
            module: "m".into(),
            body: b"{}".to_vec(),
            content_type: "application/x-module".into(),
            method: None,
            path: None,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn all(h: &HeaderMap, name: &str) -> Vec<String> {
        h.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn module_headers_replace_configured_ones_case_insensitively() {
        let s = sender(
            "headers = { \"X-Source\" = \"config\", \"X-Kept\" = \"config\" }\n\
             [auth]\ntype = \"basic\"\nusername = \"u\"\npassword = \"p\"\n",
        );
        let h = s.headers_for("ev1", &req(&[])).unwrap();
        assert_eq!(all(&h, "authorization"), ["Basic dTpw"]);
        assert_eq!(all(&h, "content-type"), ["application/x-module"]);
        assert_eq!(all(&h, "idempotency-key"), ["ev1"]);
        let h = s
            .headers_for(
                "ev1",
                &req(&[
                    ("AUTHORIZATION", "Bearer m"),
                    ("content-TYPE", "text/m"),
                    ("x-source", "module"),
                    ("Idempotency-Key", "mine"),
                    ("x-multi", "1"),
                    ("X-Multi", "2"),
                ]),
            )
            .unwrap();
        assert_eq!(all(&h, "authorization"), ["Bearer m"]);
        assert_eq!(all(&h, "content-type"), ["text/m"]);
        assert_eq!(all(&h, "x-source"), ["module"]);
        assert_eq!(all(&h, "x-kept"), ["config"]);
        assert_eq!(all(&h, "idempotency-key"), ["mine"]);
        assert_eq!(all(&h, "x-multi"), ["1", "2"]);
    }

    #[test]
    fn the_webhook_signature_stays_the_routers() {
        let s = sender(
            "[auth]\ntype = \"hmac\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n",
        );
        let h = s
            .headers_for(
                "ev1",
                &req(&[("webhook-signature", "v1,forged"), ("webhook-id", "x")]),
            )
            .unwrap();
        assert_eq!(all(&h, "webhook-id"), ["ev1"]);
        let sig = all(&h, "webhook-signature");
        assert_eq!(sig.len(), 1);
        assert_ne!(sig[0], "v1,forged");
    }

    #[test]
    fn invalid_module_headers_are_unsendable_naming_the_header_not_the_value() {
        let s = sender("");
        let e = s
            .headers_for("ev1", &req(&[("bad name", "v")]))
            .unwrap_err();
        assert_eq!(e, "invalid header name \"bad name\" in its request");
        let e = s
            .headers_for("ev1", &req(&[("x-note", "a\nsecret")]))
            .unwrap_err();
        assert_eq!(e, "invalid value for header \"x-note\" in its request");
        let e = s
            .headers_for("ev1", &req(&[("Content-Length", "1")]))
            .unwrap_err();
        assert!(e.contains("\"content-length\" is set by the router"), "{e}");
        let mut r = req(&[]);
        r.content_type = "text/plain\r\nx-injected: 1".into();
        assert!(s
            .headers_for("ev1", &r)
            .unwrap_err()
            .contains("content-type"));
        // Non-ASCII bytes (obs-text) are valid in values.
        assert!(s.headers_for("ev1", &req(&[("x-name", "Zoë")])).is_ok());
    }

    #[test]
    fn an_auth_token_that_cannot_be_a_header_is_refused_at_start() {
        let c: EndpointConfig =
            toml::from_str("url = \"http://x\"\n[auth]\ntype = \"bearer\"\ntoken = \"a\\nb\"\n")
                .unwrap();
        let e = Sender::new("crm", &c, Duration::from_secs(5), 4, None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("consumers.crm.endpoint.auth.token: "), "{e}");
        assert!(!e.contains("a\nb"), "{e}");
    }

    #[test]
    fn standard_webhooks_reference_vector() {
        // Test vector from the Standard Webhooks reference libraries.
        let key = webhook_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign_webhook(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
