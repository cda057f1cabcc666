import { test } from "node:test";
import assert from "node:assert/strict";
import { actionInputKind, actionSummary, dueParts, dueValue } from "../../static/builder/core/actionwords.js";

test("a due time is an amount and a unit: {hours: 4} ⇄ 4 小时", () => {
  assert.deepEqual(dueParts({ hours: 4 }), { amount: 4, unit: "hours" });
  assert.deepEqual(dueParts({ working_days: 2, calendar: "cn" }), { amount: 2, unit: "working_days" });
  assert.deepEqual(dueParts(undefined), { amount: null, unit: "hours" });
  assert.deepEqual(dueValue("4", "hours"), { hours: 4 });
  assert.deepEqual(dueValue("1.5", "hours"), { hours: 1.5 });
  assert.deepEqual(dueValue("2", "working_days", { hours: 3, calendar: "cn" }), { working_days: 2, calendar: "cn" });
  assert.equal(dueValue("", "hours"), undefined);
  assert.equal(dueValue("-1", "hours"), undefined);
  assert.equal(dueValue("3", "days"), undefined);
});

test("an action option's input is decided by its schema alone", () => {
  const text = { oneOf: [{ type: "string" }, { type: "object" }], "x-def": "text" };
  assert.equal(actionInputKind(text), "text-pair");
  assert.equal(actionInputKind({ type: "object", "x-def": "due", properties: { hours: {} } }), "due");
  assert.equal(actionInputKind({ type: "string", "x-reference": "template" }), "definition");
  assert.equal(actionInputKind({ enum: ["urgent", "normal"] }), "enum");
  assert.equal(actionInputKind({ type: "boolean" }), "boolean");
  assert.equal(actionInputKind({ type: "integer" }), "number");
  assert.equal(actionInputKind({ type: "object", properties: { role: { type: "string" } } }), "group");
  assert.equal(actionInputKind({ type: "string", pattern: "^[a-z]+$" }), "code");
  assert.equal(actionInputKind({ type: "array", items: {} }), "json");
  assert.equal(actionInputKind({ type: "object" }), "json");
  assert.equal(actionInputKind(undefined), "json");
});

test("an action reads as its type's title and what tells it apart", () => {
  const cc = { name: "cc", title: { "zh-CN": "抄送", en: "Copy to a role" }, options: {
    role: { enum: ["pharmacy_head"], "x-enum-labels": { pharmacy_head: { "zh-CN": "药剂科主任", en: "Head of pharmacy" } } } } };
  assert.equal(actionSummary(cc, { do: "cc", role: "pharmacy_head" }, "zh-CN"), "抄送：药剂科主任");
  assert.equal(actionSummary(cc, { do: "cc", title: { "zh-CN": "抄送：用药", en: "Copy" } }, "en"), "Copy to a role：Copy");
  assert.equal(actionSummary(cc, { do: "cc" }, "zh-CN"), "抄送");
  assert.equal(actionSummary(null, { do: "mystery" }, "zh-CN"), "mystery");
});
