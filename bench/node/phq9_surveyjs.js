// Peer of bench/forms.py (a): validate, evaluate visibility and score PHQ-9 answer sets with
// SurveyJS survey-core (the same answer sets Careloop gets). Prints one JSON line.
"use strict";
const { Model } = require("survey-core");
const fs = require("fs");

const input = JSON.parse(fs.readFileSync(0, "utf8"));
const choices = [0, 1, 2, 3].map((v) => ({ value: String(v), text: String(v) }));
const elements = [];
for (let i = 1; i <= 9; i++) {
  elements.push({ type: "radiogroup", name: "q" + i, isRequired: true, choices: choices });
}
elements.push({ type: "comment", name: "note", visibleIf: "{q9} > 0" });
const sum = [1, 2, 3, 4, 5, 6, 7, 8, 9].map((i) => "{q" + i + "}").join(" + ");
elements.push({ type: "expression", name: "total", expression: sum });
const json = { elements: elements };

const survey = new Model(json);
function one(answers) {
  survey.clear(true, true);
  survey.data = answers;
  const valid = survey.validate(false, false);
  const visible = survey.getAllQuestions(false).filter((q) => q.isVisible).map((q) => q.name);
  const total = survey.getValue("total");
  return { valid: valid, visible: visible.length, total: total };
}
// Warm up, then time.
for (let i = 0; i < Math.min(200, input.sets.length); i++) { one(input.sets[i]); }
const t0 = process.hrtime.bigint();
let check = 0;
for (let r = 0; r < input.rounds; r++) {
  for (const answers of input.sets) { const out = one(answers); if (out.valid) { check += Number(out.total) || 0; } }
}
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
const n = input.rounds * input.sets.length;
console.log(JSON.stringify({ n: n, seconds: seconds, per_second: n / seconds, check: check,
                             sample: one(input.sets[0]) }));
