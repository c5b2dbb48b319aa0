"""``python -m jupyter_specgen.personalize collect``: write a user's training examples.

    python -m jupyter_specgen.personalize collect --root NOTEBOOK_DIR --user U --out DIR \
        [--feedback feedback.sqlite]

Writes ``DIR/train.jsonl`` and ``DIR/heldout.jsonl`` (the input of
``python -m specgen_backend.training personalize``) and prints what was used as JSON: example
counts, which notebooks, what was skipped and why.
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jupyter_specgen.personalize")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="write train.jsonl and heldout.jsonl from the user's notebooks")
    c.add_argument("--root", required=True)
    c.add_argument("--user", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--feedback", help="feedback SQLite file (default: none)")
    c.add_argument("--max-files", type=int, default=ScanOptions.max_files)
    args = parser.parse_args(argv)
    summary = collect(args.root, args.out, user=args.user, feedback=args.feedback,
                      scan=ScanOptions(max_files=args.max_files))
    sys.stdout.write(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
