import { test } from "node:test";
import assert from "node:assert/strict";
import { orphanLabel, orphanLine } from "../../static/builder/core/orphans.js";
import { format } from "../../static/builder/core/text.js";

const messages = {
  "builder.orphan_line": "「{label}」：{n} 份已存答案",
  "builder.orphan_retyped": "「{label}」：{n} 份已存答案，类型由「{from}」改为「{to}」",
};
const msg = (key, params) => format(messages, key, params);

test("an orphaned field is named by its label in the page's language, never its key", () => {
  const o = { field: "comment", answers: 2, label: { "zh-CN": "补充说明", en: "Comment" } };
  assert.equal(orphanLine(o, "zh-CN", msg), "「补充说明」：2 份已存答案");
  assert.equal(orphanLabel(o, "en"), "Comment");
  assert.equal(orphanLabel({ field: "old_key", answers: 1 }, "zh-CN"), "old_key");
});

test("a retyped field says its old and new types by their titles", () => {
  const o = { field: "mood", answers: 3, label: { "zh-CN": "心情" }, from: "rating", to: "short_text",
    from_title: { "zh-CN": "评分", en: "Rating" }, to_title: { "zh-CN": "短文本", en: "Short text" } };
  assert.equal(orphanLine(o, "zh-CN", msg), "「心情」：3 份已存答案，类型由「评分」改为「短文本」");
  assert.ok(!orphanLine(o, "zh-CN", msg).includes("mood"));
});
