//! The schema registry (`[schemas]`): JSON Schemas per topic family and
//! version, the validation of events against them (ingest and CDC), and the
//! backward-compatibility rule `switchyard schema check` enforces.
//!
//! Layout: `<dir>/<family>/<version>.json`, `<version>` a positive integer
//! (`config/schemas/customer/1.json`). A topic's family is the first of
//! these that has a folder: the whole topic, then for a three-part topic
//! `<entity>.<banner>.<change>` the change across banners
//! `<entity>.<change>`, then the entity `<entity>` (README "Schema
//! registry"). Topics of no family are not validated.
//!
//! A schema describes the canonical event as JSON (the default delivery
//! body): `/data/email`, `/after/tier`, `/attributes/banner`… An event is
//! validated against the version it names in `attributes.schema_version`,
//! else the newest; it then carries `schema_family` and `schema_version`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::Deserialize;
use serde_json::Value;

use switchyard_core::config::ConfigError;
use switchyard_core::event::Event;

/// The attribute naming the schema version an event was validated against
/// (a producer may set it to choose an older version).
pub const VERSION_ATTR: &str = "schema_version";
/// The attribute naming the schema family an event was validated against.
pub const FAMILY_ATTR: &str = "schema_family";

/// `[schemas]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemasConfig {
    /// Folder of `<family>/<version>.json` files (relative to the config
    /// file's folder).
    pub dir: PathBuf,
}

impl SchemasConfig {
    pub fn resolve_paths(&mut self, base: &Path) {
        if self.dir.is_relative() && !self.dir.as_os_str().is_empty() {
            self.dir = base.join(&self.dir);
        }
    }

    /// The registry, or every load error on its own line.
    pub fn load(&self) -> anyhow::Result<Registry> {
        Registry::load(&self.dir).map_err(|errs| {
            let lines: Vec<String> = errs.iter().map(|e| format!("schemas.dir: {e}")).collect();
            anyhow::anyhow!("{}", lines.join("\n"))
        })
    }

    /// Every schema file loads and compiles (errors at `schemas.dir`,
    /// naming the file).
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        if let Err(errs) = Registry::load(&self.dir) {
            for e in errs {
                errors.push(ConfigError::new(format!("{path}.dir"), e.to_string()));
            }
        }
    }
}

/// Why the registry could not be loaded; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Name { path: PathBuf, message: String },
    #[error("{}: not JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: not a valid JSON Schema: {message}", path.display())]
    Schema { path: PathBuf, message: String },
}

/// One version of a family's schema.
pub struct Version {
    pub file: PathBuf,
    pub schema: Value,
    validator: jsonschema::Validator,
}

/// The loaded schemas: family → version → schema.
#[derive(Default)]
pub struct Registry {
    families: BTreeMap<String, BTreeMap<u32, Version>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v: BTreeMap<&String, Vec<&u32>> = self
            .families
            .iter()
            .map(|(k, v)| (k, v.keys().collect()))
            .collect();
        f.debug_struct("Registry").field("families", &v).finish()
    }
}

/// An event that its schema refuses: the first violation.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub family: String,
    pub version: u32,
    /// JSON pointer into the event (`/data/email`).
    pub pointer: String,
    pub message: String,
}

impl Violation {
    /// The field in the `events[i].data.email` form of ingest errors.
    pub fn field(&self, label: &str) -> String {
        let mut f = label.to_string();
        for seg in self.pointer.split('/').skip(1) {
            f.push('.');
            f.push_str(&seg.replace("~1", "/").replace("~0", "~"));
        }
        f
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = if self.pointer.is_empty() {
            "/"
        } else {
            self.pointer.as_str()
        };
        write!(
            f,
            "{at}: {} (schema `{}` version {})",
            self.message, self.family, self.version
        )
    }
}

impl Registry {
    /// Load `<dir>/<family>/<version>.json`; every problem is reported.
    pub fn load(dir: &Path) -> Result<Registry, Vec<LoadError>> {
        let mut errors = Vec::new();
        let mut reg = Registry::default();
        let read_dir = |p: &Path| {
            std::fs::read_dir(p).map_err(|source| LoadError::Read {
                path: p.to_path_buf(),
                source,
            })
        };
        let families = match read_dir(dir) {
            Ok(f) => f,
            Err(e) => return Err(vec![e]),
        };
        let mut fam_dirs: Vec<PathBuf> = families
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        fam_dirs.sort();
        for fdir in fam_dirs {
            let family = fdir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if !switchyard_core::event::valid_topic(&family) {
                errors.push(LoadError::Name {
                    path: fdir.clone(),
                    message: format!(
                        "a family folder is named like a topic or its parent ({})",
                        switchyard_core::event::TOPIC_RULE
                    ),
                });
                continue;
            }
            let files = match read_dir(&fdir) {
                Ok(f) => f,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let mut files: Vec<PathBuf> = files.filter_map(Result::ok).map(|e| e.path()).collect();
            files.sort();
            let versions = reg.families.entry(family).or_default();
            for file in files {
                let version = file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.parse::<u32>().ok())
                    .filter(|v| *v > 0);
                let (Some(version), Some("json")) =
                    (version, file.extension().and_then(|e| e.to_str()))
                else {
                    errors.push(LoadError::Name {
                        path: file.clone(),
                        message: "schema files are named `<version>.json`, the version a \
                                  positive integer (`1.json`)"
                            .into(),
                    });
                    continue;
                };
                match load_version(&file) {
                    Ok(v) => {
                        versions.insert(version, v);
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        reg.families.retain(|_, v| !v.is_empty());
        if errors.is_empty() {
            Ok(reg)
        } else {
            Err(errors)
        }
    }

    /// Family name → versions, oldest first.
    pub fn families(&self) -> impl Iterator<Item = (&str, &BTreeMap<u32, Version>)> {
        self.families.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The family of `topic`: the whole topic, then `<entity>.<change>` of
    /// a three-part topic, then `<entity>`; the first that has schemas.
    pub fn family_of(&self, topic: &str) -> Option<&str> {
        let parts: Vec<&str> = topic.split('.').collect();
        let mut candidates = vec![topic.to_string()];
        if parts.len() == 3 {
            candidates.push(format!("{}.{}", parts[0], parts[2]));
        }
        candidates.push(parts[0].to_string());
        candidates
            .iter()
            .find_map(|c| self.families.get_key_value(c.as_str()))
            .map(|(k, _)| k.as_str())
    }

    /// Validate `ev` against its family's schema: the version named in its
    /// `schema_version` attribute, else the newest. Valid: the event now
    /// carries `schema_family` and `schema_version`. An event of no family
    /// is left as it is.
    pub fn check(&self, ev: &mut Event) -> Result<(), Violation> {
        let Some(family) = self.family_of(&ev.topic) else {
            return Ok(());
        };
        let versions = &self.families[family];
        let newest = *versions.keys().next_back().expect("no empty family");
        let version = match ev.attributes.get(VERSION_ATTR) {
            None => newest,
            Some(v) => match v.parse::<u32>().ok().filter(|v| versions.contains_key(v)) {
                Some(v) => v,
                None => {
                    let have: Vec<String> = versions.keys().map(u32::to_string).collect();
                    return Err(Violation {
                        family: family.to_string(),
                        version: newest,
                        pointer: format!("/attributes/{VERSION_ATTR}"),
                        message: format!(
                            "schema `{family}` has no version `{v}` (it has {})",
                            have.join(", ")
                        ),
                    });
                }
            },
        };
        let instance = serde_json::to_value(&*ev).map_err(|e| Violation {
            family: family.to_string(),
            version,
            pointer: String::new(),
            message: format!("the event has no JSON form: {e}"),
        })?;
        if let Some(err) = versions[&version].validator.iter_errors(&instance).next() {
            let mut pointer = err.instance_path().as_str().to_string();
            // A missing property is reported at its parent: name it.
            if let jsonschema::error::ValidationErrorKind::Required { property } = err.kind() {
                if let Some(p) = property.as_str() {
                    pointer.push('/');
                    pointer.push_str(&p.replace('~', "~0").replace('/', "~1"));
                }
            }
            return Err(Violation {
                family: family.to_string(),
                version,
                pointer,
                message: err.masked().to_string(),
            });
        }
        ev.attributes
            .insert(FAMILY_ATTR.to_string(), family.to_string());
        ev.attributes
            .insert(VERSION_ATTR.to_string(), version.to_string());
        Ok(())
    }

    /// Every backward-incompatible change between consecutive versions of
    /// every family (empty: all compatible).
    pub fn breaking_changes(&self) -> Vec<Breaking> {
        let mut out = Vec::new();
        for (family, versions) in &self.families {
            let mut prev: Option<(&u32, &Version)> = None;
            for (v, new) in versions {
                if let Some((pv, old)) = prev {
                    let mut found = Vec::new();
                    let roots = (&old.schema, &new.schema);
                    compare(roots, &old.schema, &new.schema, "", &mut found);
                    out.extend(found.into_iter().map(|(pointer, message)| Breaking {
                        family: family.clone(),
                        from: *pv,
                        to: *v,
                        file: new.file.clone(),
                        pointer,
                        message,
                    }));
                }
                prev = Some((v, new));
            }
        }
        out
    }
}

/// The registry the CDC sources check row changes against: installed once
/// by the router at start, before any source runs (none: not checked).
static CDC_REGISTRY: OnceLock<Arc<Registry>> = OnceLock::new();

/// Install the registry CDC sources use (the first call wins).
pub fn install_for_cdc(reg: Arc<Registry>) {
    let _ = CDC_REGISTRY.set(reg);
}

/// The one check of a CDC event against the schema registry: `Ok` (and the
/// event stamped with its schema) or the violation. Without a registry,
/// `Ok` unchanged.
pub fn check_cdc(ev: &mut Event) -> Result<(), Violation> {
    match CDC_REGISTRY.get() {
        Some(reg) => reg.check(ev),
        None => Ok(()),
    }
}

/// Split a CDC batch into the events to append (stamped with their schema)
/// and those to quarantine. Without a registry the batch is borrowed as it is.
pub fn split_cdc(events: &[Event]) -> (Cow<'_, [Event]>, Vec<crate::quarantine::Quarantined>) {
    if CDC_REGISTRY.get().is_none() {
        return (Cow::Borrowed(events), Vec::new());
    }
    let mut ok = Vec::with_capacity(events.len());
    let mut refused = Vec::new();
    for ev in events {
        let mut ev = ev.clone();
        match check_cdc(&mut ev) {
            Ok(()) => ok.push(ev),
            Err(v) => {
                let table = ev.attributes.get("table").cloned().unwrap_or_default();
                refused.push(crate::quarantine::Quarantined::of_event(
                    &ev,
                    &table,
                    "schema",
                    v.to_string(),
                ))
            }
        }
    }
    (Cow::Owned(ok), refused)
}

/// Write a CDC batch's refused events to the source's quarantine (logged at
/// warn without values: source, id, key, account, and the violation, which
/// names the field and the schema but masks the value).
pub async fn quarantine(
    log: &switchyard_store::Log,
    source: &str,
    refused: &[crate::quarantine::Quarantined],
) -> Result<(), switchyard_store::LogError> {
    if refused.is_empty() {
        return Ok(());
    }
    crate::quarantine::put(log, source, refused).await?;
    for q in refused {
        let account = q
            .event
            .as_ref()
            .map(|e| e.account_id.as_str())
            .unwrap_or("");
        switchyard_core::metrics::quarantined(source, "schema");
        tracing::warn!(
            source,
            id = %q.id,
            key = %q.key,
            account = %account,
            reason = %q.reason,
            "CDC event quarantined: it does not match its schema; fix the schema or the row, then replay it (`switchyard quarantine replay`)"
        );
    }
    Ok(())
}

fn load_version(file: &Path) -> Result<Version, LoadError> {
    let text = std::fs::read_to_string(file).map_err(|source| LoadError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    let schema: Value = serde_json::from_str(&text).map_err(|source| LoadError::Json {
        path: file.to_path_buf(),
        source,
    })?;
    let validator = jsonschema::validator_for(&schema).map_err(|e| LoadError::Schema {
        path: file.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(Version {
        file: file.to_path_buf(),
        schema,
        validator,
    })
}

/// A change from version `from` to `to` that events or consumers of `from`
/// would break on.
#[derive(Debug, Clone, PartialEq)]
pub struct Breaking {
    pub family: String,
    pub from: u32,
    pub to: u32,
    pub file: PathBuf,
    /// JSON pointer of the field in the event (`/data/email`).
    pub pointer: String,
    pub message: String,
}

impl std::fmt::Display for Breaking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: schema `{}` version {} breaks version {}: field {}: {}",
            self.file.display(),
            self.family,
            self.to,
            self.from,
            self.pointer,
            self.message
        )
    }
}

fn required(s: &Value) -> Vec<&str> {
    s.get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn property<'a>(s: &'a Value, name: &str) -> Option<&'a Value> {
    s.get("properties").and_then(|p| p.get(name))
}

/// The JSON types a schema allows; `None`: any (no `type`).
fn types(s: &Value) -> Option<Vec<&str>> {
    match s.get("type")? {
        Value::String(t) => Some(vec![t.as_str()]),
        Value::Array(a) => Some(a.iter().filter_map(Value::as_str).collect()),
        _ => None,
    }
}

/// The backward-compatibility rule: every event valid under `old` stays
/// valid under `new`, and every field `old` required is still required
/// (consumers rely on it). Breaking, per field: a required field removed
/// or made optional, a new required field, a type that no longer allows
/// every old type (`integer` inside `number` is allowed), an enum that lost
/// values (or a new enum). Recurses into `properties`.
/// Local references (`"$ref": "#/$defs/customer"`) are followed; remote
/// ones are not resolved anywhere (no remote resolving is built in).
fn compare<'a>(
    roots: (&'a Value, &'a Value),
    old: &'a Value,
    new: &'a Value,
    at: &str,
    out: &mut Vec<(String, String)>,
) {
    let (old, new) = (deref(roots.0, old), deref(roots.1, new));
    let ptr = |name: &str| format!("{at}/{}", name.replace('~', "~0").replace('/', "~1"));
    let (old_req, new_req) = (required(old), required(new));
    for r in &old_req {
        if !new_req.contains(r) {
            let what = if property(new, r).is_some() {
                "was required and is now optional"
            } else {
                "was required and is removed"
            };
            out.push((ptr(r), what.to_string()));
        }
    }
    for r in &new_req {
        if !old_req.contains(r) {
            out.push((
                ptr(r),
                "is newly required: events valid under the previous version may lack it"
                    .to_string(),
            ));
        }
    }
    let Some(Value::Object(old_props)) = old.get("properties") else {
        return;
    };
    for (name, o) in old_props {
        let Some(n) = property(new, name) else {
            continue;
        };
        let (o, n) = (deref(roots.0, o), deref(roots.1, n));
        if let (Some(ot), Some(nt)) = (types(o), types(n)) {
            let lost: Vec<&&str> = ot
                .iter()
                .filter(|t| !(nt.contains(*t) || (**t == "integer" && nt.contains(&"number"))))
                .collect();
            if !lost.is_empty() {
                out.push((
                    ptr(name),
                    format!(
                        "type changed from {} to {}",
                        serde_json::to_string(&ot).unwrap_or_default(),
                        serde_json::to_string(&nt).unwrap_or_default()
                    ),
                ));
            }
        } else if types(o).is_none() && types(n).is_some() {
            out.push((
                ptr(name),
                format!(
                    "now restricted to type {}",
                    serde_json::to_string(&types(n)).unwrap_or_default()
                ),
            ));
        }
        match (o.get("enum"), n.get("enum")) {
            (Some(Value::Array(oe)), Some(Value::Array(ne))) => {
                let lost: Vec<&Value> = oe.iter().filter(|v| !ne.contains(v)).collect();
                if !lost.is_empty() {
                    out.push((
                        ptr(name),
                        format!(
                            "enum narrowed: no longer allows {}",
                            serde_json::to_string(&lost).unwrap_or_default()
                        ),
                    ));
                }
            }
            (None, Some(_)) => out.push((ptr(name), "enum added: narrows the values".into())),
            _ => {}
        }
        compare(roots, o, n, &ptr(name), out);
    }
}

/// `s`, or what its local `$ref` points to (a few hops at most).
fn deref<'a>(root: &'a Value, mut s: &'a Value) -> &'a Value {
    for _ in 0..8 {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) if r.starts_with('#') => match root.pointer(&r[1..]) {
                Some(t) => s = t,
                None => break,
            },
            _ => break,
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(dir: &Path, family: &str, v: u32, schema: Value) {
        std::fs::create_dir_all(dir.join(family)).unwrap();
        std::fs::write(
            dir.join(family).join(format!("{v}.json")),
            schema.to_string(),
        )
        .unwrap();
    }

    fn v1() -> Value {
        json!({
            "type": "object",
            "required": ["data"],
            "properties": {"data": {
                "type": "object",
                "required": ["email", "tier"],
                "properties": {
                    "email": {"type": "string"},
                    "tier": {"enum": ["gold", "silver"]},
                    "age": {"type": "integer"}
                }
            }}
        })
    }

    fn event(topic: &str, data: Value) -> Event {
        crate::http::to_event(
            "event",
            json!({"topic": topic, "account_id": "1", "data": data}),
            "web",
            None,
            chrono::Utc::now(),
        )
        .unwrap()
    }

    #[test]
    fn families_versions_and_violations_name_the_field() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "customer", 1, v1());
        let mut v2 = v1();
        v2["properties"]["data"]["properties"]["age"] = json!({"type": "number"});
        write(d.path(), "customer", 2, v2);
        write(
            d.path(),
            "customer.email_changed",
            1,
            json!({"required": ["data"]}),
        );
        let reg = Registry::load(d.path()).unwrap();
        assert_eq!(reg.family_of("customer.banner-a.created"), Some("customer"));
        assert_eq!(
            reg.family_of("customer.banner-a.email_changed"),
            Some("customer.email_changed")
        );
        assert_eq!(reg.family_of("order.banner-a.created"), None);
        assert!(
            reg.breaking_changes().is_empty(),
            "{:?}",
            reg.breaking_changes()
        );

        let mut ok = event(
            "customer.b.created",
            json!({"email": "a@x", "tier": "gold"}),
        );
        reg.check(&mut ok).unwrap();
        assert_eq!(ok.attributes[VERSION_ATTR], "2");
        assert_eq!(ok.attributes[FAMILY_ATTR], "customer");

        let mut missing = event("customer.b.created", json!({"tier": "gold"}));
        let v = reg.check(&mut missing).unwrap_err();
        assert_eq!(v.pointer, "/data/email");
        assert_eq!(v.field("events[0]"), "events[0].data.email");
        assert!(!missing.attributes.contains_key(VERSION_ATTR));

        let mut bad = event("customer.b.created", json!({"email": 5, "tier": "gold"}));
        let v = reg.check(&mut bad).unwrap_err();
        assert_eq!((v.pointer.as_str(), v.version), ("/data/email", 2));
        assert!(v.message.contains("string"), "{v}");

        // A producer pins version 1 (age must be an integer there).
        let mut old = event(
            "customer.b.created",
            json!({"email": "a", "tier": "gold", "age": 1.5}),
        );
        old.attributes.insert(VERSION_ATTR.into(), "1".into());
        assert_eq!(reg.check(&mut old).unwrap_err().pointer, "/data/age");
        old.attributes.insert(VERSION_ATTR.into(), "7".into());
        assert_eq!(
            reg.check(&mut old).unwrap_err().pointer,
            "/attributes/schema_version"
        );
    }

    #[test]
    fn breaking_changes_name_the_field() {
        let cases: Vec<(Value, &str, &str)> = vec![
            (
                {
                    let mut s = v1();
                    s["properties"]["data"]["required"] = json!(["tier"]);
                    s["properties"]["data"]["properties"]
                        .as_object_mut()
                        .unwrap()
                        .remove("email");
                    s
                },
                "/data/email",
                "removed",
            ),
            (
                {
                    let mut s = v1();
                    s["properties"]["data"]["properties"]["email"] = json!({"type": "integer"});
                    s
                },
                "/data/email",
                "type changed",
            ),
            (
                {
                    let mut s = v1();
                    s["properties"]["data"]["properties"]["tier"] = json!({"enum": ["gold"]});
                    s
                },
                "/data/tier",
                "enum narrowed",
            ),
            (
                {
                    let mut s = v1();
                    s["properties"]["data"]["required"] = json!(["email", "tier", "phone"]);
                    s
                },
                "/data/phone",
                "newly required",
            ),
        ];
        for (v2, pointer, what) in cases {
            let d = tempfile::tempdir().unwrap();
            write(d.path(), "customer", 1, v1());
            write(d.path(), "customer", 2, v2);
            let b = Registry::load(d.path()).unwrap().breaking_changes();
            assert_eq!(b.len(), 1, "{b:?}");
            assert_eq!(b[0].pointer, pointer);
            assert!(b[0].message.contains(what), "{}", b[0]);
            assert!(b[0].to_string().contains("2.json"), "{}", b[0]);
        }
    }

    #[test]
    fn load_errors_name_the_file() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "customer", 1, json!({"type": "nonsense"}));
        std::fs::write(d.path().join("customer/x.json"), "{}").unwrap();
        let errs = Registry::load(d.path()).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("1.json") && t.contains("not a valid JSON Schema")),
            "{text:?}"
        );
        assert!(text.iter().any(|t| t.contains("x.json")), "{text:?}");
    }

    #[test]
    fn shipped_schemas_are_compatible_and_local_refs_are_followed() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/schemas");
        let reg = Registry::load(&dir).unwrap();
        assert!(
            reg.breaking_changes().is_empty(),
            "{:?}",
            reg.breaking_changes()
        );
        let v2: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("customer/2.json")).unwrap())
                .unwrap();
        let mut v3 = v2.clone();
        v3["$defs"]["customer"]["properties"]["tier"]["enum"] = json!(["gold"]);
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "customer", 2, v2);
        write(d.path(), "customer", 3, v3);
        let b = Registry::load(d.path()).unwrap().breaking_changes();
        let mut at: Vec<&str> = b.iter().map(|b| b.pointer.as_str()).collect();
        at.sort();
        assert_eq!(at, ["/after/tier", "/data/tier"], "{b:?}");
    }
}
