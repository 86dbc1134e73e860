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
    let scheme = if config.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    Ok(if addr.is_ipv6() {
        format!("{scheme}://[{host}]:{}", addr.port())
    } else {
        format!("{scheme}://{host}:{}", addr.port())
    })
}

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

pub async fn call(
    config: &Config,
    method: reqwest::Method,
    path: &str,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let url = format!("{}{path}", base(config)?);
    let mut req = client(config)?.request(method, &url);
    if let Some(t) = &config.server.admin_token {
        req = req.bearer_auth(t.expose());
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("no router answering at {url}; is it running?"))?;
    let status = resp.status().as_u16();
    let v = resp.json().await.unwrap_or_default();
    Ok((status, v))
}
