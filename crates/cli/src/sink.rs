//! `switchyard sink`: a local HTTP endpoint that prints every request it
//! receives as a JSON line and answers 200 — a stand-in for a vendor API when
//! trying a consumer out.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub async fn run(listen: SocketAddr, shutdown: CancellationToken) -> anyhow::Result<()> {
    let l = TcpListener::bind(listen).await?;
    tracing::info!(addr = %l.local_addr()?, "sink listening");
    eprintln!("sink listening on http://{}", l.local_addr()?);
    loop {
        let (s, _) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = l.accept() => r?,
        };
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(
                |req: hyper::Request<hyper::body::Incoming>| async move {
                    let method = req.method().to_string();
                    let path = req.uri().to_string();
                    let headers: serde_json::Map<String, serde_json::Value> = req
                        .headers()
                        .iter()
                        .filter(|(k, _)| *k != "authorization")
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                        .collect();
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let body = serde_json::from_slice::<serde_json::Value>(&body)
                        .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned().into());
                    println!(
                        "{}",
                        serde_json::json!({"method": method, "path": path, "headers": headers, "body": body})
                    );
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        b"{\"ok\":true}",
                    ))))
                },
            );
            let b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = b.serve_connection(TokioIo::new(s), svc).await;
        });
    }
}
