"""Personalize jobs of the backend server: each one a child process, watched from the event loop.

A job runs ``python -m specgen_backend.training personalize --events`` (see ``__main__.py``) on
the examples of the request, written to a private folder first. A child process, not a thread:
training holds the GIL and memory for minutes, and a job that crashes (out of memory, a bug, a
kill) must take nothing down with it. The store only changes when the child publishes, atomically,
so whatever happens to the child the adapter in service stays intact; the runner then reports the
job as failed with the child's last words.

At most one job per user runs: ``start`` refuses a second one here (``JobConflict``), and the
child's store lock refuses one started by another process. ``on_published(user)`` is called
after a job published, so that the server hot-loads the new adapters.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Awaitable, Callable, Optional

from ..protocol import Example, JobReport, JobState, PersonalizeStart, build
from .jobs import JobConflict
from .store import AdapterStore, validate_name

__all__ = ["RunnerConfig", "JobRunner", "JobConflict"]

log = logging.getLogger(__name__)

Notify = Callable[[JobState], None]


@dataclass(frozen=True)
class RunnerConfig:
    model: str  # the base model: the serving model's hub id or folder
    store_root: str  # the adapter store (the backend's --adapter-root)
    device: str = "cpu"  # where jobs train
    steps: int = 0  # optimizer steps of the main adapter when the request says 0 (0: planned from the data)
    variant_steps: int = 60
    max_variants: int = 8  # SPA: diversity saturates around 8 adapters
    judge_timeout_s: float = 300.0  # how long a job waits for the client's executable rates
    fim: str = "auto"  # the serving engine's FIM setting: the adapter learns the prompts it is served with
    python: str = sys.executable
    extra_env: dict = field(default_factory=dict)


@dataclass
class _Running:
    state: JobState
    notify: Notify
    process: Optional[asyncio.subprocess.Process] = None
    task: Optional[asyncio.Task] = None
    judge_timer: Optional[asyncio.TimerHandle] = None
    stderr: deque = field(default_factory=lambda: deque(maxlen=40))
    cancelled: bool = False


class JobRunner:
    def __init__(self, config: RunnerConfig, *, on_published: Callable[[str], Awaitable[None]]):
        self.config = config
        self.store = AdapterStore(config.store_root)
        self._on_published = on_published
        self._jobs: dict[str, _Running] = {}

    # -- requests --------------------------------------------------------------------------

    async def start(self, request: PersonalizeStart, notify: Notify) -> JobState:
        """Start ``request.user``'s job; ``JobConflict`` if one runs, ``ValueError`` for bad input."""
        user = validate_name("user", request.user)
        running = self._jobs.get(user)
        if running is not None and running.state.state == "running":
            raise JobConflict(f"a personalize job for {user!r} is already running ({running.state.phase}); "
                              f"wait for it or cancel it first")
        if not request.train:
            raise ValueError("no training examples: personalize needs at least one notebook cell that ran cleanly")
        if not 0 <= request.variants <= self.config.max_variants:
            raise ValueError(f"variants must be between 0 and {self.config.max_variants}, not {request.variants}")
        if request.variants and request.kind != "lora":
            raise ValueError(f"variants are trained from a LoRA adapter: a {request.kind} job takes variants 0")
        if request.variants and len(request.train) < 2 * request.variants:
            raise ValueError(f"{len(request.train)} training examples are too few for {request.variants} variants "
                             f"(each needs two or more); use fewer variants or more notebooks")
        job = _Running(state=JobState(user=user, state="running", phase="starting", started=time.time()), notify=notify)
        self._jobs[user] = job
        job.task = asyncio.create_task(self._run(job, request))
        return job.state

    def status(self, user: str) -> Optional[JobState]:
        job = self._jobs.get(user)
        return job.state if job is not None else None

    def cancel(self, user: str) -> Optional[JobState]:
        """Ask the running job to stop (it ends as ``cancelled``); the current state, or None."""
        job = self._jobs.get(user)
        if job is None:
            return None
        if job.state.state == "running":
            job.cancelled = True
            if job.process is not None and job.process.returncode is None:
                job.process.send_signal(signal.SIGTERM)  # the child cancels between steps
        return job.state

    def judged(self, user: str, before: Optional[float], after: Optional[float]) -> Optional[JobState]:
        """Hand the executable rates to a job waiting in phase ``judge``."""
        job = self._jobs.get(user)
        if job is None or job.state.state != "running" or job.state.phase != "judge" or job.judge_timer is None:
            raise ValueError(f"no personalize job of {user!r} is waiting for executable rates")
        self._answer_judge(job, before, after)
        return job.state

    def pid(self, user: str) -> Optional[int]:
        """The process id of ``user``'s running job (for operators, and tests that kill it)."""
        job = self._jobs.get(user)
        return job.process.pid if job is not None and job.process is not None else None

    async def close(self) -> None:
        """Stop every job (nothing half-done is published: the store changes only atomically)."""
        for job in list(self._jobs.values()):
            if job.process is not None and job.process.returncode is None:
                job.process.kill()
                await job.process.wait()
            if job.task is not None:
                job.task.cancel()
                await asyncio.gather(job.task, return_exceptions=True)

    # -- the child -------------------------------------------------------------------------

    async def _run(self, job: _Running, request: PersonalizeStart) -> None:
        user = job.state.user
        folder = Path(tempfile.mkdtemp(prefix=f"specgen-job-{user}-"))
        try:
            args = self._write_inputs(folder, request)
            env = {**os.environ, **self.config.extra_env, "PYTHONUNBUFFERED": "1"}
            job.process = await asyncio.create_subprocess_exec(
                self.config.python, "-m", "specgen_backend.training", *args,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env=env, limit=64 << 20, preexec_fn=_die_with_parent)  # fmt: skip
            if job.cancelled:
                job.process.send_signal(signal.SIGTERM)
            errors = asyncio.create_task(self._read_stderr(job))
            outcome = await self._read_events(job)
            code = await job.process.wait()
            await errors
            await self._finish(job, outcome, code)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("personalize job of %s failed", user)
            self._update(job, state="failed", phase="finished", error=f"the job could not run: {exc!r}")
        finally:
            if job.judge_timer is not None:
                job.judge_timer.cancel()
            shutil.rmtree(folder, ignore_errors=True)

    def _write_inputs(self, folder: Path, request: PersonalizeStart) -> list[str]:
        def write(name: str, examples: list[Example]) -> str:
            path = folder / name
            with open(path, "w", encoding="utf-8") as f:
                for e in examples:
                    f.write(json.dumps(asdict(e)) + "\n")
            return str(path)

        c = self.config
        args = ["personalize", "--events", "--base", c.model, "--user", request.user, "--store", c.store_root,
                "--data", write("train.jsonl", request.train), "--device", c.device,
                "--steps", str(request.steps or c.steps), "--variants", str(request.variants),
                "--variant-steps", str(c.variant_steps), "--kind", request.kind, "--fim", c.fim]
        if request.heldout:
            args += ["--heldout", write("heldout.jsonl", request.heldout)]
        if request.judge:
            args.append("--judge")
        return args

    async def _read_stderr(self, job: _Running) -> None:
        assert job.process is not None and job.process.stderr is not None
        async for line in job.process.stderr:
            text = line.decode("utf-8", "replace").rstrip()
            job.stderr.append(text)
            log.debug("job %s: %s", job.state.user, text)

    async def _read_events(self, job: _Running) -> Optional[dict]:
        """Follow the child's events; return its final ``result``/``error`` event, if it sent one."""
        assert job.process is not None and job.process.stdout is not None
        outcome = None
        async for line in job.process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                log.warning("job %s printed a line that is not an event: %r", job.state.user, line[:200])
                continue
            kind = event.get("event")
            if kind == "progress":
                self._update(job, phase=str(event.get("phase", "")), step=int(event.get("step", 0)),
                             total=int(event.get("total", 0)), loss=float(event.get("loss", 0.0)))
            elif kind == "judge":
                self._update(job, phase="judge", step=0, total=1, loss=0.0,
                             predictions_before=[str(t) for t in event.get("before", [])],
                             predictions_after=[str(t) for t in event.get("after", [])])
                # Without an answer in time the job goes on without executable rates.
                loop = asyncio.get_running_loop()
                job.judge_timer = loop.call_later(self.config.judge_timeout_s, self._answer_judge, job, None, None)
            elif kind in ("result", "error"):
                outcome = event
        return outcome

    def _answer_judge(self, job: _Running, before: Optional[float], after: Optional[float]) -> None:
        if job.judge_timer is not None:
            job.judge_timer.cancel()
            job.judge_timer = None
        if job.process is None or job.process.stdin is None or job.process.returncode is not None:
            return
        job.process.stdin.write((json.dumps({"before": before, "after": after}) + "\n").encode())
        self._update(job, predictions_before=[], predictions_after=[])

    async def _finish(self, job: _Running, outcome: Optional[dict], code: int) -> None:
        user = job.state.user
        if outcome is not None and outcome.get("event") == "result":
            report = build(JobReport, outcome.get("report") or {}, path="report")
            if report.published:
                try:
                    await self._on_published(user)
                except Exception as exc:  # the adapter is published; serving it failed
                    log.exception("hot-loading %s's new adapter failed", user)
                    report = replace(report, reason=f"{report.reason}; not hot-loaded: {exc}")
            self._update(job, state="done", phase="finished", report=report)
            return
        kind = (outcome or {}).get("kind")
        if job.cancelled or kind == "cancelled":
            self._update(job, state="cancelled", phase="finished", error="cancelled; nothing was published")
            return
        if outcome is not None:
            message = str(outcome.get("message", ""))
        else:
            last = next((line for line in reversed(job.stderr) if line.strip()), "")
            how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            message = f"the training process ended without a result ({how}){': ' + last if last else ''}"
        log.error("personalize job of %s failed: %s", user, message)
        self._update(job, state="failed", phase="finished",
                     error=f"{message}; the adapter in service is unchanged")

    def _update(self, job: _Running, **changes) -> None:
        job.state = replace(job.state, **changes)
        try:
            job.notify(job.state)
        except Exception:
            log.warning("personalize progress listener failed", exc_info=True)


def _die_with_parent() -> None:
    """(in the child, before exec) Linux: SIGKILL when the backend dies, so that no orphaned job
    trains on, publishes behind a restarted backend's back, or keeps the user's store lock."""
    if sys.platform != "linux":
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
