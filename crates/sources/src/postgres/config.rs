//! `[sources.<name>]` with `type = "postgres"`: configuration of one CDC source.
//!
//! ```toml
//! [sources.crm]
//! type = "postgres"
//! url = "postgres://switchyard:${CRM_PG_PASSWORD}@db:5432/crm"
//! publication = "switchyard_crm"
//! create_publication = true
//! slot = "switchyard_crm"
//!
//! [[sources.crm.tables]]
//! table = "public.customers"
//! topic = "customer.{banner}.{op}"
//! account_column = "account_id"
//! snapshot = true
//! soft_delete_column = "deleted_at"
//!
//! [[sources.crm.tables.rules]]
//! when_changed = ["email"]
//! topic = "customer.{banner}.email_changed"
//!
//! [[sources.crm.tables.rules]]
//! when_changed = ["consent_*"]
//! topic = "customer.{banner}.consent_changed"
//! ```

use std::time::Duration;

use serde::Deserialize;

use switchyard_core::config::ConfigError;
use switchyard_core::event::Op;

use super::mapping::Template;

/// One Postgres CDC source.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSourceConfig {
    /// libpq-style URL or key/value string (`${ENV}` already interpolated);
    /// TLS via libpq's `sslmode`, `sslrootcert`, `sslcert`, `sslkey`.
    pub url: switchyard_core::secret::ConnUrl,
    /// Publication the slot streams (pgoutput `publication_names`).
    pub publication: String,
    /// Create the publication for the listed tables when it is missing, and
    /// add listed tables it lacks. Off: a missing publication is an error.
    #[serde(default)]
    pub create_publication: bool,
    /// Logical replication slot (pgoutput). Created when missing.
    pub slot: String,
    /// Tables to capture.
    pub tables: Vec<TableConfig>,
    /// How often the confirmed position is reported to Postgres.
    #[serde(default = "default_status_interval", with = "humantime_serde")]
    pub status_interval: Duration,
    /// Events appended to the log per call, also inside a transaction that
    /// is still being received (bounds memory for huge transactions).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Upper bound of the reconnect backoff (starts at 100 ms, doubles).
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Rows fetched per round trip during the initial snapshot.
    #[serde(default = "default_snapshot_fetch")]
    pub snapshot_fetch_rows: usize,
    /// Appends in flight at once, each for a disjoint set of log partitions
    /// (so every account's events stay in order).
    #[serde(default = "default_append_lanes")]
    pub append_lanes: usize,
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
    /// `schema.table` or `table` (resolved with the server's search_path).
    pub table: String,
    /// Topic template: `{column}` is the row's value, `{op}` the operation,
    /// `{table}` / `{schema}` / `{source}` the obvious names.
    pub topic: String,
    /// Column whose value is the event's account id (partition key).
    pub account_column: String,
    /// Columns of the event key; default: the primary key.
    #[serde(default)]
    pub key_columns: Option<Vec<String>>,
    /// Emit existing rows (`op = snapshot`) when the slot is created.
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
    /// Require `REPLICA IDENTITY FULL` (complete before-images). Default:
    /// required when the table has rules, a soft-delete column, or an
    /// account / topic column outside the replica identity key.
    #[serde(default)]
    pub require_before_image: Option<bool>,
}

/// Emit an extra event on `topic` when any column matching `when_changed`
/// (exact names or globs such as `consent_*`) changed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub when_changed: Vec<String>,
    pub topic: String,
    /// Operations the rule applies to. Default: `update`, plus `soft_delete`
    /// and `restore` when the table has a `soft_delete_column` (see
    /// [`RuleConfig::ops_for`]).
    #[serde(default)]
    pub ops: Option<Vec<Op>>,
}

impl RuleConfig {
    /// The operations the rule applies to on a table with (or without) a
    /// soft-delete column: the configured ones, else the default, which
    /// fits the table (a table without a soft-delete column has no
    /// `soft_delete` or `restore` changes).
    pub fn ops_for(&self, soft_delete_column: bool) -> Vec<Op> {
        match &self.ops {
            Some(ops) => ops.clone(),
            None => default_rule_ops(soft_delete_column),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_status_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_batch_size() -> usize {
    500
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}
fn default_snapshot_fetch() -> usize {
    1000
}
fn default_append_lanes() -> usize {
    2
}
pub(crate) fn default_rule_ops(soft_delete_column: bool) -> Vec<Op> {
    if soft_delete_column {
        vec![Op::Update, Op::SoftDelete, Op::Restore]
    } else {
        vec![Op::Update]
    }
}

/// Split `schema.table` (either part may be double-quoted). `None` schema:
/// unqualified.
pub(crate) fn split_table_name(s: &str) -> Result<(Option<String>, String), String> {
    crate::cdc_rules::split_qualified_name(s, '"', "schema")
}

impl PostgresSourceConfig {
    /// Certificate paths in the URL resolve against `base`, the config file's directory.
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        self.url =
            switchyard_core::secret::ConnUrl::new(super::tls::resolve_paths(&self.url, base));
    }

    /// Report every problem, each with its TOML path under `path`
    /// (e.g. `sources.crm`).
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        crate::cdc_rules::validate_cdc_keys(path, &self.schema_topic, self.max_event_size, errors);
        let mut err = |p: String, m: String| {
            errors.push(ConfigError {
                path: p,
                message: m,
            })
        };

        if self.url.trim().is_empty() {
            err(format!("{path}.url"), "must not be empty".into());
        } else {
            match super::ConnParams::from_url(&self.url) {
                Err(e) => err(format!("{path}.url"), e),
                Ok(c) => {
                    if let Err(e) = c.tls.check_files(&format!("{path}.url")) {
                        let e = switchyard_core::config::tls_error(e);
                        err(e.path, e.message);
                    }
                }
            }
        }
        if self.publication.is_empty() || self.publication.len() > 63 {
            err(
                format!("{path}.publication"),
                "must be 1 to 63 bytes long".into(),
            );
        }
        if self.slot.is_empty()
            || self.slot.len() > 63
            || !self
                .slot
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            err(
                format!("{path}.slot"),
                "replication slot names are 1 to 63 characters of a-z, 0-9 and _".into(),
            );
        }
        if self.status_interval.is_zero() || self.status_interval > Duration::from_secs(30) {
            err(
                format!("{path}.status_interval"),
                "must be between 1ms and 30s (Postgres drops a silent replication connection after wal_sender_timeout, 60s by default)".into(),
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
        if self.snapshot_fetch_rows == 0 || self.snapshot_fetch_rows > 1_000_000 {
            err(
                format!("{path}.snapshot_fetch_rows"),
                "must be between 1 and 1000000".into(),
            );
        }
        if self.append_lanes == 0 || self.append_lanes > 64 {
            err(
                format!("{path}.append_lanes"),
                "must be between 1 and 64".into(),
            );
        }
        if self.tables.is_empty() {
            err(format!("{path}.tables"), "list at least one table".into());
        }
        let mut seen: Vec<(Option<String>, String)> = Vec::new();
        for (i, t) in self.tables.iter().enumerate() {
            let tp = format!("{path}.tables[{i}]");
            match split_table_name(&t.table) {
                Ok(name) => {
                    if seen.contains(&name) {
                        err(
                            format!("{tp}.table"),
                            format!("table `{}` is listed twice", t.table),
                        );
                    }
                    seen.push(name);
                }
                Err(e) => err(format!("{tp}.table"), format!("`{}`: {e}", t.table)),
            }
            match Template::parse(&t.topic) {
                Err(e) => err(format!("{tp}.topic"), e),
                Ok(tpl) => {
                    if let Some(e) = tpl.literal_error() {
                        err(format!("{tp}.topic"), e);
                    }
                }
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
            crate::cdc_rules::validate_rules(
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

    // Mirror of the integrator's enum so the tag + deny_unknown_fields
    // combination is exercised here.
    #[derive(Debug, Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum SourceConfig {
        #[allow(dead_code)]
        Http(toml::Value),
        Postgres(PostgresSourceConfig),
    }

    #[derive(Debug, Deserialize)]
    struct Root {
        sources: std::collections::BTreeMap<String, SourceConfig>,
    }

    const GOOD: &str = r#"
[sources.crm]
type = "postgres"
url = "postgres://u:p@localhost:5432/crm"
publication = "switchyard_crm"
create_publication = true
slot = "switchyard_crm"
status_interval = "500ms"

[[sources.crm.tables]]
table = "public.customers"
topic = "customer.{banner}.{op}"
account_column = "account_id"
snapshot = true
soft_delete_column = "deleted_at"

[[sources.crm.tables.rules]]
when_changed = ["email"]
topic = "customer.{banner}.email_changed"

[[sources.crm.tables.rules]]
when_changed = ["consent_*"]
topic = "customer.{banner}.consent_changed"
ops = ["insert", "update"]

[[sources.crm.tables]]
table = "orders"
topic = "order.{op}"
account_column = "account_id"
key_columns = ["id"]
"#;

    fn parse(s: &str) -> Result<PostgresSourceConfig, toml::de::Error> {
        let root: Root = toml::from_str(s)?;
        match root.sources.into_iter().next().map(|(_, v)| v) {
            Some(SourceConfig::Postgres(c)) => Ok(c),
            _ => panic!("not a postgres source"),
        }
    }

    fn errors(c: &PostgresSourceConfig) -> Vec<(String, String)> {
        let mut e = Vec::new();
        c.validate("sources.crm", &mut e);
        e.into_iter().map(|e| (e.path, e.message)).collect()
    }

    #[test]
    fn full_example_parses_and_validates() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.status_interval, Duration::from_millis(500));
        assert_eq!(c.batch_size, 500);
        assert_eq!(c.tables.len(), 2);
        assert_eq!(c.tables[0].rules[0].ops, None);
        assert_eq!(
            c.tables[0].rules[0].ops_for(true),
            vec![Op::Update, Op::SoftDelete, Op::Restore]
        );
        assert_eq!(c.tables[0].rules[1].ops, Some(vec![Op::Insert, Op::Update]));
        assert!(c.tables[0].emit_default);
        assert_eq!(
            c.tables[1].key_columns.as_deref(),
            Some(&["id".to_string()][..])
        );
        assert_eq!(errors(&c), vec![]);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let s = GOOD.replace("snapshot = true", "snapshots = true");
        let e = parse(&s).unwrap_err().to_string();
        assert!(e.contains("snapshots"), "{e}");
        let s = GOOD.replace(
            "slot = \"switchyard_crm\"",
            "slot = \"switchyard_crm\"\nslott = 1",
        );
        assert!(parse(&s).is_err());
    }

    #[test]
    fn every_error_has_its_path() {
        let mut c = parse(GOOD).unwrap();
        c.slot = "Bad-Slot".into();
        c.url = "postgres://[::1".into();
        c.tables[1].account_column = String::new();
        c.tables[0].rules[0].when_changed = vec!["a[".into()];
        c.tables[0].rules[1].topic = "x.{unclosed".into();
        c.tables[1].topic = "x.{}".into();
        c.tables[1].emit_default = false;
        c.tables[1].key_columns = Some(vec![]);
        let e = errors(&c);
        let paths: Vec<&str> = e.iter().map(|(p, _)| p.as_str()).collect();
        for want in [
            "sources.crm.url",
            "sources.crm.slot",
            "sources.crm.tables[1].account_column",
            "sources.crm.tables[0].rules[0].when_changed[0]",
            "sources.crm.tables[0].rules[1].topic",
            "sources.crm.tables[1].topic",
            "sources.crm.tables[1].emit_default",
            "sources.crm.tables[1].key_columns",
        ] {
            assert!(paths.contains(&want), "missing {want} in {e:?}");
        }
    }

    #[test]
    fn duplicate_tables_and_bad_ops() {
        let mut c = parse(GOOD).unwrap();
        c.tables[1].table = "public.customers".into();
        c.tables[1].rules.push(RuleConfig {
            when_changed: vec!["x".into()],
            topic: "t".into(),
            ops: Some(vec![Op::Snapshot, Op::SoftDelete]),
        });
        let e = errors(&c);
        let paths: Vec<&str> = e.iter().map(|(p, _)| p.as_str()).collect();
        assert!(paths.contains(&"sources.crm.tables[1].table"), "{e:?}");
        assert!(
            paths.contains(&"sources.crm.tables[1].rules[0].ops[0]"),
            "{e:?}"
        );
        assert!(
            paths.contains(&"sources.crm.tables[1].rules[0].ops[1]"),
            "{e:?}"
        );
    }

    /// A rule without `ops` on a table without `soft_delete_column` is
    /// valid: its default ops are the ones that table can have.
    #[test]
    fn default_rule_ops_fit_a_table_without_soft_delete() {
        let mut c = parse(GOOD).unwrap();
        c.tables[1].rules.push(RuleConfig {
            when_changed: vec!["status".into()],
            topic: "order.status_changed".into(),
            ops: None,
        });
        assert_eq!(errors(&c), vec![]);
        assert_eq!(c.tables[1].rules[0].ops_for(false), vec![Op::Update]);
        // Written by the user, they are still checked.
        c.tables[1].rules[0].ops = Some(vec![Op::Update, Op::Restore]);
        let e = errors(&c);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].0, "sources.crm.tables[1].rules[0].ops[1]");
        c.tables[1].rules[0].ops = Some(vec![]);
        assert_eq!(errors(&c)[0].0, "sources.crm.tables[1].rules[0].ops");
    }

    #[test]
    fn table_names() {
        assert_eq!(split_table_name("a").unwrap(), (None, "a".into()));
        assert_eq!(
            split_table_name("s.a").unwrap(),
            (Some("s".into()), "a".into())
        );
        assert_eq!(
            split_table_name("\"My.S\".\"T\"\"x\"").unwrap(),
            (Some("My.S".into()), "T\"x".into())
        );
        assert!(split_table_name("a.b.c").is_err());
        assert!(split_table_name("a.").is_err());
        assert!(split_table_name("\"a").is_err());
        assert!(split_table_name("\"a\"b").is_err());
    }
}
