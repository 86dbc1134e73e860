//! Server checks and table metadata, over the SQL connection.

use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value as MyValue};

use super::config::split_table_name;
use super::mapping::TableMapping;
use super::position::BinlogPos;
use super::values::ColKind;
use super::{SessionError, SourceCtx};

/// What the server is.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub version: String,
    pub mariadb: bool,
    pub server_id: u32,
    /// Binlog events carry a CRC32 (`binlog_checksum` is not NONE).
    pub checksum: bool,
}

/// A captured table, resolved against the catalog.
#[derive(Debug, Clone)]
pub struct ResolvedTable {
    pub database: String,
    pub name: String,
    pub snapshot: bool,
    /// Index into the config's `tables`.
    pub index: usize,
    pub mapping: Arc<TableMapping>,
}

/// A value as text (information_schema and SHOW results).
pub fn text(row: &Row, i: usize) -> Option<String> {
    match row.as_ref(i)? {
        MyValue::NULL => None,
        MyValue::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        MyValue::Int(n) => Some(n.to_string()),
        MyValue::UInt(n) => Some(n.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// Check the binlog settings the source needs; every problem is reported
/// at once with the statement or option that fixes it.
pub async fn check_server(
    conn: &mut Conn,
    ctx: &SourceCtx<'_>,
) -> Result<ServerInfo, SessionError> {
    let row: Option<Row> = conn
        .query_first(
            "SELECT @@version, CAST(@@global.log_bin AS CHAR), @@global.binlog_format, \
             @@global.binlog_row_image, CAST(@@global.server_id AS CHAR), @@global.binlog_checksum",
        )
        .await
        .map_err(SessionError::from_my)?;
    let row = row
        .ok_or_else(|| SessionError::Transient(anyhow::anyhow!("no row from SELECT @@version")))?;
    let version = text(&row, 0).unwrap_or_default();
    let log_bin = text(&row, 1).unwrap_or_default();
    let format = text(&row, 2).unwrap_or_default();
    let image = text(&row, 3).unwrap_or_default();
    let server_id: u32 = text(&row, 4).and_then(|s| s.parse().ok()).unwrap_or(0);
    let checksum = !text(&row, 5)
        .unwrap_or_default()
        .eq_ignore_ascii_case("NONE");
    let mariadb = version.to_ascii_lowercase().contains("mariadb");
    let problems = server_problems(&log_bin, &format, &image, server_id, ctx.cfg.server_id);
    if !problems.is_empty() {
        return Err(SessionError::Fatal(anyhow::anyhow!(
            "{}: the server ({version}) is not ready for binlog CDC:\n  - {}",
            ctx.path,
            problems.join("\n  - ")
        )));
    }
    Ok(ServerInfo {
        version,
        mariadb,
        server_id,
        checksum,
    })
}

/// The problems with these server settings, each with its fix.
pub fn server_problems(
    log_bin: &str,
    format: &str,
    image: &str,
    server_id: u32,
    our_id: u32,
) -> Vec<String> {
    let mut p = Vec::new();
    if !(log_bin == "1" || log_bin.eq_ignore_ascii_case("on")) {
        p.push("the binary log is off (log_bin): start the server with --log-bin (or log_bin in my.cnf); it cannot be turned on at runtime".to_string());
    }
    if !format.eq_ignore_ascii_case("ROW") {
        p.push(format!(
            "binlog_format is {format}, row events need ROW: SET GLOBAL binlog_format = 'ROW' (and binlog_format = ROW in my.cnf so it survives a restart)"
        ));
    }
    if !image.eq_ignore_ascii_case("FULL") {
        p.push(format!(
            "binlog_row_image is {image}, before/after images need FULL: SET GLOBAL binlog_row_image = 'FULL' (and in my.cnf)"
        ));
    }
    if server_id == 0 {
        p.push("the server's server_id is 0, so it cannot serve replicas: set server_id to a non-zero value (SET GLOBAL server_id = 1, and in my.cnf)".to_string());
    } else if server_id == our_id {
        p.push(format!(
            "the source's server_id ({our_id}) equals the server's: pick another (it must be unique among the server and its replicas)"
        ));
    }
    p
}

/// The binlog's current end (`SHOW MASTER STATUS`, needs REPLICATION CLIENT).
pub async fn current_position(
    conn: &mut Conn,
    ctx: &SourceCtx<'_>,
    _server: &ServerInfo,
) -> Result<BinlogPos, SessionError> {
    let row: Option<Row> = match conn.query_first("SHOW MASTER STATUS").await {
        // MySQL 8.4 removed the old name.
        Err(mysql_async::Error::Server(e)) if e.code == 1064 => conn
            .query_first("SHOW BINARY LOG STATUS")
            .await
            .map_err(SessionError::from_my)?,
        r => r.map_err(SessionError::from_my)?,
    };
    let row = row.ok_or_else(|| {
        SessionError::Fatal(anyhow::anyhow!(
            "{}: SHOW MASTER STATUS returned nothing: the server's binary log is off (start it with --log-bin)",
            ctx.path
        ))
    })?;
    let file = text(&row, 0).unwrap_or_default();
    let pos = text(&row, 1).and_then(|s| s.parse().ok()).unwrap_or(4);
    let gtid: Option<String> = conn
        .query_first("SELECT @@global.gtid_binlog_pos")
        .await
        .ok()
        .flatten()
        .filter(|s: &String| !s.is_empty());
    Ok(BinlogPos { file, pos, gtid })
}

/// Resolve every configured table: columns and their kinds, key columns,
/// referenced columns present. Missing tables and columns are fatal, with
/// the config path.
pub async fn resolve_tables(
    conn: &mut Conn,
    ctx: &SourceCtx<'_>,
    server: &ServerInfo,
) -> Result<Vec<ResolvedTable>, SessionError> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (i, t) in ctx.cfg.tables.iter().enumerate() {
        let tp = format!("{}.tables[{i}]", ctx.path);
        let (db, name) = split_table_name(&t.table)
            .map_err(|e| SessionError::Fatal(anyhow::anyhow!("{tp}.table: {e}")))?;
        let Some(db) = db.or_else(|| ctx.conn.database.clone()) else {
            return Err(SessionError::Fatal(anyhow::anyhow!(
                "{tp}.table: no database (write database.table)"
            )));
        };
        let columns = table_columns(conn, server, &db, &name).await?;
        if columns.is_empty() {
            problems.push(format!(
                "{tp}.table: table `{db}`.`{name}` not found, or the user {} cannot see it: \
                 GRANT SELECT ON `{db}`.`{name}` TO the source's user",
                ctx.conn.user
            ));
            continue;
        }
        let pk: Vec<String> = conn
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' \
                 ORDER BY ORDINAL_POSITION",
                (&db, &name),
            )
            .await
            .map_err(SessionError::from_my)?;
        let key_columns = match &t.key_columns {
            Some(k) => k.clone(),
            None if pk.is_empty() => {
                problems.push(format!(
                    "{tp}.key_columns: `{db}`.`{name}` has no primary key: list the columns that identify a row"
                ));
                continue;
            }
            None => pk,
        };
        let mut mapping = TableMapping::new(ctx.source, &db, &name, columns, key_columns, t)
            .map_err(|e| SessionError::Fatal(anyhow::anyhow!("{tp}: {e}")))?;
        mapping.max_event_size = ctx.cfg.max_event_size.0;
        for c in mapping.referenced_columns() {
            if !mapping.columns.iter().any(|(n, _)| n == c) {
                problems.push(format!(
                    "{tp}: column `{c}` (used by the table's key, account, topic or soft-delete settings) is not in `{db}`.`{name}`"
                ));
            }
        }
        out.push(ResolvedTable {
            database: db,
            name,
            snapshot: t.snapshot,
            index: i,
            mapping: Arc::new(mapping),
        });
    }
    if !problems.is_empty() {
        return Err(SessionError::Fatal(anyhow::anyhow!(
            "{}:\n  - {}",
            ctx.path,
            problems.join("\n  - ")
        )));
    }
    Ok(out)
}

/// A table's columns in order, with their kinds. MariaDB's `JSON` is
/// `LONGTEXT` with a `json_valid(col)` check constraint: such columns decode
/// as JSON.
pub async fn table_columns(
    conn: &mut Conn,
    server: &ServerInfo,
    db: &str,
    name: &str,
) -> Result<Vec<(String, ColKind)>, SessionError> {
    let rows: Vec<Row> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (db, name),
        )
        .await
        .map_err(SessionError::from_my)?;
    let json_checked: Vec<String> = if server.mariadb {
        let checks: Vec<Row> = conn
            .exec(
                "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
                 WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?",
                (db, name),
            )
            .await
            .map_err(SessionError::from_my)?;
        checks
            .iter()
            .filter_map(|r| text(r, 0))
            .filter_map(|c| json_valid_column(&c))
            .collect()
    } else {
        Vec::new()
    };
    Ok(rows
        .iter()
        .map(|r| {
            let col = text(r, 0).unwrap_or_default();
            let kind = ColKind::from_catalog(
                &text(r, 1).unwrap_or_default(),
                &text(r, 2).unwrap_or_default(),
                &text(r, 3).unwrap_or_default(),
                json_checked.contains(&col),
            );
            (col, kind)
        })
        .collect())
}

/// `json_valid(`doc`)` → `doc`.
pub fn json_valid_column(clause: &str) -> Option<String> {
    let inner = clause
        .trim()
        .strip_prefix("json_valid(")?
        .strip_suffix(')')?
        .trim();
    let name = inner
        .strip_prefix('`')
        .and_then(|s| s.strip_suffix('`'))
        .unwrap_or(inner);
    Some(name.replace("``", "`"))
}

/// `` `a`.`b` `` for SQL.
pub fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_their_fix() {
        assert!(server_problems("1", "ROW", "FULL", 1, 99).is_empty());
        let p = server_problems("0", "MIXED", "MINIMAL", 0, 99);
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p[0].contains("--log-bin"));
        assert!(p[1].contains("SET GLOBAL binlog_format = 'ROW'"));
        assert!(p[2].contains("SET GLOBAL binlog_row_image = 'FULL'"));
        assert!(p[3].contains("server_id"));
        assert!(server_problems("ON", "row", "full", 5, 5)[0].contains("equals"));
    }

    #[test]
    fn json_check_clauses() {
        assert_eq!(
            json_valid_column("json_valid(`doc`)").as_deref(),
            Some("doc")
        );
        assert_eq!(
            json_valid_column("json_valid(`a``b`)").as_deref(),
            Some("a`b")
        );
        assert_eq!(json_valid_column("`x` > 0"), None);
        assert_eq!(quote_ident("a`b"), "`a``b`");
    }
}
