"""``python -m specgen_backend.training``: personalize, list and roll back adapters from a shell.

    python -m specgen_backend.training personalize --base MODEL --data train.jsonl \
        [--heldout heldout.jsonl] --user U --store DIR [--variants K] [--steps N] [--kind lora|flora]
    python -m specgen_backend.training list --store DIR --user U
    python -m specgen_backend.training rollback --store DIR --user U [--adapter personal] [--to v1]

The report (metrics before/after, what was published) is printed as JSON on stdout; a tqdm bar
on stderr shows progress. Ctrl-C cancels the job and publishes nothing. A second personalize for
the same user and store, from any process, is refused (exit status 4) while one runs.

With ``--events`` (how the backend runs jobs, ``runner.py``) stdout carries one JSON object per
line instead: ``{"event": "progress", "phase", "step", "total", "loss"}`` at each step,
``{"event": "judge", "before": [...], "after": [...]}`` when ``--judge`` asks for executable rates
(answered by one JSON line on stdin, ``{"before": rate|null, "after": rate|null}``), and finally
``{"event": "result", "report": {...}}`` or ``{"event": "error", "kind", "message"}``. SIGTERM
cancels like Ctrl-C. Exit status: 0 done, 1 failed, 3 cancelled, 4 another job of the user runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from typing import Optional, Sequence

from ..loading import FIM_SETTINGS

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m specgen_backend.training",
                                     description="Train, list and roll back per-user adapters.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("personalize", help="train the user's adapter (and variants) and publish it if not worse")
    p.add_argument("--base", required=True, help="base model: a local folder or a hub id")
    p.add_argument("--fim", default="auto", choices=FIM_SETTINGS,
                   help="train the prompt form the backend serves (its --fim): auto, on, off")
    p.add_argument("--data", required=True, help="training examples (JSON lines)")
    p.add_argument("--heldout", help="held-out examples (JSON lines); without them the adapter is published unevaluated")
    p.add_argument("--user", required=True)
    p.add_argument("--store", required=True, help="adapter store folder")
    p.add_argument("--adapter", default="personal")
    p.add_argument("--variants", type=int, default=0, help="K influence-partitioned variants (0: none)")
    p.add_argument("--steps", type=int, default=0,
                   help="optimizer steps (0: planned from the data: 20 passes over it, 20 to 100 steps)")
    p.add_argument("--variant-steps", type=int, default=60)
    p.add_argument("--lr", type=float, help="learning rate (default: 2e-3 for lora, 1e-2 for flora)")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--kind", choices=("lora", "flora"), default="lora",
                   help="the adapter trained: PEFT LoRA (additive) or fLoRA (multiplicative; no variants)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: half the cores, leaving the rest to the serving backend)")
    p.add_argument("--events", action="store_true", help="JSON-lines progress on stdout instead of a tqdm bar")
    p.add_argument("--judge", action="store_true",
                   help="with --events: ask for the executable rates of the held-out predictions on stdin")
    for name, help_ in (("list", "the user's adapters and versions"), ("rollback", "put an earlier version back")):
        q = sub.add_parser(name, help=help_)
        q.add_argument("--store", required=True)
        q.add_argument("--user", required=True)
        if name == "rollback":
            q.add_argument("--adapter", default="personal")
            q.add_argument("--to", help="version to restore (default: the one before the current)")
    return parser


EXIT_FAILED, EXIT_CANCELLED, EXIT_BUSY = 1, 3, 4


def _setup(args):
    import torch

    from .examples import load_examples
    from .jobs import PersonalizeConfig
    from .store import AdapterStore
    from .train import TrainConfig, training_threads

    if args.device == "cpu":
        torch.set_num_threads(args.threads or training_threads())
    train = load_examples(args.data)
    heldout = load_examples(args.heldout) if args.heldout else []
    rates = {} if args.lr is None else {"learning_rate": args.lr, "flora_learning_rate": args.lr}
    config = PersonalizeConfig(
        adapter=args.adapter, variants=args.variants,
        train=TrainConfig(kind=args.kind, steps=args.steps, rank=args.rank, batch_size=args.batch_size, **rates),
        variant_train=TrainConfig(steps=args.variant_steps, rank=args.rank, batch_size=args.batch_size, **rates))
    return train, heldout, AdapterStore(args.store), config


def _personalize(args) -> dict:
    from tqdm import tqdm

    from .jobs import JobConflict, JobManager, personalize
    from .train import load_base

    train, heldout, store, config = _setup(args)
    base = load_base(args.base, device=args.device, fim=args.fim)
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
        sys.stderr.write(f"personalize {job.state}: {job.error}\n")
        busy = job.error.startswith(JobConflict.__name__)
        raise SystemExit(EXIT_BUSY if busy else EXIT_CANCELLED if job.state == "cancelled" else EXIT_FAILED)
    return job.result


def _emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _personalize_events(args) -> int:
    """One job in this process's main thread, talking JSON lines (see the module docstring)."""
    import signal

    from .jobs import JobConflict, personalize
    from .train import TrainingCancelled, load_base

    cancel = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: cancel.set())

    def judge(before: list, after: list):
        _emit({"event": "judge", "before": before, "after": after})
        line = sys.stdin.readline()  # the backend always answers, with nulls when it has no rates
        try:
            answer = json.loads(line) if line.strip() else {}
        except ValueError:
            answer = {}
        rate = lambda v: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None  # noqa: E731
        return rate(answer.get("before")), rate(answer.get("after"))

    try:
        train, heldout, store, config = _setup(args)
        _emit({"event": "progress", "phase": "starting", "step": 0, "total": 0, "loss": 0.0})
        base = load_base(args.base, device=args.device, fim=args.fim)
        report = personalize(base, store, args.user, train, heldout, config=config, cancel=cancel,
                             progress=lambda phase, step, total, loss: _emit(
                                 {"event": "progress", "phase": phase, "step": step, "total": total, "loss": loss}),
                             judge=judge if args.judge else None)
    except JobConflict as exc:
        _emit({"event": "error", "kind": "job_running", "message": str(exc)})
        return EXIT_BUSY
    except TrainingCancelled as exc:
        _emit({"event": "error", "kind": "cancelled", "message": str(exc)})
        return EXIT_CANCELLED
    except Exception as exc:
        logging.getLogger(__name__).exception("personalize failed")
        _emit({"event": "error", "kind": "failed", "message": f"{type(exc).__name__}: {exc}"})
        return EXIT_FAILED
    _emit({"event": "result", "report": report})
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    from .store import AdapterStore, StoreError

    if args.command == "personalize" and args.events:
        return _personalize_events(args)
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
