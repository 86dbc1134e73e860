//! `switchyard tail`: print events from the log as JSON lines.

use std::io::Write;

use anyhow::Context;
use globset::Glob;
use switchyard_store::log::Log;
use switchyard_store::tail::Tail;

use switchyard_config::Config;

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
    let log = Log::connect(&config.redis, &config.log)
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
    let mut tail = Tail::open(&log, &parts, args.from == From::Latest).await?;
    let mut printed = 0usize;
    loop {
        let entries = tail.next(!args.no_follow).await?;
        if entries.is_empty() && args.no_follow {
            return Ok(());
        }
        for entry in entries {
            let ev = match entry.event {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::warn!(stream = %entry.stream, id = %entry.stream_id, error = %e, "skipping an entry that does not decode");
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
            v["log"] =
                serde_json::json!({"partition": entry.partition, "stream_id": entry.stream_id});
            writeln!(out, "{v}")?;
            printed += 1;
            if args.limit.is_some_and(|l| printed >= l) {
                out.flush()?;
                return Ok(());
            }
        }
        out.flush()?;
    }
}
