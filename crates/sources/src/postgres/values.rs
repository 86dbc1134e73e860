//! Postgres text-format values → JSON, by type OID.
//!
//! The replication and snapshot sessions pin `DateStyle = ISO, YMD`,
//! `IntervalStyle = iso_8601`, `TimeZone = UTC`, `bytea_output = hex` and
//! `extra_float_digits = 3` (see [`SESSION_SETTINGS`]), so the text forms
//! parsed here are stable. Anything that does not parse as expected is kept
//! as a JSON string: decoding never fails and never panics.
//!
//! | Postgres type | JSON |
//! |---|---|
//! | `int2`, `int4`, `int8`, `oid` | number |
//! | `float4`, `float8` | number; `NaN`, `Infinity`, `-Infinity` → string |
//! | `numeric`, `money` | string (exact digits) |
//! | `bool` | `true` / `false` |
//! | `timestamptz` | RFC 3339 string in UTC (`2024-05-01T12:00:00.5Z`) |
//! | `timestamp` | ISO 8601 string without offset (`2024-05-01T12:00:00.5`) |
//! | `date`, `time`, `timetz`, `interval` | ISO string as Postgres prints it |
//! | `json`, `jsonb` | the JSON value |
//! | `bytea` | lower-case hex string without `\x` |
//! | arrays of the types above (and of text-like types) | JSON arrays (nested for multi-dimensional) |
//! | `text`, `varchar`, `bpchar`, `name`, `char`, `uuid`, enums, everything else | string |
//! | NULL | `null` |

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Number, Value};

/// Session settings that fix the text output of every type decoded here.
pub const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("datestyle", "ISO, YMD"),
    ("intervalstyle", "iso_8601"),
    ("timezone", "UTC"),
    ("bytea_output", "hex"),
    ("extra_float_digits", "3"),
];

/// `-c name=value …` for the startup `options` parameter.
pub fn startup_options() -> String {
    SESSION_SETTINGS
        .iter()
        .map(|(k, v)| format!("-c {k}={}", v.replace(' ', "\\ ")))
        .collect::<Vec<_>>()
        .join(" ")
}

pub mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const MONEY: u32 = 790;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const TIMETZ: u32 = 1266;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
}

/// The name of a type OID for the schema history (`int4`, `text`, …;
/// arrays `_int4`; a type this table does not name: `oid:<n>`).
pub fn type_name(type_oid: u32) -> String {
    let n = match type_oid {
        oid::BOOL => "bool",
        oid::BYTEA => "bytea",
        oid::CHAR => "char",
        oid::NAME => "name",
        oid::INT8 => "int8",
        oid::INT2 => "int2",
        oid::INT4 => "int4",
        oid::TEXT => "text",
        oid::OID => "oid",
        oid::JSON => "json",
        oid::FLOAT4 => "float4",
        oid::FLOAT8 => "float8",
        oid::MONEY => "money",
        oid::BPCHAR => "bpchar",
        oid::VARCHAR => "varchar",
        oid::DATE => "date",
        oid::TIME => "time",
        oid::TIMESTAMP => "timestamp",
        oid::TIMESTAMPTZ => "timestamptz",
        oid::INTERVAL => "interval",
        oid::TIMETZ => "timetz",
        oid::NUMERIC => "numeric",
        oid::UUID => "uuid",
        oid::JSONB => "jsonb",
        other => {
            return match array_element(other) {
                Some(e) => format!("_{}", type_name(e)),
                None => format!("oid:{other}"),
            }
        }
    };
    n.to_string()
}

/// Element type of an array type OID, for the array types decoded structurally.
pub fn array_element(type_oid: u32) -> Option<u32> {
    Some(match type_oid {
        1000 => oid::BOOL,
        1001 => oid::BYTEA,
        1002 => oid::CHAR,
        1003 => oid::NAME,
        1005 => oid::INT2,
        1007 => oid::INT4,
        1009 => oid::TEXT,
        1014 => oid::BPCHAR,
        1015 => oid::VARCHAR,
        1016 => oid::INT8,
        1021 => oid::FLOAT4,
        1022 => oid::FLOAT8,
        1028 => oid::OID,
        1115 => oid::TIMESTAMP,
        1182 => oid::DATE,
        1183 => oid::TIME,
        1185 => oid::TIMESTAMPTZ,
        1187 => oid::INTERVAL,
        1231 => oid::NUMERIC,
        1270 => oid::TIMETZ,
        2951 => oid::UUID,
        199 => oid::JSON,
        3807 => oid::JSONB,
        791 => oid::MONEY,
        _ => return None,
    })
}

/// Decode one text-format value of type `type_oid`.
pub fn text_to_json(type_oid: u32, text: &str) -> Value {
    if let Some(elem) = array_element(type_oid) {
        return match parse_array(text) {
            Some(a) => array_to_json(elem, a),
            None => Value::String(text.to_owned()),
        };
    }
    scalar(type_oid, text)
}

/// Decode raw bytes (not valid UTF-8 only for binary data): text values go
/// through [`text_to_json`]; anything else becomes a hex string.
pub fn bytes_to_json(type_oid: u32, bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => text_to_json(type_oid, s),
        Err(_) => Value::String(hex(bytes)),
    }
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

fn scalar(type_oid: u32, text: &str) -> Value {
    let string = || Value::String(text.to_owned());
    match type_oid {
        oid::INT2 | oid::INT4 | oid::INT8 | oid::OID => text
            .parse::<i64>()
            .map(|n| Value::Number(n.into()))
            .or_else(|_| text.parse::<u64>().map(|n| Value::Number(n.into())))
            .unwrap_or_else(|_| string()),
        oid::FLOAT4 | oid::FLOAT8 => match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or_else(string),
            _ => string(),
        },
        oid::BOOL => match text {
            "t" | "true" => Value::Bool(true),
            "f" | "false" => Value::Bool(false),
            _ => string(),
        },
        oid::JSON | oid::JSONB => serde_json::from_str(text).unwrap_or_else(|_| string()),
        oid::TIMESTAMPTZ => timestamptz(text).map(Value::String).unwrap_or_else(string),
        oid::TIMESTAMP => Value::String(timestamp(text)),
        oid::BYTEA => match text.strip_prefix("\\x") {
            Some(h) => Value::String(h.to_ascii_lowercase()),
            None => string(),
        },
        _ => string(),
    }
}

/// `2024-05-01 12:00:00.5+00` → `2024-05-01T12:00:00.5Z` (fraction digits as
/// Postgres printed them); other offsets are converted to UTC; `infinity`
/// and BC dates stay as they are.
fn timestamptz(text: &str) -> Option<String> {
    let b = text.as_bytes();
    // Fast path: the sessions pin TimeZone = UTC, so the offset is `+00`.
    if b.len() >= 22 && b[10] == b' ' && b[4] == b'-' && b[7] == b'-' && text.ends_with("+00") {
        let time = &text[11..text.len() - 3];
        if time.len() >= 8
            && time
                .bytes()
                .all(|c| c.is_ascii_digit() || c == b':' || c == b'.')
        {
            return Some(format!("{}T{time}Z", &text[..10]));
        }
    }
    // ISO output with another offset: +HH, +HH:MM or +HH:MM:SS.
    let (main, off) = split_offset(text)?;
    let naive = NaiveDateTime::parse_from_str(main, "%Y-%m-%d %H:%M:%S%.f").ok()?;
    let off_secs = parse_offset(off)?;
    let utc = naive.checked_sub_signed(chrono::Duration::seconds(off_secs))?;
    let dt: DateTime<Utc> = DateTime::from_naive_utc_and_offset(utc, Utc);
    let frac = main.find('.').map(|i| &main[i..]).unwrap_or("");
    Some(format!("{}{frac}Z", dt.format("%Y-%m-%dT%H:%M:%S")))
}

fn split_offset(text: &str) -> Option<(&str, &str)> {
    // The offset sign comes after the time part (index > 10 skips the date's dashes).
    let idx = text
        .char_indices()
        .skip(11)
        .find(|(_, c)| *c == '+' || *c == '-')
        .map(|(i, _)| i)?;
    Some((&text[..idx], &text[idx..]))
}

fn parse_offset(off: &str) -> Option<i64> {
    let sign = match off.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let mut secs = 0i64;
    for (i, part) in off[1..].split(':').enumerate() {
        if i > 2 || part.len() != 2 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let v: i64 = part.parse().ok()?;
        secs += v * [3600, 60, 1][i];
    }
    Some(sign * secs)
}

/// `2024-05-01 12:00:00.5` → `2024-05-01T12:00:00.5` (BC dates and infinities unchanged).
fn timestamp(text: &str) -> String {
    let b = text.as_bytes();
    if b.len() >= 19 && b[10] == b' ' && b[4] == b'-' && !text.ends_with(" BC") {
        let mut s = text.to_owned();
        s.replace_range(10..11, "T");
        s
    } else {
        text.to_owned()
    }
}

/// A parsed array literal: nested lists of optional (None = NULL) strings.
#[derive(Debug, PartialEq)]
enum ArrayItem {
    Null,
    Value(String),
    Array(Vec<ArrayItem>),
}

/// Parse `{1,2,NULL,"a \"b\""}`, `{{1,2},{3,4}}`, `[0:1]={1,2}`.
fn parse_array(text: &str) -> Option<ArrayItem> {
    let mut s = text;
    if s.starts_with('[') {
        // dimension decoration
        let eq = s.find('=')?;
        s = &s[eq + 1..];
    }
    let chars: Vec<char> = s.chars().collect();
    let mut pos = 0;
    let item = parse_array_level(&chars, &mut pos, 0)?;
    if pos != chars.len() {
        return None;
    }
    Some(item)
}

fn parse_array_level(c: &[char], pos: &mut usize, depth: usize) -> Option<ArrayItem> {
    if depth > 6 || c.get(*pos) != Some(&'{') {
        return None;
    }
    *pos += 1;
    let mut items = Vec::new();
    if c.get(*pos) == Some(&'}') {
        *pos += 1;
        return Some(ArrayItem::Array(items));
    }
    loop {
        match c.get(*pos)? {
            '{' => items.push(parse_array_level(c, pos, depth + 1)?),
            '"' => {
                *pos += 1;
                let mut v = String::new();
                loop {
                    match c.get(*pos)? {
                        '\\' => {
                            v.push(*c.get(*pos + 1)?);
                            *pos += 2;
                        }
                        '"' => {
                            *pos += 1;
                            break;
                        }
                        ch => {
                            v.push(*ch);
                            *pos += 1;
                        }
                    }
                }
                items.push(ArrayItem::Value(v));
            }
            _ => {
                let start = *pos;
                while !matches!(c.get(*pos)?, ',' | '}') {
                    *pos += 1;
                }
                let v: String = c[start..*pos].iter().collect();
                let v = v.trim();
                if v.eq_ignore_ascii_case("NULL") {
                    items.push(ArrayItem::Null);
                } else {
                    items.push(ArrayItem::Value(v.to_owned()));
                }
            }
        }
        match c.get(*pos)? {
            ',' => *pos += 1,
            '}' => {
                *pos += 1;
                return Some(ArrayItem::Array(items));
            }
            _ => return None,
        }
    }
}

fn array_to_json(elem: u32, item: ArrayItem) -> Value {
    match item {
        ArrayItem::Null => Value::Null,
        ArrayItem::Value(s) => scalar(elem, &s),
        ArrayItem::Array(v) => {
            Value::Array(v.into_iter().map(|i| array_to_json(elem, i)).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_and_floats() {
        assert_eq!(text_to_json(oid::INT4, "-42"), json!(-42));
        assert_eq!(
            text_to_json(oid::INT8, "9223372036854775807"),
            json!(9223372036854775807i64)
        );
        assert_eq!(text_to_json(oid::INT2, "7"), json!(7));
        assert_eq!(text_to_json(oid::OID, "4294967295"), json!(4294967295u64));
        assert_eq!(text_to_json(oid::FLOAT8, "1.5"), json!(1.5));
        assert_eq!(text_to_json(oid::FLOAT4, "-0.25"), json!(-0.25));
        assert_eq!(text_to_json(oid::FLOAT8, "1e+300"), json!(1e300));
        assert_eq!(text_to_json(oid::FLOAT8, "NaN"), json!("NaN"));
        assert_eq!(text_to_json(oid::FLOAT8, "Infinity"), json!("Infinity"));
        assert_eq!(text_to_json(oid::FLOAT4, "-Infinity"), json!("-Infinity"));
        assert_eq!(text_to_json(oid::INT4, "garbage"), json!("garbage"));
    }

    #[test]
    fn numeric_money_bool_text() {
        assert_eq!(
            text_to_json(oid::NUMERIC, "12345678901234567890.000100"),
            json!("12345678901234567890.000100")
        );
        assert_eq!(text_to_json(oid::NUMERIC, "NaN"), json!("NaN"));
        assert_eq!(text_to_json(oid::MONEY, "$1.00"), json!("$1.00"));
        assert_eq!(text_to_json(oid::BOOL, "t"), json!(true));
        assert_eq!(text_to_json(oid::BOOL, "f"), json!(false));
        assert_eq!(text_to_json(oid::TEXT, "hé \"x\""), json!("hé \"x\""));
        assert_eq!(
            text_to_json(oid::UUID, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
        );
        assert_eq!(
            text_to_json(123456, "happy"),
            json!("happy"),
            "unknown types (enums) are strings"
        );
    }

    #[test]
    fn times() {
        assert_eq!(
            text_to_json(oid::TIMESTAMPTZ, "2024-05-01 12:00:00+00"),
            json!("2024-05-01T12:00:00Z")
        );
        assert_eq!(
            text_to_json(oid::TIMESTAMPTZ, "2024-05-01 12:00:00.123456+00"),
            json!("2024-05-01T12:00:00.123456Z")
        );
        assert_eq!(
            text_to_json(oid::TIMESTAMPTZ, "2024-05-01 14:30:00.5+02:30"),
            json!("2024-05-01T12:00:00.5Z")
        );
        assert_eq!(
            text_to_json(oid::TIMESTAMPTZ, "2024-05-01 00:30:00.25+02"),
            json!("2024-04-30T22:30:00.25Z")
        );
        assert_eq!(
            text_to_json(oid::TIMESTAMPTZ, "0044-03-15 00:00:00+00 BC"),
            json!("0044-03-15 00:00:00+00 BC")
        );
        assert_eq!(
            text_to_json(oid::TIMESTAMPTZ, "12345-01-01 00:00:00+00"),
            json!("12345-01-01 00:00:00+00")
        );
        assert_eq!(
            text_to_json(oid::TIMESTAMPTZ, "2024-05-01 10:00:00-02"),
            json!("2024-05-01T12:00:00Z")
        );
        assert_eq!(
            text_to_json(oid::TIMESTAMPTZ, "infinity"),
            json!("infinity")
        );
        assert_eq!(
            text_to_json(oid::TIMESTAMPTZ, "-infinity"),
            json!("-infinity")
        );
        assert_eq!(
            text_to_json(oid::TIMESTAMP, "2024-05-01 12:00:00.5"),
            json!("2024-05-01T12:00:00.5")
        );
        assert_eq!(
            text_to_json(oid::TIMESTAMP, "0044-03-15 00:00:00 BC"),
            json!("0044-03-15 00:00:00 BC")
        );
        assert_eq!(text_to_json(oid::DATE, "2024-05-01"), json!("2024-05-01"));
        assert_eq!(text_to_json(oid::INTERVAL, "P1DT2H"), json!("P1DT2H"));
    }

    #[test]
    fn json_and_bytea() {
        assert_eq!(
            text_to_json(oid::JSONB, r#"{"a": [1, null]}"#),
            json!({"a": [1, null]})
        );
        assert_eq!(text_to_json(oid::JSON, "3"), json!(3));
        assert_eq!(text_to_json(oid::JSON, "{bad"), json!("{bad"));
        assert_eq!(text_to_json(oid::BYTEA, "\\xDEADbeef"), json!("deadbeef"));
        assert_eq!(text_to_json(oid::BYTEA, "\\x"), json!(""));
        assert_eq!(bytes_to_json(oid::BYTEA, &[0xff, 0x00]), json!("ff00"));
    }

    #[test]
    fn arrays() {
        assert_eq!(text_to_json(1007, "{1,2,NULL}"), json!([1, 2, null]));
        assert_eq!(text_to_json(1007, "{}"), json!([]));
        assert_eq!(
            text_to_json(1009, r#"{a,"b c","NULL",NULL,"q\"x","back\\slash"}"#),
            json!(["a", "b c", "NULL", null, "q\"x", "back\\slash"])
        );
        assert_eq!(text_to_json(1016, "{{1,2},{3,4}}"), json!([[1, 2], [3, 4]]));
        assert_eq!(text_to_json(1007, "[0:1]={5,6}"), json!([5, 6]));
        assert_eq!(text_to_json(1000, "{t,f}"), json!([true, false]));
        assert_eq!(text_to_json(1022, "{1.5,NaN}"), json!([1.5, "NaN"]));
        assert_eq!(
            text_to_json(1185, r#"{"2024-05-01 12:00:00+00"}"#),
            json!(["2024-05-01T12:00:00Z"])
        );
        assert_eq!(
            text_to_json(3807, r#"{"{\"a\": 1}","[2]"}"#),
            json!([{"a": 1}, [2]])
        );
        assert_eq!(text_to_json(1231, "{1.10,2}"), json!(["1.10", "2"]));
        // malformed literals are kept as strings
        for bad in [
            "{1,2",
            "1,2}",
            "{1}}",
            "{\"a}",
            "[0:1]",
            "{{{{{{{{1}}}}}}}}",
        ] {
            assert_eq!(text_to_json(1007, bad), json!(bad), "{bad}");
        }
    }

    #[test]
    fn options_string() {
        assert_eq!(
            startup_options(),
            "-c datestyle=ISO,\\ YMD -c intervalstyle=iso_8601 -c timezone=UTC -c bytea_output=hex -c extra_float_digits=3"
        );
    }
}
