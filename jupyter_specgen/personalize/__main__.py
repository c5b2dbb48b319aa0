"""``python -m jupyter_specgen.personalize collect|judge``: a user's training examples, and the
executable rates of a personalize job's held-out predictions.

    python -m jupyter_specgen.personalize collect --root NOTEBOOK_DIR --user U --out DIR \
        [--feedback feedback.sqlite]

Writes ``DIR/train.jsonl`` and ``DIR/heldout.jsonl`` (the input of
``python -m specgen_backend.training personalize``) and prints what was used as JSON: example
counts, which notebooks, what was skipped and why.

    python -m jupyter_specgen.personalize judge --root NOTEBOOK_DIR < request.json

Reads ``{"examples": [...], "sides": {"before": [...], "after": [...]}}`` and prints
``{"before": {"rate", "ran", "evaluable", "skipped"}, ...}``. The server extension runs it as a
child process: the forks it makes replay the user's notebooks, and a fork of the Jupyter server
itself (threads, sockets, an event loop) is a poorer place to start them from than a fresh process.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from .dataset import DatasetOptions, build_dataset, write_jsonl
from .feedback import FeedbackStore
from .notebooks import ScanOptions, scan_notebooks

__all__ = ["main", "collect"]


def collect(root: str | Path, out: str | Path, *, user: str, feedback: Optional[str | Path] = None,
            scan: ScanOptions = ScanOptions(), options: DatasetOptions = DatasetOptions()) -> dict:
    """Scan, build and write the dataset; return the summary shown to the user."""
    report = scan_notebooks(root, scan)
    records = []
    if feedback is not None:
        store = FeedbackStore(feedback)
        try:
            records = store.records(user, accepted=True)
        finally:
            store.close()
    data = build_dataset(report.notebooks, feedback=records, options=options)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(data.train, out / "train.jsonl")
    write_jsonl(data.heldout, out / "heldout.jsonl")
    return {**data.summary(), "user": user, "skipped": report.skipped, "truncated": report.truncated,
            "feedback_accepted": len(records)}


def judge(request: dict, *, root: str | Path) -> dict:
    """Executable rates of ``request["sides"]`` on ``request["examples"]`` (see the module docstring)."""
    from dataclasses import asdict

    from .dataset import Example
    from .executable import executable_rates

    examples = [Example(**e) for e in request["examples"]]
    _preimport(examples, Path(root))
    reports = executable_rates(examples, request["sides"], root=root)
    return {name: asdict(report) for name, report in reports.items()}


def _preimport(examples, root: Path) -> None:
    """Import the installed packages the notebooks import, once, before forking.

    Each fork replays its notebook; with pandas already in memory (copy-on-write) that costs
    milliseconds instead of the second an import takes. Only packages from outside the notebook
    folder are imported here, unguarded: what the user's kernel imports anyway, never their code.
    """
    import ast
    import importlib
    import importlib.util

    names: set[str] = set()
    for example in examples:
        for cell in example.cells_before:
            try:
                tree = ast.parse(cell.get("source", ""))
            except (SyntaxError, ValueError):
                continue
            for node in tree.body:
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    root = root.resolve()
    for name in sorted(names):
        try:
            spec = importlib.util.find_spec(name)
            origin = Path(spec.origin).resolve() if spec is not None and spec.origin else None
            if origin is not None and not origin.is_relative_to(root):
                importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a package that fails to import is the replay's problem
            continue


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jupyter_specgen.personalize")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="write train.jsonl and heldout.jsonl from the user's notebooks")
    c.add_argument("--root", required=True)
    c.add_argument("--user", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--feedback", help="feedback SQLite file (default: none)")
    c.add_argument("--max-files", type=int, default=ScanOptions.max_files)
    j = sub.add_parser("judge", help="executable rates of held-out predictions (JSON on stdin and stdout)")
    j.add_argument("--root", required=True)
    args = parser.parse_args(argv)
    if args.command == "judge":
        sys.stdout.write(json.dumps(judge(json.load(sys.stdin), root=args.root)) + "\n")
        return 0
    summary = collect(args.root, args.out, user=args.user, feedback=args.feedback,
                      scan=ScanOptions(max_files=args.max_files))
    sys.stdout.write(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
