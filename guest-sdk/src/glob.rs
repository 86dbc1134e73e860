//! A small glob matcher for topics and other names.
//!
//! Syntax: `*` any run of characters (dots included; `**` is the same as `*`),
//! `?` one character, `[abc]` / `[a-z]` / `[!a-z]` (or `[^a-z]`) a character
//! class, `{a,b,c}` alternatives (may nest, may contain other syntax), `\x` a
//! literal `x`. Everything else matches itself, case-sensitively. This is the
//! subset of `globset` the host uses for topic patterns, with the same meaning
//! for names without `/`.

use std::fmt;

/// Most alternatives a pattern may expand to (`{a,b}{c,d}` is 4).
const MAX_ALTERNATIVES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    Star,
    One,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

#[derive(Debug, Clone)]
enum Node {
    Tok(Tok),
    Alt(Vec<Vec<Node>>),
}

/// A compiled glob pattern.
#[derive(Debug, Clone)]
pub struct Glob {
    pattern: String,
    alternatives: Vec<Vec<Tok>>,
}

/// Why a pattern is not a valid glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobError {
    /// The pattern.
    pub pattern: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for GlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid glob {:?}: {}", self.pattern, self.message)
    }
}

impl std::error::Error for GlobError {}

struct Parser<'a> {
    chars: &'a [char],
    pos: usize,
}

impl Parser<'_> {
    /// Parse a sequence; inside braces stop at an unescaped `,` or `}`.
    fn seq(&mut self, in_brace: bool) -> Result<Vec<Node>, String> {
        let mut out = Vec::new();
        while let Some(&c) = self.chars.get(self.pos) {
            if in_brace && (c == ',' || c == '}') {
                return Ok(out);
            }
            self.pos += 1;
            let node = match c {
                '*' => {
                    while self.chars.get(self.pos) == Some(&'*') {
                        self.pos += 1;
                    }
                    Node::Tok(Tok::Star)
                }
                '?' => Node::Tok(Tok::One),
                '\\' => match self.chars.get(self.pos) {
                    Some(&e) => {
                        self.pos += 1;
                        Node::Tok(Tok::Lit(e))
                    }
                    None => return Err("dangling `\\` at the end".into()),
                },
                '[' => Node::Tok(self.class()?),
                '{' => {
                    let mut alts = vec![self.seq(true)?];
                    loop {
                        match self.chars.get(self.pos) {
                            Some(',') => {
                                self.pos += 1;
                                alts.push(self.seq(true)?);
                            }
                            Some('}') => {
                                self.pos += 1;
                                break;
                            }
                            _ => return Err("unclosed `{`".into()),
                        }
                    }
                    Node::Alt(alts)
                }
                c => Node::Tok(Tok::Lit(c)),
            };
            out.push(node);
        }
        if in_brace {
            return Err("unclosed `{`".into());
        }
        Ok(out)
    }

    fn class(&mut self) -> Result<Tok, String> {
        let mut negated = false;
        if matches!(self.chars.get(self.pos), Some('!') | Some('^')) {
            negated = true;
            self.pos += 1;
        }
        let mut ranges = Vec::new();
        let mut first = true;
        loop {
            let c = match self.chars.get(self.pos) {
                None => return Err("unclosed `[`".into()),
                Some(']') if !first => {
                    self.pos += 1;
                    break;
                }
                Some(&c) => c,
            };
            first = false;
            self.pos += 1;
            let lo = if c == '\\' {
                let e = *self.chars.get(self.pos).ok_or("unclosed `[`")?;
                self.pos += 1;
                e
            } else {
                c
            };
            if self.chars.get(self.pos) == Some(&'-')
                && self.chars.get(self.pos + 1).is_some_and(|&n| n != ']')
            {
                let hi = self.chars[self.pos + 1];
                self.pos += 2;
                if hi < lo {
                    return Err(format!("range `{lo}-{hi}` is reversed"));
                }
                ranges.push((lo, hi));
            } else {
                ranges.push((lo, lo));
            }
        }
        Ok(Tok::Class { negated, ranges })
    }
}

fn expand(seq: &[Node], out: &mut Vec<Vec<Tok>>) -> Result<(), String> {
    // `out` holds the prefixes built so far; extend each with `seq`.
    for node in seq {
        match node {
            Node::Tok(t) => out.iter_mut().for_each(|p| p.push(t.clone())),
            Node::Alt(alts) => {
                let mut next = Vec::new();
                for alt in alts {
                    let mut branch = out.clone();
                    expand(alt, &mut branch)?;
                    next.extend(branch);
                    if next.len() > MAX_ALTERNATIVES {
                        return Err(format!(
                            "expands to more than {MAX_ALTERNATIVES} alternatives"
                        ));
                    }
                }
                *out = next;
            }
        }
    }
    Ok(())
}

fn tok_matches(t: &Tok, c: char) -> bool {
    match t {
        Tok::Lit(l) => *l == c,
        Tok::One => true,
        Tok::Star => false,
        Tok::Class { negated, ranges } => {
            ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
        }
    }
}

fn match_toks(toks: &[Tok], text: &[char]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if let Some(tok) = toks.get(p) {
            if *tok == Tok::Star {
                star = Some((p, t));
                p += 1;
                continue;
            }
            if tok_matches(tok, text[t]) {
                p += 1;
                t += 1;
                continue;
            }
        }
        match star {
            Some((sp, st)) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    toks[p..].iter().all(|t| *t == Tok::Star)
}

impl Glob {
    /// Compile a pattern.
    pub fn new(pattern: &str) -> Result<Glob, GlobError> {
        let chars: Vec<char> = pattern.chars().collect();
        let err = |message: String| GlobError {
            pattern: pattern.to_string(),
            message,
        };
        let mut parser = Parser {
            chars: &chars,
            pos: 0,
        };
        let seq = parser.seq(false).map_err(err)?;
        let mut alternatives = vec![Vec::new()];
        expand(&seq, &mut alternatives).map_err(err)?;
        Ok(Glob {
            pattern: pattern.to_string(),
            alternatives,
        })
    }

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        self.alternatives.iter().any(|toks| match_toks(toks, &text))
    }

    /// The source pattern.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }
}

impl std::str::FromStr for Glob {
    type Err = GlobError;
    fn from_str(s: &str) -> Result<Glob, GlobError> {
        Glob::new(s)
    }
}

/// Whether `text` matches `pattern` (an invalid pattern matches nothing).
/// Compile once with [`Glob::new`] when matching many texts.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    Glob::new(pattern).is_ok_and(|g| g.matches(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_literals() {
        assert!(glob_match("customer.*", "customer.a.email_changed"));
        assert!(glob_match(
            "customer.*.email_changed",
            "customer.banner-a.email_changed"
        ));
        assert!(!glob_match(
            "customer.*.email_changed",
            "customer.banner-a.phone_changed"
        ));
        assert!(glob_match("*", ""));
        assert!(glob_match("", ""));
        assert!(!glob_match("", "a"));
        assert!(glob_match("a**b", "axxb"));
        assert!(glob_match("*a*b*", "xxaxxbxx"));
        assert!(!glob_match("*a*b", "xxaxxbxx"));
        assert!(glob_match("order.created", "order.created"));
        assert!(!glob_match("order.created", "order.created2"));
        assert!(!glob_match("Order.*", "order.x"));
    }

    #[test]
    fn question_classes_escapes() {
        assert!(glob_match("v?", "v1"));
        assert!(!glob_match("v?", "v"));
        assert!(glob_match("v[0-9]", "v7"));
        assert!(!glob_match("v[!0-9]", "v7"));
        assert!(glob_match("v[^0-9]", "vx"));
        assert!(glob_match("[]a]", "]"));
        assert!(glob_match("[a-]", "-"));
        assert!(glob_match(r"a\*", "a*"));
        assert!(!glob_match(r"a\*", "ab"));
        assert!(glob_match("é?", "éü"));
    }

    #[test]
    fn alternatives() {
        let g = Glob::new("customer.{a,b}.*_changed").unwrap();
        assert!(g.matches("customer.a.email_changed"));
        assert!(g.matches("customer.b.phone_changed"));
        assert!(!g.matches("customer.c.phone_changed"));
        assert!(glob_match("{x,y{1,2}}", "y2"));
        assert!(glob_match("{,x}a", "a"));
        assert!(glob_match("a,b}", "a,b}"));
    }

    #[test]
    fn invalid_patterns() {
        for p in [
            "[abc",
            "{a,b",
            r"a\",
            "[z-a]",
            "{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}",
        ] {
            let e = Glob::new(p).unwrap_err();
            assert!(e.to_string().contains(p), "{e}");
        }
        assert!(!glob_match("[abc", "a"));
    }
}
