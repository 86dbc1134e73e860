//! Setup shared by the benchmark binaries: a private redis-server and the
//! release `switchyard` binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

pub fn env_or(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when dropped.
pub struct Kill(pub std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A redis-server without persistence on `port`, data in `dir`.
pub fn start_redis(port: u16, dir: &Path) -> Kill {
    let k = Kill(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install -y redis-server)"),
    );
    std::thread::sleep(Duration::from_millis(300));
    k
}

/// Start `switchyard run --config cfg`; returns the process and its listen address.
pub fn start_router(cfg: &Path) -> (Kill, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", "--config"])
        .arg(cfg)
        .env("SWITCHYARD_LOG_FORMAT", "json")
        .env("SWITCHYARD_LOG", "warn,switchyard=info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let router = Kill(child);
    let mut lines = stderr.lines();
    let mut addr = String::new();
    for line in lines.by_ref() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap_or_default();
        // `listening` comes first; `ready` once modules are compiled and
        // delivery runs (the listener answers 503 until then).
        if v["message"] == "listening" {
            addr = v["addr"].as_str().unwrap().to_string();
        }
        if v["message"] == "ready" {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (router, addr)
}
