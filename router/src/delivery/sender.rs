//! Sends one prepared request to a consumer's endpoint and reports the
//! [`Attempt`]. Auth, signing, the idempotency header and the rate limit are
//! applied here, the same way for every consumer.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::classify::{parse_retry_after, Attempt};
use super::config::{secret, AuthConfig, ConsumerConfig};
use crate::transform::OutRequest;

enum Auth {
    None,
    Bearer(String),
    Basic(String, String),
    /// Standard Webhooks: HMAC-SHA256 key.
    Hmac(Vec<u8>),
}

type Limiter = governor::DefaultDirectRateLimiter;

pub struct Sender {
    client: reqwest::Client,
    base: String,
    method: reqwest::Method,
    headers: Vec<(String, String)>,
    idem_header: String,
    auth: Auth,
    limiter: Option<Arc<Limiter>>,
}

impl Sender {
    pub fn new(name: &str, c: &ConsumerConfig) -> anyhow::Result<Sender> {
        let auth = match &c.endpoint.auth {
            None => Auth::None,
            Some(AuthConfig::Bearer { token, token_file }) => Auth::Bearer(
                secret(token, token_file)
                    .with_context(|| format!("consumers.{name}.endpoint.auth.token"))?,
            ),
            Some(AuthConfig::Basic {
                username,
                password,
                password_file,
            }) => Auth::Basic(
                username.clone(),
                secret(password, password_file)
                    .with_context(|| format!("consumers.{name}.endpoint.auth.password"))?,
            ),
            Some(AuthConfig::Hmac {
                secret: s,
                secret_file,
            }) => {
                let raw = secret(s, secret_file)
                    .with_context(|| format!("consumers.{name}.endpoint.auth.secret"))?;
                Auth::Hmac(webhook_key(&raw))
            }
        };
        let limiter = c.rate_limit.as_ref().map(|rl| {
            let per = NonZeroU32::new(rl.per_second.max(1)).unwrap();
            let burst = NonZeroU32::new(rl.burst.unwrap_or(rl.per_second).max(1)).unwrap();
            Arc::new(governor::RateLimiter::direct(
                governor::Quota::per_second(per).allow_burst(burst),
            ))
        });
        let client = reqwest::Client::builder()
            .timeout(c.timeout)
            .connect_timeout(c.timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(c.concurrency)
            .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Sender {
            client,
            base: c.endpoint.url.trim_end_matches('/').to_string(),
            method: reqwest::Method::from_bytes(c.endpoint.method.as_bytes())?,
            headers: c
                .endpoint
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            idem_header: c.endpoint.idempotency_header.clone(),
            auth,
            limiter,
        })
    }

    /// Send `req` for event `event_id`. Waits for the rate limiter first.
    pub async fn send(&self, event_id: &str, req: &OutRequest) -> Attempt {
        if let Some(l) = &self.limiter {
            l.until_ready().await;
        }
        let url = match &req.path {
            Some(p) if p.starts_with('/') => format!("{}{}", self.base, p),
            Some(p) if !p.is_empty() => format!("{}/{}", self.base, p),
            _ => self.base.clone(),
        };
        let method = match &req.method {
            Some(m) => match reqwest::Method::from_bytes(m.as_bytes()) {
                Ok(m) => m,
                Err(_) => {
                    return Attempt::Module {
                        module: "(output)".into(),
                        message: format!("`{m}` is not an HTTP method"),
                        retryable: false,
                    }
                }
            },
            None => self.method.clone(),
        };
        let mut b = self
            .client
            .request(method, &url)
            .header("content-type", &req.content_type);
        for (k, v) in self.headers.iter().chain(req.headers.iter()) {
            b = b.header(k, v);
        }
        b = b.header(&self.idem_header, event_id);
        b = match &self.auth {
            Auth::None => b,
            Auth::Bearer(t) => b.bearer_auth(t),
            Auth::Basic(u, p) => b.basic_auth(u, Some(p)),
            Auth::Hmac(key) => {
                let ts = chrono::Utc::now().timestamp();
                b.header("webhook-id", event_id)
                    .header("webhook-timestamp", ts.to_string())
                    .header(
                        "webhook-signature",
                        sign_webhook(key, event_id, ts, &req.body),
                    )
            }
        };
        match b.body(req.body.clone()).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                let body = match resp.bytes().await {
                    Ok(b) => String::from_utf8_lossy(&b[..b.len().min(1024)]).into_owned(),
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
            Err(e) => Attempt::Connect(error_chain(&e.without_url())),
        }
    }
}

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
