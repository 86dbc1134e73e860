import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { body } from "./logic.js";

const sample = JSON.parse(readFileSync(new URL("./sample-event.json", import.meta.url), "utf8"));

test("maps the changed fields", () => {
  const b = body(sample, ["customer.*"]);
  assert.equal(b.account, "acct-1001");
  assert.equal(b.changed.email, "ada@example.com");
  assert.ok(!("first_name" in b.changed), "unchanged fields stay out");
});

test("drops other topics", () => {
  assert.equal(body(sample, ["order.*"]), null);
});
