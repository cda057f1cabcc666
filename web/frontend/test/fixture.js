// The step types as the server answers GET /api/v1/builder/step-types (kept equal to the
// server by tests/builder/test_frontend_js.py), for the unit tests.
import { readFileSync } from "node:fs";

export const TYPES = JSON.parse(readFileSync(new URL("./step-types.json", import.meta.url), "utf-8"));
export const byName = (name) => TYPES.find((t) => t.name === name);
