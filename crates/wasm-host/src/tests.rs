//! Host-side tests. They load the guest modules built by
//! `transforms/build.sh` (dir: `$SWITCHYARD_TRANSFORMS_DIR`, default
//! `<repo>/transforms/target/wasm32-wasip2/release`). Missing modules fail
//! the tests; they are never skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::*;
use switchyard_core::event::{Commit, ConsentState, Event, Op};

fn wasm_dir() -> PathBuf {
    match std::env::var_os("SWITCHYARD_TRANSFORMS_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../transforms/target/wasm32-wasip2/release"),
    }
}

fn wasm(name: &str) -> PathBuf {
    let p = wasm_dir().join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "guest module {} is missing: run transforms/build.sh first (or set SWITCHYARD_TRANSFORMS_DIR to the directory holding the built .wasm files)",
        p.display()
    );
    p
}

/// A module with the engine's default limits.
fn bare(name: &str) -> ModuleConfig {
    ModuleConfig::new(wasm(name))
}

/// Deadline for tests that are not about deadlines. The epoch deadline is
/// wall-clock time: on a loaded 2-core CI machine running the debug build a
/// thread can be descheduled for longer than the default 100 ms.
const RELAXED_DEADLINE: Duration = Duration::from_secs(5);

/// The module at `p` with a relaxed deadline.
fn relaxed(p: &Path) -> ModuleConfig {
    let mut m = ModuleConfig::new(p);
    m.deadline = Some(RELAXED_DEADLINE);
    m
}

/// A module with a relaxed deadline (see [`RELAXED_DEADLINE`]).
fn module(name: &str) -> ModuleConfig {
    let mut m = bare(name);
    m.deadline = Some(RELAXED_DEADLINE);
    m
}

/// One engine for most tests, with a compile cache kept in target/ so
/// repeated test runs do not recompile (the dev-profile compiler is slow).
fn engine() -> &'static TransformEngine {
    static E: OnceLock<TransformEngine> = OnceLock::new();
    E.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/transform-test-cache");
        TransformEngine::new(EngineLimits::default(), Some(dir)).unwrap()
    })
}

fn sample() -> Event {
    Event {
        id: "ev-1".into(),
        topic: "customer.banner-a.email_changed".into(),
        source: "crm".into(),
        op: Op::Update,
        account_id: "42".into(),
        key: Some(serde_json::json!({"id": 42})),
        before: Some(serde_json::json!({"email": "a@x.com", "phone": "+3212345678"})),
        after: Some(serde_json::json!({"email": "b@x.com", "phone": "+3212345678", "n": 1.5})),
        data: None,
        changed: vec!["email".into()],
        occurred_at: "2026-11-23T10:00:00.123Z".parse().unwrap(),
        ingested_at: "2026-11-23T10:00:00.456789Z".parse().unwrap(),
        commit: Some(Commit {
            id: "0/16B3748".into(),
            seq: 3,
        }),
        trace: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        consent: [("email".to_string(), ConsentState::Granted)].into(),
        attributes: [("banner".to_string(), "a".to_string())].into(),
    }
}

fn requests(o: ChainOutcome) -> Vec<OutRequest> {
    match o {
        ChainOutcome::Requests(r) => r,
        other => panic!("expected requests, got {other:?}"),
    }
}

fn failed(o: ChainOutcome) -> (String, String, bool) {
    match o {
        ChainOutcome::Failed {
            module,
            message,
            retryable,
        } => (module, message, retryable),
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn load_err(configs: &[ModuleConfig]) -> LoadError {
    match Chain::load(engine(), "t", configs) {
        Ok(_) => panic!("expected a load error"),
        Err(e) => e,
    }
}

#[test]
fn load_reports_name_hash_and_contract_version() {
    let chain = Chain::load(engine(), "t", &[bare("sy_test_echo")]).unwrap();
    let m = &chain.modules[0];
    assert_eq!(m.name, "sy_test_echo");
    assert_eq!(m.version, "0.2.0");
    assert_eq!(m.hash.len(), 64);
    assert_eq!(m.deadline, limits::DEFAULT_DEADLINE);
    assert_eq!(m.memory_cap, limits::DEFAULT_MEMORY_CAP);
    assert_eq!(
        m.idle_instances(),
        1,
        "load creates and initialises one instance"
    );
}

#[test]
fn event_leaving_the_last_module_is_sent_as_canonical_json() {
    let chain = Chain::load(engine(), "t", &[module("sy_test_echo")]).unwrap();
    let ev = sample();
    let r = requests(chain.run(&ev));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].content_type, "application/json");
    assert_eq!(r[0].module, "sy_test_echo");
    let mut back: Event = serde_json::from_slice(&r[0].body).unwrap();
    // sy_test_echo adds attributes["calls"] (calls on this instance).
    assert_eq!(back.attributes.remove("calls").as_deref(), Some("1"));
    assert_eq!(
        back, ev,
        "every field survives the round trip through the guest"
    );
}

fn calls_attr(o: ChainOutcome) -> String {
    let r = requests(o);
    let ev: Event = serde_json::from_slice(&r[0].body).unwrap();
    ev.attributes["calls"].clone()
}

#[test]
fn an_instance_is_initialised_once_and_reused() {
    let chain = Chain::load(engine(), "t", &[module("sy_test_echo")]).unwrap();
    let calls: Vec<String> = (0..3).map(|_| calls_attr(chain.run(&sample()))).collect();
    assert_eq!(calls, ["1", "2", "3"]);
    assert_eq!(
        chain.modules[0]
            .stats
            .instantiations
            .load(Ordering::Relaxed),
        1
    );
}

/// `recycle_after_calls`: an instance serves that many calls, then the
/// next call gets a fresh one (`calls` restarts at 1); every event still
/// gets its output, in order.
#[test]
fn instances_are_recycled_after_n_calls() {
    let mut cfg = module("sy_test_echo");
    cfg.recycle_after_calls = Some(3);
    let chain = Chain::load(engine(), "t", &[cfg]).unwrap();
    let m = &chain.modules[0];
    assert_eq!(m.recycle_after_calls, 3);
    assert_eq!(
        m.recycle_above,
        limits::DEFAULT_MEMORY_CAP / 2,
        "default mark: half the cap"
    );
    let mut ids = Vec::new();
    let mut calls = Vec::new();
    for i in 0..8 {
        let mut ev = sample();
        ev.id = format!("ev-{i}");
        let r = requests(chain.run(&ev));
        let back: Event = serde_json::from_slice(&r[0].body).unwrap();
        ids.push(back.id);
        calls.push(back.attributes["calls"].clone());
    }
    assert_eq!(ids, (0..8).map(|i| format!("ev-{i}")).collect::<Vec<_>>());
    assert_eq!(calls, ["1", "2", "3", "1", "2", "3", "1", "2"]);
    assert_eq!(m.stats.instantiations.load(Ordering::Relaxed), 3);
    assert_eq!(m.stats.recycled.load(Ordering::Relaxed), 2);
    let st = &ChainHandle::new(
        engine(),
        "t",
        vec![{
            let mut c = module("sy_test_echo");
            c.recycle_after_calls = Some(3);
            c
        }],
    )
    .unwrap()
    .status()
    .modules[0];
    assert_eq!(st.recycle_after_calls, 3);
    assert!(st.max_memory > 0, "{st:?}");
}

/// `recycle_above`: an instance whose linear memory passed the mark after a
/// call is replaced. A Rust guest starts above a 1-byte mark, so every call
/// gets a fresh instance; the default mark (half of 64 MiB) never fires.
#[test]
fn instances_above_the_memory_mark_are_recycled() {
    let mut cfg = module("sy_test_echo");
    cfg.recycle_above = Some(ByteSize(1));
    let chain = Chain::load(engine(), "t", &[cfg]).unwrap();
    let calls: Vec<String> = (0..4).map(|_| calls_attr(chain.run(&sample()))).collect();
    assert_eq!(calls, ["1", "1", "1", "1"]);
    let m = &chain.modules[0];
    assert_eq!(m.stats.recycled.load(Ordering::Relaxed), 4);
    let peak = m.stats.max_memory.load(Ordering::Relaxed);
    assert!(
        (64 * 1024..limits::DEFAULT_MEMORY_CAP / 2).contains(&peak),
        "{peak}"
    );

    let chain = Chain::load(engine(), "t", &[module("sy_test_echo")]).unwrap();
    let calls: Vec<String> = (0..4).map(|_| calls_attr(chain.run(&sample()))).collect();
    assert_eq!(calls, ["1", "2", "3", "4"]);
    assert_eq!(chain.modules[0].stats.recycled.load(Ordering::Relaxed), 0);
}

#[test]
fn redact_then_canonical_json() {
    let chain = Chain::load(engine(), "t", &[filter(), redact()]).unwrap();
    let r = requests(chain.run(&sample()));
    let back: Event = serde_json::from_slice(&r[0].body).unwrap();
    assert_eq!(r[0].module, "redact");
    assert!(
        back.after.as_ref().unwrap().get("phone").is_none(),
        "{back:?}"
    );
    assert!(
        back.before.as_ref().unwrap().get("phone").is_none(),
        "{back:?}"
    );
    assert_eq!(back.after.as_ref().unwrap()["email"], "b@x.com");
}

/// A float crosses the host → guest → host boundary (JSON text both ways,
/// parsed by the guest SDK and by the host) with its exact value.
#[test]
fn floats_survive_a_pass_through_module() {
    let chain = Chain::load(engine(), "t", &[module("sy_test_echo")]).unwrap();
    let mut ev = sample();
    ev.after =
        Some(serde_json::json!({"a": 1.5000000001164153_f64, "b": 4.1844674407370955e21_f64}));
    let r = requests(chain.run(&ev));
    let back: Event = serde_json::from_slice(&r[0].body).unwrap();
    assert_eq!(back.after, ev.after);
}

#[test]
fn wit_conversion_round_trips() {
    let ev = sample();
    assert_eq!(event_from_wit(event_to_wit(&ev)).unwrap(), ev);
}

/// filter that drops topics `drop.*`.
fn filter() -> ModuleConfig {
    module("filter").with_config([("drop_topics", "drop.*")])
}

/// redact that removes `phone` from before/after/data.
fn redact() -> ModuleConfig {
    module("redact").with_config([("drop", "phone")])
}

/// webhook: the event as a CloudEvents JSON request to `/hooks/crm`.
fn webhook() -> ModuleConfig {
    module("webhook").with_config([("path", "/hooks/crm")])
}

#[test]
fn chain_of_three_filter_redact_webhook() {
    let chain = Chain::load(engine(), "t", &[filter(), redact(), webhook()]).unwrap();
    let r = requests(chain.run(&sample()));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].module, "webhook");
    assert_eq!(r[0].path.as_deref(), Some("/hooks/crm"));
    assert_eq!(r[0].content_type, "application/cloudevents+json");
    let body: serde_json::Value = serde_json::from_slice(&r[0].body).unwrap();
    assert_eq!(body["id"], "ev-1");
    assert_eq!(body["data"]["after"]["email"], "b@x.com", "{body}");
    assert!(
        body["data"]["after"].get("phone").is_none(),
        "redact ran before webhook: {body}"
    );
    // Same instances are reused for the next events.
    for _ in 0..10 {
        requests(chain.run(&sample()));
    }
    for m in &chain.modules {
        assert_eq!(
            m.stats.instantiations.load(Ordering::Relaxed),
            1,
            "{} reused its instance",
            m.name
        );
        assert_eq!(m.stats.calls.load(Ordering::Relaxed), 11);
    }
}

#[test]
fn zero_outputs_drop_the_event_and_count_per_module() {
    let h = ChainHandle::new(engine(), "t", vec![filter(), webhook()]).unwrap();
    let mut ev = sample();
    ev.topic = "drop.me".into();
    assert_eq!(
        h.run(&ev),
        ChainOutcome::Dropped {
            module: "filter".into()
        }
    );
    assert_eq!(
        h.run(&ev),
        ChainOutcome::Dropped {
            module: "filter".into()
        }
    );
    let st = h.status();
    assert_eq!(st.modules[0].name, "filter");
    assert_eq!(st.modules[0].drops, 2);
    assert_eq!(
        st.modules[1].calls, 0,
        "a dropped event never reaches the next module"
    );
}

#[test]
fn guest_error_is_reported_as_the_guest_says() {
    let chain = Chain::load(engine(), "t", &[filter(), module("klaviyo")]).unwrap();
    // No email, phone or account id: klaviyo fails the event, not retryable.
    let mut ev = sample();
    ev.account_id.clear();
    ev.after = Some(serde_json::json!({"first_name": "X"}));
    let (m, msg, retryable) = failed(chain.run(&ev));
    assert_eq!(m, "klaviyo");
    assert!(msg.starts_with("no profile identifier"), "{msg}");
    assert!(!retryable);
    // A guest error does not cost the instance.
    requests(chain.run(&sample()));
    let k = &chain.modules[1];
    assert_eq!(k.stats.instantiations.load(Ordering::Relaxed), 1);
    assert_eq!(k.stats.errors.load(Ordering::Relaxed), 1);
}

#[test]
fn infinite_loop_times_out_and_the_host_carries_on() {
    let chain = Chain::load(engine(), "t", &[bare("sy_test_loop")]).unwrap();
    let t = Instant::now();
    let (m, msg, retryable) = failed(chain.run(&sample()));
    let took = t.elapsed();
    assert_eq!(m, "sy_test_loop");
    assert_eq!(msg, "timed out after 100ms");
    assert!(!retryable);
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_secs(2),
        "took {took:?}"
    );
    // The next event on the same chain gets a fresh instance (the
    // interrupted one is never re-entered) and is stopped again cleanly.
    let (_, msg2, _) = failed(chain.run(&sample()));
    assert_eq!(msg2, "timed out after 100ms");
    assert_eq!(
        chain.modules[0].idle_instances(),
        0,
        "a timed-out instance is discarded"
    );
    assert_eq!(
        chain.modules[0]
            .stats
            .instantiations
            .load(Ordering::Relaxed),
        2
    );
    // Other chains on the same engine keep working.
    let echo = Chain::load(engine(), "t", &[module("sy_test_echo")]).unwrap();
    requests(echo.run(&sample()));
}

#[test]
fn custom_deadline_is_honoured() {
    let mut cfg = bare("sy_test_loop");
    cfg.deadline = Some(Duration::from_millis(30));
    let chain = Chain::load(engine(), "t", &[cfg]).unwrap();
    let t = Instant::now();
    let (_, msg, _) = failed(chain.run(&sample()));
    assert_eq!(msg, "timed out after 30ms");
    assert!(t.elapsed() < Duration::from_millis(1000));
}

#[test]
fn memory_bomb_hits_the_cap() {
    let mut cfg = module("sy_test_membomb");
    cfg.memory = Some(ByteSize(16 * limits::MIB));
    cfg.deadline = Some(Duration::from_secs(5));
    let chain = Chain::load(engine(), "t", &[cfg]).unwrap();
    let (m, msg, retryable) = failed(chain.run(&sample()));
    assert_eq!(m, "sy_test_membomb");
    assert_eq!(msg, "exceeded memory cap 16 MiB");
    assert!(!retryable);
    assert_eq!(chain.modules[0].idle_instances(), 0);
    // Default cap. (Filling 64 MiB can take longer than the default 100 ms
    // on a slow machine: the relaxed deadline makes the cap what stops it.)
    let cfg = module("sy_test_membomb");
    let chain = Chain::load(engine(), "t", &[cfg]).unwrap();
    let t = Instant::now();
    assert_eq!(failed(chain.run(&sample())).1, "exceeded memory cap 64 MiB");
    eprintln!("64 MiB memory bomb stopped after {:?}", t.elapsed());
}

#[test]
fn trap_is_reported_and_the_instance_discarded() {
    let chain = Chain::load(engine(), "t", &[module("sy_test_trap")]).unwrap();
    let (m, msg, retryable) = failed(chain.run(&sample()));
    assert_eq!(m, "sy_test_trap");
    assert!(msg.starts_with("trapped: "), "{msg}");
    assert!(!retryable);
    assert_eq!(chain.modules[0].idle_instances(), 0);
    assert!(
        msg.contains("sy-test-trap: deliberate panic on event ev-1"),
        "the guest's panic message is reported: {msg}"
    );
    let (_, msg2, _) = failed(chain.run(&sample()));
    assert!(msg2.starts_with("trapped: "), "{msg2}");
}

#[test]
fn old_contract_version_is_refused_with_a_clear_message() {
    let e = load_err(&[module("sy_test_oldabi")]);
    assert!(
        e.message
            .contains("was built against switchyard:transform@0.0.1"),
        "{}",
        e.message
    );
    assert!(
        e.message
            .contains("this router speaks 0.2.0 and 0.1.0 — rebuild it with switchyard-guest 0.2"),
        "{}",
        e.message
    );
    assert!(e.message.contains("sy_test_oldabi.wasm"), "{}", e.message);
}

#[test]
fn component_of_another_world_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("empty.wasm");
    // The smallest valid component: header only, no imports, no exports.
    std::fs::write(&p, b"\0asm\x0d\x00\x01\x00").unwrap();
    let e = load_err(&[ModuleConfig::new(&p)]);
    assert!(
        e.message.contains(
            "does not implement world switchyard:transform/transformer@0.2.0 (it exports nothing)"
        ),
        "{}",
        e.message
    );
}

#[test]
fn init_refusal_fails_the_load_with_the_module_message() {
    let e = load_err(&[module("sy_test_refuse")]);
    assert!(
        e.message
            .contains("init refused the config: refused: this module refuses every config"),
        "{}",
        e.message
    );
    assert!(e.message.contains("sy_test_refuse.wasm"), "{}", e.message);
}

#[test]
fn corrupt_truncated_or_missing_files_fail_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(wasm("sy_test_echo")).unwrap();
    let p = dir.path().join("truncated.wasm");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(&[ModuleConfig::new(&p)]);
    assert!(
        e.message.contains(&p.display().to_string()),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("is not a valid WebAssembly component"),
        "{}",
        e.message
    );
    assert_eq!(e.file, p.display().to_string());

    let p = dir.path().join("garbage.wasm");
    std::fs::write(&p, b"this is not wasm").unwrap();
    let e = load_err(&[ModuleConfig::new(&p)]);
    assert!(
        e.message
            .contains("garbage.wasm is not a valid WebAssembly component"),
        "{}",
        e.message
    );

    let p = dir.path().join("missing.wasm");
    let e = load_err(&[ModuleConfig::new(&p)]);
    assert!(
        e.message.contains("cannot read module") && e.message.contains("missing.wasm"),
        "{}",
        e.message
    );
}

#[test]
fn cache_hit_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = [module("sy_test_echo")];
    let e1 = TransformEngine::new(EngineLimits::default(), Some(dir.path().to_path_buf())).unwrap();
    let c1 = Chain::load(&e1, "t", &cfg).unwrap();
    assert!(!c1.modules[0].cache_hit);
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), 1, "one .cwasm, no temp files left: {files:?}");
    assert!(files[0].to_string_lossy().ends_with(".cwasm"));
    drop(c1);
    drop(e1);
    // "Restart": a new engine with the same cache dir.
    let e2 = TransformEngine::new(EngineLimits::default(), Some(dir.path().to_path_buf())).unwrap();
    let c2 = Chain::load(&e2, "t", &cfg).unwrap();
    assert!(c2.modules[0].cache_hit);
    requests(c2.run(&sample()));
    // A corrupt cache entry is ignored and rewritten. (Replace the file, as
    // the cache itself does: truncating a mapped .cwasm in place would
    // SIGBUS the process that maps it.)
    let entry = dir.path().join(&files[0]);
    std::fs::remove_file(&entry).unwrap();
    std::fs::write(&entry, b"junk").unwrap();
    let c3 = Chain::load(&e2, "t", &cfg).unwrap();
    assert!(!c3.modules[0].cache_hit);
    requests(c3.run(&sample()));
}

fn version_cfg(v: &str) -> ModuleConfig {
    module("sy_test_version").with_config([("version", v)])
}

fn body(o: ChainOutcome) -> String {
    let r = requests(o);
    assert_eq!(r.len(), 1);
    String::from_utf8(r[0].body.clone()).unwrap()
}

#[test]
fn hot_reload_under_load_loses_nothing() {
    let h = ChainHandle::new(engine(), "t", vec![version_cfg("a")]).unwrap();
    let n = 4000;
    let started = Arc::new(AtomicBool::new(false));
    let worker = {
        let h = h.clone();
        let started = started.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::with_capacity(n);
            for i in 0..n {
                if i == 100 {
                    started.store(true, Ordering::SeqCst);
                }
                seen.push(body(h.run(&sample())));
            }
            seen
        })
    };
    while !started.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    h.reconfigure(vec![version_cfg("b")]).unwrap();
    let seen = worker.join().unwrap();
    assert_eq!(seen.len(), n, "every event transformed exactly once");
    assert!(seen.iter().all(|b| b == "a" || b == "b"));
    let first_b = seen
        .iter()
        .position(|b| b == "b")
        .expect("the reload took effect");
    assert!(first_b >= 100);
    assert!(
        seen[first_b..].iter().all(|b| b == "b"),
        "no event went back to the old version"
    );
    assert_eq!(h.status().generation, 2);
    assert_eq!(
        h.status().modules[0].calls,
        n as u64,
        "counters survive the reload"
    );
}

#[test]
fn in_flight_events_finish_on_their_version() {
    let h = ChainHandle::new(engine(), "t", vec![version_cfg("a")]).unwrap();
    let old = h.chain();
    h.reconfigure(vec![version_cfg("b")]).unwrap();
    assert_eq!(body(old.run(&sample())), "a");
    assert_eq!(body(h.run(&sample())), "b");
}

#[test]
fn failed_reload_keeps_the_old_version() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v.wasm");
    std::fs::copy(wasm("sy_test_version"), &p).unwrap();
    let h = ChainHandle::new(
        engine(),
        "t",
        vec![relaxed(&p).with_config([("version", "a")])],
    )
    .unwrap();
    assert_eq!(body(h.run(&sample())), "a");

    // The file is replaced by a broken one: reload fails, "a" keeps running.
    std::fs::write(&p, b"\0asm broken").unwrap();
    let e = h.reload().unwrap_err();
    assert!(e.message.contains("v.wasm"));
    assert_eq!(body(h.run(&sample())), "a");
    let st = h.status();
    assert_eq!(st.reload_failures, 1);
    assert_eq!(st.generation, 1);
    assert!(st
        .last_reload_error
        .unwrap()
        .message
        .contains("not a valid WebAssembly component"));

    // A config change to a module of the wrong contract fails too.
    assert!(h.reconfigure(vec![module("sy_test_oldabi")]).is_err());
    assert!(h.reconfigure(vec![module("sy_test_refuse")]).is_err());
    assert_eq!(body(h.run(&sample())), "a");
    assert_eq!(h.reload_failures(), 3);
    assert_eq!(
        h.module_files(),
        vec![p.clone()],
        "a failed reconfigure keeps the old configs"
    );

    // Fixed: the next reload succeeds and clears the error.
    std::fs::copy(wasm("sy_test_version"), &p).unwrap();
    h.reload().unwrap();
    assert!(h.last_reload_error().is_none());
    assert_eq!(body(h.run(&sample())), "a");
}

#[test]
fn watcher_reloads_a_changed_module() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.wasm");
    std::fs::copy(wasm("sy_test_echo"), &p).unwrap();
    let h = ChainHandle::new(
        engine(),
        "t",
        vec![relaxed(&p).with_config([("version", "b")])],
    )
    .unwrap();
    let _w = spawn_watcher(vec![h.clone()]).unwrap();
    assert_eq!(
        requests(h.run(&sample()))[0].content_type,
        "application/json"
    );
    // Replace the file the way deploys do: write elsewhere, rename over.
    let tmp = dir.path().join("m.wasm.new");
    std::fs::copy(wasm("sy_test_version"), &tmp).unwrap();
    std::fs::rename(&tmp, &p).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let ChainOutcome::Requests(r) = h.run(&sample()) {
            if r[0].body == b"b" {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the watcher did not reload: {:?}",
            h.status()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(h.status().generation, 2);
}

#[test]
fn concurrent_runs_share_the_pool() {
    let chain = Arc::new(Chain::load(engine(), "t", &[filter(), redact(), webhook()]).unwrap());
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let c = chain.clone();
            std::thread::spawn(move || {
                for _ in 0..300 {
                    assert_eq!(requests(c.run(&sample())).len(), 1);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for m in &chain.modules {
        assert_eq!(m.stats.calls.load(Ordering::Relaxed), 1800);
        assert!(
            m.stats.instantiations.load(Ordering::Relaxed) <= 7,
            "{}",
            m.name
        );
        assert!(m.idle_instances() <= engine().limits().max_idle_per_module);
    }
}

#[test]
fn run_chain_once_and_print_outcome() {
    let o = run_chain_once(&[version_cfg("hello")], &sample()).unwrap();
    let mut out = Vec::new();
    print_outcome(&o, &mut out).unwrap();
    let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(line["body"], "hello");
    assert_eq!(line["module"], "sy_test_version");

    let bin = ChainOutcome::Requests(vec![OutRequest {
        module: "m".into(),
        body: vec![0xff, 0x00, 0x01],
        content_type: "application/octet-stream".into(),
        method: Some("PUT".into()),
        path: None,
        headers: vec![("x-a".into(), "1".into())],
    }]);
    let mut out = Vec::new();
    print_outcome(&bin, &mut out).unwrap();
    let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(line["body_base64"], "/wAB");
    assert!(line.get("body").is_none());
    assert_eq!(line["method"], "PUT");

    let mut out = Vec::new();
    print_outcome(
        &ChainOutcome::Dropped {
            module: "filter".into(),
        },
        &mut out,
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "{\"dropped\":{\"module\":\"filter\"}}\n"
    );
    let mut out = Vec::new();
    print_outcome(
        &ChainOutcome::Failed {
            module: "m".into(),
            message: "x".into(),
            retryable: false,
        },
        &mut out,
    )
    .unwrap();
    assert!(String::from_utf8(out).unwrap().contains("\"failed\""));
}

#[derive(Debug, serde::Deserialize)]
struct Consumer {
    modules: Vec<ModuleConfig>,
}

#[test]
fn module_config_parses_and_validates() {
    let echo = wasm("sy_test_echo");
    let toml_text = format!(
        r#"
[[modules]]
path = "{}"
deadline = "50ms"
memory = "32MiB"
recycle_after_calls = 500
recycle_above = "24MiB"
config = {{ fields = "email,phone", strict = true, max = 3, ratio = 0.5 }}

[[modules]]
name = "second"
path = "{}"
memory = 1048576
"#,
        echo.display(),
        echo.display()
    );
    let c: Consumer = toml::from_str(&toml_text).unwrap();
    let m = &c.modules[0];
    assert_eq!(m.display_name(), "sy_test_echo");
    assert_eq!(m.deadline, Some(Duration::from_millis(50)));
    assert_eq!(m.memory, Some(ByteSize(32 * limits::MIB)));
    assert_eq!(m.recycle_after_calls, Some(500));
    assert_eq!(m.recycle_above, Some(ByteSize(24 * limits::MIB)));
    assert_eq!(c.modules[1].recycle_after_calls, None);
    let want: BTreeMap<String, String> = [
        ("fields", "email,phone"),
        ("strict", "true"),
        ("max", "3"),
        ("ratio", "0.5"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(m.config, want);
    assert_eq!(c.modules[1].memory, Some(ByteSize(limits::MIB)));
    let mut errors = Vec::new();
    validate_chain(&c.modules, "consumers.crm.modules", &mut errors);
    assert!(errors.is_empty(), "{errors:?}");

    // Unknown fields are refused.
    let e = toml::from_str::<Consumer>("[[modules]]\npath = \"x.wasm\"\nmemroy = \"1MiB\"\n")
        .unwrap_err();
    assert!(e.to_string().contains("memroy"), "{e}");
    // Nested tables are not config values.
    assert!(toml::from_str::<Consumer>(
        "[[modules]]\npath = \"x.wasm\"\nconfig = { a = { b = 1 } }\n"
    )
    .is_err());
    // Bad sizes.
    assert!(toml::from_str::<Consumer>(
        "[[modules]]\npath = \"x.wasm\"\nmemory = \"64 parsecs\"\n"
    )
    .is_err());

    let bad = vec![
        ModuleConfig {
            name: Some("bad name!".into()),
            path: "does/not/exist.wasm".into(),
            deadline: Some(Duration::ZERO),
            memory: Some(ByteSize(1024 * limits::MIB)),
            recycle_after_calls: Some(0),
            recycle_above: None,
            config: BTreeMap::new(),
            emit_topics: Vec::new(),
        },
        ModuleConfig::new(&echo),
        ModuleConfig::new(&echo),
        ModuleConfig {
            name: Some("big_mark".into()),
            memory: Some(ByteSize(16 * limits::MIB)),
            recycle_above: Some(ByteSize(32 * limits::MIB)),
            ..ModuleConfig::new(&echo)
        },
        ModuleConfig {
            name: Some("default_cap_mark".into()),
            recycle_above: Some(ByteSize(65 * limits::MIB)),
            ..ModuleConfig::new(&echo)
        },
    ];
    let mut errors = Vec::new();
    validate_chain(&bad, "consumers.crm.modules", &mut errors);
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "consumers.crm.modules[0].name",
            "consumers.crm.modules[0].path",
            "consumers.crm.modules[0].deadline",
            "consumers.crm.modules[0].memory",
            "consumers.crm.modules[0].recycle_after_calls",
            "consumers.crm.modules[2].name",
            "consumers.crm.modules[3].recycle_above",
            "consumers.crm.modules[4].recycle_above",
        ],
        "{errors:?}"
    );
    assert!(
        errors[6]
            .message
            .contains("at most the module's memory cap, 16 MiB"),
        "{errors:?}"
    );
}

#[test]
fn byte_sizes() {
    assert_eq!("64MiB".parse::<ByteSize>().unwrap().0, 64 * limits::MIB);
    assert_eq!("512 KiB".parse::<ByteSize>().unwrap().0, 512 * 1024);
    assert_eq!("1GiB".parse::<ByteSize>().unwrap().0, 1 << 30);
    assert_eq!("10MB".parse::<ByteSize>().unwrap().0, 10_000_000);
    assert_eq!("4096".parse::<ByteSize>().unwrap().0, 4096);
    assert!("MiB".parse::<ByteSize>().is_err());
    assert!("12 XB".parse::<ByteSize>().is_err());
    assert_eq!(ByteSize(64 * limits::MIB).to_string(), "64 MiB");
}

/// `Chain::run` called from inside a Tokio runtime: guests that write to
/// stderr (every panicking Rust guest does) must not hit wasmtime-wasi's
/// "Cannot start a runtime from within a runtime" panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_from_inside_a_multi_thread_runtime() {
    let chain = Chain::load(engine(), "t", &[module("sy_test_trap")]).unwrap();
    let (_, msg, _) = failed(chain.run(&sample()));
    assert!(msg.contains("deliberate panic"), "{msg}");
    let echo = Chain::load(engine(), "t", &[module("sy_test_echo")]).unwrap();
    requests(echo.run(&sample()));
}

#[tokio::test(flavor = "current_thread")]
async fn run_from_inside_a_current_thread_runtime() {
    let chain = Chain::load(engine(), "t", &[module("sy_test_trap")]).unwrap();
    let (_, msg, _) = failed(chain.run(&sample()));
    assert!(msg.contains("deliberate panic"), "{msg}");
}

/// Every WASI call, made from a chain run by async code (the router's
/// delivery path), is denied or served: opening a UDP socket used to panic
/// inside wasmtime-wasi's synchronous binding when the caller was a Tokio
/// worker. Both the async entry (`ChainHandle::run_async`) and the
/// synchronous one called inside a runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_wasi_call_is_denied_or_served_when_run_from_async_code() {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut ev = sample();
    ev.data = Some(serde_json::json!({
        "path": "/etc/passwd",
        "udp": udp.local_addr().unwrap().to_string(),
        "tcp": tcp.local_addr().unwrap().to_string(),
    }));
    let handle = ChainHandle::new(engine(), "t", vec![module("sy_test_escape")]).unwrap();
    let from_async = requests(handle.run_async(ev.clone()).await);
    let from_sync = requests(handle.run(&ev));
    for r in [&from_async[0], &from_sync[0]] {
        let report: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        denied(&report, "udp_send", "Permission denied (os error 2)");
        denied(&report, "tcp_connect", "Permission denied (os error 2)");
        denied(
            &report,
            "dns_lookup",
            "failed to lookup address information: Non-recoverable error",
        );
        denied(
            &report,
            "read_etc_passwd",
            "No such file or directory (os error 44)",
        );
        assert!(report["wall_clock_ms"].is_u64() && report["random"].is_string());
    }
    let mut buf = [0u8; 64];
    assert_eq!(
        udp.recv_from(&mut buf).map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
}

/// A guest that waits in the host (a sleep is a `wasi:io/poll` wait on a
/// clock, where epoch interruption cannot reach it) is stopped at its
/// deadline like a guest that loops, and its instance is discarded.
#[test]
fn a_wait_in_the_host_ends_at_the_deadline() {
    let mut cfg = bare("sy_test_escape");
    cfg.deadline = Some(Duration::from_millis(300));
    let chain = Chain::load(engine(), "t", &[cfg]).unwrap();
    let mut ev = sample();
    ev.data = Some(serde_json::json!({"sleep_ms": 20_000}));
    let t = Instant::now();
    let (m, msg, retryable) = failed(chain.run(&ev));
    let took = t.elapsed();
    assert_eq!(
        (m.as_str(), msg.as_str(), retryable),
        ("sy_test_escape", "timed out after 300ms", false)
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(chain.modules[0].idle_instances(), 0);
    // A short sleep within the deadline is served.
    ev.data = Some(serde_json::json!({"sleep_ms": 10}));
    let r = requests(chain.run(&ev));
    let report: serde_json::Value = serde_json::from_slice(&r[0].body).unwrap();
    assert_eq!(report["slept_ms"], 10);
}

// ---------------------------------------------------------------------------
// Malformed modules: each is refused at load with an error that names the
// file and the reason, and the engine keeps loading and running good ones.
// (Truncated files, garbage bytes, a missing file: `corrupt_truncated_or_
// missing_files_fail_naming_the_file`; an older contract: `old_contract_
// version_is_refused_with_a_clear_message`; an empty component:
// `component_of_another_world_is_refused`.)

/// Write `wat` (text format, core module or component) as a binary file.
fn wat_file(dir: &Path, name: &str, wat: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, wat::parse_str(wat).unwrap()).unwrap();
    p
}

/// The engine still loads and runs a good module after a refused one.
fn engine_still_works() {
    let echo = Chain::load(engine(), "t", &[module("sy_test_echo")]).unwrap();
    requests(echo.run(&sample()));
}

#[test]
fn core_module_is_refused_as_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let p = wat_file(
        dir.path(),
        "core.wasm",
        r#"(module (memory (export "memory") 1) (func (export "transform") (result i32) i32.const 0))"#,
    );
    let e = load_err(&[ModuleConfig::new(&p)]);
    assert_eq!(e.file, p.display().to_string());
    assert_eq!(
        e.message,
        format!(
            "module {} is a core WebAssembly module, not a component: build it for wasm32-wasip2 with switchyard-guest (see guest-sdk/README.md)",
            p.display()
        )
    );
    engine_still_works();
}

#[test]
fn random_bytes_after_a_component_header_are_refused() {
    // Pseudo-random (xorshift) bodies behind a valid component preamble: the
    // parser, not the loader, must be what fails, and fail cleanly.
    let dir = tempfile::tempdir().unwrap();
    let mut s: u64 = 0x2545_F491_4F6C_DD1D;
    for i in 0..20 {
        let mut bytes = b"\0asm\x0d\x00\x01\x00".to_vec();
        for _ in 0..(16 + i * 37) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            bytes.push(s as u8);
        }
        let p = dir.path().join(format!("random{i}.wasm"));
        std::fs::write(&p, &bytes).unwrap();
        let e = load_err(&[ModuleConfig::new(&p)]);
        assert!(
            e.message.starts_with(&format!(
                "module {} is not a valid WebAssembly component: ",
                p.display()
            )),
            "{}",
            e.message
        );
    }
    engine_still_works();
}

/// A component that exports the guest interface under the right name but
/// with the wrong shape (`init` and `transform` take nothing), optionally
/// importing `extra_import` as well.
fn wrong_shape_component(extra_import: &str) -> String {
    format!(
        r#"(component
  {extra_import}
  (core module $m (func (export "f")))
  (core instance $i (instantiate $m))
  (func $f (canon lift (core func $i "f")))
  (instance $g (export "init" (func $f)) (export "transform" (func $f)))
  (export "switchyard:transform/guest@0.1.0" (instance $g))
)"#
    )
}

#[test]
fn right_interface_name_with_the_wrong_function_types_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = wat_file(dir.path(), "shape.wasm", &wrong_shape_component(""));
    let e = load_err(&[ModuleConfig::new(&p)]);
    // The names match (the contract check passes); the types do not, which
    // shows when the first instance's exports are looked up, before any
    // guest function runs.
    assert_eq!(
        e.message,
        format!(
            "module {}: does not implement world switchyard:transform/transformer@0.1.0: failed to convert function to given type: type mismatch with parameters: expected 1-tuple, found 0-tuple",
            p.display()
        )
    );
    engine_still_works();
}

#[test]
fn component_importing_what_the_router_does_not_provide_is_refused() {
    // e.g. outgoing HTTP: guests get no network (see the sandbox tests).
    let dir = tempfile::tempdir().unwrap();
    let p = wat_file(
        dir.path(),
        "http.wasm",
        &wrong_shape_component(
            r#"(import "wasi:http/outgoing-handler@0.2.0" (instance (export "handle" (func))))"#,
        ),
    );
    let e = load_err(&[ModuleConfig::new(&p)]);
    let want = format!(
        "module {} needs imports this router does not provide: ",
        p.display()
    );
    assert!(e.message.starts_with(&want), "{}", e.message);
    assert!(
        e.message.contains("wasi:http/outgoing-handler@0.2.0"),
        "names the import: {}",
        e.message
    );
    engine_still_works();
}

#[test]
fn memory_minimum_above_the_cap_fails_instantiation_naming_the_cap() {
    // sy_test_bigmem declares a 128 MiB minimum memory (its build.rs).
    let e = load_err(&[module("sy_test_bigmem")]);
    let f = wasm("sy_test_bigmem").display().to_string();
    assert_eq!(e.file, f);
    assert_eq!(
        e.message,
        format!("module {f}: instantiation failed: exceeded memory cap 64 MiB")
    );
    let mut cfg = module("sy_test_bigmem");
    cfg.memory = Some(ByteSize(100 * limits::MIB));
    assert_eq!(
        load_err(&[cfg]).message,
        format!("module {f}: instantiation failed: exceeded memory cap 100 MiB")
    );
    // Control: the same file loads and runs under a cap that fits it.
    let mut cfg = module("sy_test_bigmem");
    cfg.memory = Some(ByteSize(256 * limits::MIB));
    let chain = Chain::load(engine(), "t", &[cfg]).unwrap();
    requests(chain.run(&sample()));
    engine_still_works();
}

fn badinit(mode: &str) -> ModuleConfig {
    bare("sy_test_badinit").with_config([("mode", mode)])
}

#[test]
fn init_that_never_returns_hits_the_deadline() {
    let f = wasm("sy_test_badinit").display().to_string();
    let t = Instant::now();
    let e = load_err(&[badinit("loop")]);
    let took = t.elapsed();
    assert_eq!(e.file, f);
    assert_eq!(
        e.message,
        format!("module {f}: init failed: timed out after 100ms")
    );
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_secs(5),
        "took {took:?}"
    );
    // A custom deadline applies to init as well.
    let mut cfg = badinit("loop");
    cfg.deadline = Some(Duration::from_millis(30));
    assert_eq!(
        load_err(&[cfg]).message,
        format!("module {f}: init failed: timed out after 30ms")
    );
    engine_still_works();
}

#[test]
fn init_that_traps_fails_the_load_with_the_panic_message() {
    let f = wasm("sy_test_badinit").display().to_string();
    let e = load_err(&[badinit("trap")]);
    assert!(
        e.message
            .starts_with(&format!("module {f}: init failed: trapped: ")),
        "{}",
        e.message
    );
    assert!(
        e.message
            .contains("sy-test-badinit: deliberate panic in init"),
        "the guest's panic message is reported: {}",
        e.message
    );
    // Control: the same module with an init that returns loads and runs.
    let mut ok = badinit("ok");
    ok.deadline = Some(RELAXED_DEADLINE);
    let chain = Chain::load(engine(), "t", &[ok]).unwrap();
    requests(chain.run(&sample()));
}

#[test]
fn a_bad_module_reload_keeps_the_working_chain() {
    // Every malformed kind, as a hot reload of a running chain.
    let dir = tempfile::tempdir().unwrap();
    let core = wat_file(dir.path(), "core.wasm", "(module)");
    let h = ChainHandle::new(engine(), "t", vec![version_cfg("a")]).unwrap();
    let bad = [
        ModuleConfig::new(&core),
        badinit("loop"),
        badinit("trap"),
        bare("sy_test_bigmem"),
    ];
    for (i, cfg) in bad.into_iter().enumerate() {
        let file = cfg.path.display().to_string();
        let e = h.reconfigure(vec![cfg]).unwrap_err();
        assert_eq!(e.file, file);
        assert_eq!(body(h.run(&sample())), "a", "old chain still runs");
        let st = h.status();
        assert_eq!(st.reload_failures, i as u64 + 1);
        assert_eq!(st.generation, 1);
        assert_eq!(st.last_reload_error.unwrap().message, e.message);
    }
}

// ---------------------------------------------------------------------------
// Sandbox: sy_test_escape tries files, environment, network and processes
// on every event and reports what it got. Every attempt must be denied.

/// Run sy_test_escape once and return its report.
fn escape_report(data: serde_json::Value) -> serde_json::Value {
    let chain = Chain::load(engine(), "t", &[module("sy_test_escape")]).unwrap();
    let mut ev = sample();
    ev.data = Some(data);
    let r = requests(chain.run(&ev));
    assert_eq!(r.len(), 1);
    serde_json::from_slice(&r[0].body).unwrap()
}

/// `report[key]` is a denial: `{"ok": false, "error": <want>}`.
fn denied(report: &serde_json::Value, key: &str, want: &str) {
    assert_eq!(
        report[key],
        serde_json::json!({"ok": false, "error": want}),
        "{key}: {report:#}"
    );
}

#[test]
fn guest_cannot_read_files_env_or_reach_the_network() {
    use std::net::{TcpListener, UdpSocket};
    let dir = tempfile::tempdir().unwrap();
    let secret_text = format!("sy-secret-{}", std::process::id());
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, &secret_text).unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    // An env var that is certainly set in this process (cargo sets it).
    assert!(std::env::var("CARGO_PKG_NAME").is_ok());

    let report = escape_report(serde_json::json!({
        "path": secret.display().to_string(),
        "env": "CARGO_PKG_NAME",
        "tcp": tcp.local_addr().unwrap().to_string(),
        "udp": udp.local_addr().unwrap().to_string(),
    }));
    let text = report.to_string();
    eprintln!("sy_test_escape report: {report:#}");

    // Files: no preopened directory, so no path resolves.
    let no_fs = "No such file or directory (os error 44)";
    denied(&report, "read_etc_passwd", no_fs);
    denied(&report, "read_dir_root", no_fs);
    denied(&report, "read_dir_cwd", no_fs);
    denied(&report, "read_path", no_fs);
    denied(&report, "open_path", no_fs);
    denied(&report, "write_next_to_path", no_fs);
    assert!(!text.contains(&secret_text) && !text.contains("root:x:0:0"));
    assert!(!dir.path().join("secret.txt.escaped").exists());
    // Environment and arguments: empty.
    assert_eq!(
        report["env_vars"],
        serde_json::json!({"count": 0, "vars": []})
    );
    denied(&report, "env_var", "environment variable not found");
    assert_eq!(report["args"], serde_json::json!([]));
    // No preopened directory, so the working directory is WASI's "/" (not
    // the router's, which would tell the guest where it runs).
    assert_eq!(
        report["current_dir"],
        serde_json::json!({"ok": true, "value": "\"/\""})
    );
    // Network: denied by the host before any packet leaves.
    denied(&report, "tcp_connect", "Permission denied (os error 2)");
    denied(&report, "udp_send", "Permission denied (os error 2)");
    denied(
        &report,
        "dns_lookup",
        "failed to lookup address information: Non-recoverable error",
    );
    assert_eq!(
        tcp.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "the test's TCP listener accepted a connection from the guest"
    );
    let mut buf = [0u8; 64];
    assert_eq!(
        udp.recv_from(&mut buf).map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "the test's UDP socket received a datagram from the guest"
    );
    // Processes: none.
    denied(
        &report,
        "spawn_process",
        "operation not supported on this platform",
    );
    // Granted by design: the wall clock (real time) and randomness.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let guest_ms = report["wall_clock_ms"].as_i64().unwrap();
    assert!(
        (now_ms - guest_ms).abs() < 60_000,
        "guest clock {guest_ms} vs {now_ms}"
    );
    assert!(report["random"].is_string());
}

/// An event a module emits must have a valid topic, whether it goes on to
/// the next module or is sent as the canonical event: otherwise the event
/// fails (not retryable) naming the module.
#[test]
fn an_emitted_event_with_an_invalid_topic_fails_naming_the_module() {
    let bad = module("sy_test_echo").with_config([("topic", "not a topic")]);
    let mut named = module("sy_test_echo").with_config([("topic", "x".repeat(257))]);
    named.name = Some("renamer".into());
    for (chain, who) in [
        (vec![bad.clone()], "sy_test_echo"),
        (vec![bad, module("sy_test_echo")], "sy_test_echo"),
        (vec![named], "renamer"),
    ] {
        let chain = Chain::load(engine(), "t", &chain).unwrap();
        let (module, message, retryable) = failed(chain.run(&sample()));
        assert_eq!(module, who);
        assert!(
            message.contains("topic") && message.contains("1-256"),
            "{message}"
        );
        assert!(!message.contains("not a topic"), "not quoted: {message}");
        assert!(!retryable);
    }
    // A valid one passes.
    let ok = module("sy_test_echo").with_config([("topic", "customer.renamed")]);
    let chain = Chain::load(engine(), "t", &[ok]).unwrap();
    let r = requests(chain.run(&sample()));
    let v: serde_json::Value = serde_json::from_slice(&r[0].body).unwrap();
    assert_eq!(v["topic"], "customer.renamed");
}

// ---- contract 0.2: 0.1 modules, batching, kv and emit ----

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn customer_event(id: &str, account: &str, email: &str) -> Event {
    let mut e = sample();
    e.id = id.into();
    e.account_id = account.into();
    e.topic = "customer.banner-a.created".into();
    e.op = Op::Event;
    e.before = None;
    e.after = None;
    e.data = Some(serde_json::json!({ "email": email }));
    e.consent = Default::default();
    e
}

/// A module built for contract 0.1.0 (the Braze module as main built it
/// before 0.2, kept as a binary fixture) loads and runs unchanged, next to
/// the same module rebuilt for 0.2: same request.
#[test]
fn a_module_built_for_0_1_loads_and_runs_unchanged() {
    let old = Chain::load(engine(), "t", &[relaxed(&fixture("braze-0.1.0.wasm"))]).unwrap();
    assert_eq!(old.modules[0].version, "0.1.0");
    assert!(!old.modules[0].batches);
    let new = Chain::load(engine(), "t", &[module("braze")]).unwrap();
    assert_eq!(new.modules[0].version, "0.2.0");
    assert!(new.modules[0].batches);
    let ev = customer_event("e1", "42", "ada@example.com");
    let a = requests(old.run(&ev));
    let b = requests(new.run(&ev));
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].path.as_deref(), Some("/users/track"));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&a[0].body).unwrap(),
        serde_json::json!({"attributes":[{"external_id":"42","email":"ada@example.com"}]})
    );
    assert_eq!(
        (&a[0].body, &a[0].path, &a[0].method),
        (&b[0].body, &b[0].path, &b[0].method)
    );
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Braze batching through the host: the prefix hands the event on, the
/// module builds one `/users/track` of up to 75 attributes objects per
/// request, and reads Braze's per-object "minor errors".
#[test]
fn braze_builds_batches_and_reads_per_item_errors() {
    let chain = Arc::new(Chain::load(engine(), "t", &[module("braze")]).unwrap());
    let rt = rt();
    let mut items = Vec::new();
    for i in 0..80 {
        let ev = customer_event(&format!("e{i}"), &format!("a{i}"), &format!("u{i}@x.com"));
        let (p, fx) = rt.block_on(chain.clone().prefix_async(ev, Arc::new(NoKv)));
        assert!(fx.is_empty());
        match p {
            PrefixOutcome::Items {
                items: it,
                requests,
            } => {
                assert!(requests.is_empty());
                items.extend(it);
            }
            other => panic!("{other:?}"),
        }
    }
    let BatchOutcome::Plan(plan) = rt.block_on(chain.clone().batch_async(items)) else {
        panic!("batch failed")
    };
    assert_eq!(plan.requests.len(), 2);
    let (r0, idx0) = &plan.requests[0];
    assert_eq!(
        (r0.method.as_deref(), r0.path.as_deref()),
        (Some("POST"), Some("/users/track"))
    );
    let body: serde_json::Value = serde_json::from_slice(&r0.body).unwrap();
    assert_eq!(body["attributes"].as_array().unwrap().len(), 75);
    assert_eq!(
        body["attributes"][0],
        serde_json::json!({"external_id":"a0","email":"u0@x.com"})
    );
    assert_eq!(idx0, &(0..75).collect::<Vec<_>>());
    assert_eq!(plan.requests[1].1, (75..80).collect::<Vec<_>>());
    let answer = br#"{"message":"success","errors":[{"type":"'email' is invalid","input_array":"attributes","index":2}]}"#;
    let v = rt
        .block_on(
            chain
                .clone()
                .batch_response_async(r0.clone(), 75, 201, answer.to_vec()),
        )
        .unwrap();
    assert_eq!(v.len(), 75);
    assert_eq!(v[0], ItemVerdict::Ok);
    assert!(matches!(&v[2], ItemVerdict::Fail(m) if m.contains("attributes[2]")));
    // No per-item detail: the status decides.
    let v = rt
        .block_on(chain.batch_response_async(r0.clone(), 75, 500, b"oops".to_vec()))
        .unwrap();
    assert!(v.is_empty());
}

/// What a KvStore saw; holds committed values.
struct MapKv(std::sync::Mutex<BTreeMap<String, Vec<u8>>>);
impl KvStore for MapKv {
    fn get(&self, module: &str, account: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .get(&format!("{module}/{account}/{key}"))
            .cloned())
    }
}

fn stateful(extra: &[(&str, &str)], emit: &[&str]) -> ModuleConfig {
    let mut m = module("sy_test_stateful").with_config(extra.iter().copied());
    m.emit_topics = emit.iter().map(|s| s.to_string()).collect();
    m
}

/// kv writes and emits are staged, returned with the outcome, never applied
/// by the host itself; emitted events carry deterministic ids.
#[test]
fn kv_and_emit_are_staged_with_deterministic_ids() {
    let chain = Chain::load(engine(), "c", &[stateful(&[], &["customer.parent.*"])]).unwrap();
    let kv = Arc::new(MapKv(Default::default()));
    let ev = customer_event("e1", "42", "a@x.com");
    let (o, fx) = chain.run_effects(&ev, kv.clone());
    assert_eq!(requests(o)[0].body, b"1");
    assert_eq!(fx.writes.len(), 1);
    assert_eq!(fx.writes[0].key, "count");
    assert_eq!(fx.writes[0].value.as_deref(), Some(&b"1"[..]));
    assert_eq!(fx.emits.len(), 1);
    let e = &fx.emits[0];
    assert_eq!(e.id, emit_id("c", "sy_test_stateful", "e1", 0));
    assert_eq!(e.topic, "customer.parent.first_seen");
    assert_eq!(e.account_id, "42");
    assert_eq!(e.data, Some(serde_json::json!({"first": "e1"})));
    assert_eq!(
        e.attributes.get("emitted_from").map(String::as_str),
        Some("e1")
    );
    // Nothing was committed: the same event again stages the same effects.
    let (_, again) = chain.run_effects(&ev, kv.clone());
    assert_eq!(again.writes, fx.writes);
    assert_eq!(again.emits[0].id, fx.emits[0].id);
    // Once the caller commits, the module reads the committed value.
    kv.0.lock()
        .unwrap()
        .insert("sy_test_stateful/42/count".into(), b"1".to_vec());
    let (o, fx2) = chain.run_effects(&customer_event("e2", "42", "a@x.com"), kv);
    assert_eq!(requests(o)[0].body, b"2");
    assert!(fx2.emits.is_empty());
}

/// The host bounds emits: a topic outside `emit_topics`, or no
/// `emit_topics` at all, fails the event (not retryable) naming the reason.
#[test]
fn emits_outside_the_allowed_topics_are_refused() {
    let chain = Chain::load(
        engine(),
        "c",
        &[stateful(
            &[("bad_topic", "order.x.created")],
            &["customer.parent.*"],
        )],
    )
    .unwrap();
    let (o, fx) = chain.run_effects(&customer_event("e1", "1", "a@x.com"), Arc::new(NoKv));
    let (_, msg, retryable) = failed(o);
    assert!(msg.contains("not in this module's emit_topics"), "{msg}");
    assert!(!retryable);
    assert!(fx.is_empty(), "a failed event stages nothing");
    let chain = Chain::load(engine(), "c2", &[stateful(&[], &[])]).unwrap();
    let (_, msg, _) = failed(chain.run(&customer_event("e1", "1", "a@x.com")));
    assert!(msg.contains("may not emit"), "{msg}");
}
