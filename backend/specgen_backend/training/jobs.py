"""Personalize as a background job: train, evaluate against what is in service, publish or not.

``personalize`` is the whole pipeline for one user, run synchronously: it trains a candidate
adapter in the user's staging folder, evaluates it and the adapter in service (the base model
when none is) on the held-out split, asks ``judge`` (when given) for the executable rates of
both sets of predictions, publishes the candidate only if it is not worse, then (optionally)
trains K influence-partitioned variants and publishes them as one versioned set. Any failure,
cancellation included, leaves the store as it was: nothing is published until a step is done,
and the staging folder is removed in ``finally``. The report has the fields of
``protocol.JobReport``.

It holds the user's store lock (``AdapterStore.lock``, an ``flock``) throughout, so a second job
for the same user is refused whether it runs in this process, in the backend or in a CLI.
``JobManager`` runs jobs in threads and also refuses a second one per user up front with
``JobConflict``; other users' jobs are independent.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Sequence

from .evaluate import Metrics, evaluate, not_worse
from .examples import TrainingExample
from .influence import InfluenceConfig, influence_scores
from .store import AdapterStore, StoreBusy, validate_name
from .train import BaseModel, TrainConfig, TrainingCancelled, train_adapter
from .variants import train_variants

__all__ = ["PersonalizeConfig", "personalize", "Job", "JobConflict", "JobManager", "VARIANTS_ADAPTER", "Judge"]

log = logging.getLogger(__name__)

VARIANTS_ADAPTER = "variants"  # the store name of a user's variant set (folders variant-0 ... variant-K-1)

# progress(phase, step, total, loss); phase is "train", "evaluate", "judge", "influence" or "variants"
Progress = Callable[[str, int, int, float], None]
# judge(predictions of the adapter in service, predictions of the candidate) -> their executable
# rates (None where unknown)
Judge = Callable[[list, list], tuple[Optional[float], Optional[float]]]


@dataclass(frozen=True)
class PersonalizeConfig:
    adapter: str = "personal"  # store name of the user's main adapter
    variants: int = 0  # K influence-partitioned variants to train after the main adapter (0: none)
    train: TrainConfig = TrainConfig()
    variant_train: Optional[TrainConfig] = None  # defaults to ``train``
    influence: InfluenceConfig = InfluenceConfig()
    queries: int = 16  # the most recent training examples stand for "the user's recent cells"
    max_new_tokens: int = 48  # evaluation completions


def personalize(base: BaseModel, store: AdapterStore, user: str, train: Sequence[TrainingExample],
                heldout: Sequence[TrainingExample], *, config: PersonalizeConfig = PersonalizeConfig(),
                queries: Optional[Sequence[TrainingExample]] = None, progress: Optional[Progress] = None,
                cancel: Optional[threading.Event] = None, judge: Optional[Judge] = None) -> dict:
    """Run the pipeline; return a report (metrics before/after, what was published)."""
    validate_name("user", user)
    if config.variants and config.train.kind != "lora":
        # Influence gradients and the variants' mixed-adapter batches are PEFT LoRA's.
        raise ValueError(f"variants are trained from a LoRA adapter; a {config.train.kind} adapter takes variants=0")
    try:
        with store.lock(user):
            return _personalize(base, store, user, train, heldout, config=config, queries=queries,
                                progress=progress, cancel=cancel, judge=judge)
    except StoreBusy as exc:
        raise JobConflict(str(exc)) from None


def _personalize(base, store, user, train, heldout, *, config, queries, progress, cancel, judge) -> dict:
    report = (lambda *a: progress(*a)) if progress is not None else (lambda *a: None)
    staging = store.staging(user)
    try:
        candidate = staging / "candidate"
        trained = train_adapter(base, train, candidate, config=config.train, cancel=cancel,
                                progress=lambda s, t, loss: report("train", s, t, loss))
        result: dict = {"user": user, "train_examples": len(train), "heldout_examples": len(heldout),
                        "losses": trained.losses[-1:], "published": False, "version": None}
        current = store.current(user, config.adapter)
        if heldout:
            report("evaluate", 0, 2, 0.0)
            before = evaluate(base, current.path if current else None, heldout, max_new_tokens=config.max_new_tokens)
            _check(cancel)
            report("evaluate", 1, 2, 0.0)
            after = evaluate(base, candidate, heldout, max_new_tokens=config.max_new_tokens)
            report("evaluate", 2, 2, 0.0)
            if judge is not None:
                _check(cancel)
                report("judge", 0, 1, 0.0)
                rate_before, rate_after = judge(list(before.predictions), list(after.predictions))
                before = replace(before, executable_rate=rate_before)
                after = replace(after, executable_rate=rate_after)
                report("judge", 1, 1, 0.0)
            result.update(before=before.as_dict(), after=after.as_dict(),
                          before_label=current.version if current else "base")
            publish = not_worse(after, before)
            runs = "" if after.executable_rate is not None and before.executable_rate is not None else \
                " (executable rate not measured)"
            result["reason"] = (f"not worse than {result['before_label']} on {len(heldout)} held-out cells{runs}"
                                if publish else f"worse than {result['before_label']} on {len(heldout)} held-out "
                                f"cells{runs}; {result['before_label']} stays in service")
        else:
            # Nothing to judge by (one notebook): publish, and say it was not evaluated.
            after, publish = None, True
            result.update(before=None, after=None, before_label="",
                          reason="published without evaluation: no held-out notebook (it takes two or more notebooks)")
        _check(cancel)
        if not publish:
            log.info("candidate adapter for %s is worse than %s; not published", user, result["before_label"])
            return result
        report("publish", 0, 1, 0.0)
        metrics = {"heldout": after.as_dict() if isinstance(after, Metrics) else None, "trained_at": time.time(),
                   "train_examples": len(train)}
        version = store.publish(user, config.adapter, candidate, metrics=metrics)
        result.update(published=True, version=version.version)
        if config.variants > 0:
            queries = list(queries) if queries is not None else list(train[-config.queries:])
            report("influence", 0, 1, 0.0)
            scores = influence_scores(base, candidate, train, queries, config=config.influence,
                                      train_config=config.train)
            report("influence", 1, 1, 0.0)
            variants = train_variants(base, train, scores, staging / "variants", k=config.variants,
                                      config=config.variant_train or config.train, cancel=cancel,
                                      progress=lambda s, t, loss: report("variants", s, t, loss),
                                      init_adapter=candidate)
            sizes = [len(g) for g in variants.groups]
            published = store.publish(user, VARIANTS_ADAPTER, variants.folder,
                                      metrics={"groups": sizes, "k": config.variants, "trained_at": time.time(),
                                               "train_examples": len(train)})
            result.update(variants_version=published.version, variant_groups=sizes)
        return result
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check(cancel: Optional[threading.Event]) -> None:
    if cancel is not None and cancel.is_set():
        raise TrainingCancelled("cancelled")


class JobConflict(RuntimeError):
    """A personalize job for this user is already running."""


@dataclass
class Job:
    user: str
    state: str = "running"  # running | done | failed | cancelled
    phase: str = "starting"
    step: int = 0
    total: int = 0
    loss: float = 0.0
    error: str = ""
    result: Optional[dict] = None
    started: float = field(default_factory=time.time)
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _listeners: list = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        return {"user": self.user, "state": self.state, "phase": self.phase, "step": self.step, "total": self.total,
                "loss": self.loss, "error": self.error, "result": self.result}

    def wait(self, timeout: Optional[float] = None) -> bool:
        return self._done.wait(timeout)

    def cancel(self) -> None:
        self.cancel_event.set()


class JobManager:
    """At most one running job per user; finished jobs stay queryable until the next one starts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}

    def start(self, user: str, work: Callable[[Progress, threading.Event], dict], *,
              listener: Optional[Callable[[dict], None]] = None) -> Job:
        """Run ``work(progress, cancel)`` in a thread for ``user``; ``JobConflict`` if one is running."""
        validate_name("user", user)
        with self._lock:
            running = self._jobs.get(user)
            if running is not None and running.state == "running":
                raise JobConflict(f"a personalize job for {user!r} is already running ({running.phase}, step "
                                  f"{running.step}/{running.total}); wait for it or cancel it first")
            job = Job(user=user)
            if listener is not None:
                job._listeners.append(listener)
            self._jobs[user] = job
        threading.Thread(target=self._run, args=(job, work), name=f"personalize-{user}", daemon=True).start()
        return job

    def get(self, user: str) -> Optional[Job]:
        with self._lock:
            return self._jobs.get(user)

    def cancel(self, user: str) -> bool:
        job = self.get(user)
        if job is None or job.state != "running":
            return False
        job.cancel()
        return True

    def _run(self, job: Job, work) -> None:
        def progress(phase: str, step: int, total: int, loss: float) -> None:
            job.phase, job.step, job.total, job.loss = phase, step, total, loss
            self._notify(job)

        try:
            job.result = work(progress, job.cancel_event)
            job.state = "done"
        except TrainingCancelled as exc:
            job.state, job.error = "cancelled", str(exc)
        except Exception as exc:
            log.error("personalize job for %s failed", job.user, exc_info=True)
            job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            job._done.set()
            self._notify(job)

    @staticmethod
    def _notify(job: Job) -> None:
        for listener in list(job._listeners):
            try:
                listener(job.as_dict())
            except Exception:
                log.warning("personalize progress listener failed", exc_info=True)
