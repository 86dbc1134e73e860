#!/usr/bin/env python3
"""Writes the committed seed corpora under fuzz/seeds/<target>/ (a few valid
and a few near-miss inputs per target). Re-run after changing an input
format; `cargo test -p switchyard-router --lib fuzzing::tests::seeds` checks that
every seed satisfies its target's invariants."""
import gzip, json, os, struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")

def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

# ingest_body: selector byte (bits 0-2 content type, 3-5 batch limit, 6 traceparent, 7 gzip) + body
JSON, NDJSON, TEXT = 0, 1, 5
B16, B1000 = 5 << 3, 7 << 3
TRACE = 0x40
GZIP = 0x80
full = {"id": "ord-1", "topic": "customer.banner-a.email_changed", "account_id": "42", "op": "update",
        "key": {"id": 42}, "before": {"email": "a@x.com", "n": 1}, "after": {"email": "b@x.com", "n": 1.5},
        "occurred_at": "2026-11-23T09:00:00.5+01:00", "consent": {"email": "granted", "sms": "denied"},
        "attributes": {"banner": "a"}}
write("ingest_body", "json_single", bytes([JSON]) + json.dumps(
    {"topic": "customer.a.signup", "account_id": "42", "data": {"plan": "gold"}}).encode())
write("ingest_body", "json_array", bytes([JSON | B16 | TRACE]) + json.dumps(
    [full, {"topic": "t", "account_id": 7, "changed": ["x"], "data": [1, "two", None]},
     {"topic": "order.placed", "account_id": "a-1", "op": "event", "data": None}]).encode())
write("ingest_body", "ndjson", bytes([NDJSON | B1000]) + (
    json.dumps(full) + "\r\n\n" + json.dumps({"topic": "u", "account_id": "2"}) + "\n").encode())
write("ingest_body", "invalid_fields", bytes([JSON | B16]) + json.dumps(
    [{"topic": "has space", "account_id": 1}, {"topic": "t"}, {"topic": "t", "account_id": "1", "acount": 1},
     {"topic": "t", "account_id": "1", "occurred_at": "yesterday"}]).encode())
write("ingest_body", "text_plain", bytes([TEXT]) + b'{"topic":"t","account_id":"1"}')
write("ingest_body", "identifiers", bytes([JSON | B16]) + json.dumps(
    [{"topic": "t", "account_id": "42\n2026-01-01 INFO forged\u001b[2J"}, {"topic": "t", "account_id": 1.0},
     {"topic": "t", "account_id": -7, "key": {"id\u0000": 1}, "attributes": {"a\r": "b"}}]).encode())
write("ingest_body", "gzip_array", bytes([JSON | B16 | GZIP]) + gzip.compress(json.dumps(
    [full, {"topic": "t", "account_id": 7}]).encode(), mtime=0))
write("ingest_body", "gzip_not_gzip", bytes([NDJSON | B16 | GZIP]) + json.dumps(full).encode())

# pgoutput: one message each (protocol version 1)
def cstr(s): return s.encode() + b"\0"
def tup(cols):
    out = struct.pack(">h", len(cols))
    for c in cols:
        if c is None: out += b"n"
        elif c == "TOAST": out += b"u"
        elif isinstance(c, bytes): out += b"b" + struct.pack(">i", len(c)) + c
        else: out += b"t" + struct.pack(">i", len(c.encode())) + c.encode()
    return out
write("pgoutput", "begin", b"B" + struct.pack(">QqI", 0x16B3748, 785_000_000_000_000, 770))
write("pgoutput", "commit", b"C\0" + struct.pack(">QQq", 0x16B3748, 0x16B3780, 785_000_000_000_000))
write("pgoutput", "relation", b"R" + struct.pack(">I", 16384) + cstr("public") + cstr("customers") + b"f"
      + struct.pack(">h", 3) + b"\x01" + cstr("id") + struct.pack(">Ii", 20, -1)
      + b"\x00" + cstr("email") + struct.pack(">Ii", 25, -1) + b"\x00" + cstr("n") + struct.pack(">Ii", 1700, 655366))
write("pgoutput", "insert", b"I" + struct.pack(">I", 16384) + b"N" + tup(["42", "a@x.com", None, "TOAST", b"\x01\x02"]))
write("pgoutput", "update_key", b"U" + struct.pack(">I", 16384) + b"K" + tup(["41", None]) + b"N" + tup(["42", "b@x.com"]))
write("pgoutput", "delete_full", b"D" + struct.pack(">I", 16384) + b"O" + tup(["42", "b@x.com", "3.5"]))
write("pgoutput", "truncate", b"T" + struct.pack(">i", 2) + b"\x03" + struct.pack(">II", 16384, 16390))
write("pgoutput", "type", b"Y" + struct.pack(">I", 99999) + cstr("public") + cstr("mood"))
write("pgoutput", "origin", b"O" + struct.pack(">Q", 0xAB) + cstr("upstream"))
write("pgoutput", "message", b"M\x01" + struct.pack(">Q", 5) + cstr("app") + struct.pack(">i", 5) + b"hello")

# config: TOML text
write("config", "minimal_http", '[sources.web]\ntype = "http"\ntoken = "${TOKEN}"\ntopics = ["customer.*"]\n')
write("config", "full", '''[server]
listen = "127.0.0.1:0"
max_body = "64KiB"
max_batch = 500
shutdown_grace = "5s"
admin_token = "${SET}"

[redis]
url = "${REDIS:-redis://127.0.0.1:6379}"
namespace = "sy"
timeout = "500ms"

[log]
partitions = 8
retention = "30days"
idempotency_window = "24h"

[sources.web]
type = "http"
token = "${TOKEN}"

[consumers.esp]
topics = ["customer.*"]
start = "earliest"
[consumers.esp.endpoint]
url = "http://127.0.0.1:9000/events"
auth = { type = "bearer", token = "${TOKEN}" }
[consumers.esp.retry]
initial = "20ms"
max_delay = "100ms"
max_attempts = 5

[transforms]
cache_dir = ""
''')
write("config", "postgres", '''[sources.crm]
type = "postgres"
url = "postgres://switchyard@db:5432/crm"
publication = "switchyard_crm"
slot = "switchyard_crm"

[[sources.crm.tables]]
table = "public.customers"
topic = "customer.{banner}.{op}"
account_column = "account_id"
snapshot = true
soft_delete_column = "deleted_at"

[[sources.crm.tables.rules]]
when_changed = ["email"]
topic = "customer.{banner}.email_changed"
''')
write("config", "errors", '''[server]
listn = "0.0.0.0:1"
[log]
partitions = 0
retention = "10s"
[sources.web]
type = "http"
token = "${MISSING}"
[sources."bad name"]
type = "kafka"
''')
write("config", "syntax_error", '[log]\npartitions = = 3\n')

# event_decode: version byte (0 = current) + MessagePack (rmp_serde::to_vec_named: maps by field name)
def mp(v):
    if v is None: return b"\xc0"
    if v is True: return b"\xc3"
    if v is False: return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128: return bytes([v])
        if v >= 0: return b"\xcf" + struct.pack(">Q", v)
        return b"\xd3" + struct.pack(">q", v)
    if isinstance(v, float): return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        b = v.encode()
        return (bytes([0xa0 | len(b)]) if len(b) < 32 else b"\xd9" + bytes([len(b)])) + b
    if isinstance(v, list):
        return bytes([0x90 | len(v)]) + b"".join(mp(x) for x in v)
    if isinstance(v, dict):
        return bytes([0x80 | len(v)]) + b"".join(mp(k) + mp(x) for k, x in v.items())
    raise TypeError(v)
ev = {"id": "0193a1b2-0000-7000-8000-000000000001", "topic": "customer.banner-a.email_changed", "source": "crm",
      "op": "update", "account_id": "42", "key": {"id": 42}, "before": {"email": "a@x.com", "n": 1.5},
      "after": {"email": "b@x.com", "n": None}, "changed": ["email"],
      "occurred_at": "2026-11-23T10:00:00.123Z", "ingested_at": "2026-11-23T10:00:00.456789Z",
      "commit": {"id": "0/16B3748", "seq": 3}, "trace": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      "consent": {"email": "granted"}, "attributes": {"banner": "a"}}
write("event_decode", "full", b"\0" + mp(ev))
minimal = {"id": "e1", "topic": "t", "source": "web", "op": "event", "account_id": "1", "data": [1, -2, "x", True],
           "occurred_at": "2026-11-23T10:00:00Z", "ingested_at": "2026-11-23T10:00:00Z"}
write("event_decode", "minimal", b"\0" + mp(minimal))
write("event_decode", "future_field", b"\0" + mp(dict(minimal, future_field=7)))
write("event_decode", "version_2", b"\x02" + mp(minimal))
write("event_decode", "missing_topic", b"\0" + mp({k: v for k, v in minimal.items() if k != "topic"}))
