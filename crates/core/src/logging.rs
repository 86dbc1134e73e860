//! How the text log format writes values: every field value and message
//! has its control characters escaped, because many of them come from
//! clients (account ids from CDC rows, module errors, addresses…). A value
//! with a newline, CR, NUL or ESC cannot start a forged log line or send a
//! terminal escape sequence. The JSON format escapes by itself. Colour codes
//! are written only to a terminal ([`ansi`]).

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::FormatFields;

/// Whether to colour the log: only when stderr is a terminal and `NO_COLOR`
/// is unset or empty.
pub fn ansi() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The text format's fields, as tracing-subscriber's default writes them
/// (`message key=value key="string"`), with every value escaped.
#[derive(Debug, Default, Clone, Copy)]
pub struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut v = Visitor {
            writer: &mut writer,
            separate: false,
            result: Ok(()),
            buf: String::new(),
        };
        fields.record(&mut v);
        v.result
    }
}

struct Visitor<'a, 'w> {
    writer: &'a mut Writer<'w>,
    separate: bool,
    result: fmt::Result,
    buf: String,
}

impl Visit for Visitor<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        self.buf.clear();
        if write!(self.buf, "{value:?}").is_err() {
            self.buf.clear();
            self.buf.push_str("<unprintable>");
        }
        let sep = if self.separate { " " } else { "" };
        self.separate = true;
        self.result = if name == "message" {
            write!(self.writer, "{sep}{}", Escaped(&self.buf))
        } else {
            write!(
                self.writer,
                "{sep}{}={}",
                name.trim_start_matches("r#"),
                Escaped(&self.buf)
            )
        };
    }
}

/// `s` with control characters (and Unicode line separators and bidi
/// overrides) written as escapes: `\n`, `\r`, `\t`, `\u{1b}`…
pub struct Escaped<'a>(pub &'a str);

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(needs_escape) {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().expect("found a char at `at`");
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c => write!(f, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_control_characters_only() {
        assert_eq!(
            Escaped("a\nb\r\tc\u{1b}[31m\0d\u{7f}\u{9b}é\u{2028}").to_string(),
            "a\\nb\\r\\tc\\u{1b}[31m\\u{0}d\\u{7f}\\u{9b}é\\u{2028}"
        );
        assert_eq!(
            Escaped("plain text, ünïcode").to_string(),
            "plain text, ünïcode"
        );
    }

    /// A field value or message with a newline or ESC stays on its line.
    #[test]
    fn a_log_line_cannot_be_forged() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .fmt_fields(EscapedFields)
            .finish();
        let evil = "42\n2026-01-01T00:00:00Z  INFO forged: admin logged in\u{1b}[2J";
        tracing::subscriber::with_default(sub, || {
            tracing::warn!(account = %evil, quoted = evil, n = 3, "event dead-lettered");
            tracing::info!("message {evil}");
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(!out.contains('\u{1b}'), "{out:?}");
        assert!(
            lines[0].ends_with(
                "event dead-lettered account=42\\n2026-01-01T00:00:00Z  INFO forged: admin logged in\\u{1b}[2J \
                 quoted=\"42\\n2026-01-01T00:00:00Z  INFO forged: admin logged in\\u{1b}[2J\" n=3"
            ),
            "{}",
            lines[0]
        );
        assert!(lines[1].ends_with(
            "message 42\\n2026-01-01T00:00:00Z  INFO forged: admin logged in\\u{1b}[2J"
        ));
    }
}
