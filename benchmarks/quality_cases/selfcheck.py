"""Run every case without a model, in this process: the setup cells, then the check with the
reference completion (must pass) and with no completion at all (must fail, or the check could
not tell a useless suggestion from a good one). Prints one JSON line per problem and a summary.

    PYTHONPATH=benchmarks MPLBACKEND=Agg python -m quality_cases.selfcheck
"""

from __future__ import annotations

import json
import sys
import traceback

from . import notebooks
from .harness import run_check

__all__ = ["problems", "main"]


def problems() -> tuple[int, list[dict]]:
    """(cases checked, problems found)."""
    found: list[dict] = []
    checked = 0
    for nb in notebooks():
        namespace: dict = {"__name__": "__main__"}
        try:
            for i, cell in enumerate(nb.code):
                exec(compile(cell, f"<{nb.id} setup {i}>", "exec"), namespace)  # noqa: S102 - our own setup cells
        except Exception:  # noqa: BLE001 - reported, and the notebook's cases skipped
            found.append({"notebook": nb.id, "problem": "setup raised", "detail": traceback.format_exc(limit=2)})
            continue
        for case in nb.cases:
            checked += 1
            try:
                compile(case.check, "<check>", "eval")
            except SyntaxError as exc:
                found.append({"case": case.id, "problem": "check does not compile", "detail": str(exc)})
                continue
            good = run_check(namespace, case.cell, case.check, completion=case.reference)
            if not good["passed"]:
                found.append({"case": case.id, "problem": "reference fails its check", "detail": good["error"]})
            empty = run_check(namespace, case.prefix + case.suffix, case.check, completion="")
            if empty["passed"]:
                found.append({"case": case.id, "problem": "an empty completion passes the check"})
    return checked, found


def main() -> None:
    checked, found = problems()
    for p in found:
        print(json.dumps(p))
    print(json.dumps({"checked": checked, "problems": len(found)}))
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
