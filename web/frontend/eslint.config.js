// ESLint for the builder's ES modules (web/static/builder/) and their unit tests
// (web/frontend/test/). Run from web/ with this file as --config (`npm run lint` here does it):
// the builder's files lie outside this folder, which holds only the development tooling, so
// that node_modules is never inside the folder the server serves.
import js from "@eslint/js";
import globals from "globals";
import { defineConfig } from "eslint/config";

export default defineConfig([
  { ignores: ["frontend/node_modules/**"] },
  {
    files: ["static/builder/**/*.js"],
    extends: [js.configs.recommended],
    languageOptions: { ecmaVersion: 2022, sourceType: "module", globals: globals.browser },
  },
  {
    files: ["frontend/**/*.js"],
    extends: [js.configs.recommended],
    languageOptions: { ecmaVersion: 2022, sourceType: "module", globals: globals.node },
  },
]);
