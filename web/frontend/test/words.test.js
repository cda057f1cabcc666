import { test } from "node:test";
import assert from "node:assert/strict";
import {
  cellChoices, cellCode, cellWords, columnTitle, delayWords, durationParts, durationValue,
  durationWords, enumLabel, isAdvancedOption, stepLabel, untilWords,
} from "../../static/builder/core/words.js";

const WORDS = { "builder.unit.d": "天", "builder.unit.h": "小时", "builder.unit.w": "周",
  "builder.unit.m": "分钟", "builder.unit.wd": "个工作日", "builder.prop.event": "等待事件",
  "builder.yes": "是", "builder.no": "否" };
const msg = (key) => WORDS[key] ?? key;

test("a duration is an amount and a unit, and reads in words", () => {
  assert.deepEqual(durationParts("3d"), { amount: 3, unit: "d" });
  assert.deepEqual(durationParts("soon"), { amount: null, unit: "d" });
  assert.equal(durationValue("4", "h"), "4h");
  assert.equal(durationValue("", "h"), undefined);
  assert.equal(durationValue("-1", "d"), undefined);
  assert.equal(durationWords("2w", msg), "2 周");
  assert.equal(untilWords({ base: "encounter.discharged_at", days: 2, working_days: true, at: "09:30" }, msg),
    "2 个工作日 09:30");
});

const types = [
  { name: "wait", title: { "zh-CN": "等待" }, delay: { duration: "duration", until: "until", event: "event" },
    options: { title: { "x-def": "text" } } },
  { name: "send_form", title: { "zh-CN": "发送问卷", en: "Send a form" },
    options: { title: { "x-def": "text" }, form: { type: "string", "x-reference": "form" } } },
  { name: "create_task", title: { "zh-CN": "创建任务" },
    options: { title: { "x-def": "text" }, task_title: { "x-def": "text" } } },
];
const lists = { form: [{ key: "discharge_day3", title: { "zh-CN": "出院第3天关怀问卷", en: "Day 3" } }] };

test("a step is called by its title, else its type and what it names — never its key", () => {
  assert.equal(stepLabel(types, { key: "f", type: "send_form", form: "discharge_day3" }, "zh-CN", lists),
    "发送问卷：出院第3天关怀问卷");
  assert.equal(stepLabel(types, { key: "t", type: "create_task", task_title: { "zh-CN": "电话随访" } }, "zh-CN", lists),
    "创建任务：电话随访");
  assert.equal(stepLabel(types, { key: "w", type: "wait", title: { "zh-CN": "等三天" } }, "zh-CN", lists), "等三天");
  assert.equal(stepLabel(types, { key: "w", type: "wait" }, "zh-CN", lists), "等待");
  assert.equal(delayWords(types[0], { duration: "3d" }, msg), "⏱ 3 天");
  assert.equal(delayWords(types[0], { until: { base: "x", days: 7 } }, msg), "⏱ 7 天");
  assert.equal(delayWords(types[0], { event: "task.completed" }, msg), "◷ 等待事件");
});

test("enum values by their labels; expressions, codes and maps are advanced", () => {
  const schema = { enum: ["urgent", "POST"], "x-enum-labels": { urgent: { "zh-CN": "紧急", en: "Urgent" } } };
  assert.equal(enumLabel(schema, "urgent", "zh-CN"), "紧急");
  assert.equal(enumLabel(schema, "POST", "zh-CN"), "POST");
  assert.equal(isAdvancedOption({ "x-def": "expression" }, "text"), true);
  assert.equal(isAdvancedOption({ type: "string", pattern: "^[a-z_]{1,32}$" }, "text"), true);
  assert.equal(isAdvancedOption({}, "map"), true);
  assert.equal(isAdvancedOption({ "x-def": "duration" }, "text"), false);
  assert.equal(isAdvancedOption({ enum: ["a"] }, "enum"), false);
});

test("decision-table cells: signs for comparisons, labelled values, yes/no", () => {
  assert.equal(cellWords(">= 70"), "≥ 70");
  assert.equal(cellCode("≥ 70"), ">= 70");
  assert.equal(cellCode(cellWords("!= 3")), "!= 3");
  assert.equal(columnTitle({ key: "age", title: { "zh-CN": "年龄" } }, "zh-CN"), "年龄");
  const dept = { key: "department", labels: { cardiology: { "zh-CN": "心内科" } } };
  assert.deepEqual(cellChoices(dept, [], "when", msg, "zh-CN"), [{ value: "cardiology", text: "心内科" }]);
  const rows = [{ when: { pci: true } }, { when: { pci: false } }, { when: {} }];
  assert.deepEqual(cellChoices({ key: "pci" }, rows, "when", msg, "zh-CN").map((c) => c.text), ["是", "否"]);
  assert.equal(cellChoices({ key: "age" }, [{ when: { age: ">= 70" } }], "when", msg, "zh-CN"), null);
});
