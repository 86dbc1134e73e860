//! `switchyard schema history`: the schema changes a CDC source detected
//! (recorded in Redis by `switchyard_sources::schema_drift`).

use std::io::Write;

use anyhow::Context;
use switchyard_config::Config;
use switchyard_store::log::Log;

/// Print `source`'s schema history (optionally of one table, `schema.table`
/// or just `table`), oldest first: a table, or JSON lines with `--json`.
pub async fn history(
    config: &Config,
    source: &str,
    table: Option<&str>,
    json: bool,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    crate::source_exists(config, source)?;
    let log = Log::connect(&config.redis, &config.log)
        .await
        .context("connecting to Redis (redis.url)")?;
    let entries = switchyard_store::schema::history(&log, source, None).await?;
    let wanted =
        |t: &str| table.is_none_or(|w| t == w || t.rsplit_once('.').is_some_and(|(_, n)| n == w));
    let mut n = 0;
    for (id, t, entry) in entries.iter().filter(|(_, t, _)| wanted(t)) {
        n += 1;
        let v: serde_json::Value = serde_json::from_str(entry).unwrap_or_default();
        if json {
            writeln!(out, "{}", v)?;
            continue;
        }
        let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
        let detail = match s("change").as_str() {
            "add_column" => format!("{} {}", s("column"), s("new_type")),
            "drop_column" => format!("{} (was {})", s("column"), s("old_type")),
            "rename_column" => format!("{} -> {} ({})", s("from"), s("to"), s("new_type")),
            "type_change" => format!("{}: {} -> {}", s("column"), s("old_type"), s("new_type")),
            _ => String::new(),
        };
        writeln!(
            out,
            "{}  {t}  {}  {detail}  at {} (entry {id})",
            s("detected_at"),
            s("change"),
            s("position")
        )?;
    }
    if n == 0 && !json {
        writeln!(out, "no schema changes recorded for source {source}")?;
    }
    Ok(())
}
