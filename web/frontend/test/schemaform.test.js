import { test } from "node:test";
import assert from "node:assert/strict";
import { missingOptions, optionInputKind, panelPlan, stepInputKind } from "../../static/builder/schemaform.js";
import { refsOf } from "../../static/builder/graph.js";
import { byName } from "./fixture.js";

test("the phone robot's panel: each option's input from its schema and edges", () => {
  const robot = byName("phone_robot");
  const refs = refsOf(robot);
  const kinds = Object.fromEntries(Object.entries(robot.options).map(([name, schema]) =>
    [name, stepInputKind(schema, [name], refs)]));
  assert.deepEqual(kinds, { title: "text-pair", when: "text", script: "text", max_attempts: "number",
    timeout: "text", on_no_answer: "step", next: "step" });
  assert.equal(robot.labels.on_no_answer.label["zh-CN"], "未接通时");
});

test("nested targets and lists are step selects; other lists and objects get their own input", () => {
  const decision = byName("decision"), parallel = byName("parallel");
  const cases = decision.options.cases;
  assert.equal(stepInputKind(cases, ["cases"], refsOf(decision)), "list");
  assert.equal(stepInputKind(cases.items.properties.next, ["cases", 0, "next"], refsOf(decision)), "step");
  assert.equal(stepInputKind(cases.items.properties.when, ["cases", 0, "when"], refsOf(decision)), "text");
  assert.equal(stepInputKind({ type: "string" }, ["branches", 1], refsOf(parallel)), "step");
  assert.equal(stepInputKind({ type: "array", items: { enum: ["sms", "log"] } }, ["channels"], refsOf(null)), "ticks");
  assert.equal(stepInputKind({ type: "object", additionalProperties: { type: "string" } }, ["values"], refsOf(null)), "map");
  assert.equal(stepInputKind({ type: "object", properties: { a: {} } }, ["until"], refsOf(null)), "group");
  assert.equal(stepInputKind({ type: "string", "x-reference": "template" }, ["template"], refsOf(null)), "definition");
  assert.equal(stepInputKind({ enum: ["a"] }, ["mode"], refsOf(null)), "enum");
  assert.equal(stepInputKind({ type: "boolean" }, ["urgent"], refsOf(null)), "boolean");
});

test("a wait shows only its chosen mode, which alone is required", () => {
  const wait = byName("wait");
  const fresh = panelPlan(wait, { key: "w", type: "wait" });
  assert.equal(fresh.mode, "duration");
  assert.ok(fresh.options.includes("duration") && !fresh.options.includes("until") && !fresh.options.includes("event"));
  assert.ok(fresh.required.has("duration") && !fresh.required.has("event"));
  const picked = panelPlan(wait, { key: "w", type: "wait" }, "event");
  assert.equal(picked.mode, "event");
  assert.ok(picked.options.includes("event") && !picked.options.includes("duration"));
  const present = panelPlan(wait, { key: "w", type: "wait", until: { days: 3 } }, "event");
  assert.equal(present.mode, "until", "what the step carries wins over the picker");
  assert.deepEqual(panelPlan(null, {}).options, []);
});

test("missing required options: each one, or every one of a set of modes", () => {
  assert.deepEqual([...missingOptions(byName("phone_robot"), { type: "phone_robot" })], ["script"]);
  assert.deepEqual([...missingOptions(byName("phone_robot"), { type: "phone_robot", script: "a" })], []);
  assert.deepEqual([...missingOptions(byName("wait"), { type: "wait" })], ["duration", "until", "event"]);
  assert.deepEqual([...missingOptions(byName("wait"), { type: "wait", event: "a.b" })], []);
});

test("a field type's option input from its schema", () => {
  assert.equal(optionInputKind({ $ref: "#/$defs/text" }), "text-pair");
  assert.equal(optionInputKind({ enum: ["a", "b"] }), "enum");
  assert.equal(optionInputKind({ type: "boolean" }), "boolean");
  assert.equal(optionInputKind({ type: "integer", minimum: 0 }), "number");
  assert.equal(optionInputKind({ type: "object" }), "pairs");
  assert.equal(optionInputKind({ type: "array" }), "list");
  assert.equal(optionInputKind({ type: "string" }), "text");
});
