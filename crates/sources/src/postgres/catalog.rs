//! Startup checks and setup over an ordinary SQL connection (tokio-postgres):
//! wal_level, tables, keys, replica identity, publication, slot.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::Client;

use super::config::{split_table_name, PostgresSourceConfig};
use super::mapping::TableMapping;
use super::pgoutput::Lsn;
use super::SessionError;

/// A captured table as found in the catalog.
#[derive(Debug, Clone)]
pub struct ResolvedTable {
    pub index: usize,
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// (name, type oid) in attribute order.
    pub columns: Vec<(String, u32)>,
    pub mapping: Arc<TableMapping>,
    pub snapshot: bool,
}

/// Quote an identifier for SQL.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quote a string literal for SQL.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

fn fatal(msg: String) -> SessionError {
    SessionError::Fatal(anyhow::anyhow!(msg))
}

/// Set the session settings that fix text output formats.
pub async fn set_session(client: &Client) -> Result<(), SessionError> {
    let mut sql = String::new();
    for (k, v) in super::values::SESSION_SETTINGS {
        sql.push_str(&format!("SET {k} = {};", quote_literal(v)));
    }
    client
        .batch_execute(&sql)
        .await
        .map_err(SessionError::from_pg)
}

/// `wal_level` must be `logical`.
pub async fn check_wal_level(client: &Client) -> Result<(), SessionError> {
    let row = client
        .query_one("SHOW wal_level", &[])
        .await
        .map_err(SessionError::from_pg)?;
    let level: String = row.get(0);
    if level != "logical" {
        return Err(fatal(format!(
            "Postgres has wal_level = {level}; logical replication needs wal_level = logical: \
             set it in postgresql.conf (or ALTER SYSTEM SET wal_level = logical) and restart Postgres"
        )));
    }
    Ok(())
}

/// Resolve every configured table, check columns, keys and replica
/// identity. All problems are reported together.
pub async fn resolve_tables(
    client: &Client,
    source: &str,
    path: &str,
    cfg: &PostgresSourceConfig,
) -> Result<Vec<ResolvedTable>, SessionError> {
    let mut problems = Vec::new();
    let mut out = Vec::new();
    for (i, t) in cfg.tables.iter().enumerate() {
        let tp = format!("{path}.tables[{i}]");
        if split_table_name(&t.table).is_err() {
            problems.push(format!(
                "{tp}.table: `{}` is not a valid table name",
                t.table
            ));
            continue;
        }
        let row = client
            .query_opt(
                "SELECT c.oid, n.nspname::text, c.relname::text, c.relreplident::text, c.relkind::text \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.oid = to_regclass($1)",
                &[&t.table],
            )
            .await
            .map_err(SessionError::from_pg)?;
        let Some(row) = row else {
            problems.push(format!(
                "{tp}.table: table `{}` does not exist in this database (check the name, the schema and the connection's database)",
                t.table
            ));
            continue;
        };
        let oid: u32 = row.get(0);
        let schema: String = row.get(1);
        let name: String = row.get(2);
        let ident: String = row.get(3);
        let kind: String = row.get(4);
        let qname = format!("{schema}.{name}");
        if kind != "r" && kind != "p" {
            problems.push(format!("{tp}.table: `{qname}` is not a table (relkind {kind}); only tables can be replicated"));
            continue;
        }
        let cols = client
            .query(
                "SELECT attname::text, atttypid FROM pg_attribute \
                 WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                &[&oid],
            )
            .await
            .map_err(SessionError::from_pg)?;
        let columns: Vec<(String, u32)> = cols.iter().map(|r| (r.get(0), r.get(1))).collect();
        let has = |c: &str| columns.iter().any(|(n, _)| n == c);
        let pk = index_columns(client, oid, "indisprimary").await?;
        let identity_key: Vec<String> = match ident.as_str() {
            "d" => pk.clone(),
            "i" => index_columns(client, oid, "indisreplident").await?,
            "f" => columns.iter().map(|(n, _)| n.clone()).collect(),
            _ => Vec::new(),
        };

        let key_columns = match &t.key_columns {
            Some(k) => k.clone(),
            None if !pk.is_empty() => pk.clone(),
            None => {
                problems.push(format!(
                    "{tp}.key_columns: `{qname}` has no primary key; list the columns that identify a row in key_columns"
                ));
                continue;
            }
        };
        let mapping =
            match TableMapping::new(source, &cfg.slot, &schema, &name, key_columns.clone(), t) {
                Ok(mut m) => {
                    m.max_event_size = cfg.max_event_size.0;
                    m
                }
                Err(e) => {
                    problems.push(format!("{tp}: {e}"));
                    continue;
                }
            };

        // Every referenced column must exist.
        let mut missing = false;
        let mut check = |field: String, col: &str| {
            if !has(col) {
                problems.push(format!(
                    "{tp}.{field}: column `{col}` does not exist in `{qname}`"
                ));
                missing = true;
            }
        };
        check("account_column".into(), &t.account_column);
        for (j, k) in key_columns.iter().enumerate() {
            if t.key_columns.is_some() {
                check(format!("key_columns[{j}]"), k);
            }
        }
        if let Some(c) = &t.soft_delete_column {
            check("soft_delete_column".into(), c);
        }
        for c in mapping.topic.columns() {
            check("topic".into(), c);
        }
        for (j, r) in mapping.rules.iter().enumerate() {
            for c in r.topic.columns() {
                check(format!("rules[{j}].topic"), c);
            }
        }
        if missing {
            continue;
        }

        // Replica identity.
        let ident_name = match ident.as_str() {
            "d" => "DEFAULT",
            "i" => "USING INDEX",
            "f" => "FULL",
            "n" => "NOTHING",
            _ => "unknown",
        };
        let mut reasons = Vec::new();
        if !t.rules.is_empty() {
            reasons.push("it has rules on changed columns".to_string());
        }
        if t.soft_delete_column.is_some() {
            reasons.push("it has a soft_delete_column".to_string());
        }
        let not_in_key = |c: &str| !identity_key.iter().any(|k| k == c);
        if not_in_key(&t.account_column) {
            reasons.push(format!("account_column `{}` is not in the replica identity, so deletes would have no account", t.account_column));
        }
        for c in mapping.referenced_columns() {
            if not_in_key(c) && c != t.account_column && Some(c) != t.soft_delete_column.as_deref()
            {
                reasons.push(format!("column `{c}` (key or topic) is not in the replica identity, so deletes would lack it"));
            }
        }
        let need_full = t.require_before_image.unwrap_or(!reasons.is_empty());
        if t.require_before_image == Some(true) && reasons.is_empty() {
            reasons.push("require_before_image = true".into());
        }
        if need_full && ident != "f" {
            problems.push(format!(
                "{tp}: `{qname}` has REPLICA IDENTITY {ident_name}, but full before-images are required ({}). \
                 Run `ALTER TABLE {} REPLICA IDENTITY FULL;` (or set require_before_image = false to accept key-only before-images)",
                reasons.join("; "),
                qualified(&schema, &name)
            ));
            continue;
        }
        if identity_key.is_empty() {
            problems.push(format!(
                "{tp}: `{qname}` has REPLICA IDENTITY {ident_name}{}: Postgres rejects or cannot describe its updates and deletes. \
                 Add a primary key or run `ALTER TABLE {} REPLICA IDENTITY FULL;`",
                if ident == "d" { " and no primary key" } else { "" },
                qualified(&schema, &name)
            ));
            continue;
        }

        out.push(ResolvedTable {
            index: i,
            oid,
            schema,
            name,
            columns,
            mapping: Arc::new(mapping),
            snapshot: t.snapshot,
        });
    }
    if !problems.is_empty() {
        return Err(fatal(format!(
            "postgres source `{source}` cannot start:\n  - {}",
            problems.join("\n  - ")
        )));
    }
    Ok(out)
}

/// Columns of the table's primary key (`indisprimary`) or replica identity
/// index (`indisreplident`), in index order.
async fn index_columns(client: &Client, oid: u32, flag: &str) -> Result<Vec<String>, SessionError> {
    let sql = format!(
        "SELECT a.attname::text FROM pg_index i \
         CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
         WHERE i.indrelid = $1 AND i.{flag} ORDER BY k.ord"
    );
    let rows = client
        .query(&sql, &[&oid])
        .await
        .map_err(SessionError::from_pg)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Make sure the publication exists and covers every table.
pub async fn ensure_publication(
    client: &Client,
    source: &str,
    path: &str,
    cfg: &PostgresSourceConfig,
    tables: &[ResolvedTable],
) -> Result<(), SessionError> {
    let pubname = &cfg.publication;
    let row = client
        .query_opt(
            "SELECT puballtables, pubinsert, pubupdate, pubdelete FROM pg_publication WHERE pubname = $1",
            &[pubname],
        )
        .await
        .map_err(SessionError::from_pg)?;
    let table_list = tables
        .iter()
        .map(|t| qualified(&t.schema, &t.name))
        .collect::<Vec<_>>()
        .join(", ");
    let Some(row) = row else {
        if !cfg.create_publication {
            return Err(fatal(format!(
                "{path}.publication: publication `{pubname}` does not exist. Create it with \
                 `CREATE PUBLICATION {} FOR TABLE {table_list};` or set create_publication = true",
                quote_ident(pubname)
            )));
        }
        client
            .batch_execute(&format!("CREATE PUBLICATION {} FOR TABLE {table_list}", quote_ident(pubname)))
            .await
            .map_err(|e| {
                fatal(format!("{path}.publication: could not create publication `{pubname}` (source `{source}`): {}", pg_message(&e)))
            })?;
        tracing::info!(source, publication = %pubname, tables = %table_list, "created publication");
        return Ok(());
    };
    let all: bool = row.get(0);
    let (ins, upd, del): (bool, bool, bool) = (row.get(1), row.get(2), row.get(3));
    if !(ins && upd && del) {
        tracing::warn!(source, publication = %pubname, insert = ins, update = upd, delete = del,
            "publication does not publish every operation; unpublished changes are not captured");
    }
    if all {
        return Ok(());
    }
    let rows = client
        .query("SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1", &[pubname])
        .await
        .map_err(SessionError::from_pg)?;
    let published: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let missing: Vec<&ResolvedTable> = tables
        .iter()
        .filter(|t| {
            !published
                .iter()
                .any(|(s, n)| *s == t.schema && *n == t.name)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing
        .iter()
        .map(|t| qualified(&t.schema, &t.name))
        .collect::<Vec<_>>()
        .join(", ");
    if !cfg.create_publication {
        return Err(fatal(format!(
            "{path}.publication: publication `{pubname}` does not include {list}. Run \
             `ALTER PUBLICATION {} ADD TABLE {list};` or set create_publication = true",
            quote_ident(pubname)
        )));
    }
    client
        .batch_execute(&format!(
            "ALTER PUBLICATION {} ADD TABLE {list}",
            quote_ident(pubname)
        ))
        .await
        .map_err(|e| {
            fatal(format!(
                "{path}.publication: could not add {list} to `{pubname}`: {}",
                pg_message(&e)
            ))
        })?;
    tracing::info!(source, publication = %pubname, tables = %list, "added tables to publication");
    Ok(())
}

/// State of the replication slot.
#[derive(Debug, Clone)]
pub enum SlotState {
    Missing,
    Ready { confirmed_flush: Lsn },
}

pub async fn slot_state(
    client: &Client,
    path: &str,
    slot: &str,
) -> Result<SlotState, SessionError> {
    let row = client
        .query_opt(
            "SELECT plugin::text, database::text, active_pid, confirmed_flush_lsn::text, slot_type, wal_status, \
             current_database()::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(SessionError::from_pg)?;
    let Some(row) = row else {
        return Ok(SlotState::Missing);
    };
    let plugin: Option<String> = row.get(0);
    let database: Option<String> = row.get(1);
    let active_pid: Option<i32> = row.get(2);
    let confirmed: Option<String> = row.get(3);
    let slot_type: String = row.get(4);
    let wal_status: Option<String> = row.get(5);
    let current_db: String = row.get(6);
    if slot_type != "logical" || plugin.as_deref() != Some("pgoutput") {
        return Err(fatal(format!(
            "{path}.slot: replication slot `{slot}` exists but is not a logical pgoutput slot ({slot_type}, plugin {}); \
             use another slot name or drop it with SELECT pg_drop_replication_slot('{slot}')",
            plugin.as_deref().unwrap_or("none")
        )));
    }
    if database.as_deref() != Some(current_db.as_str()) {
        return Err(fatal(format!(
            "{path}.slot: replication slot `{slot}` belongs to database `{}`, not `{current_db}`; use another slot name",
            database.as_deref().unwrap_or("?")
        )));
    }
    if wal_status.as_deref() == Some("lost") {
        return Err(fatal(format!(
            "{path}.slot: replication slot `{slot}` has lost WAL it needed (wal_status = lost; see max_slot_wal_keep_size): \
             changes were lost. Drop it with SELECT pg_drop_replication_slot('{slot}') to start over (with snapshot = true to re-read the tables)"
        )));
    }
    if let Some(pid) = active_pid {
        return Err(SessionError::Transient(anyhow::anyhow!(
            "replication slot `{slot}` is in use by backend pid {pid} (another router instance, or a connection Postgres has not closed yet)"
        )));
    }
    let confirmed_flush = confirmed
        .as_deref()
        .and_then(Lsn::parse)
        .unwrap_or_default();
    Ok(SlotState::Ready { confirmed_flush })
}

pub async fn create_slot(client: &Client, slot: &str) -> Result<Lsn, SessionError> {
    let row = client
        .query_one(
            "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&slot],
        )
        .await
        .map_err(SessionError::from_pg)?;
    let lsn: String = row.get(0);
    Ok(Lsn::parse(&lsn).unwrap_or_default())
}

/// The server's message (and detail/hint) of a tokio-postgres error.
pub fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = db.message().to_string();
            if let Some(d) = db.detail() {
                s.push_str(&format!(" ({d})"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!(" hint: {h}"));
            }
            s
        }
        None => e.to_string(),
    }
}

/// Tables by (schema, name).
pub fn by_name(tables: &[ResolvedTable]) -> HashMap<(String, String), Arc<TableMapping>> {
    tables
        .iter()
        .map(|t| ((t.schema.clone(), t.name.clone()), t.mapping.clone()))
        .collect()
}
