//! Transform benchmark: per-event cost of a 3-module chain (filter → redact
//! → webhook) on a ~1 KiB event against the same logic in native Rust,
//! instantiation cost, and load time cold (compile) vs cached.
//!
//! Needs the guest modules: run `transforms/build.sh` (or set
//! `SWITCHYARD_TRANSFORMS_DIR`). Run: `cargo bench -p switchyard --bench transform`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use switchyard_core::event::{Commit, ConsentState, Event, Op};
use switchyard_wasm_host::{
    Chain, ChainOutcome, EngineLimits, ModuleConfig, OutRequest, TransformEngine,
};

fn wasm_dir() -> PathBuf {
    match std::env::var_os("SWITCHYARD_TRANSFORMS_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../transforms/target/wasm32-wasip2/release"),
    }
}

fn module(name: &str) -> ModuleConfig {
    let p = wasm_dir().join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "{} is missing: run transforms/build.sh first",
        p.display()
    );
    ModuleConfig::new(p)
}

fn chain_configs() -> Vec<ModuleConfig> {
    vec![
        module("filter").with_config([("drop_topics", "drop.*")]),
        module("redact").with_config([("drop", "phone")]),
        module("webhook"),
    ]
}

/// An event whose JSON is about 1 KiB.
fn event_1k() -> Event {
    let after = serde_json::json!({
        "id": 42, "email": "jane.doe@example.com", "phone": "+32 470 12 34 56",
        "first_name": "Jane", "last_name": "Doe", "city": "Ghent", "country": "BE",
        "tier": "gold", "points": 12345, "opt_in": true,
        "notes": "x".repeat(300),
    });
    let mut before = after.clone();
    before["email"] = "jane@old.example.com".into();
    Event {
        id: "0190c2d2-7b7a-7c3e-9a55-3b1f2a4c5d6e".into(),
        topic: "customer.banner-a.email_changed".into(),
        source: "crm".into(),
        op: Op::Update,
        account_id: "42".into(),
        key: Some(serde_json::json!({"id": 42})),
        before: Some(before),
        after: Some(after),
        data: None,
        changed: vec!["email".into()],
        occurred_at: chrono::Utc::now(),
        ingested_at: chrono::Utc::now(),
        commit: Some(Commit {
            id: "0/16B3748".into(),
            seq: 3,
        }),
        trace: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        consent: [("email".to_string(), ConsentState::Granted)].into(),
        attributes: [("banner".to_string(), "a".to_string())].into(),
    }
}

/// The same three steps in native Rust: drop by topic pattern, remove a
/// field from the row images, render the event as a JSON request body.
fn native_chain(ev: &Event) -> Vec<OutRequest> {
    // filter: drop_topics = "drop.*"
    if ev.topic.starts_with("drop.") {
        return vec![];
    }
    // redact: drop = "phone" (works on its own copy, as a guest does)
    let mut ev = ev.clone();
    for v in [&mut ev.before, &mut ev.after, &mut ev.data]
        .into_iter()
        .flatten()
    {
        if let Some(o) = v.as_object_mut() {
            o.remove("phone");
        }
    }
    // webhook: the event as JSON
    vec![OutRequest {
        module: "webhook".into(),
        body: serde_json::to_vec(&ev).unwrap(),
        content_type: "application/json".into(),
        method: None,
        path: None,
        headers: vec![],
    }]
}

/// Median over `rounds` of the per-iteration time of `f` run `n` times.
fn per_iter(rounds: usize, n: usize, mut f: impl FnMut()) -> Duration {
    let mut v: Vec<Duration> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            t.elapsed() / n as u32
        })
        .collect();
    v.sort();
    v[v.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo bench --list probing
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this
    // binary without it: then only a quick smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let (rounds, n, inst_n) = if full { (7, 20_000, 200) } else { (1, 50, 5) };
    let cache = tempfile::tempdir().unwrap();
    let configs = chain_configs();

    // Load: cold (compile + write cache) vs cached (new engine, same dir).
    let e1 =
        TransformEngine::new(EngineLimits::default(), Some(cache.path().to_path_buf())).unwrap();
    let t = Instant::now();
    let c1 = Chain::load(&e1, "bench", &configs).unwrap();
    let cold = t.elapsed();
    assert!(c1.modules.iter().all(|m| !m.cache_hit));
    drop(c1);
    drop(e1);
    let engine =
        TransformEngine::new(EngineLimits::default(), Some(cache.path().to_path_buf())).unwrap();
    let t = Instant::now();
    let chain = Chain::load(&engine, "bench", &configs).unwrap();
    let cached = t.elapsed();
    assert!(chain.modules.iter().all(|m| m.cache_hit));

    let ev = event_1k();
    let json_len = serde_json::to_vec(&ev).unwrap().len();
    match chain.run(&ev) {
        ChainOutcome::Requests(r) => assert_eq!(r.len(), 1),
        o => panic!("unexpected outcome {o:?}"),
    }
    let wasm = per_iter(rounds, n, || {
        black_box(chain.run(black_box(&ev)));
    });
    let native = per_iter(rounds, n, || {
        black_box(native_chain(black_box(&ev)));
    });
    let convert = per_iter(rounds, n, || {
        black_box(switchyard_wasm_host::event_to_wit(black_box(&ev)));
    });
    let echo = Chain::load(&engine, "bench", &[module("sy_test_echo")]).unwrap();
    let one_call = per_iter(rounds, n, || {
        black_box(echo.run(black_box(&ev)));
    });
    // Each module alone (a chain of one: includes Event -> WIT and, for
    // modules that emit an event, the canonical JSON of the result).
    let mut alone = Vec::new();
    for cfg in &configs {
        let c = Chain::load(&engine, "bench", std::slice::from_ref(cfg)).unwrap();
        let t = per_iter(rounds, n / 4, || {
            black_box(c.run(black_box(&ev)));
        });
        alone.push((c.modules[0].name.clone(), t));
    }
    let inst = per_iter(rounds, inst_n, || {
        chain.modules[0].instantiate_and_drop().unwrap();
    });

    // Concurrency: 2 threads sharing the chain.
    let threads = 2;
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..n {
                    black_box(chain.run(&ev));
                }
            });
        }
    });
    let par = t.elapsed();

    if !full {
        println!("transform benchmark: smoke run only (use `cargo bench -p switchyard --bench transform` for figures)");
    }
    println!("transform benchmark (event JSON {json_len} B, chain filter -> redact -> webhook)");
    println!("  chain, per event (wasm)           {:>9.2} µs", us(wasm));
    println!("  same logic in native Rust         {:>9.2} µs", us(native));
    println!(
        "  ratio wasm / native               {:>9.1} x",
        wasm.as_secs_f64() / native.as_secs_f64()
    );
    println!(
        "  goal                              {:>9} µs/event  -> {}",
        "<= 5",
        if us(wasm) <= 5.0 { "met" } else { "NOT met" }
    );
    println!(
        "  of which Event -> WIT conversion  {:>9.2} µs",
        us(convert)
    );
    println!(
        "  1-module echo chain (call + JSON) {:>9.2} µs",
        us(one_call)
    );
    for (name, t) in &alone {
        println!("  {:<33} {:>9.2} µs", format!("{name} alone"), us(*t));
    }
    println!("  instantiate + init (pooling)      {:>9.2} µs", us(inst));
    println!("  load 3 modules cold (compile)     {:>9.2} ms", ms(cold));
    println!("  load 3 modules cached (mmap)      {:>9.2} ms", ms(cached));
    println!(
        "  cold / cached                     {:>9.1} x",
        cold.as_secs_f64() / cached.as_secs_f64()
    );
    println!(
        "  {threads} threads, shared chain         {:>9.0} events/s ({:.2} µs/event/thread)",
        (threads * n) as f64 / par.as_secs_f64(),
        us(par) / n as f64
    );
}
