//! What both CDC sources (Postgres, MySQL/MariaDB) share: topic templates,
//! changed-column rules (`when_changed`, `ops`), their validation with TOML
//! paths, and the changed-columns / soft-delete decisions on full row images.

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde_json::{Map, Value};

use switchyard_core::config::ConfigError;
use switchyard_core::event::{self, Op};

/// A rule as configured (`[[sources.<name>.tables.rules]]`). Defined with the
/// Postgres source's config, where it first lived.
pub use crate::postgres::config::RuleConfig;

/// A topic template: literal text and `{name}` placeholders.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Var(String),
}

/// Placeholders that are not columns.
pub const BUILTIN_VARS: [&str; 4] = ["op", "table", "schema", "source"];

impl Template {
    pub fn parse(s: &str) -> Result<Template, String> {
        if s.is_empty() {
            return Err("topic template must not be empty".into());
        }
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut it = s.chars();
        while let Some(c) = it.next() {
            match c {
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for c in it.by_ref() {
                        match c {
                            '}' => {
                                closed = true;
                                break;
                            }
                            '{' => return Err(format!("`{s}`: nested `{{` in a placeholder")),
                            c => name.push(c),
                        }
                    }
                    if !closed {
                        return Err(format!("`{s}`: `{{` without a closing `}}`"));
                    }
                    let name = name.trim().to_owned();
                    if name.is_empty() {
                        return Err(format!("`{s}`: empty placeholder `{{}}`"));
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Var(name));
                }
                '}' => return Err(format!("`{s}`: `}}` without an opening `{{`")),
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template { parts })
    }

    /// The literal text has a character no topic may contain (a config
    /// error: every rendered topic would be refused).
    pub fn literal_error(&self) -> Option<String> {
        self.parts.iter().find_map(|p| match p {
            Part::Lit(l) => l.chars().find(|c| !event::topic_char(*c)).map(|c| {
                format!(
                    "the text `{l}` has {c:?}, which no topic may contain (topics {})",
                    event::TOPIC_RULE
                )
            }),
            Part::Var(_) => None,
        })
    }

    /// Every placeholder, built-ins included.
    pub fn vars(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v.as_str()),
            Part::Lit(_) => None,
        })
    }

    /// Column names the template reads (built-ins excluded).
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) if !BUILTIN_VARS.contains(&v.as_str()) => Some(v.as_str()),
            _ => None,
        })
    }

    /// Render: built-ins from `vars`, columns from `row`. A NULL renders as
    /// `null`, a column with no known value as `unknown`.
    pub fn render<'v>(&self, vars: &Vars<'_>, row: &dyn Fn(&str) -> Option<&'v Value>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(l) => out.push_str(l),
                Part::Var(v) => match v.as_str() {
                    "op" => out.push_str(vars.op.as_str()),
                    "table" => out.push_str(vars.table),
                    "schema" => out.push_str(vars.schema),
                    "source" => out.push_str(vars.source),
                    col => match row(col) {
                        Some(v) => push_value(&mut out, v),
                        None => out.push_str("unknown"),
                    },
                },
            }
        }
        out
    }
}

pub struct Vars<'a> {
    pub op: Op,
    pub table: &'a str,
    pub schema: &'a str,
    pub source: &'a str,
}

fn push_value(out: &mut String, v: &Value) {
    match v {
        Value::String(s) => out.push_str(s),
        Value::Null => out.push_str("null"),
        other => out.push_str(&other.to_string()),
    }
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub matcher: GlobSet,
    pub topic: Template,
    pub ops: Vec<Op>,
}

/// Compile validated rule configs (errors only for unvalidated ones).
/// Rules without `ops` get the default that fits the table
/// ([`RuleConfig::ops_for`]).
pub fn compile_rules(
    rules: &[RuleConfig],
    has_soft_delete_column: bool,
) -> Result<Vec<Rule>, String> {
    let mut out = Vec::with_capacity(rules.len());
    for r in rules {
        let mut b = GlobSetBuilder::new();
        for p in &r.when_changed {
            b.add(Glob::new(p).map_err(|e| e.to_string())?);
        }
        out.push(Rule {
            matcher: b.build().map_err(|e| e.to_string())?,
            topic: Template::parse(&r.topic)?,
            ops: r.ops_for(has_soft_delete_column),
        });
    }
    Ok(out)
}

/// The topics of one change: `(0, default)` when `default` is given, then
/// `(i + 1, topic)` for every rule `i` whose ops include `op` and that
/// matches a changed column. The number is the event's `sub` (its id part).
pub fn topics_for<'v>(
    default: Option<&Template>,
    rules: &[Rule],
    vars: &Vars<'_>,
    changed: &[String],
    row: &dyn Fn(&str) -> Option<&'v Value>,
) -> Vec<(usize, String)> {
    let mut topics = Vec::new();
    if let Some(t) = default {
        topics.push((0, t.render(vars, row)));
    }
    for (i, r) in rules.iter().enumerate() {
        if r.ops.contains(&vars.op) && changed.iter().any(|c| r.matcher.is_match(c)) {
            topics.push((i + 1, r.topic.render(vars, row)));
        }
    }
    topics
}

/// The keys every CDC source has: `schema_topic` (a valid topic) and
/// `max_event_size` (at least 1 KiB).
pub fn validate_cdc_keys(
    path: &str,
    schema_topic: &str,
    max_event_size: switchyard_core::config::ByteSize,
    errors: &mut Vec<ConfigError>,
) {
    if max_event_size.0 < 1024 {
        errors.push(ConfigError::new(
            format!("{path}.max_event_size"),
            "must be at least 1KiB".to_string(),
        ));
    }
    if !event::valid_topic(schema_topic) {
        errors.push(ConfigError::new(
            format!("{path}.schema_topic"),
            format!(
                "`{schema_topic}` is not a valid topic ({})",
                event::TOPIC_RULE
            ),
        ));
    }
}

/// Split `<qualifier>.table`, where either part may be quoted with `quote`
/// (a doubled quote inside stands for itself): `"` for Postgres, `` ` ``
/// for MySQL. `None`: unqualified.
pub fn split_qualified_name(
    s: &str,
    quote: char,
    qualifier: &str,
) -> Result<(Option<String>, String), String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            c if c == quote && cur.is_empty() && !quoted => {
                let mut closed = false;
                while let Some(q) = chars.next() {
                    if q == quote {
                        if chars.peek() == Some(&quote) {
                            chars.next();
                            cur.push(quote);
                        } else {
                            closed = true;
                            break;
                        }
                    } else {
                        cur.push(q);
                    }
                }
                if !closed {
                    return Err(format!("unterminated {quote}quoted{quote} identifier"));
                }
                quoted = true;
            }
            '.' => {
                parts.push(std::mem::take(&mut cur));
                quoted = false;
            }
            _ if quoted => return Err("text after a quoted identifier".into()),
            _ => cur.push(c),
        }
    }
    parts.push(cur);
    if parts.iter().any(|p| p.is_empty()) {
        return Err("empty name part".into());
    }
    match parts.len() {
        1 => Ok((None, parts.pop().unwrap_or_default())),
        2 => {
            let t = parts.pop().unwrap_or_default();
            Ok((parts.pop(), t))
        }
        _ => Err(format!("expected `table` or `{qualifier}.table`")),
    }
}

/// Columns whose value differs between two full row images (a column
/// missing from `before` counts as changed), in column-name order.
pub fn changed_columns(before: &Map<String, Value>, after: &Map<String, Value>) -> Vec<String> {
    let mut out: Vec<String> = after
        .iter()
        .filter(|(c, v)| before.get(c.as_str()) != Some(v))
        .map(|(c, _)| c.clone())
        .collect();
    out.sort_unstable();
    out
}

/// An update's operation given the soft-delete marker column: null →
/// non-null is `soft_delete`, non-null → null is `restore`, else `update`.
pub fn update_op(
    soft_delete_column: Option<&str>,
    before: &Map<String, Value>,
    after: &Map<String, Value>,
) -> Op {
    if let Some(sd) = soft_delete_column {
        if let (Some(b), Some(a)) = (before.get(sd), after.get(sd)) {
            match (b.is_null(), a.is_null()) {
                (true, false) => return Op::SoftDelete,
                (false, true) => return Op::Restore,
                _ => {}
            }
        }
    }
    Op::Update
}

/// Check `tables[i].rules` (path `tp` = `sources.<name>.tables[i]`),
/// reporting every problem with its TOML path.
pub fn validate_rules(
    tp: &str,
    rules: &[RuleConfig],
    has_soft_delete_column: bool,
    errors: &mut Vec<ConfigError>,
) {
    let mut err = |p: String, m: String| errors.push(ConfigError::new(p, m));
    for (j, r) in rules.iter().enumerate() {
        let rp = format!("{tp}.rules[{j}]");
        if r.when_changed.is_empty() {
            err(
                format!("{rp}.when_changed"),
                "list at least one column or pattern".into(),
            );
        }
        for (k, pat) in r.when_changed.iter().enumerate() {
            if pat.is_empty() {
                err(
                    format!("{rp}.when_changed[{k}]"),
                    "must not be empty".into(),
                );
            } else if let Err(e) = Glob::new(pat) {
                err(
                    format!("{rp}.when_changed[{k}]"),
                    format!("invalid pattern: {e}"),
                );
            }
        }
        match Template::parse(&r.topic) {
            Err(e) => err(format!("{rp}.topic"), e),
            Ok(tpl) => {
                if let Some(e) = tpl.literal_error() {
                    err(format!("{rp}.topic"), e);
                }
            }
        }
        // Only operations the user wrote are checked: the default fits the table.
        let ops = r.ops.as_deref().unwrap_or_default();
        if r.ops.is_some() && ops.is_empty() {
            err(format!("{rp}.ops"), "list at least one operation".into());
        }
        for (k, op) in ops.iter().enumerate() {
            if matches!(op, Op::Event | Op::Snapshot) {
                err(
                    format!("{rp}.ops[{k}]"),
                    format!("`{op}` has no changed columns; use insert, update, delete, soft_delete or restore"),
                );
            }
            if matches!(op, Op::SoftDelete | Op::Restore) && !has_soft_delete_column {
                err(
                    format!("{rp}.ops[{k}]"),
                    format!("`{op}` needs `soft_delete_column` on the table"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cdc_keys_are_checked_with_their_paths() {
        let mut e = Vec::new();
        validate_cdc_keys(
            "sources.x",
            "schema.changed",
            switchyard_core::config::ByteSize(1 << 20),
            &mut e,
        );
        assert!(e.is_empty());
        validate_cdc_keys(
            "sources.x",
            "bad topic",
            switchyard_core::config::ByteSize(10),
            &mut e,
        );
        let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["sources.x.max_event_size", "sources.x.schema_topic"]
        );
    }

    #[test]
    fn changed_columns_and_update_op() {
        let b = json!({"a": 1, "b": "x", "d": null});
        let a = json!({"a": 1, "b": "y", "c": 3, "d": "2024-01-01"});
        let (b, a) = (b.as_object().unwrap(), a.as_object().unwrap());
        assert_eq!(changed_columns(b, a), vec!["b", "c", "d"]);
        assert_eq!(update_op(Some("d"), b, a), Op::SoftDelete);
        assert_eq!(update_op(Some("d"), a, b), Op::Restore);
        assert_eq!(update_op(None, b, a), Op::Update);
        assert_eq!(update_op(Some("b"), b, a), Op::Update);
    }

    #[test]
    fn topics_follow_rules_and_ops() {
        let rules = compile_rules(
            &[
                RuleConfig {
                    when_changed: vec!["email".into()],
                    topic: "c.{banner}.email".into(),
                    ops: Some(vec![Op::Update]),
                },
                RuleConfig {
                    when_changed: vec!["consent_*".into()],
                    topic: "c.consent".into(),
                    ops: Some(vec![Op::Insert, Op::Update]),
                },
            ],
            false,
        )
        .unwrap();
        let default = Template::parse("c.{banner}.{op}").unwrap();
        let row = json!({"banner": "b1"});
        let row = row.as_object().unwrap();
        let vars = |op| Vars {
            op,
            table: "t",
            schema: "s",
            source: "src",
        };
        let changed = vec!["consent_sms".to_string(), "email".to_string()];
        let t = topics_for(
            Some(&default),
            &rules,
            &vars(Op::Update),
            &changed,
            &|c: &str| row.get(c),
        );
        assert_eq!(
            t,
            vec![
                (0, "c.b1.update".to_string()),
                (1, "c.b1.email".to_string()),
                (2, "c.consent".to_string())
            ]
        );
        let t = topics_for(None, &rules, &vars(Op::Insert), &changed, &|c: &str| {
            row.get(c)
        });
        assert_eq!(t, vec![(2, "c.consent".to_string())]);
    }

    #[test]
    fn rule_errors_have_paths() {
        let mut e = Vec::new();
        validate_rules(
            "sources.s.tables[0]",
            &[RuleConfig {
                when_changed: vec!["".into(), "a[".into()],
                topic: "x.{".into(),
                ops: Some(vec![Op::Snapshot, Op::Restore]),
            }],
            false,
            &mut e,
        );
        let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "sources.s.tables[0].rules[0].when_changed[0]",
                "sources.s.tables[0].rules[0].when_changed[1]",
                "sources.s.tables[0].rules[0].topic",
                "sources.s.tables[0].rules[0].ops[0]",
                "sources.s.tables[0].rules[0].ops[1]",
            ]
        );
    }
}
