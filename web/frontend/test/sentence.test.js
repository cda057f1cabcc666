import { test } from "node:test";
import assert from "node:assert/strict";
import {
  describeCondition, fieldContext, parseCondition, renderCondition, writeCondition,
} from "../../static/builder/core/sentence.js";
import { format } from "../../static/builder/core/text.js";

const ZH = {
  "builder.sentence_when": "当", "builder.sentence_and": "且", "builder.sentence_or": "或",
  "builder.sentence_is": "是", "builder.sentence_is_not": "不是", "builder.sentence_one_of": "是以下之一：",
  "builder.sentence_list_sep": "、", "builder.sentence_has": "包含", "builder.sentence_mentions": "提到",
  "builder.sentence_within_days": "在最近 {n} 天内", "builder.sentence_custom": "自定义条件（见“高级”）",
  "builder.sentence_unknown_field": "（已删除的字段）", "builder.sentence_comment": "评论",
  "builder.sentence_yes": "是", "builder.sentence_no": "否", "builder.sentence_choice": "「{label}」",
};
const say = (key, params) => format(ZH, key, params);
const pick = (label) => (label && typeof label === "object" ? label["zh-CN"] : label || "");
const TYPES = { rating: { answer: "number" }, long_text: { answer: "text" },
  multiple_choice: { answer: "choices" }, single_choice: { answer: "choice" },
  yes_no: { answer: "boolean" }, date: { answer: "date" }, page_break: {} };
const FIELDS = [
  { key: "overall", type: "rating", label: { "zh-CN": "总体满意度" } },
  { key: "comment", type: "long_text", label: { "zh-CN": "评论" } },
  { key: "low_reasons", type: "multiple_choice", label: { "zh-CN": "不满意原因" },
    choices: [{ code: "waiting", label: { "zh-CN": "等候时间长" } }, { code: "cost", label: { "zh-CN": "费用" } }] },
  { key: "ward", type: "single_choice", label: { "zh-CN": "病区" },
    choices: [{ code: "w1", label: { "zh-CN": "一病区" } }, { code: "w2", label: { "zh-CN": "二病区" } }] },
  { key: "clear", type: "yes_no", label: { "zh-CN": "用药指导清楚吗" } },
  { key: "visit", type: "date", label: { "zh-CN": "复诊日期" } },
  { key: "p2", type: "page_break" },
];
const ctx = { say, fields: fieldContext(FIELDS, TYPES, pick, say),
  categories: { medication_guidance: "用药指导" }, classified: "评论" };

test("the issue's example reads as a sentence with labels, never keys", () => {
  const text = "answers.overall <= 2 and 'medication_guidance' in classification.negative";
  assert.equal(describeCondition(text, ctx), "当 总体满意度 ≤ 2 且 评论 提到 用药指导");
});

test("each clause form renders in words and writes back the same expression", () => {
  const cases = [
    ["answers.overall < 3", "当 总体满意度 < 3"],
    ["answers.ward == 'w1'", "当 病区 是 「一病区」"],
    ["answers.ward != 'w2'", "当 病区 不是 「二病区」"],
    ["answers.ward in ['w1', 'w2']", "当 病区 是以下之一： 「一病区」、「二病区」"],
    ["'cost' in answers.low_reasons", "当 不满意原因 包含 「费用」"],
    ["contains(answers.comment, '用药')", "当 评论 提到 “用药”"],
    ["0 <= days_between(answers.visit, today()) <= 7", "当 复诊日期 在最近 7 天内"],
    ["answers.clear == 'no' or answers.overall >= 4", "当 用药指导清楚吗 是 「否」 或 总体满意度 ≥ 4"],
  ];
  for (const [text, words] of cases) {
    const parsed = parseCondition(text);
    assert.ok(parsed, text);
    assert.equal(renderCondition(parsed, ctx), words);
    assert.equal(writeCondition(parsed), text);
  }
});

test("'within the last N days' never holds for a future date; older drafts' form is read and rewritten", () => {
  const parsed = parseCondition("days_between(answers.visit, today()) <= 7");
  assert.ok(parsed);
  assert.equal(renderCondition(parsed, ctx), "当 复诊日期 在最近 7 天内");
  assert.equal(writeCondition(parsed), "0 <= days_between(answers.visit, today()) <= 7");
});

test("quotes inside text are kept whole; a range writes two clauses", () => {
  const parsed = parseCondition("contains(answers.comment, 'it\\'s and or')");
  assert.deepEqual(parsed.clauses, [{ field: "comment", op: "mentions", value: "it's and or" }]);
  assert.equal(writeCondition({ join: "and", clauses: [{ field: "overall", op: "between", value: [2, 4] }] }),
    "answers.overall >= 2 and answers.overall <= 4");
});

test("what is not a sentence says so in words, never as the expression", () => {
  for (const text of ["answers.a + 1 > 2", "answers.x == 1 and answers.y == 2 or answers.z == 3",
    "len(answers.comment) > 10", "scores.nps_category == 'detractor'"]) {
    assert.equal(parseCondition(text), null, text);
    assert.equal(describeCondition(text, ctx), "自定义条件（见“高级”）");
  }
  assert.equal(describeCondition("", ctx), "");
  assert.equal(describeCondition("answers.gone == 1", ctx), "当 （已删除的字段） = 1");
});

test("the field context lists answerable fields by label, yes/no with its two answers", () => {
  assert.deepEqual(Object.keys(ctx.fields), ["overall", "comment", "low_reasons", "ward", "clear", "visit"]);
  assert.deepEqual(ctx.fields.clear.choices, { yes: "是", no: "否" });
  assert.equal(ctx.fields.low_reasons.answer, "choices");
});
