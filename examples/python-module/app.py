"""Switchyard transform in Python: customer events -> Klaviyo profile import.

The profile import of the Rust module `transforms/klaviyo` (same config keys,
same request, same body bytes; not its consent and deletion jobs), plus a topic filter (`topics`,
`drop_topics`) so that one module does what the Rust chain
`filter -> klaviyo` does. Built with componentize-py against
`wit/transform.wit` (world `transformer`); see README.md.
"""

import json
import re

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, types

DEFAULT_REVISION = "2024-10-15"
JSON_API = "application/vnd.api+json"

KNOWN = (
    "topics",
    "drop_topics",
    "source",
    "email_field",
    "phone_field",
    "first_name_field",
    "last_name_field",
    "external_id_field",
    "properties",
    "phone_country_code",
    "revision",
)

OP_NAMES = {
    types.Op.INSERT: "insert",
    types.Op.UPDATE: "update",
    types.Op.DELETE: "delete",
    types.Op.SOFT_DELETE: "soft_delete",
    types.Op.RESTORE: "restore",
    types.Op.SNAPSHOT: "snapshot",
    types.Op.EVENT: "event",
}


class ConfigError(Exception):
    def __init__(self, key, message):
        super().__init__(f"config `{key}`: {message}")


def split_list(value):
    """Comma-separated, items trimmed, empty items dropped (the Rust SDK's `Config::list`)."""
    return [item.strip() for item in value.split(",") if item.strip()]


def glob_to_regex(pattern):
    """`*` any run of characters (dots included), `?` one character; the rest literal."""
    out = []
    for c in pattern:
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        else:
            out.append(re.escape(c))
    return re.compile("".join(out), re.DOTALL)


def fields(cfg, key, default):
    items = split_list(cfg[key]) if key in cfg else split_list(default)
    for f in items:
        if any(seg == "" for seg in f.split(".")):
            raise ConfigError(key, f"{json.dumps(f)} is not a field path")
    return items


def at(value, path):
    """Value at a dotted path (object keys, array indexes), or None."""
    cur = value
    for seg in path.split("."):
        if isinstance(cur, dict):
            if seg not in cur:
                return None
            cur = cur[seg]
        elif isinstance(cur, list) and seg.isdigit() and int(seg) < len(cur):
            cur = cur[int(seg)]
        else:
            return None
    return cur


def first_text(payload, candidates):
    """First candidate path holding a non-empty string or a number, as text."""
    if payload is None:
        return None
    for c in candidates:
        v = at(payload, c)
        if isinstance(v, str) and v.strip():
            return v.strip()
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return str(v)
    return None


def phone_digits(raw, country_code):
    """E.164 digits without `+` (the Rust SDK's `normalize::phone_digits`)."""
    raw = raw.strip()
    digits = "".join(c for c in raw if "0" <= c <= "9")
    if raw.startswith("+"):
        return digits
    if digits.startswith("00"):
        return digits[2:]
    if country_code is not None and digits:
        return country_code + digits.lstrip("0")
    return digits


class Mapping:
    def __init__(self, pairs):
        cfg = dict(pairs)
        for key in cfg:
            if key not in KNOWN:
                raise ConfigError(key, "unknown key; expected one of " + ", ".join(KNOWN))
        self.topics = [glob_to_regex(p) for p in split_list(cfg.get("topics", ""))]
        self.drop_topics = [glob_to_regex(p) for p in split_list(cfg.get("drop_topics", ""))]
        self.part = cfg.get("source", "auto").strip()
        if self.part not in ("auto", "after", "data"):
            raise ConfigError("source", f"{json.dumps(self.part)}: expected auto, after or data")
        props = cfg.get("properties", "").strip()
        if props == "":
            self.properties = None
        elif props == "*":
            self.properties = "*"
        else:
            self.properties = fields(cfg, "properties", "")
        cc = cfg.get("phone_country_code", "").strip()
        if cc:
            d = cc[1:] if cc.startswith("+") else cc
            if not d or len(d) > 3 or not all("0" <= c <= "9" for c in d):
                raise ConfigError("phone_country_code", f"{json.dumps(cc)} is not a calling code like 1 or 44")
            self.phone_country_code = d
        else:
            self.phone_country_code = None
        ext = fields(cfg, "external_id_field", "")
        self.external_id = ext[0] if ext else None
        self.email = fields(cfg, "email_field", "email")
        self.phone = fields(cfg, "phone_field", "phone_number, phone, mobile")
        self.first_name = fields(cfg, "first_name_field", "first_name, firstname, given_name")
        self.last_name = fields(cfg, "last_name_field", "last_name, lastname, family_name")
        self.revision = cfg.get("revision", DEFAULT_REVISION).strip()

    def wants(self, topic):
        if self.topics and not any(r.fullmatch(topic) for r in self.topics):
            return False
        return not any(r.fullmatch(topic) for r in self.drop_topics)

    def payload(self, ev):
        if self.part == "after":
            text = ev.after
        elif self.part == "data":
            text = ev.data
        else:
            text = ev.after if ev.after is not None else ev.data
        return None if text is None else json.loads(text)

    def profile(self, ev):
        """The profile-import body, or None (skip). Raises Err(TransformError)."""
        payload = self.payload(ev)
        email = first_text(payload, self.email)
        if email is not None and "@" not in email:
            host.log(types.Level.WARN, f"klaviyo: event {ev.id}: ignoring email without `@`")
            email = None
        phone = first_text(payload, self.phone)
        if phone is not None:
            d = phone_digits(phone, self.phone_country_code)
            phone = "+" + d if d else None
        if self.external_id is not None:
            external_id = first_text(payload, [self.external_id])
        else:
            external_id = ev.account_id or None
        if email is None and phone is None and external_id is None:
            ext = self.external_id or "account_id"
            raise Err(types.TransformError(
                message=f"no profile identifier: email ({', '.join(self.email)}), "
                f"phone ({', '.join(self.phone)}) and external id ({ext}) are all missing",
                retryable=False,
            ))
        attrs = {}
        for k, v in (
            ("email", email),
            ("phone_number", phone),
            ("external_id", external_id),
            ("first_name", first_text(payload, self.first_name)),
            ("last_name", first_text(payload, self.last_name)),
        ):
            if v is not None:
                attrs[k] = v
        props = self.props(payload)
        if props:
            attrs["properties"] = props
        return {"data": {"type": "profile", "attributes": attrs}}

    def props(self, payload):
        out = {}
        if payload is None or self.properties is None:
            return out
        if self.properties == "*":
            mapped = self.email + self.phone + self.first_name + self.last_name
            if self.external_id is not None:
                mapped.append(self.external_id)
            if isinstance(payload, dict):
                for k, v in payload.items():
                    if v is not None and k not in mapped:
                        out[k] = v
        else:
            for f in self.properties:
                v = at(payload, f)
                if v is not None:
                    out[f] = v
        return out

    def request(self, body):
        # Sorted keys, no spaces: byte for byte what the Rust module sends.
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return types.Output_Request(types.Request(
            body=text.encode("utf-8"),
            content_type=JSON_API,
            method="POST",
            path="/api/profile-import",
            headers=[("revision", self.revision), ("accept", JSON_API)],
        ))


MAPPING = None


class Guest(exports.Guest):
    def init(self, config):
        global MAPPING
        try:
            MAPPING = Mapping(config)
        except ConfigError as e:
            raise Err(str(e))

    def transform(self, event):
        m = MAPPING
        if not m.wants(event.topic):
            return []
        if event.op in (types.Op.DELETE, types.Op.SOFT_DELETE):
            host.log(
                types.Level.INFO,
                f"klaviyo: skipped event {event.id} ({event.topic}): "
                f"{OP_NAMES[event.op]} events do not import profiles",
            )
            return []
        try:
            body = m.profile(event)
        except ValueError as e:  # a JSON text the host sent that we cannot parse
            raise Err(types.TransformError(message=f"bad event JSON: {e}", retryable=False))
        return [m.request(body)]
