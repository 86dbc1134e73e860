// {{name}}: a Switchyard transform module in JavaScript (componentize-js).
//
// Glue between the WIT contract (wit/, world `transformer`) and logic.js:
// each event whose topic matches `topics` (config, comma-separated globs;
// default `*`) becomes one JSON request, `POST {{path}}`. Build with
// ./build.sh; try it with `switchyard transform test`.

import { body, splitList } from "./logic.js";

let topics = ["*"];

function parse(text) {
  return text === undefined || text === null ? null : JSON.parse(text);
}

export const guest = {
  init(config) {
    const cfg = new Map(config);
    for (const k of cfg.keys()) {
      if (k !== "topics") throw `config \`${k}\`: unknown key; expected topics`;
    }
    const t = splitList(cfg.get("topics") ?? "");
    topics = t.length ? t : ["*"];
  },

  transform(ev) {
    let b;
    try {
      b = body(
        {
          id: ev.id,
          topic: ev.topic,
          account_id: ev.accountId,
          before: parse(ev.before),
          after: parse(ev.after),
          data: parse(ev.data),
          changed: ev.changed,
        },
        topics,
      );
    } catch (e) {
      throw { message: `bad event JSON: ${e}`, retryable: false };
    }
    if (b === null) return [];
    return [
      {
        tag: "request",
        val: {
          body: new TextEncoder().encode(JSON.stringify(b)),
          contentType: "application/json",
          method: "POST",
          path: "{{path}}",
          headers: [],
        },
      },
    ];
  },
};
