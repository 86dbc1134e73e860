//! One mapping, three languages: the Rust module `klaviyo` (with the Rust
//! `filter` in front, as the tests compare it) against the Python
//! (componentize-py) and JavaScript (componentize-js) examples, which do
//! filter + mapping in one module. Per language: component size, compile
//! time (cold load minus cached load), cached load, instantiate + `init`,
//! per-call cost on a ~1 KiB customer event, and linear memory growth per
//! call without recycling (what `recycle_after_calls` / `recycle_above` are
//! for).
//!
//! Needs `transforms/build.sh` and `examples/{python,js}-module/build.sh`
//! (tools: `tests/deps.sh`). Run: `cargo bench -p switchyard --bench polyglot`.
//! Without `--bench` (how `cargo test --all-targets` runs it) only a quick
//! smoke run.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use switchyard_core::event::{ConsentState, Event, Op};
use switchyard_wasm_host::{
    ByteSize, Chain, ChainOutcome, EngineLimits, ModuleConfig, TransformEngine,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn file(p: PathBuf, how: &str) -> PathBuf {
    assert!(p.is_file(), "{} is missing: run {how}", p.display());
    p
}

const TOPICS: (&str, &str) = ("topics", "customer.*.profile_*");
const MAPPING: [(&str, &str); 2] = [
    ("properties", "tier, points, address.city"),
    ("phone_country_code", "44"),
];

struct Lang {
    name: &'static str,
    modules: Vec<ModuleConfig>,
}

fn langs() -> Vec<Lang> {
    let rust = |n: &str| {
        file(
            repo().join(format!("transforms/target/wasm32-wasip2/release/{n}.wasm")),
            "transforms/build.sh",
        )
    };
    let py = file(
        repo().join("examples/python-module/build/klaviyo_py.wasm"),
        "examples/python-module/build.sh",
    );
    let js = file(
        repo().join("examples/js-module/build/klaviyo_js.wasm"),
        "examples/js-module/build.sh",
    );
    let relaxed = |p: PathBuf| {
        let mut m = ModuleConfig::new(p);
        // Wall-clock deadline; a loaded machine must not fail the run.
        m.deadline = Some(Duration::from_secs(5));
        m
    };
    let guest = |p: PathBuf| relaxed(p).with_config(MAPPING.into_iter().chain([TOPICS]));
    vec![
        Lang {
            name: "Rust (klaviyo)",
            modules: vec![relaxed(rust("klaviyo")).with_config(MAPPING)],
        },
        Lang {
            name: "Rust (filter -> klaviyo)",
            modules: vec![
                relaxed(rust("filter")).with_config([TOPICS]),
                relaxed(rust("klaviyo")).with_config(MAPPING),
            ],
        },
        Lang {
            name: "Python (componentize-py)",
            modules: vec![guest(py)],
        },
        Lang {
            name: "JS (componentize-js)",
            modules: vec![guest(js)],
        },
    ]
}

/// A customer update whose canonical JSON is about 1 KiB.
fn event_1k() -> Event {
    let after = serde_json::json!({
        "customer_id": 42, "email": "jane.doe@example.com", "phone": "07700 900123",
        "first_name": "Jane", "last_name": "Doe", "tier": "gold", "points": 12345,
        "address": {"street": "1 High Street", "city": "Leeds", "zip": "LS1 1AA", "country": "GB"},
        "opt_in": true, "notes": "x".repeat(300),
    });
    let mut before = after.clone();
    before["email"] = "jane@old.example.com".into();
    Event {
        id: "0190c2d2-7b7a-7c3e-9a55-3b1f2a4c5d6e".into(),
        topic: "customer.banner-a.profile_updated".into(),
        source: "crm".into(),
        op: Op::Update,
        account_id: "42".into(),
        key: Some(serde_json::json!({"customer_id": 42})),
        before: Some(before),
        after: Some(after),
        data: None,
        changed: vec!["email".into()],
        occurred_at: chrono::Utc::now(),
        ingested_at: chrono::Utc::now(),
        commit: None,
        trace: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        consent: [("email".to_string(), ConsentState::Granted)].into(),
        attributes: [("banner".to_string(), "a".to_string())].into(),
    }
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
    let full = std::env::args().any(|a| a == "--bench");
    let (rounds, n, inst_n, leak_n) = if full {
        (5, 2_000, 50, 2_000)
    } else {
        (1, 5, 2, 5)
    };
    let ev = event_1k();
    let json_len = serde_json::to_vec(&ev).unwrap().len();
    if !full {
        println!("polyglot benchmark: smoke run only (use `cargo bench -p switchyard --bench polyglot` for figures)");
    }
    println!(
        "polyglot benchmark (event JSON {json_len} B; same Klaviyo mapping; load average {})",
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "?".into())
    );
    println!(
        "  {:<26} {:>8} {:>11} {:>10} {:>12} {:>10} {:>10} {:>12}",
        "module",
        "size",
        "compile ms",
        "cached ms",
        "inst+init µs",
        "call µs",
        "memory",
        "growth/call"
    );
    for lang in langs() {
        let size: u64 = lang
            .modules
            .iter()
            .map(|m| std::fs::metadata(&m.path).unwrap().len())
            .sum();
        // Cold load: compile + write the cache + first instance + init.
        let cache = tempfile::tempdir().unwrap();
        let e1 = TransformEngine::new(EngineLimits::default(), Some(cache.path().to_path_buf()))
            .unwrap();
        let t = Instant::now();
        let c1 = Chain::load(&e1, "bench", &lang.modules).unwrap();
        let cold = t.elapsed();
        assert!(c1.modules.iter().all(|m| !m.cache_hit));
        drop(c1);
        drop(e1);
        // Cached load: a new engine on the same cache (mmap + instance + init).
        let engine =
            TransformEngine::new(EngineLimits::default(), Some(cache.path().to_path_buf()))
                .unwrap();
        let t = Instant::now();
        let chain = Chain::load(&engine, "bench", &lang.modules).unwrap();
        let cached = t.elapsed();
        assert!(chain.modules.iter().all(|m| m.cache_hit));

        match chain.run(&ev) {
            ChainOutcome::Requests(r) => {
                assert_eq!(r.len(), 1);
                let body: serde_json::Value = serde_json::from_slice(&r[0].body).unwrap();
                assert_eq!(
                    body["data"]["attributes"]["phone_number"], "+447700900123",
                    "{}",
                    lang.name
                );
            }
            o => panic!("{}: unexpected outcome {o:?}", lang.name),
        }
        let call = per_iter(rounds, n, || {
            black_box(chain.run(black_box(&ev)));
        });
        let inst = per_iter(rounds, inst_n, || {
            for m in &chain.modules {
                m.instantiate_and_drop().unwrap();
            }
        });

        // Memory growth per call with recycling off (a mark at the cap, no
        // call limit): one instance serves `leak_n` calls.
        let no_recycle: Vec<ModuleConfig> = lang
            .modules
            .iter()
            .cloned()
            .map(|mut m| {
                m.memory = Some(ByteSize(256 << 20));
                m.recycle_above = Some(ByteSize(256 << 20));
                m.recycle_after_calls = Some(u64::MAX);
                m
            })
            .collect();
        let leaky = Chain::load(&engine, "bench", &no_recycle).unwrap();
        leaky.run(&ev);
        let mem = |c: &Chain| -> u64 {
            c.modules
                .iter()
                .map(|m| {
                    m.stats
                        .max_memory
                        .load(std::sync::atomic::Ordering::Relaxed)
                })
                .sum()
        };
        let start = mem(&leaky);
        for _ in 0..leak_n {
            black_box(leaky.run(&ev));
        }
        let growth = (mem(&leaky) - start) as f64 / leak_n as f64;

        println!(
            "  {:<26} {:>6.1}MB {:>11.0} {:>10.1} {:>12.0} {:>10.1} {:>8.1}MB {:>10.0} B",
            lang.name,
            size as f64 / 1e6,
            ms(cold.saturating_sub(cached)),
            ms(cached),
            us(inst),
            us(call),
            start as f64 / 1e6,
            growth
        );
    }
    println!("  (compile = cold load - cached load; memory = largest linear memory after the first call; growth/call over {leak_n} calls on one instance)");
}
