//! The invariants the fuzz targets check, one function per untrusted input.
//!
//! Each function takes arbitrary bytes, runs the real parser on them and
//! panics when an invariant does not hold. The cargo-fuzz targets in `fuzz/`
//! (nightly, libFuzzer) and the stable property tests at the bottom of this
//! file (proptest, part of `cargo test`) call the same functions, so both
//! check the same things. Compiled only for tests and fuzzing builds
//! (`--cfg fuzzing`, set by cargo-fuzz): not part of the router's API.
//!
//! | target | input | invariant |
//! |---|---|---|
//! | [`ingest_body`] | 1 selector byte (content type, batch limit, traceparent, gzip) + a `POST /v1/events` body | a 415/400/413 names what is wrong; a gzip body decodes to at most the limit, or is a 400 "not valid gzip" / 413 "once decompressed"; an accepted event is valid (topic, id, account_id rules, no control characters in identifiers, a numeric account id is an integer in decimal, `changed`), and survives MessagePack (the log) and JSON (what consumers get) and the WIT record (what modules get) unchanged |
//! | [`pgoutput`] | one pgoutput message | a decoded message re-encodes to the same length and decodes to the same value; every strict prefix is an error; errors say `pgoutput: …` |
//! | [`config`] | TOML text | a loaded config validates clean again; every error has a message, and a path that starts at a key the text has (or, for syntax errors, a line in the text) |
//! | [`event_decode`] | 1 version byte + a MessagePack body | unknown versions say "upgrade"; a decoded event re-encodes and decodes to the same value, serialises to JSON, and crosses the WIT boundary unchanged |

use std::path::Path;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};

use crate::config::{Config, ConfigError};
use switchyard_core::event::{self, CodecError, Event, FORMAT_VERSION};
use switchyard_sources::http::{self, BodyFormat};
use switchyard_sources::postgres::pgoutput;

/// Content types a fuzz input may pick (the selector byte's low 3 bits).
const CONTENT_TYPES: [Option<&str>; 8] = [
    Some("application/json"),
    Some("application/x-ndjson"),
    Some("application/json; charset=utf-8"),
    Some("application/jsonl"),
    Some("APPLICATION/NDJSON"),
    Some("text/plain"),
    Some(""),
    None,
];

/// The decompressed-size limit of gzip bodies in [`ingest_body`].
pub const GZIP_LIMIT: u64 = 64 * 1024;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A fixed "now", so failures reproduce.
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap()
}

/// The HTTP ingest body parser: `BodyFormat::from_content_type`,
/// `split_body` and `to_event`, as `POST /v1/events` runs them.
///
/// Selector byte: bits 0–2 content type, bits 3–5 batch limit
/// (1, 2, 3, 4, 8, 16, 64, 1000), bit 6 a valid traceparent (else junk),
/// bit 7 `Content-Encoding: gzip` (decoded with a limit of [`GZIP_LIMIT`]
/// bytes before it is parsed).
pub fn ingest_body(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let ct = CONTENT_TYPES[(sel & 7) as usize];
    let max_batch = [1, 2, 3, 4, 8, 16, 64, 1000][((sel >> 3) & 7) as usize];
    let trace = if sel & 0x40 != 0 {
        TRACEPARENT
    } else {
        "not-a-traceparent"
    };
    let format = match BodyFormat::from_content_type(ct) {
        Ok(f) => f,
        Err(r) => {
            assert_eq!(r.status, 415, "{r:?}");
            assert!(r.message.contains("Content-Type"), "{r:?}");
            assert!(r.field.is_none());
            return;
        }
    };
    let body = Bytes::copy_from_slice(body);
    let body = if sel & 0x80 == 0 {
        body
    } else {
        match http::decode_body(http::Encoding::Gzip, body, GZIP_LIMIT) {
            Ok(b) => {
                assert!(b.len() as u64 <= GZIP_LIMIT, "decoded {} bytes", b.len());
                b
            }
            Err(r) => {
                assert!(r.field.is_none(), "{r:?}");
                match r.status {
                    400 => assert!(r.message.contains("not valid gzip"), "{r:?}"),
                    413 => assert!(
                        r.message.contains("once decompressed (server.max_body)"),
                        "{r:?}"
                    ),
                    _ => panic!("a gzip body is 400 or 413: {r:?}"),
                }
                return;
            }
        }
    };
    let items = match http::split_body(format, &body, max_batch) {
        Ok(items) => items,
        Err(r) => {
            assert!(r.status == 400 || r.status == 413, "{r:?}");
            assert!(!r.message.is_empty());
            if r.status == 413 {
                assert!(r.message.contains("server.max_batch"), "{r:?}");
            }
            if let Some(f) = &r.field {
                assert!(f.starts_with("events["), "{r:?}");
            }
            return;
        }
    };
    assert!(!items.is_empty() && items.len() <= max_batch);
    for (i, (label, v)) in items.into_iter().enumerate() {
        let single = format == BodyFormat::Json && label == "event";
        assert!(
            single || label == format!("events[{i}]"),
            "label {label} at {i}"
        );
        let sent_changed = v.get("changed").is_some_and(|c| !c.is_null());
        let sent_number = v.get("account_id").and_then(|a| a.as_number()).cloned();
        match http::to_event(&label, v, "web", Some(trace), now()) {
            Ok(ev) => {
                if let Some(n) = sent_number {
                    assert!(
                        n.is_i64() || n.is_u64(),
                        "non-integer account id {n} accepted"
                    );
                    assert_eq!(ev.account_id, n.to_string());
                }
                check_accepted(&ev, sent_changed, trace)
            }
            Err(r) => {
                assert_eq!(r.status, 400, "{r:?}");
                assert!(!r.message.is_empty(), "{r:?}");
                let f = r
                    .field
                    .as_deref()
                    .expect("a 400 for an element names a field");
                assert!(
                    f == label || f.starts_with(&format!("{label}.")),
                    "field {f} is not under {label}"
                );
            }
        }
    }
}

fn check_accepted(ev: &Event, sent_changed: bool, trace: &str) {
    let ok_chars = |s: &str, extra: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
    };
    assert!(!ev.topic.is_empty() && ev.topic.len() <= 256 && ok_chars(&ev.topic, "._-"));
    assert!(!ev.id.is_empty() && ev.id.len() <= 128 && ok_chars(&ev.id, "._:-"));
    assert!(!ev.account_id.is_empty(), "{ev:?}");
    // Identifiers never hold control characters (they reach log lines).
    let no_controls = |s: &str| assert!(http::control_char(s).is_none(), "{s:?} in {ev:?}");
    no_controls(&ev.account_id);
    if let Some(serde_json::Value::String(k)) = &ev.key {
        no_controls(k);
    }
    if let Some(serde_json::Value::Object(cols)) = &ev.key {
        for (c, v) in cols {
            no_controls(c);
            if let Some(v) = v.as_str() {
                no_controls(v);
            }
        }
    }
    ev.changed.iter().for_each(|c| no_controls(c));
    ev.consent.keys().for_each(|c| no_controls(c));
    ev.attributes.keys().for_each(|k| no_controls(k));
    assert_eq!(ev.source, "web");
    assert_eq!(ev.ingested_at, now());
    assert!(ev.commit.is_none());
    assert_eq!(ev.trace.is_some(), trace == TRACEPARENT);
    for v in [&ev.before, &ev.after].into_iter().flatten() {
        assert!(v.is_object(), "before/after are objects: {v}");
    }
    for v in [&ev.key, &ev.before, &ev.after, &ev.data] {
        assert!(
            !matches!(v, Some(serde_json::Value::Null)),
            "null is absent"
        );
    }
    if !sent_changed {
        assert_eq!(
            ev.changed,
            http::diff_fields(ev.before.as_ref(), ev.after.as_ref())
        );
    }
    check_round_trips(ev);
}

/// What every stored event must survive: the log (MessagePack), the default
/// delivery body (JSON) and the module boundary (WIT record).
fn check_round_trips(ev: &Event) {
    let bytes = event::encode(ev).expect("an event always encodes");
    let back = event::decode(FORMAT_VERSION, &bytes).expect("an encoded event decodes");
    assert_eq!(&back, ev, "MessagePack round trip");
    let json = serde_json::to_vec(ev).expect("an event always serialises to JSON");
    let back: Event = serde_json::from_slice(&json).expect("its JSON parses back");
    assert_eq!(&back, ev, "JSON round trip");
    let back = switchyard_wasm_host::event_from_wit(switchyard_wasm_host::event_to_wit(ev))
        .expect("the WIT record converts back");
    assert_eq!(&back, ev, "WIT round trip");
}

/// The pgoutput decoder.
pub fn pgoutput(data: &[u8]) {
    match pgoutput::decode(data) {
        Ok(m) => {
            let again = pgoutput::build::message(&m);
            assert_eq!(
                again.len(),
                data.len(),
                "every byte is accounted for: {m:?}"
            );
            assert_eq!(pgoutput::decode(&again).as_ref(), Ok(&m), "re-encoded");
            let cut = &data[..data.len() - 1];
            assert!(
                pgoutput::decode(cut).is_err(),
                "a strict prefix of {m:?} decoded"
            );
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with("pgoutput: ") && msg.len() > "pgoutput: ".len(),
                "{msg}"
            );
        }
    }
}

/// The config loader: TOML text → interpolation → `Config` → `validate()`.
/// `${SET}` and `${TOKEN}` are set, any other variable is not.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |k: &str| match k {
        "SET" => Some("value".to_string()),
        "TOKEN" => Some("0123456789abcdef0123456789".to_string()),
        _ => None,
    };
    match Config::from_toml_with_env(text, Path::new("/nonexistent-config-dir"), &env) {
        Ok(c) => {
            let mut errors = Vec::new();
            c.validate(&mut errors);
            assert!(
                errors.is_empty(),
                "a loaded config re-validates: {errors:?}"
            );
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "an error result carries errors");
            let table: Option<toml::Table> = toml::from_str(text).ok();
            for e in &errors {
                check_config_error(e, text, table.as_ref());
            }
        }
    }
}

fn check_config_error(e: &ConfigError, text: &str, table: Option<&toml::Table>) {
    assert!(!e.message.trim().is_empty(), "empty message: {e:?}");
    let Some(table) = table else {
        // Syntax error: names a line of the text.
        assert!(e.path.is_empty(), "{e:?}");
        assert!(e.message.starts_with("invalid TOML"), "{e:?}");
        if let Some(rest) = e.message.strip_prefix("invalid TOML (line ") {
            let n: usize = rest
                .split(')')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("line number in {e:?}"));
            assert!(n >= 1 && n <= text.lines().count().max(1) + 1, "{e:?}");
        }
        return;
    };
    if e.path.is_empty() {
        // Only a root-level type problem has no path; say what it is.
        assert!(e.message.len() > 5, "{e:?}");
        return;
    }
    // The path starts at a top-level key the text has.
    let named = table.keys().any(|k| {
        e.path == *k
            || e.path
                .strip_prefix(k.as_str())
                .is_some_and(|r| r.starts_with('.') || r.starts_with('['))
    });
    assert!(named, "error path names no key of the text: {e:?}");
}

/// Nesting depth of a JSON value (a scalar is 0).
fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Whether the router's own sources could have written `ev`: times within
/// RFC 3339's years 0000-9999 (ingest refuses others) and JSON values at
/// most 126 levels deep (serde_json's recursion limit of 127 at ingest, less
/// the event object and the body array). A stream entry outside this can
/// only be crafted by hand; it must still decode and re-encode stably.
fn written_by_the_router(ev: &Event) -> bool {
    use chrono::Datelike;
    let years = |t: &DateTime<Utc>| (0..=9999).contains(&t.year());
    years(&ev.occurred_at)
        && years(&ev.ingested_at)
        && [&ev.key, &ev.before, &ev.after, &ev.data]
            .into_iter()
            .flatten()
            .all(|v| depth(v) <= 126)
}

/// The event decoder. Byte 0: format version (0 means the current one);
/// the rest: the MessagePack body.
pub fn event_decode(data: &[u8]) {
    let Some((&v, body)) = data.split_first() else {
        return;
    };
    let version = if v == 0 { FORMAT_VERSION } else { u32::from(v) };
    match event::decode(version, body) {
        Ok(ev) => {
            assert_eq!(version, FORMAT_VERSION);
            if written_by_the_router(&ev) {
                check_round_trips(&ev);
            } else {
                // Crafted entries (see `written_by_the_router`): the log's
                // own encoding must still be stable.
                let bytes = event::encode(&ev).expect("an event always encodes");
                let back = event::decode(FORMAT_VERSION, &bytes).expect("re-encoded decodes");
                assert_eq!(back, ev, "MessagePack round trip");
                serde_json::to_vec(&ev).expect("an event always serialises to JSON");
            }
        }
        Err(CodecError::UnsupportedVersion(n)) => {
            assert_ne!(version, FORMAT_VERSION);
            assert_eq!(n, version);
            let msg = CodecError::UnsupportedVersion(n).to_string();
            assert!(msg.contains("upgrade switchyard"), "{msg}");
        }
        Err(e @ CodecError::Decode(_)) => {
            assert_eq!(version, FORMAT_VERSION);
            let msg = e.to_string();
            assert!(
                msg.starts_with("event body is not valid MessagePack"),
                "{msg}"
            );
        }
        Err(e) => panic!("decode returned an unexpected error kind: {e}"),
    }
}

#[cfg(test)]
mod tests {
    //! Stable-toolchain property tests for the four parsers: the same
    //! invariants as the fuzz targets, on generated inputs (bounded case
    //! counts, so `cargo test` stays fast). Structured strategies reach the
    //! success paths that random bytes rarely hit.
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn gzip(b: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    fn cfg(cases: u32) -> ProptestConfig {
        ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    fn json_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "[a-z]{0,6}|\\PC{0,8}".prop_map(Value::from),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        json_leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Posted events: mostly well-formed, with each field sometimes wrong.
    fn posted_event() -> impl Strategy<Value = Value> {
        let topic = prop_oneof!["[a-z][a-z0-9._-]{0,20}".prop_map(Value::from), json_leaf()];
        let account = prop_oneof![
            "[0-9a-z]{1,8}".prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            Just(json!(1.0)),
            "[a-z]{0,3}[\\x00-\\x1f\\x7f][a-z]{0,3}".prop_map(Value::from),
            json_leaf()
        ];
        let id = prop_oneof![
            Just(Value::Null),
            "[A-Za-z0-9._:-]{1,20}".prop_map(Value::from),
            json_leaf()
        ];
        let op = prop_oneof![
            Just(json!("update")),
            Just(json!("event")),
            Just(json!("upsert")),
            json_leaf()
        ];
        let obj = prop_oneof![
            Just(Value::Null),
            prop::collection::btree_map("[a-c]", json_leaf(), 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            json_value()
        ];
        let time = prop_oneof![
            Just(Value::Null),
            Just(json!("2026-11-23T09:00:00.5+01:00")),
            Just(json!("9999-12-31T23:59:59-23:59")),
            Just(json!("0000-01-01T00:00:00+23:59")),
            Just(json!("2016-12-31T23:59:60Z")),
            json_leaf()
        ];
        let consent = prop_oneof![
            Just(Value::Null),
            Just(json!({"email": "granted", "sms": "denied"})),
            json_value()
        ];
        (
            topic,
            account,
            id,
            op,
            (obj.clone(), obj.clone(), json_value()),
            time,
            consent,
            any::<u8>(),
        )
            .prop_map(
                |(topic, account, id, op, (before, after, data), time, consent, drop)| {
                    let mut m = serde_json::Map::new();
                    let fields = [
                        ("topic", topic),
                        ("account_id", account),
                        ("id", id),
                        ("op", op),
                        ("before", before),
                        ("after", after),
                        ("data", data),
                        ("occurred_at", time),
                        ("consent", consent),
                    ];
                    for (i, (k, v)) in fields.into_iter().enumerate() {
                        // Leave a field out now and then (drop's bits).
                        if i >= 8 || drop & (1 << i) == 0 || drop > 200 {
                            m.insert(k.to_string(), v);
                        }
                    }
                    if drop % 17 == 0 {
                        m.insert("acount".into(), json!(1));
                    }
                    Value::Object(m)
                },
            )
    }

    proptest! {
        #![proptest_config(cfg(256))]

        #[test]
        fn ingest_body_generated(events in prop::collection::vec(posted_event(), 1..5),
                                 sel in any::<u8>(), ndjson in any::<bool>(), array in any::<bool>()) {
            let body: Vec<u8> = if ndjson {
                events.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n").into_bytes()
            } else if array || events.len() > 1 {
                Value::from(events.clone()).to_string().into_bytes()
            } else {
                events[0].to_string().into_bytes()
            };
            // Content type: an NDJSON or JSON one matching the body, other bits random;
            // with bit 7 (gzip) the body is gzipped.
            let ct = if ndjson { 1 } else { 0 };
            let mut input = vec![(sel & !7) | ct];
            if sel & 0x80 == 0 {
                input.extend_from_slice(&body);
            } else {
                input.extend_from_slice(&gzip(&body));
            }
            ingest_body(&input);
        }

        #[test]
        fn gzip_bodies_decode_exactly_up_to_the_limit(data in prop::collection::vec(any::<u8>(), 0..4096),
                                                       max in 0u64..5000) {
            match http::decode_body(http::Encoding::Gzip, Bytes::from(gzip(&data)), max) {
                Ok(b) => prop_assert!(b == data && data.len() as u64 <= max),
                Err(r) => prop_assert!(r.status == 413 && data.len() as u64 > max, "{:?}", r),
            }
        }

        #[test]
        fn ingest_body_bytes(data in prop::collection::vec(any::<u8>(), 0..256)) {
            ingest_body(&data);
        }

        #[test]
        fn event_decode_generated(ev in posted_event(), v in 0u8..3) {
            // Accepted posted events, stored: must decode; then mutate the bytes.
            if let Ok(ev) = http::to_event("event", ev, "web", None, now()) {
                let bytes = event::encode(&ev).unwrap();
                let mut input = vec![v];
                input.extend_from_slice(&bytes);
                event_decode(&input);
                if v == 0 {
                    let back = event::decode(FORMAT_VERSION, &bytes).unwrap();
                    prop_assert_eq!(back, ev);
                }
                for cut in [1, bytes.len() / 2, bytes.len().saturating_sub(1)] {
                    let mut input = vec![0];
                    input.extend_from_slice(&bytes[..cut.min(bytes.len())]);
                    event_decode(&input);
                }
            }
        }

        #[test]
        fn event_decode_bytes(data in prop::collection::vec(any::<u8>(), 0..256)) {
            event_decode(&data);
        }

        #[test]
        fn pgoutput_generated(msg in pg_message(), flip in any::<(usize, u8)>()) {
            prop_assert!(pgoutput::decode(&msg).is_ok(), "{:?}", msg);
            pgoutput(&msg);
            for cut in 0..msg.len() {
                pgoutput(&msg[..cut]);
            }
            let mut bad = msg.clone();
            let i = flip.0 % bad.len();
            bad[i] ^= flip.1;
            pgoutput(&bad);
        }

        #[test]
        fn pgoutput_bytes(data in prop::collection::vec(any::<u8>(), 0..128),
                          tag in prop::sample::select(b"BCORYIUDTMZ".to_vec())) {
            let mut input = vec![tag];
            input.extend_from_slice(&data);
            pgoutput(&input);
        }
    }

    proptest! {
        // Each config case builds a redis client and globs: fewer cases.
        #![proptest_config(cfg(128))]

        #[test]
        fn config_generated(text in config_text()) {
            config(text.as_bytes());
        }

        #[test]
        fn config_text_mutations(text in config_text(), cut in any::<usize>(), junk in "[\\[\\]=\"{}.$ a-z0-9\n]{0,4}") {
            let cut = cut % (text.len() + 1);
            let cut = (0..=cut).rev().find(|&c| text.is_char_boundary(c)).unwrap_or(0);
            let mutated = format!("{}{}{}", &text[..cut], junk, &text[cut..]);
            config(mutated.as_bytes());
        }
    }

    fn pg_message() -> impl Strategy<Value = Vec<u8>> {
        use pgoutput::build::{self, Col};
        let text = "\\PC{0,6}";
        let col = prop_oneof![Just(0u8), Just(1u8), Just(2u8), Just(3u8)];
        let tuple = prop::collection::vec((col, text), 0..5);
        fn cols(t: &[(u8, String)]) -> Vec<Col<'_>> {
            t.iter()
                .map(|(k, s)| match k {
                    0 => Col::Null,
                    1 => Col::Toast,
                    2 => Col::Text(s),
                    _ => Col::Binary(s.as_bytes()),
                })
                .collect()
        }
        let name = "[a-z_]{0,8}";
        prop_oneof![
            (any::<u64>(), any::<i64>(), any::<u32>()).prop_map(|(l, t, x)| build::begin(l, t, x)),
            (any::<u64>(), any::<u64>(), any::<i64>()).prop_map(|(a, b, t)| build::commit(a, b, t)),
            (any::<u64>(), name).prop_map(|(l, n)| build::origin(l, &n)),
            (
                any::<u32>(),
                name,
                name,
                prop::sample::select(b"dnfix".to_vec()),
                prop::collection::vec((any::<bool>(), name, any::<u32>(), any::<i32>()), 0..4)
            )
                .prop_map(|(id, ns, n, ident, cols)| {
                    let c: Vec<(bool, &str, u32, i32)> = cols
                        .iter()
                        .map(|(k, n, o, m)| (*k, n.as_str(), *o, *m))
                        .collect();
                    build::relation(id, &ns, &n, ident, &c)
                }),
            (any::<u32>(), name, name).prop_map(|(id, ns, n)| build::type_msg(id, &ns, &n)),
            (any::<u32>(), tuple.clone()).prop_map(|(r, t)| build::insert(r, &cols(&t))),
            (
                any::<u32>(),
                prop::option::of((prop::sample::select(b"KO".to_vec()), tuple.clone())),
                tuple.clone()
            )
                .prop_map(|(r, old, new)| {
                    let o = old.as_ref().map(|(k, t)| (*k, cols(t)));
                    build::update(r, o.as_ref().map(|(k, c)| (*k, c.as_slice())), &cols(&new))
                }),
            (any::<u32>(), prop::sample::select(b"KO".to_vec()), tuple)
                .prop_map(|(r, k, t)| build::delete(r, k, &cols(&t))),
            (any::<u8>(), prop::collection::vec(any::<u32>(), 0..5))
                .prop_map(|(o, r)| build::truncate(o, &r)),
            (
                any::<bool>(),
                any::<u64>(),
                name,
                prop::collection::vec(any::<u8>(), 0..8)
            )
                .prop_map(|(t, l, p, c)| build::logical(t, l, &p, &c)),
        ]
    }

    /// Config text from the real keys, with values that are sometimes wrong.
    fn config_text() -> impl Strategy<Value = String> {
        let size = prop_oneof![
            Just("\"64KiB\"".to_string()),
            Just("0".to_string()),
            Just("\"12 parsecs\"".to_string()),
            any::<u32>().prop_map(|n| n.to_string())
        ];
        let dur = prop_oneof![
            Just("\"5s\"".to_string()),
            Just("\"10s\"".to_string()),
            Just("\"never\"".to_string()),
            Just("\"30days\"".to_string()),
            Just("3".to_string())
        ];
        let string = prop_oneof![
            Just("\"${TOKEN}\"".to_string()),
            Just("\"${MISSING}\"".to_string()),
            Just("\"${MISSING:-default-value-1234567}\"".to_string()),
            Just("\"${unclosed\"".to_string()),
            Just("\"redis://127.0.0.1:6379\"".to_string()),
            Just("\"short\"".to_string()),
            Just("\"[\"".to_string()),
            "[a-z0-9:/.*-]{0,12}".prop_map(|s| format!("\"{s}\""))
        ];
        let name = prop_oneof![
            Just("web".to_string()),
            Just("bad name".to_string()),
            "[a-z]{1,5}".prop_map(|s| s)
        ];
        (
            size,
            any::<u16>(),
            dur.clone(),
            string.clone(),
            string.clone(),
            name.clone(),
            prop::sample::select(vec!["http", "postgres", "kafka"]),
            (string.clone(), name, string, dur, any::<u8>()),
        )
            .prop_map(
                |(size, parts, retention, url, token, src, kind, (topic, cons, endpoint, grace, bits))| {
                    let mut t = String::new();
                    if bits & 1 != 0 {
                        t += &format!("[server]\nmax_body = {size}\nshutdown_grace = {grace}\nmax_batch = {parts}\n");
                    }
                    if bits & 2 != 0 {
                        t += &format!("[redis]\nurl = {url}\nnamespace = {topic}\n");
                    }
                    if bits & 4 != 0 {
                        t += &format!("[log]\npartitions = {parts}\nretention = {retention}\n");
                    }
                    if bits & 8 != 0 {
                        t += &format!("[sources.\"{src}\"]\ntype = \"{kind}\"\ntoken = {token}\ntopics = [{topic}]\n");
                    }
                    if bits & 16 != 0 {
                        t += &format!("[consumers.\"{cons}\"]\ntopics = [{topic}]\n[consumers.\"{cons}\".endpoint]\nurl = {endpoint}\n");
                    }
                    if bits & 32 != 0 {
                        t += "[unknown]\nkey = 1\n";
                    }
                    t
                },
            )
    }

    #[test]
    fn seeds_of_the_fuzz_targets_hold() {
        // The committed seed corpora (fuzz/seeds/<target>/) satisfy the
        // invariants too, so a seed that breaks them fails here first.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
        let targets: [(&str, fn(&[u8])); 4] = [
            ("ingest_body", ingest_body),
            ("pgoutput", pgoutput),
            ("config", config),
            ("event_decode", event_decode),
        ];
        for (name, f) in targets {
            let dir = root.join(name);
            let mut n = 0;
            for entry in
                std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            {
                let p = entry.unwrap().path();
                f(&std::fs::read(&p).unwrap());
                n += 1;
            }
            assert!(n >= 3, "{name}: at least 3 seeds, found {n}");
        }
    }
}
