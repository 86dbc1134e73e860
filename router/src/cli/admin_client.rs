//! Talks to a running router's `/admin/*` routes (address and token from the config).

use std::time::Duration;

use anyhow::Context;

use crate::config::Config;

fn base(config: &Config) -> anyhow::Result<String> {
    let addr = config.server.listen;
    if addr.port() == 0 {
        anyhow::bail!(
            "server.listen uses port 0: the router's address is not known; set a fixed port"
        );
    }
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    Ok(if addr.is_ipv6() {
        format!("http://[{host}]:{}", addr.port())
    } else {
        format!("http://{host}:{}", addr.port())
    })
}

pub async fn call(
    config: &Config,
    method: reqwest::Method,
    path: &str,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let url = format!("{}{path}", base(config)?);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let mut req = client.request(method, &url);
    if let Some(t) = &config.server.admin_token {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("no router answering at {url}; is it running?"))?;
    let status = resp.status().as_u16();
    let v = resp.json().await.unwrap_or_default();
    Ok((status, v))
}
