//! `switchyard tail`: print events from the log as JSON lines.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Context;
use globset::Glob;
use redis::streams::{StreamReadOptions, StreamReadReply};

use crate::config::Config;
use crate::log::{decode_entry, Log};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum From {
    Earliest,
    Latest,
}

pub struct TailArgs {
    pub topic: Option<String>,
    pub account: Option<String>,
    pub from: From,
    /// Stop after this many events.
    pub limit: Option<usize>,
    /// Stop when caught up instead of waiting for new events.
    pub no_follow: bool,
}

pub async fn tail(
    config: &Config,
    args: TailArgs,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let log = Log::connect(config)
        .await
        .context("connecting to Redis (redis.url)")?;
    let topic = match &args.topic {
        Some(g) => Some(
            Glob::new(g)
                .with_context(|| format!("--topic `{g}` is not a valid glob"))?
                .compile_matcher(),
        ),
        None => None,
    };
    let parts: Vec<u32> = match &args.account {
        Some(a) => vec![log.partition_of(a)],
        None => (0..log.partitions()).collect(),
    };
    let mut conn = log.conn().await?;
    let mut cursors: BTreeMap<String, (u32, String)> = BTreeMap::new();
    for p in parts {
        let key = log.keys().stream(p);
        let start = match args.from {
            From::Earliest => "0-0".to_string(),
            From::Latest => {
                let last: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
                    .arg(&key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn)
                    .await?;
                last.ids
                    .first()
                    .map(|e| e.id.clone())
                    .unwrap_or_else(|| "0-0".into())
            }
        };
        cursors.insert(key, (p, start));
    }
    let mut printed = 0usize;
    loop {
        let keys: Vec<&String> = cursors.keys().collect();
        let ids: Vec<&String> = cursors.values().map(|(_, id)| id).collect();
        let mut opts = StreamReadOptions::default().count(500);
        if !args.no_follow {
            opts = opts.block(1000);
        }
        let reply: Option<StreamReadReply> =
            redis::AsyncCommands::xread_options(&mut conn, &keys, &ids, &opts).await?;
        let reply = reply.unwrap_or_default();
        if reply.keys.iter().all(|k| k.ids.is_empty()) && args.no_follow {
            return Ok(());
        }
        for k in reply.keys {
            let (p, cursor) = cursors
                .get_mut(&k.key)
                .expect("reply for a key we asked for");
            for entry in k.ids {
                *cursor = entry.id.clone();
                let ev = match decode_entry(&entry) {
                    Ok(ev) => ev,
                    Err(e) => {
                        tracing::warn!(stream = %k.key, id = %entry.id, error = %e, "skipping an entry that does not decode");
                        continue;
                    }
                };
                if args.account.as_ref().is_some_and(|a| *a != ev.account_id) {
                    continue;
                }
                if topic.as_ref().is_some_and(|m| !m.is_match(&ev.topic)) {
                    continue;
                }
                let mut v = serde_json::to_value(&ev)?;
                v["log"] = serde_json::json!({"partition": *p, "stream_id": entry.id});
                writeln!(out, "{v}")?;
                printed += 1;
                if args.limit.is_some_and(|l| printed >= l) {
                    out.flush()?;
                    return Ok(());
                }
            }
        }
        out.flush()?;
    }
}
