//! Row changes → canonical events, with the topic templates and rules shared
//! with the Postgres source (`source/cdc_rules.rs`). The binlog carries full
//! before-images (`binlog_row_image = FULL` is checked at startup), so
//! `changed` is exact for every update.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::cdc_rules::{
    changed_columns, compile_rules, topics_for, update_op, Rule, Template, Vars,
};
use switchyard_core::event::{Commit, Event, Op};

use super::config::TableConfig;
use super::values::ColKind;

/// Namespace of MySQL CDC event ids (UUIDv5).
pub const ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x7d3e_41a0_52c9_4b8e_a0f1_9c24_d6e3_5a17);

/// Deterministic id of the `sub`-th event (0 = default topic, 1.. = rules)
/// of row `seq` of the transaction that starts at `txn` (`file:pos`).
pub fn change_id(source: &str, txn: &str, seq: u64, sub: usize) -> String {
    uuid::Uuid::new_v5(
        &ID_NAMESPACE,
        format!("{source}/{txn}/{seq}/{sub}").as_bytes(),
    )
    .to_string()
}

/// Deterministic id of a snapshot row (depends on the row key, not on the
/// snapshot's position, so a repeated snapshot deduplicates).
pub fn snapshot_id(source: &str, table: &str, key: &Value, sub: usize) -> String {
    uuid::Uuid::new_v5(
        &ID_NAMESPACE,
        format!("{source}/snapshot/{table}/{key}/{sub}").as_bytes(),
    )
    .to_string()
}

/// Everything needed to turn one table's changes into events.
#[derive(Debug, Clone)]
pub struct TableMapping {
    pub source: String,
    pub database: String,
    pub name: String,
    /// `database.name`
    pub qualified: String,
    /// Columns in table order, with how to decode them.
    pub columns: Vec<(String, ColKind)>,
    pub key_columns: Vec<String>,
    pub account_column: String,
    pub topic: Template,
    pub emit_default: bool,
    pub rules: Vec<Rule>,
    pub soft_delete_column: Option<String>,
    /// Events that cannot be written (a topic made from column values
    /// that breaks the topic rule, an oversized event) or rows that cannot
    /// be decoded, waiting to be written to the quarantine.
    pub quarantine: std::sync::Arc<crate::quarantine::Sink>,
    /// `max_event_size` of the source, in bytes.
    pub max_event_size: u64,
}

impl TableMapping {
    pub fn new(
        source: &str,
        database: &str,
        name: &str,
        columns: Vec<(String, ColKind)>,
        key_columns: Vec<String>,
        cfg: &TableConfig,
    ) -> Result<TableMapping, String> {
        Ok(TableMapping {
            source: source.to_owned(),
            database: database.to_owned(),
            name: name.to_owned(),
            qualified: format!("{database}.{name}"),
            columns,
            key_columns,
            account_column: cfg.account_column.clone(),
            topic: Template::parse(&cfg.topic)?,
            emit_default: cfg.emit_default,
            rules: compile_rules(&cfg.rules, cfg.soft_delete_column.is_some())?,
            quarantine: Default::default(),
            max_event_size: crate::quarantine::default_max_event_size().0,
            soft_delete_column: cfg.soft_delete_column.clone(),
        })
    }

    /// Every column the mapping reads (for catalog checks).
    pub fn referenced_columns(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.key_columns.iter().map(String::as_str).collect();
        v.push(&self.account_column);
        v.extend(self.topic.columns());
        for r in &self.rules {
            v.extend(r.topic.columns());
        }
        if let Some(c) = &self.soft_delete_column {
            v.push(c);
        }
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// A row change as decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Insert,
    Update,
    Delete,
    Snapshot,
}

/// Where the change sits in the binlog.
pub struct Position<'a> {
    /// `file:pos` of the transaction's first event (snapshot: the snapshot's
    /// binlog position).
    pub txn: &'a str,
    /// Row number inside the transaction.
    pub seq: u64,
    /// The transaction's GTID, when known.
    pub gtid: Option<&'a str>,
    pub occurred_at: DateTime<Utc>,
    pub ingested_at: DateTime<Utc>,
}

/// Build the events of one row change (default topic + matching rules).
pub fn change_events(
    t: &TableMapping,
    kind: ChangeKind,
    before: Option<Map<String, Value>>,
    after: Option<Map<String, Value>>,
    pos: &Position<'_>,
) -> Vec<Event> {
    let mut attributes = BTreeMap::new();
    attributes.insert("table".to_string(), t.qualified.clone());
    if let Some(g) = pos.gtid {
        attributes.insert("gtid".to_string(), g.to_string());
    }
    let empty = Map::new();
    let (op, changed) = match kind {
        ChangeKind::Insert => {
            let changed = after
                .as_ref()
                .map(|a| {
                    a.iter()
                        .filter(|(_, v)| !v.is_null())
                        .map(|(k, _)| k.clone())
                        .collect()
                })
                .unwrap_or_default();
            (Op::Insert, changed)
        }
        ChangeKind::Snapshot => (Op::Snapshot, Vec::new()),
        ChangeKind::Delete => (Op::Delete, Vec::new()),
        ChangeKind::Update => {
            let b = before.as_ref().unwrap_or(&empty);
            let a = after.as_ref().unwrap_or(&empty);
            (
                update_op(t.soft_delete_column.as_deref(), b, a),
                changed_columns(b, a),
            )
        }
    };
    let av = after.as_ref().unwrap_or(&empty);
    let bv = before.as_ref().unwrap_or(&empty);
    let lookup = |c: &str| av.get(c).or_else(|| bv.get(c));
    let key = {
        let mut m = Map::new();
        for k in &t.key_columns {
            m.insert(k.clone(), lookup(k).cloned().unwrap_or(Value::Null));
        }
        Value::Object(m)
    };
    let account_id = match lookup(&t.account_column) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    };
    let vars = Vars {
        op,
        table: &t.name,
        schema: &t.database,
        source: &t.source,
    };
    let topics = topics_for(
        t.emit_default.then_some(&t.topic),
        &t.rules,
        &vars,
        &changed,
        &lookup,
    );
    let before = before.map(Value::Object);
    let after = after.map(Value::Object);
    let mut out: Vec<Event> = topics
        .into_iter()
        .map(|(sub, topic)| Event {
            id: match kind {
                ChangeKind::Snapshot => snapshot_id(&t.source, &t.qualified, &key, sub),
                _ => change_id(&t.source, pos.txn, pos.seq, sub),
            },
            topic,
            source: t.source.clone(),
            op,
            account_id: account_id.clone(),
            key: Some(key.clone()),
            before: before.clone(),
            after: after.clone(),
            data: None,
            changed: changed.clone(),
            occurred_at: pos.occurred_at,
            ingested_at: pos.ingested_at,
            commit: Some(Commit {
                id: pos.txn.to_string(),
                seq: pos.seq,
            }),
            trace: None,
            consent: BTreeMap::new(),
            attributes: attributes.clone(),
        })
        .collect();
    crate::quarantine::screen(&mut out, &t.quarantine, &t.qualified, t.max_event_size);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdc_rules::RuleConfig;
    use serde_json::json;

    fn table() -> TableMapping {
        let cfg = TableConfig {
            table: "shop.customers".into(),
            topic: "customer.{banner}.{op}".into(),
            account_column: "account_id".into(),
            key_columns: None,
            snapshot: false,
            emit_default: true,
            rules: vec![RuleConfig {
                when_changed: vec!["email".into()],
                topic: "customer.{banner}.email_changed".into(),
                ops: Some(vec![Op::Update]),
            }],
            soft_delete_column: Some("deleted_at".into()),
        };
        TableMapping::new("shop", "shop", "customers", vec![], vec!["id".into()], &cfg).unwrap()
    }

    fn pos(seq: u64) -> Position<'static> {
        Position {
            txn: "mariadb-bin.000001:1234",
            seq,
            gtid: Some("0-1-42"),
            occurred_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            ingested_at: DateTime::from_timestamp(1_700_000_001, 0).unwrap(),
        }
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn update_with_rules_and_deterministic_ids() {
        let t = table();
        let b = obj(
            json!({"id": 7, "account_id": "a1", "banner": "b", "email": "x@y", "deleted_at": null}),
        );
        let a = obj(
            json!({"id": 7, "account_id": "a1", "banner": "b", "email": "z@y", "deleted_at": null}),
        );
        let evs = change_events(
            &t,
            ChangeKind::Update,
            Some(b.clone()),
            Some(a.clone()),
            &pos(3),
        );
        let topics: Vec<&str> = evs.iter().map(|e| e.topic.as_str()).collect();
        assert_eq!(
            topics,
            vec!["customer.b.update", "customer.b.email_changed"]
        );
        assert_eq!(evs[0].changed, vec!["email"]);
        assert_eq!(evs[0].key, Some(json!({"id": 7})));
        assert_eq!(evs[0].account_id, "a1");
        assert_eq!(evs[0].before.as_ref().unwrap()["email"], json!("x@y"));
        assert_eq!(evs[0].attributes["gtid"], "0-1-42");
        assert_eq!(
            evs[0].commit.as_ref().unwrap().id,
            "mariadb-bin.000001:1234"
        );
        assert_eq!(
            evs[0].id,
            change_id("shop", "mariadb-bin.000001:1234", 3, 0)
        );
        let again = change_events(&t, ChangeKind::Update, Some(b), Some(a), &pos(3));
        assert_eq!(evs[0].id, again[0].id);
        assert_ne!(evs[0].id, evs[1].id);
        assert_ne!(
            change_id("shop", "f:1", 3, 0),
            change_id("shop", "f:1", 4, 0)
        );
        assert_ne!(
            change_id("shop", "f:1", 3, 0),
            change_id("shop", "f:2", 3, 0)
        );
        assert_ne!(
            change_id("shop", "f:1", 3, 0),
            change_id("shop2", "f:1", 3, 0)
        );
    }

    #[test]
    fn soft_delete_delete_and_snapshot() {
        let t = table();
        let b = obj(json!({"id": 7, "account_id": "a1", "banner": "b", "deleted_at": null}));
        let a = obj(
            json!({"id": 7, "account_id": "a1", "banner": "b", "deleted_at": "2024-05-01T00:00:00"}),
        );
        let evs = change_events(
            &t,
            ChangeKind::Update,
            Some(b.clone()),
            Some(a.clone()),
            &pos(0),
        );
        assert_eq!(evs[0].op, Op::SoftDelete);
        let evs = change_events(&t, ChangeKind::Delete, Some(b.clone()), None, &pos(1));
        assert_eq!(
            (evs[0].topic.as_str(), evs[0].account_id.as_str()),
            ("customer.b.delete", "a1")
        );
        let s1 = change_events(&t, ChangeKind::Snapshot, None, Some(a.clone()), &pos(1));
        let s2 = change_events(&t, ChangeKind::Snapshot, None, Some(a), &pos(9));
        assert_eq!(s1[0].id, s2[0].id);
        assert_eq!(s1[0].op, Op::Snapshot);
    }
}
