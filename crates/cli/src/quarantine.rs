//! `switchyard quarantine list|replay`: the records a CDC source could not
//! map (`switchyard_sources::quarantine`).

use std::io::Write;

use anyhow::Context;
use switchyard_config::Config;
use switchyard_store::log::Log;

/// `switchyard quarantine list`: `source`'s quarantined records, oldest
/// first (JSON lines with `--json`, the event included).
pub async fn list(
    config: &Config,
    source: &str,
    json: bool,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let (log, _) = cdc_source(config, source).await?;
    let records = switchyard_sources::quarantine::list(&log, source).await?;
    for q in &records {
        if json {
            writeln!(out, "{}", serde_json::to_string(q)?)?;
        } else {
            writeln!(
                out,
                "{}  {}  {}  key {}  at {} #{}  {}: {}",
                q.quarantined_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                q.id,
                q.table,
                q.key,
                q.position,
                q.seq,
                q.kind,
                q.reason
            )?;
        }
    }
    if records.is_empty() && !json {
        writeln!(out, "nothing quarantined for source {source}")?;
    }
    Ok(())
}

/// `switchyard quarantine replay`: append quarantined records (all, or
/// `id`) to the log, with `topic` instead of their own when given, and
/// remove them; a record that still cannot be written is kept and the
/// reason printed. Ok(false) when any was kept.
pub async fn replay(
    config: &Config,
    source: &str,
    id: Option<&str>,
    topic: Option<&str>,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<bool> {
    use switchyard_sources::quarantine::{self, Replayed};
    let (log, max) = cdc_source(config, source).await?;
    let records: Vec<_> = quarantine::list(&log, source)
        .await?
        .into_iter()
        .filter(|q| id.is_none_or(|i| q.id == i))
        .collect();
    if let (Some(i), true) = (id, records.is_empty()) {
        anyhow::bail!("no quarantined record {i} for source {source}");
    }
    // Replayed events must match their schema now, as the source requires.
    let schemas = config.schemas.as_ref().map(|s| s.load()).transpose()?;
    let mut all_ok = true;
    for q in &records {
        match quarantine::replay(&log, q, topic, max, schemas.as_ref()).await? {
            Replayed::Appended => writeln!(out, "{}: appended to the log", q.id)?,
            Replayed::Kept(why) => {
                all_ok = false;
                writeln!(out, "{}: kept: {why}", q.id)?;
            }
        }
    }
    Ok(all_ok)
}

/// The log and `max_event_size` of CDC source `source`.
async fn cdc_source(config: &Config, source: &str) -> anyhow::Result<(Log, u64)> {
    crate::source_exists(config, source)?;
    let Some(max) = config.sources[source].max_event_size() else {
        anyhow::bail!("source `{source}` is not a CDC source (it has no quarantine)");
    };
    let log = Log::connect(&config.redis, &config.log)
        .await
        .context("connecting to Redis (redis.url)")?;
    Ok((log, max))
}
