//! Schema drift, shared by the CDC sources (Postgres: pgoutput Relation
//! messages; MySQL/MariaDB: DDL in the binlog and the catalog).
//!
//! A source keeps each table's last known shape (columns with their type
//! names, as its mapper decodes them). When a new shape differs, [`diff`]
//! classifies the change (add / drop / rename column, type change) and
//! [`Detected`] carries what to announce: one `schema.changed` event per
//! change on the source's `schema_topic`, the history entries, and the new
//! shape. A table the source sees for the first time outside its config
//! is `table_added`; a captured table that disappears is `table_dropped`.
//!
//! The source appends the events first (through its own append path, so
//! they obey its position rule), then [`record`]s the shape and history in
//! Redis (`switchyard_store::schema`). A crash in between announces again
//! after the restart (same id where the position is the same: the log
//! drops the duplicate); a change is never recorded without its event.
//! Each change is logged at warn and counted in
//! `switchyard_cdc_schema_changes_total{source, change}`.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use switchyard_core::event::{Commit, Event, Op};
use switchyard_store::log::{Log, LogError};

/// Namespace of `schema.changed` event ids (UUIDv5).
const ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x2f6b_9e13_c4a7_4d58_b1e0_7a3c_58d2_e914);

/// The default `schema_topic`.
pub const DEFAULT_TOPIC: &str = "schema.changed";

pub fn default_topic() -> String {
    DEFAULT_TOPIC.to_string()
}

/// One column of a table's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
}

impl Column {
    pub fn new(name: impl Into<String>, type_name: impl Into<String>) -> Column {
        Column {
            name: name.into(),
            type_name: type_name.into(),
        }
    }
}

/// One classified change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    AddColumn {
        column: String,
        new_type: String,
    },
    DropColumn {
        column: String,
        old_type: String,
    },
    RenameColumn {
        from: String,
        to: String,
        old_type: String,
        new_type: String,
    },
    TypeChange {
        column: String,
        old_type: String,
        new_type: String,
    },
    TableAdded,
    TableDropped,
}

impl Change {
    /// The metric label and the `change` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::AddColumn { .. } => "add_column",
            Change::DropColumn { .. } => "drop_column",
            Change::RenameColumn { .. } => "rename_column",
            Change::TypeChange { .. } => "type_change",
            Change::TableAdded => "table_added",
            Change::TableDropped => "table_dropped",
        }
    }
}

/// Classify the difference between two shapes of one table. A column whose
/// name went away and one that appeared *at the same position* (same
/// number of each) is a rename; otherwise drops and adds. Same name,
/// other type: a type change. Order: renames, drops, adds, type changes.
pub fn diff(old: &[Column], new: &[Column]) -> Vec<Change> {
    let old_names: HashMap<&str, &Column> = old.iter().map(|c| (c.name.as_str(), c)).collect();
    let new_names: HashMap<&str, &Column> = new.iter().map(|c| (c.name.as_str(), c)).collect();
    let dropped: Vec<(usize, &Column)> = old
        .iter()
        .enumerate()
        .filter(|(_, c)| !new_names.contains_key(c.name.as_str()))
        .collect();
    let added: Vec<(usize, &Column)> = new
        .iter()
        .enumerate()
        .filter(|(_, c)| !old_names.contains_key(c.name.as_str()))
        .collect();
    let mut out = Vec::new();
    let renames = !dropped.is_empty()
        && dropped.len() == added.len()
        && old.len() == new.len()
        && dropped.iter().zip(&added).all(|(d, a)| d.0 == a.0);
    if renames {
        for ((_, d), (_, a)) in dropped.iter().zip(&added) {
            out.push(Change::RenameColumn {
                from: d.name.clone(),
                to: a.name.clone(),
                old_type: d.type_name.clone(),
                new_type: a.type_name.clone(),
            });
        }
    } else {
        for (_, d) in &dropped {
            out.push(Change::DropColumn {
                column: d.name.clone(),
                old_type: d.type_name.clone(),
            });
        }
        for (_, a) in &added {
            out.push(Change::AddColumn {
                column: a.name.clone(),
                new_type: a.type_name.clone(),
            });
        }
    }
    for c in new {
        if let Some(o) = old_names.get(c.name.as_str()) {
            if o.type_name != c.type_name {
                out.push(Change::TypeChange {
                    column: c.name.clone(),
                    old_type: o.type_name.clone(),
                    new_type: c.type_name.clone(),
                });
            }
        }
    }
    out
}

/// Where a change was seen: the source's position (Postgres: the commit
/// LSN; MySQL: `file:pos`), a sequence within it, and the source time.
pub struct At<'a> {
    pub position: &'a str,
    pub seq: u64,
    pub occurred_at: DateTime<Utc>,
}

/// What to announce and record for one table.
#[derive(Debug, Clone)]
pub struct Detected {
    pub table: String,
    pub changes: Vec<Change>,
    /// The shape from now on; `None`: the table is gone.
    pub shape: Option<Vec<Column>>,
    /// One `schema.changed` event per change.
    pub events: Vec<Event>,
    /// One history entry (JSON) per change.
    pub entries: Vec<String>,
}

/// Compare `old` (None: never seen) with `new` (None: gone) and build the
/// announcement, logging each change at warn and counting it. `captured`:
/// the table is in the source's config (a first sight of such a table is
/// the baseline, not a change). `None`: nothing to announce or record.
pub fn detect(
    source: &str,
    topic: &str,
    table: &str,
    captured: bool,
    old: Option<&[Column]>,
    new: Option<&[Column]>,
    at: &At<'_>,
) -> Option<Detected> {
    let changes = match (old, new) {
        (Some(o), Some(n)) => diff(o, n),
        (None, Some(_)) if captured => Vec::new(),
        (None, Some(_)) => vec![Change::TableAdded],
        (Some(_), None) => vec![Change::TableDropped],
        (None, None) => return None,
    };
    if changes.is_empty() && old.is_some() {
        return None;
    }
    let now = Utc::now();
    let mut events = Vec::new();
    let mut entries = Vec::new();
    for (i, ch) in changes.iter().enumerate() {
        let mut data = serde_json::to_value(ch).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut data {
            m.insert("table".into(), json!(table));
            m.insert("source".into(), json!(source));
            m.insert("old_columns".into(), json!(old));
            m.insert("new_columns".into(), json!(new));
        }
        let id = uuid::Uuid::new_v5(
            &ID_NAMESPACE,
            format!("{source}/schema/{table}/{}/{}/{i}", at.position, at.seq).as_bytes(),
        )
        .to_string();
        tracing::warn!(source, table, change = ch.kind(), detail = %data,
            "table schema changed; events from here on carry the new shape");
        switchyard_core::metrics::schema_change(source, ch.kind());
        let mut entry = data.clone();
        if let Value::Object(m) = &mut entry {
            m.insert("position".into(), json!(at.position));
            m.insert("event_id".into(), json!(id));
            m.insert("detected_at".into(), json!(now));
        }
        entries.push(entry.to_string());
        let mut attributes = BTreeMap::new();
        attributes.insert("table".to_string(), table.to_string());
        attributes.insert("change".to_string(), ch.kind().to_string());
        events.push(Event {
            id,
            topic: topic.to_string(),
            source: source.to_string(),
            op: Op::Event,
            // One partition per table: its schema events stay in order.
            account_id: format!("schema:{source}:{table}"),
            key: Some(json!(table)),
            before: None,
            after: None,
            data: Some(data),
            changed: Vec::new(),
            occurred_at: at.occurred_at,
            ingested_at: now,
            commit: Some(Commit {
                id: at.position.to_string(),
                seq: at.seq,
            }),
            trace: None,
            consent: BTreeMap::new(),
            attributes,
        });
    }
    Some(Detected {
        table: table.to_string(),
        changes,
        shape: new.map(<[Column]>::to_vec),
        events,
        entries,
    })
}

/// The shapes recorded for `source` (table → columns); an entry that does
/// not parse is left out (it is replaced at the next change).
pub async fn load(log: &Log, source: &str) -> Result<HashMap<String, Vec<Column>>, LogError> {
    Ok(switchyard_store::schema::shapes(log, source)
        .await?
        .into_iter()
        .filter_map(|(t, j)| Some((t, serde_json::from_str(&j).ok()?)))
        .collect())
}

/// Record a detection's shape and history (after its events are in the log).
pub async fn record(log: &Log, source: &str, d: &Detected) -> Result<(), LogError> {
    let shape = d
        .shape
        .as_ref()
        .map(|s| serde_json::to_string(s).unwrap_or_default());
    switchyard_store::schema::record(log, source, &d.table, shape.as_deref(), &d.entries).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(v: &[(&str, &str)]) -> Vec<Column> {
        v.iter().map(|(n, t)| Column::new(*n, *t)).collect()
    }

    #[test]
    fn classifies_each_kind() {
        let old = cols(&[("id", "int8"), ("email", "text"), ("n", "int4")]);
        assert_eq!(
            diff(
                &old,
                &cols(&[
                    ("id", "int8"),
                    ("email", "text"),
                    ("n", "int4"),
                    ("tier", "text")
                ])
            ),
            vec![Change::AddColumn {
                column: "tier".into(),
                new_type: "text".into()
            }]
        );
        assert_eq!(
            diff(&old, &cols(&[("id", "int8"), ("n", "int4")])),
            vec![Change::DropColumn {
                column: "email".into(),
                old_type: "text".into()
            }]
        );
        assert_eq!(
            diff(
                &old,
                &cols(&[("id", "int8"), ("mail", "text"), ("n", "int4")])
            ),
            vec![Change::RenameColumn {
                from: "email".into(),
                to: "mail".into(),
                old_type: "text".into(),
                new_type: "text".into()
            }]
        );
        assert_eq!(
            diff(
                &old,
                &cols(&[("id", "int8"), ("email", "text"), ("n", "int8")])
            ),
            vec![Change::TypeChange {
                column: "n".into(),
                old_type: "int4".into(),
                new_type: "int8".into()
            }]
        );
        // A drop at one place and an add at another is not a rename.
        assert_eq!(
            diff(&old, &cols(&[("id", "int8"), ("n", "int4"), ("x", "text")])),
            vec![
                Change::DropColumn {
                    column: "email".into(),
                    old_type: "text".into()
                },
                Change::AddColumn {
                    column: "x".into(),
                    new_type: "text".into()
                }
            ]
        );
        assert!(diff(&old, &old).is_empty());
    }

    #[test]
    fn detect_baseline_new_and_dropped_tables() {
        let at = At {
            position: "0/1",
            seq: 3,
            occurred_at: Utc::now(),
        };
        let c = cols(&[("id", "int8")]);
        assert!(detect(
            "s",
            "schema.changed",
            "public.t",
            true,
            None,
            Some(&c[..]),
            &at
        )
        .is_some_and(|d| d.events.is_empty() && d.shape.is_some()));
        let added = detect(
            "s",
            "schema.changed",
            "public.u",
            false,
            None,
            Some(&c[..]),
            &at,
        )
        .unwrap();
        assert_eq!(added.changes, vec![Change::TableAdded]);
        let dropped = detect(
            "s",
            "schema.changed",
            "public.t",
            true,
            Some(&c[..]),
            None,
            &at,
        )
        .unwrap();
        assert_eq!(dropped.changes, vec![Change::TableDropped]);
        assert!(dropped.shape.is_none());
        assert!(detect(
            "s",
            "schema.changed",
            "public.t",
            true,
            Some(&c[..]),
            Some(&c[..]),
            &at
        )
        .is_none());
    }

    #[test]
    fn events_are_deterministic_and_valid() {
        let at = At {
            position: "mariadb-bin.000001:400",
            seq: 0,
            occurred_at: Utc::now(),
        };
        let old = cols(&[("id", "bigint"), ("n", "int")]);
        let new = cols(&[("id", "bigint"), ("n", "bigint"), ("tier", "text")]);
        let a = detect(
            "shop",
            "schema.changed",
            "shop.items",
            true,
            Some(&old[..]),
            Some(&new[..]),
            &at,
        )
        .unwrap();
        let b = detect(
            "shop",
            "schema.changed",
            "shop.items",
            true,
            Some(&old[..]),
            Some(&new[..]),
            &at,
        )
        .unwrap();
        assert_eq!(a.events.len(), 2);
        assert_eq!(
            a.events.iter().map(|e| &e.id).collect::<Vec<_>>(),
            b.events.iter().map(|e| &e.id).collect::<Vec<_>>()
        );
        assert_ne!(a.events[0].id, a.events[1].id);
        let d = a.events[1].data.as_ref().unwrap();
        assert_eq!(d["change"], "type_change");
        assert_eq!(d["old_type"], "int");
        assert_eq!(d["new_type"], "bigint");
        assert_eq!(d["table"], "shop.items");
        for e in &a.events {
            assert!(switchyard_core::event::valid_topic(&e.topic));
        }
        let entry: Value = serde_json::from_str(&a.entries[0]).unwrap();
        assert_eq!(entry["change"], "add_column");
        assert_eq!(entry["event_id"], json!(a.events[0].id));
    }
}
