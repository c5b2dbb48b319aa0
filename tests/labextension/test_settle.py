"""The feedback tracker's rules (labextension/src/completions/settle.ts), compiled from the source and
run under node: a dismissal is a suggestion typed over or escaped, and nothing else is one."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "labextension" / "src" / "completions" / "settle.ts"
TYPESCRIPT = ROOT / "node_modules" / "typescript"
# Transpiled, not type-checked (`jlpm build` checks types): one file, in a second.
TRANSPILE = """
const ts = require(process.argv[1]);
const fs = require('fs');
const out = ts.transpileModule(fs.readFileSync(process.argv[2], 'utf8'),
  { compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 } });
fs.writeFileSync(process.argv[3], out.outputText);
"""

SHOWN = {"path": "a.ipynb", "cellId": "c1", "prefix": "total = ", "text": "sum(numbers)"}

# (what happens, the call, what the rules must answer)
CASES = [
    ("typing through the ghost text keeps it", ["onRequest", SHOWN, {**SHOWN, "prefix": "total = sum("}], "showing"),
    ("typing text that diverges is a dismissal", ["onRequest", SHOWN, {**SHOWN, "prefix": "total = max"}], "typed_over"),
    ("diverging after a matching start too", ["onRequest", SHOWN, {**SHOWN, "prefix": "total = sux"}], "typed_over"),
    ("a request for another cell is not", ["onRequest", SHOWN, {**SHOWN, "cellId": "c2"}], "elsewhere"),
    ("a request in another notebook is not", ["onRequest", SHOWN, {**SHOWN, "path": "b.ipynb"}], "elsewhere"),
    ("a prefix that no longer continues (backspace) is not", ["onRequest", SHOWN, {**SHOWN, "prefix": "total ="}],
     "elsewhere"),
    ("typing all of it and on by hand is not", ["onRequest", SHOWN, {**SHOWN, "prefix": "total = sum(numbers)\n"}],
     "typed_through"),
    ("Escape is a dismissal", ["onCommand", "notebook:enter-command-mode"], "escape"),
    ("running the cell is not", ["onCommand", "notebook:run-cell-and-select-next"], "gone"),
    ("running the cell (Ctrl+Enter) is not", ["onCommand", "notebook:run-cell"], "gone"),
    ("Tab accepts", ["onCommand", "inline-completer:accept"], "accept"),
    ("Alt+] cycles", ["onCommand", "inline-completer:next"], "cycle"),
    ("saving does not concern it", ["onCommand", "docmanager:save"], None),
]

RUNNER = """
import * as rules from './settle.mjs';
const cases = JSON.parse(process.argv[2]);
console.log(JSON.stringify(cases.map(([name, ...args]) => rules[name](...args) ?? null)));
"""


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    """settle.ts compiled to an ES module in a temporary folder, and node to run it."""
    node = shutil.which("node")
    if node is None or not TYPESCRIPT.exists():
        pytest.fail("node and node_modules/typescript are needed: run `jlpm install` (scripts/test.sh does)")
    out = tmp_path_factory.mktemp("settle")
    subprocess.run([node, "-e", TRANSPILE, str(TYPESCRIPT), str(SOURCE), str(out / "settle.mjs")], check=True,
                   capture_output=True, timeout=120)
    (out / "run.mjs").write_text(RUNNER)

    def run(calls):
        done = subprocess.run([node, str(out / "run.mjs"), json.dumps(calls)], check=True, capture_output=True,
                              text=True, timeout=60)
        return json.loads(done.stdout)

    return run


def test_only_typed_over_or_escaped_is_a_dismissal(rules):
    """Typed over and Escape dismiss; another cell, a run, a cursor moved back, typing it through do not."""
    answers = rules([call for _, call, _ in CASES])
    wrong = [(what, want, got) for (what, _, want), got in zip(CASES, answers) if got != want]
    assert not wrong, wrong
    dismissals = {what for (what, _, _), got in zip(CASES, answers) if got in ("typed_over", "escape")}
    assert dismissals == {"typing text that diverges is a dismissal", "diverging after a matching start too",
                          "Escape is a dismissal"}
