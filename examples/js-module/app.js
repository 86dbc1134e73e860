// Switchyard transform in JavaScript: customer events -> Klaviyo profile import.
//
// The profile import of the Rust module `transforms/klaviyo` (same config
// keys, same request, same body bytes; not its consent and deletion jobs), plus a topic filter (`topics`,
// `drop_topics`) so that one module does what the Rust chain
// `filter -> klaviyo` does. Built with componentize-js against
// `wit/transform.wit` (world `transformer`); see README.md.

import { log } from "switchyard:transform/host@0.1.0";

const DEFAULT_REVISION = "2024-10-15";
const JSON_API = "application/vnd.api+json";

const KNOWN = [
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
];

class ConfigError extends Error {
  constructor(key, message) {
    super(`config \`${key}\`: ${message}`);
  }
}

// Comma-separated, items trimmed, empty items dropped (the Rust SDK's `Config::list`).
function splitList(value) {
  return value
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

// `*` any run of characters (dots included), `?` one character; the rest literal.
function globToRegex(pattern) {
  let re = "";
  for (const c of pattern) {
    if (c === "*") re += "[\\s\\S]*";
    else if (c === "?") re += "[\\s\\S]";
    else re += c.replace(/[.*+?^${}()|[\]\\\/-]/g, "\\$&");
  }
  return new RegExp(`^(?:${re})$`, "u");
}

function fields(cfg, key, dflt) {
  const items = splitList(cfg.has(key) ? cfg.get(key) : dflt);
  for (const f of items) {
    if (f.split(".").some((seg) => seg === "")) {
      throw new ConfigError(key, `${JSON.stringify(f)} is not a field path`);
    }
  }
  return items;
}

// Value at a dotted path (object keys, array indexes), or undefined.
function at(value, path) {
  let cur = value;
  for (const seg of path.split(".")) {
    if (Array.isArray(cur)) {
      if (!/^[0-9]+$/.test(seg) || Number(seg) >= cur.length) return undefined;
      cur = cur[Number(seg)];
    } else if (cur !== null && typeof cur === "object") {
      if (!Object.prototype.hasOwnProperty.call(cur, seg)) return undefined;
      cur = cur[seg];
    } else {
      return undefined;
    }
  }
  return cur;
}

// First candidate path holding a non-empty string or a number, as text.
function firstText(payload, candidates) {
  if (payload === undefined) return undefined;
  for (const c of candidates) {
    const v = at(payload, c);
    if (typeof v === "string" && v.trim() !== "") return v.trim();
    if (typeof v === "number") return String(v);
  }
  return undefined;
}

// E.164 digits without `+` (the Rust SDK's `normalize::phone_digits`).
function phoneDigits(raw, countryCode) {
  raw = raw.trim();
  const digits = raw.replace(/[^0-9]/g, "");
  if (raw.startsWith("+")) return digits;
  if (digits.startsWith("00")) return digits.slice(2);
  if (countryCode !== undefined && digits !== "") return countryCode + digits.replace(/^0+/, "");
  return digits;
}

// JSON with object keys sorted and no spaces: byte for byte what the Rust
// module (serde_json, sorted maps) sends.
function sortedJson(v) {
  if (Array.isArray(v)) return `[${v.map(sortedJson).join(",")}]`;
  if (v !== null && typeof v === "object") {
    const keys = Object.keys(v).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${sortedJson(v[k])}`).join(",")}}`;
  }
  return JSON.stringify(v);
}

class Mapping {
  constructor(pairs) {
    const cfg = new Map(pairs);
    for (const key of cfg.keys()) {
      if (!KNOWN.includes(key)) {
        throw new ConfigError(key, `unknown key; expected one of ${KNOWN.join(", ")}`);
      }
    }
    this.topics = splitList(cfg.get("topics") ?? "").map(globToRegex);
    this.dropTopics = splitList(cfg.get("drop_topics") ?? "").map(globToRegex);
    this.part = (cfg.get("source") ?? "auto").trim();
    if (!["auto", "after", "data"].includes(this.part)) {
      throw new ConfigError("source", `${JSON.stringify(this.part)}: expected auto, after or data`);
    }
    const props = (cfg.get("properties") ?? "").trim();
    this.properties = props === "" ? null : props === "*" ? "*" : fields(cfg, "properties", "");
    const cc = (cfg.get("phone_country_code") ?? "").trim();
    this.phoneCountryCode = undefined;
    if (cc !== "") {
      const d = cc.startsWith("+") ? cc.slice(1) : cc;
      if (!/^[0-9]{1,3}$/.test(d)) {
        throw new ConfigError("phone_country_code", `${JSON.stringify(cc)} is not a calling code like 1 or 44`);
      }
      this.phoneCountryCode = d;
    }
    this.externalId = fields(cfg, "external_id_field", "")[0];
    this.email = fields(cfg, "email_field", "email");
    this.phone = fields(cfg, "phone_field", "phone_number, phone, mobile");
    this.firstName = fields(cfg, "first_name_field", "first_name, firstname, given_name");
    this.lastName = fields(cfg, "last_name_field", "last_name, lastname, family_name");
    this.revision = (cfg.get("revision") ?? DEFAULT_REVISION).trim();
  }

  wants(topic) {
    if (this.topics.length > 0 && !this.topics.some((r) => r.test(topic))) return false;
    return !this.dropTopics.some((r) => r.test(topic));
  }

  payload(ev) {
    const text =
      this.part === "after" ? ev.after : this.part === "data" ? ev.data : ev.after ?? ev.data;
    return text === undefined || text === null ? undefined : JSON.parse(text);
  }

  // The profile-import body. Throws a transform-error for an event with no identifier.
  profile(ev) {
    const payload = this.payload(ev);
    let email = firstText(payload, this.email);
    if (email !== undefined && !email.includes("@")) {
      log("warn", `klaviyo: event ${ev.id}: ignoring email without \`@\``);
      email = undefined;
    }
    let phone = firstText(payload, this.phone);
    if (phone !== undefined) {
      const d = phoneDigits(phone, this.phoneCountryCode);
      phone = d === "" ? undefined : `+${d}`;
    }
    const externalId =
      this.externalId !== undefined
        ? firstText(payload, [this.externalId])
        : ev.accountId === ""
          ? undefined
          : ev.accountId;
    if (email === undefined && phone === undefined && externalId === undefined) {
      const ext = this.externalId ?? "account_id";
      throw {
        message:
          `no profile identifier: email (${this.email.join(", ")}), ` +
          `phone (${this.phone.join(", ")}) and external id (${ext}) are all missing`,
        retryable: false,
      };
    }
    const attrs = {};
    const put = (k, v) => {
      if (v !== undefined) attrs[k] = v;
    };
    put("email", email);
    put("phone_number", phone);
    put("external_id", externalId);
    put("first_name", firstText(payload, this.firstName));
    put("last_name", firstText(payload, this.lastName));
    const props = this.props(payload);
    if (Object.keys(props).length > 0) attrs.properties = props;
    return { data: { type: "profile", attributes: attrs } };
  }

  props(payload) {
    const out = {};
    if (payload === undefined || this.properties === null) return out;
    if (this.properties === "*") {
      const mapped = [...this.email, ...this.phone, ...this.firstName, ...this.lastName];
      if (this.externalId !== undefined) mapped.push(this.externalId);
      if (payload !== null && typeof payload === "object" && !Array.isArray(payload)) {
        for (const [k, v] of Object.entries(payload)) {
          if (v !== null && !mapped.includes(k)) out[k] = v;
        }
      }
    } else {
      for (const f of this.properties) {
        const v = at(payload, f);
        if (v !== undefined && v !== null) out[f] = v;
      }
    }
    return out;
  }

  request(body) {
    return {
      tag: "request",
      val: {
        body: new TextEncoder().encode(sortedJson(body)),
        contentType: JSON_API,
        method: "POST",
        path: "/api/profile-import",
        headers: [
          ["revision", this.revision],
          ["accept", JSON_API],
        ],
      },
    };
  }
}

let mapping = null;

export const guest = {
  init(config) {
    try {
      mapping = new Mapping(config);
    } catch (e) {
      // A thrown string is the `err` of result<_, string>.
      throw e instanceof ConfigError ? e.message : String(e);
    }
  },

  transform(event) {
    const m = mapping;
    if (!m.wants(event.topic)) return [];
    if (event.op === "delete" || event.op === "soft-delete") {
      const op = event.op.replace("-", "_");
      log("info", `klaviyo: skipped event ${event.id} (${event.topic}): ${op} events do not import profiles`);
      return [];
    }
    let body;
    try {
      body = m.profile(event);
    } catch (e) {
      if (e instanceof SyntaxError) throw { message: `bad event JSON: ${e.message}`, retryable: false };
      throw e;
    }
    return [m.request(body)];
  },
};
