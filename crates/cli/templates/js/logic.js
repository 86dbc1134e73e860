// {{name}}: the module's logic, in plain JavaScript so it can be unit-tested
// without WebAssembly (`node --test` in this directory).
//
// body(event, topics) returns the JSON request body for one event, or null
// when the event is not for this module (it is then dropped). `event` is an
// object in the canonical JSON form (the shape of sample-event.json).

// Comma-separated, items trimmed, empty items dropped.
export function splitList(value) {
  return value
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

// `*` any run of characters (dots included), `?` one character; the rest literal.
export function topicMatches(pattern, topic) {
  let re = "";
  for (const c of pattern) {
    if (c === "*") re += "[\\s\\S]*";
    else if (c === "?") re += "[\\s\\S]";
    else re += c.replace(/[.*+?^${}()|[\]\\\/-]/g, "\\$&");
  }
  return new RegExp(`^(?:${re})$`, "u").test(topic);
}

export function body(event, topics) {
  if (!topics.some((p) => topicMatches(p, event.topic))) return null;
  const after = event.after ?? event.data;
  const changed = {};
  if (after !== null && typeof after === "object") {
    for (const f of event.changed ?? []) {
      if (Object.prototype.hasOwnProperty.call(after, f)) changed[f] = after[f];
    }
  }
  return { account: event.account_id ?? "", event: event.topic, changed };
}
