//! MySQL/MariaDB values → JSON, by column kind (from information_schema).
//!
//! The binlog (typed binary values, `mysql_common::binlog::value`) and the
//! snapshot (text protocol) decode to the same JSON for the same stored
//! value; unit tests pin both against each other and the integration test
//! compares them on a live server. Decoding never fails and never panics:
//! anything unexpected is kept as a string.
//!
//! | column type | JSON |
//! |---|---|
//! | `TINYINT` … `BIGINT` (signed or `UNSIGNED`), `BIT` | number |
//! | `FLOAT`, `DOUBLE` | number (`FLOAT` by its shortest decimal form) |
//! | `DECIMAL` | string, exact digits and scale (`"12.50"`) |
//! | `DATE` | `"2024-05-01"` |
//! | `DATETIME(n)` | ISO 8601 without offset, fraction trimmed (`"2024-05-01T12:00:00.25"`) |
//! | `TIMESTAMP(n)` | RFC 3339 in UTC (`"2024-05-01T12:00:00.25Z"`) |
//! | `TIME(n)` | `"[-]H:MM:SS[.f]"` (hours may exceed 24) |
//! | `YEAR` | number |
//! | `JSON` (MySQL), `LONGTEXT … CHECK (json_valid(col))` (MariaDB's `JSON`) | the JSON value |
//! | `ENUM` | the label (the binlog carries the index; labels from `COLUMN_TYPE`) |
//! | `SET` | the labels, comma-separated as MySQL prints them (`"a,c"`) |
//! | `BINARY`, `VARBINARY`, `*BLOB` | lower-case hex string, like the Postgres source's `bytea` |
//! | `CHAR`, `VARCHAR`, `*TEXT`, everything else | string (hex if not UTF-8) |
//! | NULL | `null` |
//!
//! Zero dates (`0000-00-00`) keep their digits (`"0000-00-00T00:00:00"`).

use chrono::{DateTime, Utc};
use mysql_async::binlog::value::BinlogValue;
use mysql_async::Value as MyValue;
use serde_json::{Number, Value};

/// How a column's values are decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum ColKind {
    /// Integer of `bytes` width.
    Int {
        unsigned: bool,
        bytes: u8,
    },
    Float,
    Double,
    Decimal,
    Date,
    DateTime,
    Timestamp,
    Time,
    Year,
    Json,
    Enum(Vec<String>),
    Set(Vec<String>),
    /// `pad`: `BINARY(n)` values are right-padded with zero bytes to n.
    Binary {
        pad: Option<usize>,
    },
    Bit,
    /// Character data; `latin1`: the column's character set is latin1
    /// (MySQL's latin1 is cp1252), other sets are read as UTF-8.
    Text {
        latin1: bool,
    },
}

impl ColKind {
    /// From information_schema's `DATA_TYPE`, `COLUMN_TYPE` and
    /// `CHARACTER_SET_NAME`; `json`: the column has a `json_valid(col)`
    /// check (MariaDB's JSON alias).
    pub fn from_catalog(data_type: &str, column_type: &str, charset: &str, json: bool) -> ColKind {
        let dt = data_type.to_ascii_lowercase();
        let unsigned = column_type.to_ascii_lowercase().contains("unsigned");
        match dt.as_str() {
            "tinyint" => ColKind::Int { unsigned, bytes: 1 },
            "smallint" => ColKind::Int { unsigned, bytes: 2 },
            "mediumint" => ColKind::Int { unsigned, bytes: 3 },
            "int" | "integer" => ColKind::Int { unsigned, bytes: 4 },
            "bigint" => ColKind::Int { unsigned, bytes: 8 },
            "float" => ColKind::Float,
            "double" | "real" => ColKind::Double,
            "decimal" | "numeric" => ColKind::Decimal,
            "date" => ColKind::Date,
            "datetime" => ColKind::DateTime,
            "timestamp" => ColKind::Timestamp,
            "time" => ColKind::Time,
            "year" => ColKind::Year,
            "json" => ColKind::Json,
            "enum" => ColKind::Enum(labels(column_type)),
            "set" => ColKind::Set(labels(column_type)),
            "binary" => ColKind::Binary {
                pad: column_type
                    .split_once('(')
                    .and_then(|(_, r)| r.trim_end_matches(')').parse().ok()),
            },
            "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
                ColKind::Binary { pad: None }
            }
            "bit" => ColKind::Bit,
            _ if json => ColKind::Json,
            _ => ColKind::Text {
                latin1: charset.eq_ignore_ascii_case("latin1"),
            },
        }
    }
}

impl ColKind {
    /// The type as the source decodes it, for the schema history
    /// (`int`, `bigint unsigned`, `decimal`, `enum('a','b')`, `text`, …).
    /// Two SQL types decoded alike (`VARCHAR(10)`, `TEXT`) have one name.
    pub fn type_name(&self) -> String {
        let list = |v: &[String]| {
            v.iter()
                .map(|l| format!("'{}'", l.replace('\'', "''")))
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            ColKind::Int { unsigned, bytes } => {
                let n = match bytes {
                    1 => "tinyint",
                    2 => "smallint",
                    3 => "mediumint",
                    4 => "int",
                    _ => "bigint",
                };
                if *unsigned {
                    format!("{n} unsigned")
                } else {
                    n.to_string()
                }
            }
            ColKind::Float => "float".into(),
            ColKind::Double => "double".into(),
            ColKind::Decimal => "decimal".into(),
            ColKind::Date => "date".into(),
            ColKind::DateTime => "datetime".into(),
            ColKind::Timestamp => "timestamp".into(),
            ColKind::Time => "time".into(),
            ColKind::Year => "year".into(),
            ColKind::Json => "json".into(),
            ColKind::Enum(v) => format!("enum({})", list(v)),
            ColKind::Set(v) => format!("set({})", list(v)),
            ColKind::Binary { pad: Some(n) } => format!("binary({n})"),
            ColKind::Binary { pad: None } => "varbinary".into(),
            ColKind::Bit => "bit".into(),
            ColKind::Text { latin1: true } => "text latin1".into(),
            ColKind::Text { latin1: false } => "text".into(),
        }
    }
}

/// `enum('a','b''c')` → `["a", "b'c"]`.
pub fn labels(column_type: &str) -> Vec<String> {
    let Some(start) = column_type.find('(') else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut chars = column_type[start + 1..].chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut s = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    s.push('\'');
                }
                '\'' => break,
                '\\' => {
                    if let Some(n) = chars.next() {
                        s.push(n);
                    }
                }
                c => s.push(c),
            }
        }
        out.push(s);
    }
    out
}

pub fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

/// cp1252 bytes 0x80–0x9F (MySQL's latin1); the rest is ISO-8859-1.
const CP1252_HIGH: [char; 32] = [
    '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž', '\u{8f}',
    '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}', 'ž', 'Ÿ',
];

fn latin1(b: &[u8]) -> String {
    b.iter()
        .map(|&c| match c {
            0x80..=0x9f => CP1252_HIGH[(c - 0x80) as usize],
            c => c as char,
        })
        .collect()
}

fn text_or_hex(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => Value::String(hex(b)),
    }
}

fn float_json(f: f64) -> Value {
    Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(f.to_string()))
}

fn frac(micros: u32) -> String {
    if micros == 0 {
        return String::new();
    }
    let s = format!(".{micros:06}");
    s.trim_end_matches('0').to_string()
}

fn datetime_string(y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8, us: u32) -> String {
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{}", frac(us))
}

fn utc_string(t: DateTime<Utc>) -> String {
    format!(
        "{}{}Z",
        t.format("%Y-%m-%dT%H:%M:%S"),
        frac(t.timestamp_subsec_micros())
    )
}

/// `"[-]H:MM:SS[.ffffff]"` text → the canonical form (fraction trimmed).
fn time_text(s: &str) -> String {
    match s.split_once('.') {
        Some((whole, f)) => {
            let us: u32 = format!("{f:0<6}")[..6].parse().unwrap_or(0);
            format!("{whole}{}", frac(us))
        }
        None => s.to_owned(),
    }
}

/// Text `YYYY-MM-DD HH:MM:SS[.ffffff]` → parts.
fn parse_datetime_text(s: &str) -> Option<(u16, u8, u8, u8, u8, u8, u32)> {
    let (date, time) = s.split_once(' ').or_else(|| s.split_once('T'))?;
    let mut d = date.split('-');
    let y = d.next()?.parse().ok()?;
    let mo = d.next()?.parse().ok()?;
    let dd = d.next()?.parse().ok()?;
    let (hms, f) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':');
    let h = t.next()?.parse().ok()?;
    let mi = t.next()?.parse().ok()?;
    let sec = t.next()?.parse().ok()?;
    let us = if f.is_empty() {
        0
    } else {
        format!("{f:0<6}").get(..6)?.parse().ok()?
    };
    Some((y, mo, dd, h, mi, sec, us))
}

fn set_labels(labels: &[String], mut bits: u64) -> String {
    let mut out = Vec::new();
    for l in labels {
        if bits & 1 == 1 {
            out.push(l.as_str());
        }
        bits >>= 1;
    }
    out.join(",")
}

fn be_uint(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |acc, x| (acc << 8) | *x as u64)
}

fn le_uint(b: &[u8]) -> u64 {
    b.iter().rev().fold(0u64, |acc, x| (acc << 8) | *x as u64)
}

/// A value read from the binlog.
pub fn binlog_to_json(kind: &ColKind, v: &BinlogValue<'_>) -> Value {
    match v {
        BinlogValue::Value(v) => binlog_scalar(kind, v),
        BinlogValue::Jsonb(j) => match serde_json::Value::try_from(j.clone()) {
            Ok(v) => v,
            Err(e) => Value::String(format!("<undecodable JSON: {e}>")),
        },
        // Partial JSON updates need binlog_row_value_options=PARTIAL_JSON
        // (MySQL only); the startup check refuses it.
        BinlogValue::JsonDiff(_) => Value::String("<partial JSON update>".into()),
    }
}

fn binlog_scalar(kind: &ColKind, v: &MyValue) -> Value {
    match (kind, v) {
        (_, MyValue::NULL) => Value::Null,
        (ColKind::Int { unsigned, bytes }, MyValue::Int(i)) => {
            if *unsigned && *i < 0 {
                // The binlog says nothing about signedness unless
                // binlog_row_metadata=FULL: reinterpret from the catalog.
                let u = if *bytes >= 8 {
                    *i as u64
                } else {
                    (*i as u64) & ((1u64 << (*bytes as u32 * 8)) - 1)
                };
                Value::Number(u.into())
            } else {
                Value::Number((*i).into())
            }
        }
        (_, MyValue::Int(i)) if matches!(kind, ColKind::Enum(_)) => match kind {
            ColKind::Enum(l) => match (*i as usize).checked_sub(1).and_then(|i| l.get(i)) {
                Some(s) => Value::String(s.clone()),
                None => Value::String(String::new()),
            },
            _ => unreachable!(),
        },
        (_, MyValue::Int(i)) => Value::Number((*i).into()),
        (_, MyValue::UInt(u)) => Value::Number((*u).into()),
        (_, MyValue::Float(f)) => {
            // Shortest decimal form of the f32, as the text protocol prints it.
            float_json(f.to_string().parse::<f64>().unwrap_or(*f as f64))
        }
        (_, MyValue::Double(d)) => float_json(*d),
        (ColKind::Date, MyValue::Date(y, mo, d, ..)) => {
            Value::String(format!("{y:04}-{mo:02}-{d:02}"))
        }
        (_, MyValue::Date(y, mo, d, h, mi, s, us)) => {
            Value::String(datetime_string(*y, *mo, *d, *h, *mi, *s, *us))
        }
        (_, MyValue::Time(neg, days, h, mi, s, us)) => Value::String(format!(
            "{}{}:{mi:02}:{s:02}{}",
            if *neg { "-" } else { "" },
            *days as u64 * 24 + *h as u64,
            frac(*us)
        )),
        (ColKind::Timestamp, MyValue::Bytes(b)) => {
            // "seconds[.micros]" since the epoch.
            let s = String::from_utf8_lossy(b);
            let (sec, us) = s.split_once('.').unwrap_or((&s, "0"));
            match (sec.parse::<i64>(), us.parse::<u32>()) {
                (Ok(0), Ok(0)) => Value::String("0000-00-00T00:00:00Z".into()),
                (Ok(sec), Ok(us)) => match DateTime::from_timestamp(sec, us * 1000) {
                    Some(t) => Value::String(utc_string(t)),
                    None => Value::String(s.into_owned()),
                },
                _ => Value::String(s.into_owned()),
            }
        }
        (ColKind::Year, MyValue::Bytes(b)) => match String::from_utf8_lossy(b).parse::<u64>() {
            // mysql_common prints the stored 0 (year 0000) as 1900.
            Ok(1900) => Value::Number(0.into()),
            Ok(y) => Value::Number(y.into()),
            Err(_) => text_or_hex(b),
        },
        (ColKind::Set(l), MyValue::Bytes(b)) => Value::String(set_labels(l, le_uint(b))),
        (ColKind::Bit, MyValue::Bytes(b)) => Value::Number(be_uint(b).into()),
        (ColKind::Json, MyValue::Bytes(b)) => {
            serde_json::from_slice(b).unwrap_or_else(|_| text_or_hex(b))
        }
        (ColKind::Binary { pad }, MyValue::Bytes(b)) => Value::String(padded_hex(b, *pad)),
        // The binlog carries text in the column's character set.
        (ColKind::Text { latin1: true }, MyValue::Bytes(b)) => Value::String(latin1(b)),
        (_, MyValue::Bytes(b)) => text_or_hex(b),
    }
}

fn padded_hex(b: &[u8], pad: Option<usize>) -> String {
    match pad {
        Some(n) if b.len() < n => {
            let mut v = b.to_vec();
            v.resize(n, 0);
            hex(&v)
        }
        _ => hex(b),
    }
}

/// A value read over the text protocol (snapshot; the session runs with
/// `time_zone = '+00:00'`).
pub fn text_to_json(kind: &ColKind, v: &MyValue) -> Value {
    let b = match v {
        MyValue::NULL => return Value::Null,
        MyValue::Bytes(b) => b.as_slice(),
        // The text protocol only returns strings; typed values (binary
        // protocol) take the binlog path.
        other => return binlog_scalar(kind, other),
    };
    let s = || String::from_utf8_lossy(b).into_owned();
    match kind {
        ColKind::Int { .. } | ColKind::Year => {
            let t = s();
            t.parse::<i64>()
                .map(|n| Value::Number(n.into()))
                .or_else(|_| t.parse::<u64>().map(|n| Value::Number(n.into())))
                .unwrap_or(Value::String(t))
        }
        ColKind::Float | ColKind::Double => {
            let t = s();
            t.parse::<f64>().map(float_json).unwrap_or(Value::String(t))
        }
        ColKind::Decimal | ColKind::Date | ColKind::Enum(_) | ColKind::Set(_) => Value::String(s()),
        ColKind::DateTime | ColKind::Timestamp => {
            let t = s();
            let z = if *kind == ColKind::Timestamp { "Z" } else { "" };
            match parse_datetime_text(&t) {
                Some((y, mo, d, h, mi, sec, us)) => {
                    Value::String(format!("{}{z}", datetime_string(y, mo, d, h, mi, sec, us)))
                }
                None => Value::String(t),
            }
        }
        ColKind::Time => Value::String(time_text(&s())),
        ColKind::Json => serde_json::from_slice(b).unwrap_or_else(|_| text_or_hex(b)),
        ColKind::Binary { pad } => Value::String(padded_hex(b, *pad)),
        ColKind::Bit => Value::Number(be_uint(b).into()),
        // The connection's character set (utf8mb4) is used for results.
        ColKind::Text { .. } => text_or_hex(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn both(kind: &ColKind, binlog: MyValue, text: &str) -> Value {
        let a = binlog_to_json(kind, &BinlogValue::Value(binlog));
        let b = text_to_json(kind, &MyValue::Bytes(text.as_bytes().to_vec()));
        assert_eq!(a, b, "binlog and text decode differently for {kind:?}");
        a
    }

    #[test]
    fn kinds_from_catalog() {
        assert_eq!(
            ColKind::from_catalog("bigint", "bigint(20) unsigned", "", false),
            ColKind::Int {
                unsigned: true,
                bytes: 8
            }
        );
        assert_eq!(
            ColKind::from_catalog("longtext", "longtext", "utf8mb4", true),
            ColKind::Json
        );
        assert_eq!(
            ColKind::from_catalog("longtext", "longtext", "utf8mb4", false),
            ColKind::Text { latin1: false }
        );
        assert_eq!(
            ColKind::from_catalog("varchar", "varchar(8)", "latin1", false),
            ColKind::Text { latin1: true }
        );
        assert_eq!(
            ColKind::from_catalog("enum", "enum('a','b''c','d\\\\e')", "utf8mb4", false),
            ColKind::Enum(vec!["a".into(), "b'c".into(), "d\\e".into()])
        );
        assert_eq!(
            ColKind::from_catalog("binary", "binary(4)", "", false),
            ColKind::Binary { pad: Some(4) }
        );
    }

    #[test]
    fn binlog_and_text_agree() {
        let u8k = ColKind::Int {
            unsigned: true,
            bytes: 1,
        };
        assert_eq!(both(&u8k, MyValue::Int(-56), "200"), json!(200));
        let u64k = ColKind::Int {
            unsigned: true,
            bytes: 8,
        };
        assert_eq!(
            both(&u64k, MyValue::Int(-1), "18446744073709551615"),
            json!(u64::MAX)
        );
        let i = ColKind::Int {
            unsigned: false,
            bytes: 4,
        };
        assert_eq!(both(&i, MyValue::Int(-5), "-5"), json!(-5));
        assert_eq!(
            both(&ColKind::Float, MyValue::Float(0.1), "0.1"),
            json!(0.1)
        );
        assert_eq!(
            both(&ColKind::Double, MyValue::Double(2.5), "2.5"),
            json!(2.5)
        );
        assert_eq!(
            both(
                &ColKind::Decimal,
                MyValue::Bytes(b"-12.50".to_vec()),
                "-12.50"
            ),
            json!("-12.50")
        );
        assert_eq!(
            both(
                &ColKind::DateTime,
                MyValue::Date(2024, 5, 1, 12, 0, 3, 250_000),
                "2024-05-01 12:00:03.250"
            ),
            json!("2024-05-01T12:00:03.25")
        );
        assert_eq!(
            both(
                &ColKind::DateTime,
                MyValue::Date(2024, 5, 1, 12, 0, 3, 0),
                "2024-05-01 12:00:03"
            ),
            json!("2024-05-01T12:00:03")
        );
        assert_eq!(
            both(
                &ColKind::Date,
                MyValue::Date(2024, 5, 1, 0, 0, 0, 0),
                "2024-05-01"
            ),
            json!("2024-05-01")
        );
        assert_eq!(
            both(
                &ColKind::Timestamp,
                MyValue::Bytes(b"1714564800.123456".to_vec()),
                "2024-05-01 12:00:00.123456"
            ),
            json!("2024-05-01T12:00:00.123456Z")
        );
        assert_eq!(
            both(
                &ColKind::Time,
                MyValue::Time(true, 1, 2, 3, 4, 500_000),
                "-26:03:04.500000"
            ),
            json!("-26:03:04.5")
        );
        assert_eq!(
            both(&ColKind::Year, MyValue::Bytes(b"2024".to_vec()), "2024"),
            json!(2024)
        );
        let e = ColKind::Enum(vec!["small".into(), "large".into()]);
        assert_eq!(both(&e, MyValue::Int(2), "large"), json!("large"));
        let s = ColKind::Set(vec!["a".into(), "b".into(), "c".into()]);
        assert_eq!(both(&s, MyValue::Bytes(vec![0b101]), "a,c"), json!("a,c"));
        assert_eq!(
            both(&ColKind::Bit, MyValue::Bytes(vec![1, 2]), "\u{1}\u{2}"),
            json!(258)
        );
        assert_eq!(
            both(
                &ColKind::Json,
                MyValue::Bytes(br#"{"a":[1,2]}"#.to_vec()),
                r#"{"a": [1, 2]}"#
            ),
            json!({"a": [1, 2]})
        );
        let bin = ColKind::Binary { pad: Some(4) };
        assert_eq!(
            binlog_to_json(&bin, &BinlogValue::Value(MyValue::Bytes(vec![0xde, 0xad]))),
            json!("dead0000")
        );
        assert_eq!(
            text_to_json(&bin, &MyValue::Bytes(vec![0xde, 0xad, 0, 0])),
            json!("dead0000")
        );
        let text = ColKind::Text { latin1: false };
        assert_eq!(
            both(&text, MyValue::Bytes("héllo".as_bytes().to_vec()), "héllo"),
            json!("héllo")
        );
        assert_eq!(
            binlog_to_json(&text, &BinlogValue::Value(MyValue::NULL)),
            Value::Null
        );
        assert_eq!(
            text_to_json(&text, &MyValue::Bytes(vec![0xff])),
            json!("ff")
        );
        // latin1 (cp1252) in the binlog, UTF-8 over the connection.
        let l1 = ColKind::Text { latin1: true };
        assert_eq!(
            binlog_to_json(
                &l1,
                &BinlogValue::Value(MyValue::Bytes(vec![b'h', 0xe9, 0x80]))
            ),
            text_to_json(&l1, &MyValue::Bytes("hé€".as_bytes().to_vec()))
        );
    }
}
