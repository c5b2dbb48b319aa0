"""``python -m specgen_backend.training``: personalize, list and roll back adapters from a shell.

    python -m specgen_backend.training personalize --base MODEL --data train.jsonl \
        [--heldout heldout.jsonl] --user U --store DIR [--variants K] [--steps N]
    python -m specgen_backend.training list --store DIR --user U
    python -m specgen_backend.training rollback --store DIR --user U [--adapter personal] [--to v1]

The report (metrics before/after, what was published) is printed as JSON on stdout; a tqdm bar
on stderr shows progress. Ctrl-C cancels the job and publishes nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from typing import Optional, Sequence

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m specgen_backend.training",
                                     description="Train, list and roll back per-user adapters.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("personalize", help="train the user's adapter (and variants) and publish it if not worse")
    p.add_argument("--base", required=True, help="base model: a local folder or a hub id")
    p.add_argument("--data", required=True, help="training examples (JSON lines)")
    p.add_argument("--heldout", help="held-out examples (JSON lines); without them the adapter is published unevaluated")
    p.add_argument("--user", required=True)
    p.add_argument("--store", required=True, help="adapter store folder")
    p.add_argument("--adapter", default="personal")
    p.add_argument("--variants", type=int, default=0, help="K influence-partitioned variants (0: none)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--variant-steps", type=int, default=60)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    for name, help_ in (("list", "the user's adapters and versions"), ("rollback", "put an earlier version back")):
        q = sub.add_parser(name, help=help_)
        q.add_argument("--store", required=True)
        q.add_argument("--user", required=True)
        if name == "rollback":
            q.add_argument("--adapter", default="personal")
            q.add_argument("--to", help="version to restore (default: the one before the current)")
    return parser


def _personalize(args) -> dict:
    from tqdm import tqdm

    from .examples import load_examples
    from .jobs import JobManager, PersonalizeConfig, personalize
    from .store import AdapterStore
    from .train import TrainConfig, load_base

    train = load_examples(args.data)
    heldout = load_examples(args.heldout) if args.heldout else []
    store = AdapterStore(args.store)
    base = load_base(args.base, device=args.device)
    config = PersonalizeConfig(
        adapter=args.adapter, variants=args.variants,
        train=TrainConfig(steps=args.steps, learning_rate=args.lr, rank=args.rank, batch_size=args.batch_size),
        variant_train=TrainConfig(steps=args.variant_steps, learning_rate=args.lr, rank=args.rank,
                                  batch_size=args.batch_size))
    bars: dict[str, tqdm] = {}
    lock = threading.Lock()

    def show(update: dict) -> None:
        with lock:
            phase = update["phase"]
            if update["total"] and phase not in bars:
                bars[phase] = tqdm(total=update["total"], desc=phase, file=sys.stderr, leave=True)
            bar = bars.get(phase)
            if bar is not None:
                bar.n = update["step"]
                bar.set_postfix(loss=f"{update['loss']:.3f}") if update["loss"] else bar.refresh()

    manager = JobManager()
    job = manager.start(args.user, lambda progress, cancel: personalize(
        base, store, args.user, train, heldout, config=config, progress=progress, cancel=cancel), listener=show)
    try:
        while not job.wait(0.5):
            pass
    except KeyboardInterrupt:
        job.cancel()
        job.wait()
    finally:
        for bar in bars.values():
            bar.close()
    if job.state != "done":
        raise SystemExit(f"personalize {job.state}: {job.error}")
    return job.result


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    from .store import AdapterStore, StoreError

    try:
        if args.command == "personalize":
            out = _personalize(args)
        elif args.command == "list":
            out = AdapterStore(args.store).list(args.user)
        else:
            restored = AdapterStore(args.store).rollback(args.user, args.adapter, to=args.to)
            out = {"adapter": restored.adapter, "current": restored.version}
    except (StoreError, ValueError, FileNotFoundError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    sys.stdout.write(json.dumps(out, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
