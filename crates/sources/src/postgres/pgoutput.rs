//! Decoder for the `pgoutput` logical replication protocol, version 1
//! (PostgreSQL docs, "Logical Replication Message Formats").
//!
//! pgwire-replication hands us the raw payload of each XLogData message; this
//! module turns one payload into a [`Message`]. It never panics: every
//! malformed, truncated or oversized input returns a [`DecodeError`] (the
//! decoder is a fuzz target). Values borrow from the input buffer.

use std::fmt;

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("pgoutput: empty message")]
    Empty,
    #[error("pgoutput: truncated {0}")]
    Truncated(&'static str),
    #[error("pgoutput: unknown message type {0:?}")]
    UnknownMessage(char),
    #[error("pgoutput: unknown tuple column kind {0:?}")]
    UnknownColumnKind(char),
    #[error("pgoutput: expected {expected} in {context}, found {found:?}")]
    Unexpected {
        context: &'static str,
        expected: &'static str,
        found: char,
    },
    #[error("pgoutput: negative {0}")]
    Negative(&'static str),
    #[error("pgoutput: {0} is not valid UTF-8")]
    Utf8(&'static str),
    #[error("pgoutput: {0} trailing bytes after {1} message")]
    Trailing(usize, char),
}

/// An LSN (byte position in the WAL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    /// Postgres' `X/Y` form (upper-case hex, no padding).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl Lsn {
    pub fn parse(s: &str) -> Option<Lsn> {
        let (hi, lo) = s.split_once('/')?;
        if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
            return None;
        }
        let hi = u64::from_str_radix(hi, 16).ok()?;
        let lo = u64::from_str_radix(lo, 16).ok()?;
        Some(Lsn((hi << 32) | lo))
    }
}

/// One decoded pgoutput message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message<'a> {
    Begin(Begin),
    Commit(Commit),
    Origin(Origin),
    Relation(Relation),
    Type(TypeInfo),
    Insert(Insert<'a>),
    Update(Update<'a>),
    Delete(Delete<'a>),
    Truncate(Truncate),
    /// `pg_logical_emit_message`.
    Logical(LogicalMessage<'a>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begin {
    /// LSN of the commit record (the transaction's commit LSN).
    pub final_lsn: Lsn,
    /// Microseconds since 2000-01-01 UTC.
    pub commit_time: i64,
    pub xid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    pub flags: u8,
    pub commit_lsn: Lsn,
    /// End of the commit record: the position to confirm.
    pub end_lsn: Lsn,
    pub commit_time: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub commit_lsn: Lsn,
    pub name: String,
}

/// `relreplident` of a relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaIdentity {
    /// `d`: primary key.
    Default,
    /// `n`: none.
    Nothing,
    /// `f`: all columns.
    Full,
    /// `i`: a chosen unique index.
    Index,
    Other(u8),
}

impl ReplicaIdentity {
    pub fn from_byte(b: u8) -> Self {
        match b {
            b'd' => Self::Default,
            b'n' => Self::Nothing,
            b'f' => Self::Full,
            b'i' => Self::Index,
            o => Self::Other(o),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub id: u32,
    /// Empty for `pg_catalog`.
    pub namespace: String,
    pub name: String,
    pub replica_identity: ReplicaIdentity,
    pub columns: Vec<RelationColumn>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Part of the replica identity key (flag bit 1).
    pub is_key: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeInfo {
    pub id: u32,
    pub namespace: String,
    pub name: String,
}

/// One column of a tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datum<'a> {
    Null,
    /// A TOASTed value that the update did not change (its value is not sent).
    UnchangedToast,
    Text(&'a [u8]),
    Binary(&'a [u8]),
}

pub type Tuple<'a> = Vec<Datum<'a>>;

/// The old row of an update or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple<'a> {
    /// `K`: only the replica identity key columns are set (others `Null`).
    Key(Tuple<'a>),
    /// `O`: the whole old row (`REPLICA IDENTITY FULL`).
    Full(Tuple<'a>),
}

impl<'a> OldTuple<'a> {
    pub fn tuple(&self) -> &Tuple<'a> {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert<'a> {
    pub relation_id: u32,
    pub new: Tuple<'a>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update<'a> {
    pub relation_id: u32,
    /// Present when the key changed (`K`) or with `REPLICA IDENTITY FULL` (`O`).
    pub old: Option<OldTuple<'a>>,
    pub new: Tuple<'a>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete<'a> {
    pub relation_id: u32,
    pub old: OldTuple<'a>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    /// Bit 1: CASCADE, bit 2: RESTART IDENTITY.
    pub options: u8,
    pub relation_ids: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalMessage<'a> {
    pub transactional: bool,
    pub lsn: Lsn,
    pub prefix: String,
    pub content: &'a [u8],
}

/// Cursor over a payload.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    fn i16(&mut self, what: &'static str) -> Result<i16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(self.i32(what)? as u32)
    }
    fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }
    fn lsn(&mut self, what: &'static str) -> Result<Lsn, DecodeError> {
        Ok(Lsn(self.i64(what)? as u64))
    }
    /// A NUL-terminated UTF-8 string.
    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::Truncated(what))?;
        let s = std::str::from_utf8(&self.buf[..end]).map_err(|_| DecodeError::Utf8(what))?;
        self.buf = &self.buf[end + 1..];
        Ok(s.to_owned())
    }
    fn tuple(&mut self) -> Result<Tuple<'a>, DecodeError> {
        let n = self.i16("tuple column count")?;
        if n < 0 {
            return Err(DecodeError::Negative("tuple column count"));
        }
        let n = n as usize;
        // Each column takes at least one byte: never reserve more than the input can hold.
        let mut cols = Vec::with_capacity(n.min(self.buf.len()));
        for _ in 0..n {
            let kind = self.u8("tuple column kind")?;
            let d = match kind {
                b'n' => Datum::Null,
                b'u' => Datum::UnchangedToast,
                b't' | b'b' => {
                    let len = self.i32("tuple value length")?;
                    if len < 0 {
                        return Err(DecodeError::Negative("tuple value length"));
                    }
                    let v = self.take(len as usize, "tuple value")?;
                    if kind == b't' {
                        Datum::Text(v)
                    } else {
                        Datum::Binary(v)
                    }
                }
                other => return Err(DecodeError::UnknownColumnKind(other as char)),
            };
            cols.push(d);
        }
        Ok(cols)
    }
    fn expect(
        &mut self,
        context: &'static str,
        expected: &'static str,
        want: u8,
    ) -> Result<(), DecodeError> {
        let b = self.u8(context)?;
        if b != want {
            return Err(DecodeError::Unexpected {
                context,
                expected,
                found: b as char,
            });
        }
        Ok(())
    }
}

/// Decode one pgoutput (protocol version 1) message.
pub fn decode(payload: &[u8]) -> Result<Message<'_>, DecodeError> {
    let (&tag, rest) = payload.split_first().ok_or(DecodeError::Empty)?;
    let mut r = Reader { buf: rest };
    let msg = match tag {
        b'B' => Message::Begin(Begin {
            final_lsn: r.lsn("Begin final LSN")?,
            commit_time: r.i64("Begin commit time")?,
            xid: r.u32("Begin xid")?,
        }),
        b'C' => Message::Commit(Commit {
            flags: r.u8("Commit flags")?,
            commit_lsn: r.lsn("Commit LSN")?,
            end_lsn: r.lsn("Commit end LSN")?,
            commit_time: r.i64("Commit time")?,
        }),
        b'O' => Message::Origin(Origin {
            commit_lsn: r.lsn("Origin commit LSN")?,
            name: r.string("Origin name")?,
        }),
        b'R' => {
            let id = r.u32("Relation id")?;
            let namespace = r.string("Relation namespace")?;
            let name = r.string("Relation name")?;
            let replica_identity = ReplicaIdentity::from_byte(r.u8("Relation replica identity")?);
            let n = r.i16("Relation column count")?;
            if n < 0 {
                return Err(DecodeError::Negative("Relation column count"));
            }
            let mut columns = Vec::with_capacity((n as usize).min(r.buf.len()));
            for _ in 0..n {
                let flags = r.u8("Relation column flags")?;
                let name = r.string("Relation column name")?;
                let type_oid = r.u32("Relation column type")?;
                let type_modifier = r.i32("Relation column type modifier")?;
                columns.push(RelationColumn {
                    is_key: flags & 1 == 1,
                    name,
                    type_oid,
                    type_modifier,
                });
            }
            Message::Relation(Relation {
                id,
                namespace,
                name,
                replica_identity,
                columns,
            })
        }
        b'Y' => Message::Type(TypeInfo {
            id: r.u32("Type id")?,
            namespace: r.string("Type namespace")?,
            name: r.string("Type name")?,
        }),
        b'I' => {
            let relation_id = r.u32("Insert relation id")?;
            r.expect("Insert", "'N'", b'N')?;
            Message::Insert(Insert {
                relation_id,
                new: r.tuple()?,
            })
        }
        b'U' => {
            let relation_id = r.u32("Update relation id")?;
            let mut old = None;
            let mut marker = r.u8("Update tuple marker")?;
            if marker == b'K' || marker == b'O' {
                let t = r.tuple()?;
                old = Some(if marker == b'K' {
                    OldTuple::Key(t)
                } else {
                    OldTuple::Full(t)
                });
                marker = r.u8("Update new tuple marker")?;
            }
            if marker != b'N' {
                return Err(DecodeError::Unexpected {
                    context: "Update",
                    expected: "'K', 'O' or 'N'",
                    found: marker as char,
                });
            }
            Message::Update(Update {
                relation_id,
                old,
                new: r.tuple()?,
            })
        }
        b'D' => {
            let relation_id = r.u32("Delete relation id")?;
            let marker = r.u8("Delete tuple marker")?;
            let t = r.tuple();
            let old = match marker {
                b'K' => OldTuple::Key(t?),
                b'O' => OldTuple::Full(t?),
                m => {
                    return Err(DecodeError::Unexpected {
                        context: "Delete",
                        expected: "'K' or 'O'",
                        found: m as char,
                    })
                }
            };
            Message::Delete(Delete { relation_id, old })
        }
        b'T' => {
            let n = r.i32("Truncate relation count")?;
            if n < 0 {
                return Err(DecodeError::Negative("Truncate relation count"));
            }
            let options = r.u8("Truncate options")?;
            let mut relation_ids = Vec::with_capacity((n as usize).min(r.buf.len() / 4));
            for _ in 0..n {
                relation_ids.push(r.u32("Truncate relation id")?);
            }
            Message::Truncate(Truncate {
                options,
                relation_ids,
            })
        }
        b'M' => {
            let flags = r.u8("Message flags")?;
            let lsn = r.lsn("Message LSN")?;
            let prefix = r.string("Message prefix")?;
            let len = r.i32("Message length")?;
            if len < 0 {
                return Err(DecodeError::Negative("Message length"));
            }
            let content = r.take(len as usize, "Message content")?;
            Message::Logical(LogicalMessage {
                transactional: flags & 1 == 1,
                lsn,
                prefix,
                content,
            })
        }
        other => return Err(DecodeError::UnknownMessage(other as char)),
    };
    if !r.buf.is_empty() {
        return Err(DecodeError::Trailing(r.buf.len(), tag as char));
    }
    Ok(msg)
}

/// Builders for hand-made pgoutput messages (unit tests, fuzz seeds, benches).
#[doc(hidden)]
pub mod build {
    /// A tuple column for [`tuple`].
    pub enum Col<'a> {
        Null,
        Toast,
        Text(&'a str),
        /// A text value given as bytes (pgoutput does not promise UTF-8).
        TextBytes(&'a [u8]),
        Binary(&'a [u8]),
    }

    pub fn tuple(out: &mut Vec<u8>, cols: &[Col<'_>]) {
        out.extend_from_slice(&(cols.len() as i16).to_be_bytes());
        for c in cols {
            match c {
                Col::Null => out.push(b'n'),
                Col::Toast => out.push(b'u'),
                Col::Text(s) => {
                    out.push(b't');
                    out.extend_from_slice(&(s.len() as i32).to_be_bytes());
                    out.extend_from_slice(s.as_bytes());
                }
                Col::TextBytes(b) => {
                    out.push(b't');
                    out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                    out.extend_from_slice(b);
                }
                Col::Binary(b) => {
                    out.push(b'b');
                    out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                    out.extend_from_slice(b);
                }
            }
        }
    }

    fn cstr(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    pub fn begin(final_lsn: u64, commit_time: i64, xid: u32) -> Vec<u8> {
        let mut v = vec![b'B'];
        v.extend_from_slice(&final_lsn.to_be_bytes());
        v.extend_from_slice(&commit_time.to_be_bytes());
        v.extend_from_slice(&xid.to_be_bytes());
        v
    }

    pub fn commit(commit_lsn: u64, end_lsn: u64, commit_time: i64) -> Vec<u8> {
        let mut v = vec![b'C', 0];
        v.extend_from_slice(&commit_lsn.to_be_bytes());
        v.extend_from_slice(&end_lsn.to_be_bytes());
        v.extend_from_slice(&commit_time.to_be_bytes());
        v
    }

    /// `cols`: (is_key, name, type oid, typmod).
    pub fn relation(
        id: u32,
        ns: &str,
        name: &str,
        ident: u8,
        cols: &[(bool, &str, u32, i32)],
    ) -> Vec<u8> {
        let mut v = vec![b'R'];
        v.extend_from_slice(&id.to_be_bytes());
        cstr(&mut v, ns);
        cstr(&mut v, name);
        v.push(ident);
        v.extend_from_slice(&(cols.len() as i16).to_be_bytes());
        for (key, n, oid, m) in cols {
            v.push(u8::from(*key));
            cstr(&mut v, n);
            v.extend_from_slice(&oid.to_be_bytes());
            v.extend_from_slice(&m.to_be_bytes());
        }
        v
    }

    pub fn insert(rel: u32, new: &[Col<'_>]) -> Vec<u8> {
        let mut v = vec![b'I'];
        v.extend_from_slice(&rel.to_be_bytes());
        v.push(b'N');
        tuple(&mut v, new);
        v
    }

    /// `old`: (b'K' | b'O', columns).
    pub fn update(rel: u32, old: Option<(u8, &[Col<'_>])>, new: &[Col<'_>]) -> Vec<u8> {
        let mut v = vec![b'U'];
        v.extend_from_slice(&rel.to_be_bytes());
        if let Some((kind, cols)) = old {
            v.push(kind);
            tuple(&mut v, cols);
        }
        v.push(b'N');
        tuple(&mut v, new);
        v
    }

    pub fn delete(rel: u32, kind: u8, old: &[Col<'_>]) -> Vec<u8> {
        let mut v = vec![b'D'];
        v.extend_from_slice(&rel.to_be_bytes());
        v.push(kind);
        tuple(&mut v, old);
        v
    }

    pub fn truncate(options: u8, rels: &[u32]) -> Vec<u8> {
        let mut v = vec![b'T'];
        v.extend_from_slice(&(rels.len() as i32).to_be_bytes());
        v.push(options);
        for r in rels {
            v.extend_from_slice(&r.to_be_bytes());
        }
        v
    }

    pub fn type_msg(id: u32, ns: &str, name: &str) -> Vec<u8> {
        let mut v = vec![b'Y'];
        v.extend_from_slice(&id.to_be_bytes());
        cstr(&mut v, ns);
        cstr(&mut v, name);
        v
    }

    pub fn origin(lsn: u64, name: &str) -> Vec<u8> {
        let mut v = vec![b'O'];
        v.extend_from_slice(&lsn.to_be_bytes());
        cstr(&mut v, name);
        v
    }

    pub fn logical(transactional: bool, lsn: u64, prefix: &str, content: &[u8]) -> Vec<u8> {
        let mut v = vec![b'M', u8::from(transactional)];
        v.extend_from_slice(&lsn.to_be_bytes());
        cstr(&mut v, prefix);
        v.extend_from_slice(&(content.len() as i32).to_be_bytes());
        v.extend_from_slice(content);
        v
    }

    fn cols<'a>(t: &'a [super::Datum<'a>]) -> Vec<Col<'a>> {
        t.iter()
            .map(|d| match d {
                super::Datum::Null => Col::Null,
                super::Datum::UnchangedToast => Col::Toast,
                super::Datum::Text(b) => Col::TextBytes(b),
                super::Datum::Binary(b) => Col::Binary(b),
            })
            .collect()
    }

    fn old<'a>(o: &'a super::OldTuple<'a>) -> (u8, Vec<Col<'a>>) {
        match o {
            super::OldTuple::Key(t) => (b'K', cols(t)),
            super::OldTuple::Full(t) => (b'O', cols(t)),
        }
    }

    /// Encode a decoded message again (the inverse of [`super::decode`] up
    /// to flag bits the decoder does not keep: relation column flags other
    /// than the key bit, message flags other than the transactional bit).
    /// The fuzz target checks `decode(message(&decode(x))) == decode(x)`.
    pub fn message(m: &super::Message<'_>) -> Vec<u8> {
        use super::Message as M;
        match m {
            M::Begin(b) => begin(b.final_lsn.0, b.commit_time, b.xid),
            M::Commit(c) => {
                let mut v = commit(c.commit_lsn.0, c.end_lsn.0, c.commit_time);
                v[1] = c.flags;
                v
            }
            M::Origin(o) => origin(o.commit_lsn.0, &o.name),
            M::Relation(r) => {
                let ident = match r.replica_identity {
                    super::ReplicaIdentity::Default => b'd',
                    super::ReplicaIdentity::Nothing => b'n',
                    super::ReplicaIdentity::Full => b'f',
                    super::ReplicaIdentity::Index => b'i',
                    super::ReplicaIdentity::Other(b) => b,
                };
                let cols: Vec<(bool, &str, u32, i32)> = r
                    .columns
                    .iter()
                    .map(|c| (c.is_key, c.name.as_str(), c.type_oid, c.type_modifier))
                    .collect();
                relation(r.id, &r.namespace, &r.name, ident, &cols)
            }
            M::Type(t) => type_msg(t.id, &t.namespace, &t.name),
            M::Insert(i) => insert(i.relation_id, &cols(&i.new)),
            M::Update(u) => {
                let o = u.old.as_ref().map(old);
                update(
                    u.relation_id,
                    o.as_ref().map(|(k, c)| (*k, c.as_slice())),
                    &cols(&u.new),
                )
            }
            M::Delete(d) => {
                let (k, c) = old(&d.old);
                delete(d.relation_id, k, &c)
            }
            M::Truncate(t) => truncate(t.options, &t.relation_ids),
            M::Logical(l) => logical(l.transactional, l.lsn.0, &l.prefix, l.content),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    #[test]
    fn lsn_format_and_parse() {
        assert_eq!(Lsn(0x16B3748).to_string(), "0/16B3748");
        assert_eq!(Lsn((0x16 << 32) | 0xB374D848).to_string(), "16/B374D848");
        assert_eq!(
            Lsn::parse("16/B374D848"),
            Some(Lsn((0x16 << 32) | 0xB374D848))
        );
        assert_eq!(Lsn::parse("0/0"), Some(Lsn(0)));
        for bad in ["", "/", "0/", "x/1", "123456789/0", "1"] {
            assert_eq!(Lsn::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn begin_and_commit() {
        let m = begin(0x1_0000_0010, 1234, 77);
        assert_eq!(
            decode(&m).unwrap(),
            Message::Begin(Begin {
                final_lsn: Lsn(0x1_0000_0010),
                commit_time: 1234,
                xid: 77
            })
        );
        let m = commit(10, 20, -5);
        assert_eq!(
            decode(&m).unwrap(),
            Message::Commit(Commit {
                flags: 0,
                commit_lsn: Lsn(10),
                end_lsn: Lsn(20),
                commit_time: -5
            })
        );
    }

    #[test]
    fn relation_with_key_flags() {
        let m = relation(
            16384,
            "public",
            "customers",
            b'f',
            &[
                (true, "id", 20, -1),
                (false, "email", 25, -1),
                (false, "n", 1700, 655366),
            ],
        );
        let Message::Relation(r) = decode(&m).unwrap() else {
            panic!()
        };
        assert_eq!(r.id, 16384);
        assert_eq!(r.namespace, "public");
        assert_eq!(r.name, "customers");
        assert_eq!(r.replica_identity, ReplicaIdentity::Full);
        assert_eq!(r.columns.len(), 3);
        assert!(r.columns[0].is_key && !r.columns[1].is_key);
        assert_eq!(
            r.columns[2],
            RelationColumn {
                is_key: false,
                name: "n".into(),
                type_oid: 1700,
                type_modifier: 655366
            }
        );
        // namespace empty for pg_catalog, zero columns is legal
        let m = relation(1, "", "t", b'd', &[]);
        let Message::Relation(r) = decode(&m).unwrap() else {
            panic!()
        };
        assert_eq!(
            (r.namespace.as_str(), r.columns.len(), r.replica_identity),
            ("", 0, ReplicaIdentity::Default)
        );
    }

    #[test]
    fn insert_with_every_column_kind() {
        let m = insert(
            7,
            &[
                Col::Text("42"),
                Col::Null,
                Col::Toast,
                Col::Binary(&[0, 1, 2]),
                Col::Text(""),
            ],
        );
        let Message::Insert(i) = decode(&m).unwrap() else {
            panic!()
        };
        assert_eq!(i.relation_id, 7);
        assert_eq!(
            i.new,
            vec![
                Datum::Text(b"42"),
                Datum::Null,
                Datum::UnchangedToast,
                Datum::Binary(&[0, 1, 2]),
                Datum::Text(b"")
            ]
        );
    }

    #[test]
    fn update_variants() {
        // no old tuple
        let m = update(7, None, &[Col::Text("1"), Col::Text("b")]);
        let Message::Update(u) = decode(&m).unwrap() else {
            panic!()
        };
        assert_eq!(u.old, None);
        assert_eq!(u.new, vec![Datum::Text(b"1"), Datum::Text(b"b")]);
        // key changed
        let m = update(
            7,
            Some((b'K', &[Col::Text("1"), Col::Null])),
            &[Col::Text("2"), Col::Text("b")],
        );
        let Message::Update(u) = decode(&m).unwrap() else {
            panic!()
        };
        assert_eq!(
            u.old,
            Some(OldTuple::Key(vec![Datum::Text(b"1"), Datum::Null]))
        );
        // full old row
        let m = update(
            7,
            Some((b'O', &[Col::Text("1"), Col::Text("a")])),
            &[Col::Text("1"), Col::Toast],
        );
        let Message::Update(u) = decode(&m).unwrap() else {
            panic!()
        };
        assert_eq!(
            u.old.as_ref().unwrap().tuple(),
            &vec![Datum::Text(b"1"), Datum::Text(b"a")]
        );
        assert!(matches!(u.old, Some(OldTuple::Full(_))));
        assert_eq!(u.new[1], Datum::UnchangedToast);
    }

    #[test]
    fn delete_key_and_full() {
        let m = delete(9, b'K', &[Col::Text("5"), Col::Null]);
        assert_eq!(
            decode(&m).unwrap(),
            Message::Delete(Delete {
                relation_id: 9,
                old: OldTuple::Key(vec![Datum::Text(b"5"), Datum::Null])
            })
        );
        let m = delete(9, b'O', &[Col::Text("5"), Col::Text("x")]);
        assert!(matches!(
            decode(&m).unwrap(),
            Message::Delete(Delete {
                old: OldTuple::Full(_),
                ..
            })
        ));
        let m = delete(9, b'N', &[Col::Text("5")]);
        assert!(matches!(decode(&m), Err(DecodeError::Unexpected { .. })));
    }

    #[test]
    fn truncate_type_origin_message() {
        assert_eq!(
            decode(&truncate(3, &[1, 2, 0xFFFF_FFFF])).unwrap(),
            Message::Truncate(Truncate {
                options: 3,
                relation_ids: vec![1, 2, 0xFFFF_FFFF]
            })
        );
        assert_eq!(
            decode(&type_msg(99999, "public", "mood")).unwrap(),
            Message::Type(TypeInfo {
                id: 99999,
                namespace: "public".into(),
                name: "mood".into()
            })
        );
        assert_eq!(
            decode(&origin(0xAB, "upstream")).unwrap(),
            Message::Origin(Origin {
                commit_lsn: Lsn(0xAB),
                name: "upstream".into()
            })
        );
        assert_eq!(
            decode(&logical(true, 5, "app", b"hello")).unwrap(),
            Message::Logical(LogicalMessage {
                transactional: true,
                lsn: Lsn(5),
                prefix: "app".into(),
                content: b"hello"
            })
        );
    }

    #[test]
    fn malformed_inputs_are_errors() {
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        assert_eq!(decode(b"Z"), Err(DecodeError::UnknownMessage('Z')));
        // streaming (protocol v2) messages are not requested and refused
        assert_eq!(
            decode(b"S\0\0\0\0\0"),
            Err(DecodeError::UnknownMessage('S'))
        );
        assert!(matches!(
            decode(&begin(1, 2, 3)[..10]),
            Err(DecodeError::Truncated(_))
        ));
        // trailing garbage
        let mut m = commit(1, 2, 3);
        m.push(0);
        assert_eq!(decode(&m), Err(DecodeError::Trailing(1, 'C')));
        // insert without 'N'
        let mut m = insert(1, &[Col::Text("a")]);
        m[5] = b'X';
        assert!(matches!(decode(&m), Err(DecodeError::Unexpected { .. })));
        // unknown column kind
        let mut m = insert(1, &[Col::Null]);
        let last = m.len() - 1;
        m[last] = b'q';
        assert_eq!(decode(&m), Err(DecodeError::UnknownColumnKind('q')));
        // negative column count
        let mut m = insert(1, &[]);
        m[6] = 0xFF;
        m[7] = 0xFF;
        assert_eq!(decode(&m), Err(DecodeError::Negative("tuple column count")));
        // value length larger than the message
        let mut m = insert(1, &[Col::Text("abc")]);
        m[12] = 200;
        assert!(matches!(decode(&m), Err(DecodeError::Truncated(_))));
        // negative value length
        let mut m = insert(1, &[Col::Text("abc")]);
        m[9] = 0x80;
        assert_eq!(decode(&m), Err(DecodeError::Negative("tuple value length")));
        // huge column count with no data does not allocate or panic
        let m = [b'I', 0, 0, 0, 1, b'N', 0x7F, 0xFF];
        assert!(matches!(decode(&m), Err(DecodeError::Truncated(_))));
        let m = [b'T', 0x7F, 0xFF, 0xFF, 0xFF, 0];
        assert!(matches!(decode(&m), Err(DecodeError::Truncated(_))));
        // unterminated and non-UTF-8 strings
        assert!(matches!(
            decode(b"Y\0\0\0\x01pub"),
            Err(DecodeError::Truncated(_))
        ));
        assert_eq!(
            decode(b"Y\0\0\0\x01\xff\0t\0"),
            Err(DecodeError::Utf8("Type namespace"))
        );
        // update with an unexpected marker after the old tuple
        let mut m = update(1, Some((b'K', &[Col::Null])), &[Col::Null]);
        let n_at = m.len() - 4; // 'N' + i16 count + 'n'
        m[n_at] = b'K';
        assert!(matches!(decode(&m), Err(DecodeError::Unexpected { .. })));
    }

    #[test]
    fn every_prefix_of_valid_messages_is_an_error_not_a_panic() {
        let msgs = vec![
            begin(1, 2, 3),
            commit(1, 2, 3),
            relation(
                1,
                "public",
                "t",
                b'd',
                &[(true, "id", 23, -1), (false, "x", 25, -1)],
            ),
            insert(
                1,
                &[Col::Text("1"), Col::Null, Col::Toast, Col::Binary(b"\x01")],
            ),
            update(1, Some((b'O', &[Col::Text("1")])), &[Col::Text("2")]),
            delete(1, b'K', &[Col::Text("1")]),
            truncate(0, &[1, 2]),
            type_msg(1, "a", "b"),
            origin(1, "o"),
            logical(false, 1, "p", b"c"),
        ];
        for m in &msgs {
            assert!(decode(m).is_ok());
            for cut in 0..m.len() {
                assert!(decode(&m[..cut]).is_err(), "prefix {cut} of {m:?}");
            }
        }
    }

    #[test]
    fn pseudo_random_bytes_never_panic() {
        // Cheap deterministic fuzzing (xorshift); the real fuzzer comes later.
        let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let tags = b"BCORYIUDTMx";
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let mut v: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Some(first) = v.first_mut() {
                *first = tags[(next() % tags.len() as u64) as usize];
            }
            let _ = decode(&v);
        }
    }
}
