//! Row changes → canonical events: topic templates, changed columns, rules,
//! soft deletes, deterministic ids.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use switchyard_core::event::{Commit, Event, Op};

use super::config::TableConfig;
use super::pgoutput::{Datum, Lsn, OldTuple, Relation, Tuple};
use super::values;
pub use crate::cdc_rules::{compile_rules, topics_for, Rule, Template, Vars, BUILTIN_VARS};

/// Namespace of CDC event ids (UUIDv5).
pub const ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x5c1d_7a2e_9b44_4f0e_8d3a_61c2_f0e8_b7a1);

/// Deterministic id of the `sub`-th event (0 = default topic, 1.. = rules)
/// of change `seq` in the transaction committed at `commit_lsn`.
pub fn change_id(slot: &str, commit_lsn: Lsn, seq: u64, sub: usize) -> String {
    uuid::Uuid::new_v5(
        &ID_NAMESPACE,
        format!("{slot}/{commit_lsn}/{seq}/{sub}").as_bytes(),
    )
    .to_string()
}

/// Deterministic id of a snapshot row: the same row snapshotted again (after
/// a crash during the snapshot) gets the same id.
pub fn snapshot_id(slot: &str, table: &str, key: &Value, sub: usize) -> String {
    uuid::Uuid::new_v5(
        &ID_NAMESPACE,
        format!("{slot}/snapshot/{table}/{key}/{sub}").as_bytes(),
    )
    .to_string()
}

/// Everything needed to turn one table's changes into events.
#[derive(Debug, Clone)]
pub struct TableMapping {
    pub source: String,
    pub slot: String,
    pub schema: String,
    pub name: String,
    /// `schema.name`
    pub qualified: String,
    pub key_columns: Vec<String>,
    pub account_column: String,
    pub topic: Template,
    pub emit_default: bool,
    pub rules: Vec<Rule>,
    pub soft_delete_column: Option<String>,
    /// Events that cannot be written (a topic made from column values
    /// that breaks the topic rule, an oversized event) or rows that cannot
    /// be decoded, waiting to be written to the quarantine.
    pub quarantine: Arc<crate::quarantine::Sink>,
    /// `max_event_size` of the source, in bytes.
    pub max_event_size: u64,
}

impl TableMapping {
    /// Compile a validated table config (errors only for an unvalidated one).
    pub fn new(
        source: &str,
        slot: &str,
        schema: &str,
        name: &str,
        key_columns: Vec<String>,
        cfg: &TableConfig,
    ) -> Result<TableMapping, String> {
        let rules = compile_rules(&cfg.rules, cfg.soft_delete_column.is_some())?;
        Ok(TableMapping {
            source: source.to_owned(),
            slot: slot.to_owned(),
            schema: schema.to_owned(),
            name: name.to_owned(),
            qualified: format!("{schema}.{name}"),
            key_columns,
            account_column: cfg.account_column.clone(),
            topic: Template::parse(&cfg.topic)?,
            emit_default: cfg.emit_default,
            rules,
            soft_delete_column: cfg.soft_delete_column.clone(),
            quarantine: Arc::default(),
            max_event_size: crate::quarantine::default_max_event_size().0,
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

/// How much of the old row a change carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeforeImage {
    /// No old tuple (update with REPLICA IDENTITY DEFAULT/INDEX and an unchanged key).
    None,
    /// Replica identity key columns only.
    Key,
    /// The whole old row (REPLICA IDENTITY FULL).
    Full,
}

impl BeforeImage {
    fn as_str(self) -> &'static str {
        match self {
            BeforeImage::None => "none",
            BeforeImage::Key => "key",
            BeforeImage::Full => "full",
        }
    }
}

/// A decoded row change, before event construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Insert,
    Update,
    Delete,
    Snapshot,
}

/// A row image: column → JSON, plus columns whose value was not sent
/// (unchanged TOAST).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Row {
    pub values: Map<String, Value>,
    pub unchanged_toast: Vec<String>,
}

/// Errors turning a tuple into a row.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RowError {
    #[error("relation {relation} has {expected} columns but the tuple has {found}")]
    ColumnCount {
        relation: String,
        expected: usize,
        found: usize,
    },
}

/// Decode a tuple with its relation. `key_only`: keep only the replica
/// identity key columns (the others are sent as NULL in a `K` tuple).
pub fn tuple_to_row(rel: &Relation, tuple: &Tuple<'_>, key_only: bool) -> Result<Row, RowError> {
    if tuple.len() != rel.columns.len() {
        return Err(RowError::ColumnCount {
            relation: format!("{}.{}", rel.namespace, rel.name),
            expected: rel.columns.len(),
            found: tuple.len(),
        });
    }
    let mut row = Row::default();
    for (col, d) in rel.columns.iter().zip(tuple) {
        if key_only && !col.is_key {
            continue;
        }
        match d {
            Datum::Null => {
                row.values.insert(col.name.clone(), Value::Null);
            }
            Datum::UnchangedToast => row.unchanged_toast.push(col.name.clone()),
            Datum::Text(b) => {
                row.values
                    .insert(col.name.clone(), values::bytes_to_json(col.type_oid, b));
            }
            Datum::Binary(b) => {
                row.values
                    .insert(col.name.clone(), Value::String(values::hex(b)));
            }
        }
    }
    Ok(row)
}

/// Decode the old tuple of an update / delete.
pub fn old_to_row(
    rel: &Relation,
    old: Option<&OldTuple<'_>>,
) -> Result<(Option<Row>, BeforeImage), RowError> {
    Ok(match old {
        None => (None, BeforeImage::None),
        Some(OldTuple::Key(t)) => (Some(tuple_to_row(rel, t, true)?), BeforeImage::Key),
        Some(OldTuple::Full(t)) => (Some(tuple_to_row(rel, t, false)?), BeforeImage::Full),
    })
}

/// Where the change sits in the source.
pub struct Position<'a> {
    /// Commit LSN (for snapshots: the slot's consistent point).
    pub commit_lsn: Lsn,
    /// Change number inside the transaction (snapshot: row number).
    pub seq: u64,
    pub occurred_at: DateTime<Utc>,
    pub ingested_at: DateTime<Utc>,
    /// Names of the replica identity key columns (from the Relation message).
    pub identity_key: &'a [String],
}

/// Build the events of one row change (default topic + matching rules).
pub fn change_events(
    t: &TableMapping,
    kind: ChangeKind,
    before: Option<Row>,
    before_image: BeforeImage,
    after: Option<Row>,
    pos: &Position<'_>,
) -> Vec<Event> {
    let mut attributes = BTreeMap::new();
    attributes.insert("table".to_string(), t.qualified.clone());

    let before = before;
    let mut after = after;

    // Unchanged TOAST in the new row: take the value from a full before-image
    // when there is one, otherwise leave it out and say so.
    if let (Some(a), Some(b)) = (after.as_mut(), before.as_ref()) {
        a.unchanged_toast.retain(|c| match b.values.get(c) {
            Some(v) => {
                a.values.insert(c.clone(), v.clone());
                false
            }
            None => true,
        });
    }
    if let Some(a) = &after {
        if !a.unchanged_toast.is_empty() {
            attributes.insert("unchanged_toast".to_string(), a.unchanged_toast.join(","));
        }
    }

    let (op, changed) = match kind {
        ChangeKind::Insert => {
            let changed = after
                .as_ref()
                .map(|a| {
                    a.values
                        .iter()
                        .filter(|(_, v)| !v.is_null())
                        .map(|(k, _)| k.clone())
                        .collect()
                })
                .unwrap_or_default();
            (Op::Insert, changed)
        }
        ChangeKind::Snapshot => (Op::Snapshot, Vec::new()),
        ChangeKind::Delete => {
            attributes.insert(
                "before_image".to_string(),
                before_image.as_str().to_string(),
            );
            (Op::Delete, Vec::new())
        }
        ChangeKind::Update => {
            attributes.insert(
                "before_image".to_string(),
                before_image.as_str().to_string(),
            );
            let empty = Map::new();
            let bv = before.as_ref().map(|b| &b.values).unwrap_or(&empty);
            let mut changed = Vec::new();
            if let Some(a) = &after {
                for (col, av) in &a.values {
                    match bv.get(col) {
                        Some(bv) => {
                            if bv != av {
                                changed.push(col.clone());
                            }
                        }
                        None => {
                            // Before value unknown: an identity key column
                            // without an old tuple did not change (Postgres
                            // sends the old key when it changes); anything
                            // else counts as changed (documented).
                            let key_unchanged = before_image == BeforeImage::None
                                && pos.identity_key.iter().any(|k| k == col);
                            if !key_unchanged {
                                changed.push(col.clone());
                            }
                        }
                    }
                }
            }
            let mut op = Op::Update;
            if let Some(sd) = &t.soft_delete_column {
                if let (Some(b), Some(a)) =
                    (bv.get(sd), after.as_ref().and_then(|a| a.values.get(sd)))
                {
                    match (b.is_null(), a.is_null()) {
                        (true, false) => op = Op::SoftDelete,
                        (false, true) => op = Op::Restore,
                        _ => {}
                    }
                }
            }
            (op, changed)
        }
    };

    // Values for topics, key and account: the new row, completed by the old.
    let empty = Map::new();
    let av = after.as_ref().map(|a| &a.values).unwrap_or(&empty);
    let bv = before.as_ref().map(|b| &b.values).unwrap_or(&empty);
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
        schema: &t.schema,
        source: &t.source,
    };

    let topics = topics_for(
        t.emit_default.then_some(&t.topic),
        &t.rules,
        &vars,
        &changed,
        &lookup,
    );

    let n = topics.len();
    let commit_id = pos.commit_lsn.to_string();
    let mut before_v = before.map(|b| Value::Object(b.values));
    let mut after_v = after.map(|a| Value::Object(a.values));
    let mut key = Some(key);
    let mut changed = changed;
    let mut attributes = attributes;
    let mut account_id = account_id;
    let mut out = Vec::with_capacity(n);
    for (i, (sub, topic)) in topics.into_iter().enumerate() {
        let id = match kind {
            ChangeKind::Snapshot => snapshot_id(
                &t.slot,
                &t.qualified,
                key.as_ref().unwrap_or(&Value::Null),
                sub,
            ),
            _ => change_id(&t.slot, pos.commit_lsn, pos.seq, sub),
        };
        // The last event takes the values, the others get copies.
        let last = i + 1 == n;
        fn take<T: Clone + Default>(v: &mut T, last: bool) -> T {
            if last {
                std::mem::take(v)
            } else {
                v.clone()
            }
        }
        out.push(Event {
            id,
            topic,
            source: t.source.clone(),
            op,
            account_id: take(&mut account_id, last),
            key: take(&mut key, last),
            before: take(&mut before_v, last),
            after: take(&mut after_v, last),
            data: None,
            changed: take(&mut changed, last),
            occurred_at: pos.occurred_at,
            ingested_at: pos.ingested_at,
            commit: Some(Commit {
                id: commit_id.clone(),
                seq: pos.seq,
            }),
            trace: Some(switchyard_core::tracectx::from_commit(
                &format!("{}/{commit_id}", t.source),
                pos.seq,
            )),
            consent: BTreeMap::new(),
            attributes: take(&mut attributes, last),
        });
    }
    crate::quarantine::screen(&mut out, &t.quarantine, &t.qualified, t.max_event_size);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::config::RuleConfig;
    use crate::postgres::pgoutput::build::{self, Col};
    use crate::postgres::pgoutput::{decode, Message, RelationColumn, ReplicaIdentity};
    use serde_json::json;

    fn rel() -> Relation {
        Relation {
            id: 1,
            namespace: "public".into(),
            name: "customers".into(),
            replica_identity: ReplicaIdentity::Full,
            columns: [
                ("id", 20, true),
                ("account_id", 25, false),
                ("banner", 25, false),
                ("email", 25, false),
                ("consent_email", 16, false),
                ("bio", 25, false),
                ("deleted_at", 1184, false),
            ]
            .into_iter()
            .map(|(n, t, k)| RelationColumn {
                is_key: k,
                name: n.into(),
                type_oid: t,
                type_modifier: -1,
            })
            .collect(),
        }
    }

    fn table(rules: Vec<RuleConfig>, soft: bool) -> TableMapping {
        let cfg = TableConfig {
            table: "public.customers".into(),
            topic: "customer.{banner}.{op}".into(),
            account_column: "account_id".into(),
            key_columns: None,
            snapshot: false,
            emit_default: true,
            rules,
            soft_delete_column: soft.then(|| "deleted_at".to_string()),
            require_before_image: None,
        };
        TableMapping::new(
            "crm",
            "slot1",
            "public",
            "customers",
            vec!["id".into()],
            &cfg,
        )
        .unwrap()
    }

    fn rules() -> Vec<RuleConfig> {
        vec![
            RuleConfig {
                when_changed: vec!["email".into()],
                topic: "customer.{banner}.email_changed".into(),
                ops: None,
            },
            RuleConfig {
                when_changed: vec!["consent_*".into()],
                topic: "customer.{banner}.consent_changed".into(),
                ops: None,
            },
        ]
    }

    fn pos(seq: u64, key: &[String]) -> Position<'_> {
        Position {
            commit_lsn: Lsn(0x16B3748),
            seq,
            occurred_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            ingested_at: DateTime::from_timestamp(1_700_000_001, 0).unwrap(),
            identity_key: key,
        }
    }

    fn row(cols: &[Col<'_>], key_only: bool) -> Row {
        let mut v = Vec::new();
        build::tuple(&mut v, cols);
        let mut m = vec![b'I', 0, 0, 0, 1, b'N'];
        m.extend_from_slice(&v);
        let Message::Insert(i) = decode(&m).unwrap() else {
            panic!()
        };
        tuple_to_row(&rel(), &i.new, key_only).unwrap()
    }

    const FULL: [Col<'static>; 7] = [
        Col::Text("7"),
        Col::Text("acc-1"),
        Col::Text("banner-a"),
        Col::Text("a@x.com"),
        Col::Text("f"),
        Col::Text("long bio"),
        Col::Null,
    ];

    #[test]
    fn templates() {
        let t = Template::parse("customer.{banner}.{op}").unwrap();
        assert_eq!(t.columns().collect::<Vec<_>>(), vec!["banner"]);
        let mut row = Map::new();
        row.insert("banner".into(), json!("b1"));
        let vars = Vars {
            op: Op::Update,
            table: "t",
            schema: "s",
            source: "crm",
        };
        let r = |row: &Map<String, Value>| t.render(&vars, &|c: &str| row.get(c));
        assert_eq!(r(&row), "customer.b1.update");
        row.insert("banner".into(), json!(3));
        assert_eq!(r(&row), "customer.3.update");
        row.insert("banner".into(), Value::Null);
        assert_eq!(r(&row), "customer.null.update");
        row.remove("banner");
        assert_eq!(r(&row), "customer.unknown.update");
        assert_eq!(
            Template::parse("{source}/{schema}.{table}")
                .unwrap()
                .render(&vars, &|c: &str| row.get(c)),
            "crm/s.t"
        );
        for bad in ["", "a{", "a}", "{}", "{a{b}}", "x.{ }"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    /// A topic rendered from a column value that breaks the topic rule is
    /// not emitted but quarantined; the row's other events still are.
    #[test]
    fn an_invalid_rendered_topic_quarantines_that_event_only() {
        let t = table(
            vec![RuleConfig {
                when_changed: vec!["email".into()],
                topic: "customer.email_changed".into(),
                ops: Some(vec![Op::Insert]),
            }],
            true,
        );
        let mut cols = FULL;
        cols[2] = Col::Text("banner a\n");
        let evs = change_events(
            &t,
            ChangeKind::Insert,
            None,
            BeforeImage::None,
            Some(row(&cols, false)),
            &pos(3, &["id".into()]),
        );
        let topics: Vec<&str> = evs.iter().map(|e| e.topic.as_str()).collect();
        assert_eq!(topics, ["customer.email_changed"]);
        // Its id is the one the rule's event always has (sub 1).
        assert_eq!(evs[0].id, change_id("slot1", Lsn(0x16B3748), 3, 1));
        let q = t.quarantine.take();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].kind, "invalid_topic");
        assert_eq!(q[0].id, change_id("slot1", Lsn(0x16B3748), 3, 0));
        assert_eq!(q[0].table, "public.customers");
        // Too long counts too.
        cols[2] = Col::Text(Box::leak("b".repeat(300).into_boxed_str()));
        let evs = change_events(
            &t,
            ChangeKind::Insert,
            None,
            BeforeImage::None,
            Some(row(&cols, false)),
            &pos(4, &["id".into()]),
        );
        assert_eq!(evs.len(), 1);
        assert_eq!(t.quarantine.take().len(), 1);
    }

    #[test]
    fn template_text_must_fit_a_topic() {
        assert_eq!(
            Template::parse("customer.{banner}.{op}")
                .unwrap()
                .literal_error(),
            None
        );
        let e = Template::parse("customer events/{op}")
            .unwrap()
            .literal_error()
            .unwrap();
        assert!(e.contains("`customer events/`") && e.contains("' '"), "{e}");
    }

    #[test]
    fn insert_event() {
        let t = table(rules(), true);
        let after = row(&FULL, false);
        let evs = change_events(
            &t,
            ChangeKind::Insert,
            None,
            BeforeImage::None,
            Some(after),
            &pos(3, &["id".into()]),
        );
        assert_eq!(evs.len(), 1, "rules apply to updates by default");
        let e = &evs[0];
        assert_eq!(e.topic, "customer.banner-a.insert");
        assert_eq!(e.op, Op::Insert);
        assert_eq!(e.account_id, "acc-1");
        assert_eq!(e.key, Some(json!({"id": 7})));
        assert_eq!(e.before, None);
        assert_eq!(e.after.as_ref().unwrap()["consent_email"], json!(false));
        assert_eq!(e.after.as_ref().unwrap()["deleted_at"], Value::Null);
        assert_eq!(
            e.changed,
            vec![
                "account_id",
                "banner",
                "bio",
                "consent_email",
                "email",
                "id"
            ]
        );
        assert_eq!(
            e.commit,
            Some(Commit {
                id: "0/16B3748".into(),
                seq: 3
            })
        );
        assert_eq!(e.source, "crm");
        assert_eq!(e.attributes["table"], "public.customers");
        assert_eq!(e.id, change_id("slot1", Lsn(0x16B3748), 3, 0));
        // deterministic, and distinct per seq / sub / slot / lsn
        assert_ne!(
            change_id("slot1", Lsn(1), 3, 0),
            change_id("slot1", Lsn(1), 4, 0)
        );
        assert_ne!(
            change_id("slot1", Lsn(1), 3, 0),
            change_id("slot1", Lsn(1), 3, 1)
        );
        assert_ne!(
            change_id("slot1", Lsn(1), 3, 0),
            change_id("slot2", Lsn(1), 3, 0)
        );
        assert_ne!(
            change_id("slot1", Lsn(1), 3, 0),
            change_id("slot1", Lsn(2), 3, 0)
        );
    }

    #[test]
    fn update_full_before_with_rules() {
        let t = table(rules(), true);
        let before = row(&FULL, false);
        let mut new = FULL;
        new[3] = Col::Text("b@x.com");
        new[4] = Col::Text("t");
        new[5] = Col::Toast;
        let after = row(&new, false);
        let evs = change_events(
            &t,
            ChangeKind::Update,
            Some(before),
            BeforeImage::Full,
            Some(after),
            &pos(0, &["id".into()]),
        );
        let topics: Vec<&str> = evs.iter().map(|e| e.topic.as_str()).collect();
        assert_eq!(
            topics,
            vec![
                "customer.banner-a.update",
                "customer.banner-a.email_changed",
                "customer.banner-a.consent_changed"
            ]
        );
        for e in &evs {
            assert_eq!(e.changed, vec!["consent_email", "email"]);
            assert_eq!(e.before.as_ref().unwrap()["email"], json!("a@x.com"));
            assert_eq!(e.after.as_ref().unwrap()["email"], json!("b@x.com"));
            // unchanged TOAST filled from the full before-image
            assert_eq!(e.after.as_ref().unwrap()["bio"], json!("long bio"));
            assert!(!e.attributes.contains_key("unchanged_toast"));
            assert_eq!(e.attributes["before_image"], "full");
        }
        let ids: std::collections::HashSet<_> = evs.iter().map(|e| &e.id).collect();
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn update_without_old_tuple() {
        let t = table(rules(), false);
        let mut new = FULL;
        new[5] = Col::Toast;
        let after = row(&new, false);
        let evs = change_events(
            &t,
            ChangeKind::Update,
            None,
            BeforeImage::None,
            Some(after),
            &pos(0, &["id".into()]),
        );
        let e = &evs[0];
        assert_eq!(e.before, None);
        // bio omitted and reported; id (identity key, no old tuple) unchanged; the rest listed
        assert!(e.after.as_ref().unwrap().get("bio").is_none());
        assert_eq!(e.attributes["unchanged_toast"], "bio");
        assert_eq!(e.attributes["before_image"], "none");
        assert_eq!(
            e.changed,
            vec![
                "account_id",
                "banner",
                "consent_email",
                "deleted_at",
                "email"
            ]
        );
        // so both rules fire (documented degradation without REPLICA IDENTITY FULL)
        assert_eq!(evs.len(), 3);
    }

    #[test]
    fn update_with_key_before_image() {
        let t = table(vec![], false);
        let before = row(
            &[
                Col::Text("7"),
                Col::Null,
                Col::Null,
                Col::Null,
                Col::Null,
                Col::Null,
                Col::Null,
            ],
            true,
        );
        assert_eq!(
            before.values.len(),
            1,
            "key-only tuples keep only key columns"
        );
        let mut new = FULL;
        new[0] = Col::Text("8");
        let after = row(&new, false);
        let evs = change_events(
            &t,
            ChangeKind::Update,
            Some(before),
            BeforeImage::Key,
            Some(after),
            &pos(0, &["id".into()]),
        );
        assert_eq!(evs[0].before, Some(json!({"id": 7})));
        assert_eq!(evs[0].key, Some(json!({"id": 8})));
        assert!(evs[0].changed.contains(&"id".to_string()));
        assert_eq!(evs[0].attributes["before_image"], "key");
    }

    #[test]
    fn soft_delete_and_restore() {
        let t = table(vec![], true);
        let before = row(&FULL, false);
        let mut new = FULL;
        new[6] = Col::Text("2024-05-01 12:00:00+00");
        let after = row(&new, false);
        let evs = change_events(
            &t,
            ChangeKind::Update,
            Some(before.clone()),
            BeforeImage::Full,
            Some(after.clone()),
            &pos(0, &[]),
        );
        assert_eq!(evs[0].op, Op::SoftDelete);
        assert_eq!(evs[0].topic, "customer.banner-a.soft_delete");
        assert_eq!(evs[0].changed, vec!["deleted_at"]);
        let evs = change_events(
            &t,
            ChangeKind::Update,
            Some(after),
            BeforeImage::Full,
            Some(before),
            &pos(0, &[]),
        );
        assert_eq!(evs[0].op, Op::Restore);
    }

    #[test]
    fn delete_uses_before_for_topic_and_account() {
        let t = table(rules(), true);
        let before = row(&FULL, false);
        let evs = change_events(
            &t,
            ChangeKind::Delete,
            Some(before),
            BeforeImage::Full,
            None,
            &pos(9, &["id".into()]),
        );
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].topic, "customer.banner-a.delete");
        assert_eq!(evs[0].account_id, "acc-1");
        assert_eq!(evs[0].after, None);
        assert!(evs[0].changed.is_empty());
    }

    #[test]
    fn rule_only_table_and_snapshot_ids() {
        let mut t = table(rules(), false);
        t.emit_default = false;
        let before = row(&FULL, false);
        let mut new = FULL;
        new[2] = Col::Text("banner-b");
        let after = row(&new, false);
        let evs = change_events(
            &t,
            ChangeKind::Update,
            Some(before),
            BeforeImage::Full,
            Some(after.clone()),
            &pos(0, &[]),
        );
        assert!(evs.is_empty(), "no rule matched and no default topic");
        let s1 = change_events(
            &t,
            ChangeKind::Snapshot,
            None,
            BeforeImage::None,
            Some(after.clone()),
            &pos(1, &[]),
        );
        assert!(s1.is_empty());
        t.emit_default = true;
        let s1 = change_events(
            &t,
            ChangeKind::Snapshot,
            None,
            BeforeImage::None,
            Some(after.clone()),
            &pos(1, &[]),
        );
        let s2 = change_events(
            &t,
            ChangeKind::Snapshot,
            None,
            BeforeImage::None,
            Some(after),
            &pos(2, &[]),
        );
        assert_eq!(s1[0].op, Op::Snapshot);
        assert_eq!(s1[0].topic, "customer.banner-b.snapshot");
        assert_eq!(
            s1[0].id, s2[0].id,
            "snapshot ids depend on the row key, not the position"
        );
    }

    #[test]
    fn column_count_mismatch_is_an_error() {
        let m = build::insert(1, &[Col::Text("1")]);
        let Message::Insert(i) = decode(&m).unwrap() else {
            panic!()
        };
        assert!(matches!(
            tuple_to_row(&rel(), &i.new, false),
            Err(RowError::ColumnCount { .. })
        ));
    }
}
