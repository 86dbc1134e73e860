//! The audit trail at scale: `switchyard audit --account A` for an account
//! with 1,000 records among BENCH_AUDIT_RECORDS records in all (default
//! 1,000,000 over BENCH_AUDIT_ACCOUNTS = 20,000 accounts; the issue's
//! 10,000,000 needs ~3 GB of Redis memory: set BENCH_AUDIT_RECORDS=10000000
//! on a machine that has it).
//!
//! Then the purge of a deleted account: BENCH_PURGE_LOG events (default
//! 1,000,000, the issue's size) appended through `switchyard_store::Log`
//! with the account index on, 1,000 of them the target account's, spread
//! through the log; `purge_account` is timed (it finds the entries through
//! the index; no scan of the log).
//!
//! `cargo bench -p switchyard --bench privacy`. The records are written
//! straight into the per-account audit streams, in the format the router
//! writes (`switchyard_store::privacy::AuditRecord` as JSON in field `r`),
//! pipelined; then the real binary answers `audit --account` (process
//! start, config load, Redis connect and the read included), 5 runs.

mod common;

use std::process::Command;
use std::time::Instant;

use common::{env_or, free_port, start_redis};
use switchyard_store::privacy::{audit_key, AuditRecord};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let total = env_or("BENCH_AUDIT_RECORDS", 1_000_000);
    let accounts = env_or("BENCH_AUDIT_ACCOUNTS", 20_000).max(2);
    let partitions = 16u32;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _redis = start_redis(port, dir.path());
    let cfg = dir.path().join("switchyard.toml");
    std::fs::write(
        &cfg,
        format!("[redis]\nurl = \"redis://127.0.0.1:{port}\"\n[log]\npartitions = {partitions}\n"),
    )
    .unwrap();
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_connection()
        .unwrap();
    // The log's partition guard, as a router would have written it.
    let _: () = redis::cmd("HSET")
        .arg("sy:meta")
        .arg("partitions")
        .arg(partitions)
        .query(&mut conn)
        .unwrap();

    let target = "member-target";
    let rec = |i: u64, account: &str| AuditRecord {
        id: String::new(),
        event: format!("{account}-e{i}"),
        consumer: ["esp", "sms", "ads"][(i % 3) as usize].into(),
        topic: "customer.banner-a.updated".into(),
        outcome: if i % 5 == 0 { "filtered" } else { "delivered" }.into(),
        rule: if i % 5 == 0 {
            "consent:sms".into()
        } else {
            String::new()
        },
        status: None,
        modules: "webhook@0123456789ab".into(),
        policy: "a1b2c3d4e5f6".into(),
        jurisdiction: "US".into(),
        consent: "consent to sms is granted".into(),
        fields: vec!["data.email:drop".into()],
        time: "2026-12-01T06:00:00Z".into(),
    };
    let key_of = |a: &str| audit_key("sy", switchyard_store::log::partition_for(a, partitions), a);
    let fill = Instant::now();
    let others = total.saturating_sub(1000);
    let mut pipe = redis::pipe();
    let mut n = 0u64;
    for i in 0..others {
        let a = format!("member-{}", i % (accounts - 1));
        let body = serde_json::to_string(&rec(i, &a)).unwrap();
        pipe.cmd("XADD")
            .arg(key_of(&a))
            .arg("*")
            .arg("r")
            .arg(body)
            .ignore();
        n += 1;
        if n % 10_000 == 0 {
            let _: () = pipe.query(&mut conn).unwrap();
            pipe = redis::pipe();
        }
        // The target account's records are spread through the fill.
        if i % (others / 1000).max(1) == 0 {
            let body = serde_json::to_string(&rec(i, target)).unwrap();
            pipe.cmd("XADD")
                .arg(key_of(target))
                .arg("*")
                .arg("r")
                .arg(body)
                .ignore();
        }
    }
    let _: () = pipe.query(&mut conn).unwrap();
    let target_n: u64 = redis::cmd("XLEN")
        .arg(key_of(target))
        .query(&mut conn)
        .unwrap();
    let info: String = redis::cmd("INFO").arg("memory").query(&mut conn).unwrap();
    let used = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory_human:"))
        .unwrap_or("?")
        .trim()
        .to_string();
    println!(
        "filled {} audit records over {accounts} accounts (+ {target_n} of {target}) in {:.1}s; redis used_memory {used}",
        others + target_n,
        fill.elapsed().as_secs_f64()
    );

    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["audit", "--json", "--account", target, "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        let dt = t.elapsed();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines = String::from_utf8_lossy(&out.stdout).lines().count() as u64;
        assert_eq!(lines, target_n, "audit printed every record of the account");
        times.push(dt.as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "switchyard audit --account {target} ({target_n} records among {}): median {:.1} ms, max {:.1} ms (5 runs, whole process)",
        others + target_n,
        times[2],
        times[4]
    );
    let _: () = redis::cmd("FLUSHALL").query(&mut conn).unwrap();
    purge(port, partitions);
}

fn purge(port: u16, partitions: u32) {
    use switchyard_core::event::{Event, Op};
    let total = env_or("BENCH_PURGE_LOG", 1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let redis_cfg: switchyard_store::RedisConfig = toml::from_str(&format!(
        "url = \"redis://127.0.0.1:{port}\"\ntimeout = \"30s\""
    ))
    .unwrap();
    let log_cfg: switchyard_store::LogConfig =
        toml::from_str(&format!("partitions = {partitions}")).unwrap();
    rt.block_on(async {
        let log = switchyard_store::Log::connect(&redis_cfg, &log_cfg)
            .await
            .unwrap();
        log.index_accounts();
        let target = "member-deleted";
        let now = chrono::Utc::now();
        let every = (total / 1000).max(1);
        let fill = Instant::now();
        let mut batch = Vec::with_capacity(1000);
        for i in 0..total {
            let account = if i % every == 0 {
                target.to_string()
            } else {
                format!("member-{}", i % 50_000)
            };
            batch.push(Event {
                id: format!("e{i}"),
                topic: "customer.banner-a.updated".into(),
                source: "bench".into(),
                op: Op::Event,
                account_id: account,
                key: None,
                before: None,
                after: None,
                data: Some(serde_json::json!({"tier": "gold", "n": i})),
                changed: vec![],
                occurred_at: now,
                ingested_at: now,
                commit: None,
                trace: None,
                consent: Default::default(),
                attributes: Default::default(),
            });
            if batch.len() == 1000 {
                log.append_checked(&batch, |_| false).await.unwrap();
                batch.clear();
            }
        }
        if !batch.is_empty() {
            log.append_checked(&batch, |_| false).await.unwrap();
        }
        let p = log.partition_of(target);
        let mut conn = log.conn().await.unwrap();
        let len: u64 = redis::cmd("XLEN")
            .arg(log.keys().stream(p))
            .query_async(&mut conn)
            .await
            .unwrap();
        println!(
            "appended {total} events (account index on) in {:.1}s; the target's partition holds {len}",
            fill.elapsed().as_secs_f64()
        );
        let consumers = vec!["esp".to_string(), "sms".to_string(), "ads".to_string()];
        let t = Instant::now();
        let n = switchyard_store::privacy::purge_account(
            &mut conn,
            "sy",
            p,
            target,
            "99999999999999-0",
            &consumers,
        )
        .await
        .unwrap();
        let dt = t.elapsed();
        assert_eq!(n.log, total.div_ceil(every), "every entry of the account purged");
        let after: u64 = redis::cmd("XLEN")
            .arg(log.keys().stream(p))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(after, len - n.log);
        println!(
            "purge of {} events of one account in a log of {total}: {:.1} ms (3 consumers' DLQs and defer lists included)",
            n.log,
            dt.as_secs_f64() * 1000.0
        );
    });
}
