import { test } from "node:test";
import assert from "node:assert/strict";
import {
  cellValue, days, fieldKeys, format, formatPairs, freshKey, parseList, parsePairs,
  pickLabel, problemLine, problemWords, problemsUnder, setOrDelete,
} from "../../static/builder/core/text.js";

test("messages are formatted with their placeholders; a missing one shows its key", () => {
  assert.equal(format({ "builder.day": "第 {n} 天" }, "builder.day", { n: 3 }), "第 3 天");
  assert.equal(format({}, "builder.nothing"), "builder.nothing");
  assert.equal(format({ a: "{x}-{y}" }, "a", { x: 1 }), "1-");
});

test("a label in the page's language, then Chinese, then English", () => {
  const label = { "zh-CN": "满意度", en: "Satisfaction" };
  assert.equal(pickLabel(label, "en"), "Satisfaction");
  assert.equal(pickLabel(label, "fr"), "满意度");
  assert.equal(pickLabel({ en: "Only" }, "zh-CN"), "Only");
  assert.equal(pickLabel("plain", "en"), "plain");
  assert.equal(pickLabel(null, "en"), "");
});

test("a problem as one line, and the problems under a path of this draft only", () => {
  const p = { file: "flows/a.yaml", line: 4, column: 7, code: "flow.unknown-step", path: "$.steps[1].next",
    message: "no step 'x'", hint: "did you mean 'y'?", path_parts: ["steps", 1, "next"] };
  assert.equal(problemLine(p, "flows/a.yaml"), "4:7 flow.unknown-step at $.steps[1].next — no step 'x' (did you mean 'y'?)");
  assert.equal(problemLine({ ...p, hint: undefined }, "other.yaml").split(" ")[0], "flows/a.yaml:4:7");
  const other = { ...p, file: "flows/b.yaml" };
  assert.deepEqual(problemsUnder([p, other], ["steps", 1], "flows/a.yaml"), [p]);
  assert.deepEqual(problemsUnder([p], ["steps", 2], "flows/a.yaml"), []);
});

test("grid cells, durations, pairs and lists", () => {
  assert.equal(cellValue(" "), undefined);
  assert.equal(cellValue("false"), false);
  assert.equal(cellValue("2.5"), 2.5);
  assert.equal(cellValue("high"), "high");
  assert.equal(days("2w"), 14);
  assert.equal(days("12h"), 0.5);
  assert.equal(days("soon"), 0);
  assert.deepEqual(parsePairs("q1: 2, q2: 1, broken"), { q1: 2, q2: 1 });
  assert.equal(parsePairs(" "), undefined);
  assert.equal(formatPairs({ q1: 2, q2: 1 }), "q1: 2, q2: 1");
  assert.deepEqual(parseList("a, b ,, c"), ["a", "b", "c"]);
  assert.equal(parseList("  "), undefined);
});

test("setOrDelete, fresh keys and nested field keys", () => {
  const obj = { a: 1, b: 2 };
  setOrDelete(obj, "a", "");
  setOrDelete(obj, "b", Number.NaN);
  setOrDelete(obj, "c", 0);
  assert.deepEqual(obj, { c: 0 });
  assert.equal(freshKey(["rating_1", "rating_2"], "rating"), "rating_3");
  assert.deepEqual(fieldKeys([{ key: "g", fields: [{ key: "x" }] }, { nokey: 1 }]).map(([k]) => k), ["g", "g.x"]);
});

test("a problem in words is its message and hint, without code or path", () => {
  const p = { code: "form.unknown-field-reference", path: "$.fields[2].visible_if",
    message: "没有字段 nope", hint: "您是指 note 吗？" };
  assert.equal(problemWords(p), "没有字段 nope (您是指 note 吗？)");
  assert.equal(problemWords({ ...p, hint: null }), "没有字段 nope");
});
