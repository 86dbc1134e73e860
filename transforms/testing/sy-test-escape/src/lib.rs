//! Test module: tries to get out of the sandbox on every event and reports,
//! as one JSON request body, what each attempt returned. The host must deny
//! every attempt that needs ambient authority (files, environment, network,
//! processes); see `router/src/transform/tests.rs` and `tests/it/transforms.rs`.
//!
//! Targets come from the event's `data` (all optional):
//! `{"path": "/tmp/secret", "env": "SWITCHYARD_SECRET_PROBE",
//!   "tcp": "127.0.0.1:4000", "udp": "127.0.0.1:4001", "sleep_ms": 60000}`.
//! `sleep_ms` makes the guest sleep (a `wasi:io/poll` wait on a clock)
//! before it reports: the host must end the wait at the call's deadline.
//!
//! Report: one key per attempt; `{"ok": false, "error": "..."}` for a denial,
//! `{"ok": true, "value": "..."}` for a success (the value is what the guest
//! got: file contents, the variable's value…, so a test can check that
//! nothing leaked). `wall_clock_ms` and `random` are not attempts: clocks
//! and randomness are granted to guests by design.
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchyard_guest::serde_json::{Map, Value};
use switchyard_guest::{json, transform, Error, Event, Output};

fn attempt<T: std::fmt::Debug, E: std::fmt::Display>(r: Result<T, E>) -> Value {
    match r {
        Ok(v) => json!({"ok": true, "value": format!("{v:?}")}),
        Err(e) => json!({"ok": false, "error": e.to_string()}),
    }
}

#[transform]
fn transform(ev: Event) -> Result<Vec<Output>, Error> {
    let data = ev.data.clone().unwrap_or(Value::Null);
    let arg = |k: &str| data.get(k).and_then(Value::as_str).map(str::to_string);
    let mut r = Map::new();

    // A long wait in the host (not a loop in the guest).
    if let Some(ms) = data.get("sleep_ms").and_then(Value::as_u64) {
        std::thread::sleep(Duration::from_millis(ms));
        r.insert("slept_ms".into(), json!(ms));
    }

    // Files.
    r.insert(
        "read_etc_passwd".into(),
        attempt(std::fs::read_to_string("/etc/passwd")),
    );
    r.insert(
        "read_dir_root".into(),
        attempt(std::fs::read_dir("/").map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.file_name()))
                .collect::<Vec<_>>()
        })),
    );
    r.insert(
        "read_dir_cwd".into(),
        attempt(std::fs::read_dir(".").map(|d| d.count())),
    );
    if let Some(p) = arg("path") {
        r.insert("read_path".into(), attempt(std::fs::read_to_string(&p)));
        r.insert(
            "open_path".into(),
            attempt(std::fs::File::open(&p).and_then(|mut f| {
                let mut s = String::new();
                f.read_to_string(&mut s).map(|_| s)
            })),
        );
        r.insert(
            "write_next_to_path".into(),
            attempt(std::fs::write(format!("{p}.escaped"), b"escaped")),
        );
    }

    // Environment, arguments, working directory.
    let vars: Vec<(String, String)> = std::env::vars().collect();
    r.insert(
        "env_vars".into(),
        json!({"count": vars.len(), "vars": vars}),
    );
    if let Some(name) = arg("env") {
        r.insert("env_var".into(), attempt(std::env::var(&name)));
    }
    r.insert("args".into(), json!(std::env::args().collect::<Vec<_>>()));
    r.insert("current_dir".into(), attempt(std::env::current_dir()));

    // Network.
    if let Some(addr) = arg("tcp") {
        r.insert(
            "tcp_connect".into(),
            attempt(addr.parse().map_err(|e| format!("{e}")).and_then(|a| {
                TcpStream::connect_timeout(&a, Duration::from_secs(2))
                    .map(|s| format!("connected from {:?}", s.local_addr()))
                    .map_err(|e| e.to_string())
            })),
        );
    }
    if let Some(addr) = arg("udp") {
        r.insert(
            "udp_send".into(),
            attempt(UdpSocket::bind("0.0.0.0:0").and_then(|s| s.send_to(b"escaped", &addr))),
        );
    }
    r.insert(
        "dns_lookup".into(),
        attempt(
            ("localhost", 80)
                .to_socket_addrs()
                .map(|a| a.collect::<Vec<_>>()),
        ),
    );

    // Processes.
    r.insert(
        "spawn_process".into(),
        attempt(
            std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg("id")
                .output(),
        ),
    );

    // Granted by design (not attempts): wall clock and randomness.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    r.insert("wall_clock_ms".into(), json!(now.as_millis() as u64));
    r.insert(
        "random".into(),
        json!(RandomState::new().hash_one(0u8).to_string()),
    );

    Ok(vec![Output::json(&Value::Object(r))?])
}
