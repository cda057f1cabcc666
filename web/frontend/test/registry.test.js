import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { editorFor, register, registeredKinds } from "../../static/builder/core/registry.js";

const BUILDER = new URL("../../static/builder/", import.meta.url);
const sources = (dir) => readdirSync(new URL(dir, BUILDER)).filter((f) => f.endsWith(".js"))
  .map((f) => [`${dir}${f}`, readFileSync(new URL(`${dir}${f}`, BUILDER), "utf-8")]);

test("an editor registers once for its kind; an unknown kind has the empty editor", () => {
  register("test_kind", { render() {} });
  assert.ok(registeredKinds().includes("test_kind"));
  assert.equal(typeof editorFor("test_kind").render, "function");
  assert.throws(() => register("test_kind", {}), /registered twice/);
  assert.deepEqual(editorFor("no_such_kind"), {});
});

test("no module switches on the kind: each editor registers itself", () => {
  for (const [name, text] of [...sources(""), ...sources("core/"), ...sources("editors/")]) {
    assert.doesNotMatch(text, /KIND\s*===|\.kind\s*===/, `${name} switches on the kind`);
  }
  const registered = sources("editors/").map(([, text]) => /register\("(\w+)"/.exec(text)[1]);
  assert.deepEqual(registered.sort(), ["alert", "chart", "dashboard", "dataset", "decision_table", "flow", "form", "ruleset"]);
});

test("no step type is named in the diagram, the panel or the graph: it all comes from the server", () => {
  const TYPES = JSON.parse(readFileSync(new URL("./step-types.json", import.meta.url), "utf-8"));
  for (const file of ["graph.js", "flowdiagram.js", "steppanel.js", "schemaform.js", "editors/flow.js"]) {
    const text = readFileSync(new URL(file, BUILDER), "utf-8").replace(/^\s*\/\/.*$/gm, "");
    for (const t of TYPES) {
      assert.doesNotMatch(text, new RegExp(`["'\`]${t.name}["'\`]`), `${file} names the step type ${t.name}`);
    }
  }
});
