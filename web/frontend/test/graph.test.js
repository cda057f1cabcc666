import { test } from "node:test";
import assert from "node:assert/strict";
import {
  delayText, edges, graphOf, joinWord, layers, loopWithoutPause, newStep, rename, setSlot, slots, timeline,
} from "../../static/builder/graph.js";
import { TYPES } from "./fixture.js";

const label = (e) => e.label.en;

test("a plugin's step draws its own edge next to the fallback next", () => {
  const robot = { key: "robot", type: "phone_robot", script: "s", on_no_answer: "nurse" };
  assert.deepEqual(edges(TYPES, robot, "after", label),
    [["next", "after", ""], ["on_no_answer", "nurse", "no answer"]]);
  assert.deepEqual(slots(TYPES, robot, label).map(([slot]) => slot), ["next", "on_no_answer"]);
});

test("an unknown step type has no edges and no slots", () => {
  assert.deepEqual(edges(TYPES, { key: "x", type: "no_such_type" }, "y"), []);
  assert.deepEqual(slots(TYPES, { key: "x", type: "no_such_type" }), []);
});

test("a decision's edges follow its mode", () => {
  const ifElse = { key: "d", type: "decision", if: "x", then: "a" };
  assert.deepEqual(edges(TYPES, ifElse, "n", label).map(([s, t]) => [s, t]), [["then", "a"], ["else", "n"]]);
  const cases = { key: "d", type: "decision", cases: [{ when: "x", next: "a" }, { when: "y", next: "b" }] };
  assert.deepEqual(edges(TYPES, cases, "n", label).map(([s, t]) => [s, t]),
    [["cases.0.next", "a"], ["cases.1.next", "b"], ["default", "n"]]);
});

test("a branch ending at the join word draws no arrow; the word comes from the forking type", () => {
  assert.equal(joinWord(TYPES), "join");
  assert.deepEqual(edges(TYPES, { key: "a", type: "set", next: "join" }, "z"), []);
  assert.equal(joinWord(TYPES.filter((t) => !t.forks)), null);
  const par = { key: "p", type: "parallel", branches: ["a", "b"] };
  assert.deepEqual(slots(TYPES, par, label).map(([s]) => s), ["branches.0", "branches.1", "branches.add", "next"]);
  setSlot(par, "branches.add", "c");
  assert.deepEqual(par.branches, ["a", "b", "c"]);
});

test("the graph check refuses a loop in which no step pauses, and names its steps", () => {
  const steps = [
    { key: "call", type: "phone_robot", script: "s" },
    { key: "task", type: "create_task" },
    { key: "note", type: "set" },
  ];
  assert.deepEqual(loopWithoutPause(TYPES, steps, 1, "next", 1), [1]);      // onto itself
  assert.deepEqual(loopWithoutPause(TYPES, steps, 2, "next", 1), [1, 2]);   // task → note → task
  assert.equal(loopWithoutPause(TYPES, steps, 2, "next", 0), null);         // through the robot call
  assert.equal(loopWithoutPause(TYPES, steps, 0, "on_no_answer", 2), null); // no loop at all
  assert.equal(steps[2].next, undefined, "the check changes nothing");
});

test("a pausing type (from the server's pauses) makes a loop allowed", () => {
  const steps = [{ key: "w", type: "wait", duration: "1d" }, { key: "t", type: "create_task" }];
  assert.equal(loopWithoutPause(TYPES, steps, 1, "next", 0), null);
  const noPause = TYPES.map((t) => ({ ...t, pauses: false }));
  assert.deepEqual(loopWithoutPause(noPause, steps, 1, "next", 0), [0, 1]);
});

test("layers put steps by the longest path and mark back edges", () => {
  const steps = [{ key: "a", type: "set" }, { key: "b", type: "set", next: "a" }, { key: "c", type: "end" }];
  const { layer, back } = layers(steps, graphOf(TYPES, steps));
  assert.equal(layer.get("a"), 0);
  assert.equal(layer.get("b"), 1);
  assert.equal(layer.get("c"), 2);
  assert.ok(back.has("b>a"));
});

test("a renamed step's targets follow it", () => {
  const steps = [
    { key: "d", type: "decision", cases: [{ when: "x", next: "old" }], default: "old" },
    { key: "p", type: "parallel", branches: ["old", "z"] },
    { key: "old", type: "set" },
  ];
  rename(steps, "old", "new", TYPES);
  assert.equal(steps[0].cases[0].next, "new");
  assert.equal(steps[0].default, "new");
  assert.deepEqual(steps[1].branches, ["new", "z"]);
});

test("a new step takes a fresh key and its type's defaults", () => {
  const first = newStep(TYPES, [], "wait");
  assert.deepEqual(first, { key: "wait_1", type: "wait", duration: "1d" });
  assert.deepEqual(newStep(TYPES, [first], "wait").key, "wait_2");
  assert.deepEqual(newStep(TYPES, [], "phone_robot"), { key: "phone_robot_1", type: "phone_robot" });
});

test("the timeline and the box's delay read the type's delay options", () => {
  const steps = [
    { key: "a", type: "send_form" }, { key: "w", type: "wait", duration: "3d" },
    { key: "b", type: "send_form" }, { key: "u", type: "wait", until: { base: "discharge", days: 30 } },
    { key: "c", type: "phone_robot" }, { key: "e", type: "wait", event: "form.submitted" }, { key: "d", type: "end" },
  ];
  assert.deepEqual(timeline(TYPES, steps).map((x) => [x.key, x.day]), [["a", 0], ["b", 3], ["c", 30], ["d", 30]]);
  const wait = TYPES.find((t) => t.name === "wait");
  assert.equal(delayText(wait, steps[1]), "+3d");
  assert.equal(delayText(wait, steps[3]), "→ discharge +30d");
  assert.equal(delayText(wait, steps[5]), "◷ form.submitted");
  assert.equal(delayText(TYPES.find((t) => t.name === "phone_robot"), steps[4]), "");
});
