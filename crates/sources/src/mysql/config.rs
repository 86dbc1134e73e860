//! `[sources.<name>]` with `type = "mysql"`: one MySQL/MariaDB binlog CDC source.
//!
//! ```toml
//! [sources.shop]
//! type = "mysql"
//! url = "mysql://switchyard:${SHOP_DB_PASSWORD}@db:3306/shop?ssl-mode=VERIFY_IDENTITY&ssl-ca=/etc/ssl/db-ca.pem"
//! server_id = 4242
//!
//! [[sources.shop.tables]]
//! table = "shop.customers"
//! topic = "customer.{banner}.{op}"
//! account_column = "account_id"
//! snapshot = true
//!
//! [[sources.shop.tables.rules]]
//! when_changed = ["email"]
//! topic = "customer.{banner}.email_changed"
//! ```

use std::time::Duration;

use serde::Deserialize;

use crate::cdc_rules::{validate_rules, RuleConfig, Template};
use switchyard_core::config::ConfigError;

/// One MySQL/MariaDB CDC source.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlSourceConfig {
    /// `mysql://user:password@host:port/database` (`${ENV}` already
    /// interpolated). TLS: `ssl-mode` (`DISABLED` (default), `REQUIRED`,
    /// `VERIFY_CA`, `VERIFY_IDENTITY`), `ssl-ca`, `ssl-cert`, `ssl-key`.
    pub url: switchyard_core::secret::ConnUrl,
    /// The replica id this source registers with (`COM_REGISTER_SLAVE`):
    /// unique among the server's replicas and different from its `server_id`.
    pub server_id: u32,
    /// Tables to capture.
    pub tables: Vec<TableConfig>,
    /// Events appended to the log per call, also inside a transaction that
    /// is still being received (bounds memory for huge transactions).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Upper bound of the reconnect backoff (starts at 100 ms, doubles).
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// How often the server sends a heartbeat on a quiet binlog stream; a
    /// stream silent for 5 heartbeats is treated as broken and reconnected.
    #[serde(default = "default_heartbeat", with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Topic of the `schema.changed` events this source writes when a
    /// captured table's shape changes (see `schema_drift`).
    #[serde(default = "crate::schema_drift::default_topic")]
    pub schema_topic: String,
    /// Largest event the source writes (MessagePack-encoded); a larger one
    /// goes to the source's quarantine instead.
    #[serde(default = "crate::quarantine::default_max_event_size")]
    pub max_event_size: switchyard_core::config::ByteSize,
}

/// One captured table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// `database.table`, or `table` (in the URL's database).
    pub table: String,
    /// Topic template: `{column}` is the row's value, `{op}` the operation,
    /// `{table}` / `{schema}` (the database) / `{source}` the obvious names.
    pub topic: String,
    /// Column whose value is the event's account id (partition key).
    pub account_column: String,
    /// Columns of the event key; default: the primary key.
    #[serde(default)]
    pub key_columns: Option<Vec<String>>,
    /// Emit existing rows (`op = snapshot`) before streaming, the first time
    /// the source starts (no position stored yet).
    #[serde(default)]
    pub snapshot: bool,
    /// Emit the default-topic event for every change (in addition to rules).
    #[serde(default = "default_true")]
    pub emit_default: bool,
    /// Extra events when given columns changed.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Soft-delete marker column: null → non-null is `soft_delete`,
    /// non-null → null is `restore`.
    #[serde(default)]
    pub soft_delete_column: Option<String>,
}

fn default_true() -> bool {
    true
}
fn default_batch_size() -> usize {
    500
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(2)
}

/// Split `database.table` (either part may be in backticks). `None`: unqualified.
pub fn split_table_name(s: &str) -> Result<(Option<String>, String), String> {
    crate::cdc_rules::split_qualified_name(s, '`', "database")
}

impl MysqlSourceConfig {
    /// Certificate paths in the URL resolve against `base`, the config file's directory.
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        self.url =
            switchyard_core::secret::ConnUrl::new(switchyard_core::config::resolve_url_paths(
                &self.url,
                &["ssl-ca", "ssl-cert", "ssl-key"],
                base,
            ));
    }

    /// Report every problem, each with its TOML path under `path`
    /// (e.g. `sources.shop`).
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        crate::cdc_rules::validate_cdc_keys(path, &self.schema_topic, self.max_event_size, errors);
        let mut err = |p: String, m: String| errors.push(ConfigError::new(p, m));
        let mut default_db = None;
        if self.url.trim().is_empty() {
            err(format!("{path}.url"), "must not be empty".into());
        } else {
            match super::ConnParams::from_url(&self.url) {
                Err(e) => err(format!("{path}.url"), e),
                Ok(c) => {
                    default_db = c.database.clone();
                    if let Err(e) = c.tls.check_files(&format!("{path}.url")) {
                        let e = switchyard_core::config::tls_error(e);
                        err(e.path, e.message);
                    }
                }
            }
        }
        if self.server_id == 0 {
            err(
                format!("{path}.server_id"),
                "must be a non-zero replica id, unique among the server's replicas".into(),
            );
        }
        if self.batch_size == 0 || self.batch_size > 100_000 {
            err(
                format!("{path}.batch_size"),
                "must be between 1 and 100000".into(),
            );
        }
        if self.max_backoff < Duration::from_millis(100) {
            err(
                format!("{path}.max_backoff"),
                "must be at least 100ms".into(),
            );
        }
        if self.heartbeat < Duration::from_millis(100) || self.heartbeat > Duration::from_secs(60) {
            err(
                format!("{path}.heartbeat"),
                "must be between 100ms and 60s".into(),
            );
        }
        if self.tables.is_empty() {
            err(format!("{path}.tables"), "list at least one table".into());
        }
        let mut seen: Vec<(Option<String>, String)> = Vec::new();
        for (i, t) in self.tables.iter().enumerate() {
            let tp = format!("{path}.tables[{i}]");
            match split_table_name(&t.table) {
                Ok((db, name)) => {
                    if db.is_none() && default_db.is_none() {
                        err(
                            format!("{tp}.table"),
                            format!(
                                "`{}` names no database and the url has none: write `database.{}`",
                                t.table, t.table
                            ),
                        );
                    }
                    let full = (db.or_else(|| default_db.clone()), name);
                    if seen.contains(&full) {
                        err(
                            format!("{tp}.table"),
                            format!("table `{}` is listed twice", t.table),
                        );
                    }
                    seen.push(full);
                }
                Err(e) => err(format!("{tp}.table"), format!("`{}`: {e}", t.table)),
            }
            if let Err(e) = Template::parse(&t.topic) {
                err(format!("{tp}.topic"), e);
            }
            if t.account_column.is_empty() {
                err(format!("{tp}.account_column"), "must not be empty".into());
            }
            if let Some(k) = &t.key_columns {
                if k.is_empty() {
                    err(
                        format!("{tp}.key_columns"),
                        "list at least one column, or leave it out to use the primary key".into(),
                    );
                }
                for (j, c) in k.iter().enumerate() {
                    if c.is_empty() {
                        err(format!("{tp}.key_columns[{j}]"), "must not be empty".into());
                    }
                }
            }
            if let Some(c) = &t.soft_delete_column {
                if c.is_empty() {
                    err(
                        format!("{tp}.soft_delete_column"),
                        "must not be empty".into(),
                    );
                }
            }
            if !t.emit_default && t.rules.is_empty() {
                err(
                    format!("{tp}.emit_default"),
                    "is false and the table has no rules: it would emit nothing".into(),
                );
            }
            let mut rule_errors = Vec::new();
            validate_rules(
                &tp,
                &t.rules,
                t.soft_delete_column.is_some(),
                &mut rule_errors,
            );
            for e in rule_errors {
                err(e.path, e.message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::event::Op;

    #[derive(Debug, Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum SourceConfig {
        Mysql(MysqlSourceConfig),
    }

    #[derive(Debug, Deserialize)]
    struct Root {
        sources: std::collections::BTreeMap<String, SourceConfig>,
    }

    const GOOD: &str = r#"
[sources.shop]
type = "mysql"
url = "mysql://u:p@localhost:3306/shop"
server_id = 77
heartbeat = "1s"

[[sources.shop.tables]]
table = "customers"
topic = "customer.{banner}.{op}"
account_column = "account_id"
snapshot = true
soft_delete_column = "deleted_at"

[[sources.shop.tables.rules]]
when_changed = ["email"]
topic = "customer.{banner}.email_changed"

[[sources.shop.tables]]
table = "`other db`.orders"
topic = "order.{op}"
account_column = "account_id"
key_columns = ["id"]
"#;

    fn parse(s: &str) -> Result<MysqlSourceConfig, toml::de::Error> {
        let root: Root = toml::from_str(s)?;
        match root.sources.into_iter().next().map(|(_, v)| v) {
            Some(SourceConfig::Mysql(c)) => Ok(c),
            None => panic!("no source"),
        }
    }

    fn errors(c: &MysqlSourceConfig) -> Vec<(String, String)> {
        let mut e = Vec::new();
        c.validate("sources.shop", &mut e);
        e.into_iter().map(|e| (e.path, e.message)).collect()
    }

    #[test]
    fn full_example_parses_and_validates() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.heartbeat, Duration::from_secs(1));
        assert_eq!(c.batch_size, 500);
        assert_eq!(
            c.tables[0].rules[0].ops_for(c.tables[0].soft_delete_column.is_some()),
            vec![Op::Update, Op::SoftDelete, Op::Restore]
        );
        assert_eq!(errors(&c), vec![]);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = parse(&GOOD.replace("snapshot = true", "snapshots = true"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("snapshots"), "{e}");
        assert!(parse(&GOOD.replace("server_id = 77", "server_id = 77\nslot = \"x\"")).is_err());
    }

    #[test]
    fn every_error_has_its_path() {
        let mut c = parse(GOOD).unwrap();
        c.server_id = 0;
        c.url = "mysql://u@h/shop?ssl-mode=SOMETIMES".into();
        c.tables[1].account_column = String::new();
        c.tables[0].rules[0].when_changed = vec!["a[".into()];
        c.tables[1].topic = "x.{}".into();
        c.tables[1].emit_default = false;
        c.tables[1].key_columns = Some(vec![]);
        c.heartbeat = Duration::from_secs(600);
        let e = errors(&c);
        let paths: Vec<&str> = e.iter().map(|(p, _)| p.as_str()).collect();
        for want in [
            "sources.shop.url",
            "sources.shop.server_id",
            "sources.shop.heartbeat",
            "sources.shop.tables[1].account_column",
            "sources.shop.tables[0].rules[0].when_changed[0]",
            "sources.shop.tables[1].topic",
            "sources.shop.tables[1].emit_default",
            "sources.shop.tables[1].key_columns",
        ] {
            assert!(paths.contains(&want), "missing {want} in {e:?}");
        }
    }

    #[test]
    fn unqualified_table_needs_a_database_and_duplicates_are_found() {
        let mut c = parse(GOOD).unwrap();
        c.url = "mysql://u:p@localhost:3306".into();
        let e = errors(&c);
        assert!(
            e.iter()
                .any(|(p, m)| p == "sources.shop.tables[0].table"
                    && m.contains("database.customers")),
            "{e:?}"
        );
        let mut c = parse(GOOD).unwrap();
        c.tables[1].table = "shop.customers".into();
        let e = errors(&c);
        assert!(
            e.iter()
                .any(|(p, m)| p == "sources.shop.tables[1].table" && m.contains("twice")),
            "{e:?}"
        );
    }

    /// The commented example in config/switchyard.toml parses and validates.
    #[test]
    fn reference_config_example() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/switchyard.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let mut block = String::new();
        let mut inside = false;
        for line in text.lines() {
            if line.starts_with("# [sources.shop]") {
                inside = true;
            }
            if inside {
                let Some(l) = line.strip_prefix('#') else {
                    break;
                };
                block.push_str(l.strip_prefix(' ').unwrap_or(l));
                block.push('\n');
            }
        }
        let block = block.replace("${SHOP_DB_PASSWORD}", "pw");
        let c = parse(&block).unwrap_or_else(|e| panic!("{e}\n{block}"));
        assert_eq!(c.server_id, 4242);
        assert_eq!(c.tables[0].rules.len(), 1);
        let mut e = Vec::new();
        c.validate("sources.shop", &mut e);
        // The CA file of the example does not exist here; everything else is valid.
        assert!(
            e.iter()
                .all(|e| e.path.starts_with("sources.shop.url") && e.message.contains("db-ca.pem")),
            "{e:?}"
        );
    }

    #[test]
    fn table_names() {
        assert_eq!(split_table_name("a").unwrap(), (None, "a".into()));
        assert_eq!(
            split_table_name("s.a").unwrap(),
            (Some("s".into()), "a".into())
        );
        assert_eq!(
            split_table_name("`My.S`.`T``x`").unwrap(),
            (Some("My.S".into()), "T`x".into())
        );
        for bad in ["a.b.c", "a.", "`a", "`a`b"] {
            assert!(split_table_name(bad).is_err(), "{bad}");
        }
    }
}
