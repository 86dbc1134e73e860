//! Test harness: throwaway servers and a router process, all on free ports
//! with their own temp dirs. Nothing here touches the machine's shared
//! Redis or Postgres.
#![allow(dead_code)]

pub mod cluster;
pub mod mariadb;
pub mod postgres;
pub mod redis;
pub mod router;
pub mod secrets;
pub mod tls;
pub mod vendor;

#[allow(unused_imports)] // the chaos binary uses `secrets::find_secrets` instead
pub use secrets::assert_no_secrets;

use std::net::TcpListener;
use std::time::{Duration, Instant};

/// A port that was free a moment ago (bind to 0, read, release).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Poll `f` until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub const TOKEN: &str = "test-token-0123456789abcdef";
pub const TOKEN_B: &str = "other-token-0123456789abcdef";
