"""Personalization inside the Jupyter server: collect the user's data, drive their job on the
backend, judge it where the notebooks' data is, and keep the user's tabs told.

- ``summary`` / ``start``: scan the notebooks under the Jupyter root (in a thread), read the
  execution log of every running kernel, take the user's kept suggestions from the feedback store
  (``feedback.py``: accepted and still in the cell when it next ran cleanly), and build the
  examples (``dataset.py``); the summary says why each one is used, why a job would be refused
  (fewer than two notebooks: nothing to measure on) and how long it would take (``estimate.py``);
  ``start`` refuses with that reason or uploads the examples in ``personalize_start``.
- The backend pushes each step of the job (``on_job``). In phase ``judge`` it hands over the
  held-out predictions of the adapter in service and of the candidate; they are run after their
  notebooks' cells in guarded forks by a child process (``python -m jupyter_specgen.personalize
  judge``) and the rates go back in ``personalize_judged``, so that the publish rule counts them.
- Every change is pushed to the user's tabs as a ``personalize`` message (``push``).

The user is always the one the handler authenticated (``users.specgen_user``); nothing here takes a
user name from a request body.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

from specgen_backend.protocol import (
    AdapterInfo,
    AdapterRollback,
    AdapterVersions,
    Example as WireExample,
    JobState,
    PersonalizeCancel,
    PersonalizeJudged,
    PersonalizeStart,
    PersonalizeStatus,
    Versions,
    build,
)

from ..backend_client import BackendClient, BackendError
from ..kernel.messages import LogEntry
from ..kernel_client import KernelLinks
from ..protocol import DataSummary, Dropped, FeedbackReport, Personalize, RollbackRequest, Skipped, UsedExample
from .dataset import DatasetOptions, Example, build_dataset, reason_of, refusal
from .estimate import JobClock, estimate, load_timings, save_timings
from .feedback import FeedbackRecord, FeedbackStore, accept_outcome
from .notebooks import ScanOptions, scan_notebooks

__all__ = ["PersonalizeSettings", "PersonalizeService", "Collected"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PersonalizeSettings:
    enabled: bool = True  # completions sample with the user's published adapters
    variants: int = 0  # K influence-partitioned variant adapters trained after the main one (SPA)
    steps: int = 0  # optimizer steps of the main adapter; 0: the backend's default
    kind: str = "lora"  # "lora" (PEFT, additive) or "flora" (multiplicative; then no variants)
    judge: bool = True  # run the held-out predictions in forks; executable rates join the publish rule
    judge_timeout_s: float = 240.0  # a judge that takes longer answers "unknown"
    max_examples: int = 4000  # training examples one job uploads (newest notebooks first)
    # Held-out cells one job evaluates: each costs two greedy completions and, judged, two forks.
    max_heldout: int = 200
    max_upload_bytes: int = 24 << 20  # under the backend's upload limit (32 MiB); a quarter for held-out
    log_entries: int = 500  # execution-log entries asked of each running kernel
    listed_examples: int = 300  # examples the data summary lists with their reason
    scan: ScanOptions = ScanOptions()
    dataset: DatasetOptions = DatasetOptions()


@dataclass
class Collected:
    """What a job would train on, and the summary the panel shows of it."""

    summary: DataSummary
    train: list[Example]
    heldout: list[Example]


@dataclass
class _UserJob:
    """What the server remembers of a user's job: the held-out examples it uploaded (for the
    judge), whether the judge ran, the last step seen."""

    heldout: list[Example] = field(default_factory=list)
    judging: bool = False
    state: Optional[JobState] = None


class PersonalizeService:
    def __init__(self, *, client: BackendClient, root_dir: str, kernels: Optional[KernelLinks],
                 feedback: FeedbackStore, settings: PersonalizeSettings = PersonalizeSettings(),
                 push: Callable[[str, Personalize], None]):
        self.client = client
        self.root_dir = root_dir
        self.kernels = kernels
        self.feedback = feedback
        self.settings = settings
        self._push = push  # (user, message) -> the user's open tabs
        self._jobs: dict[str, _UserJob] = {}
        self._adapters: dict[str, list[AdapterInfo]] = {}
        self._tasks: set[asyncio.Task] = set()
        # The step times of the last finished job (any user's: one model, one machine), for estimates.
        self._timings_path = Path(feedback.path).parent / "personalize_timings.json"
        self._timings = load_timings(self._timings_path)
        self._clock = JobClock()

    # -- what the handlers call ------------------------------------------------------------

    async def collect(self, user: str) -> Collected:
        """Scan and build the user's examples (the scan runs in a thread: it reads files)."""
        entries = await self._log_entries()
        records = await asyncio.to_thread(self.feedback.records, user, accepted=True, outcome="kept")
        counts = await asyncio.to_thread(self.feedback.counts, user)
        scan = await asyncio.to_thread(scan_notebooks, self.root_dir, self.settings.scan)
        data = await asyncio.to_thread(build_dataset, scan.notebooks, log_entries=entries, feedback=records,
                                       options=self.settings.dataset)
        s = self.settings
        heldout, heldout_out, used = self._capped(data.heldout, count=s.max_heldout, size=s.max_upload_bytes // 4)
        train, train_out, _ = self._capped(data.train, count=s.max_examples, size=s.max_upload_bytes - used)
        left_out = heldout_out + train_out
        refused = refusal(train=train, heldout=heldout, root=str(self.root_dir))
        listed = [UsedExample(notebook=e.notebook, cell_index=e.cell_index, split=split, reason=reason_of(e),
                              preview=_preview(e.target))
                  for split, examples in (("train", train), ("heldout", heldout)) for e in examples]
        summary = DataSummary(
            root=str(self.root_dir), train=len(train), heldout=len(heldout),
            notebooks_train=data.notebooks_train, notebooks_heldout=data.notebooks_heldout,
            from_feedback=sum(e.origin == "feedback" for e in train),
            with_specs=sum(bool(e.spec) for e in [*train, *heldout]),
            feedback_accepted=counts["accepted"], feedback_rejected=counts["rejected"],
            skipped=[Skipped(path=p, reason=r) for p, r in sorted(scan.skipped.items())],
            dropped=[Dropped(reason=r, count=n) for r, n in sorted(data.dropped.items())],
            truncated=scan.truncated, left_out=left_out,
            feedback_kept=counts["kept"], feedback_changed=counts["changed"], feedback_raised=counts["raised"],
            feedback_pending=counts["pending"], feedback_unchecked=counts["unchecked"],
            examples=listed[: s.listed_examples], refusal=refused,
            estimate=None if refused else estimate(train=len(train), heldout=len(heldout), steps_setting=s.steps,
                                                   variants=self._variants(len(train)), timings=self._timings),
        )  # fmt: skip
        return Collected(summary=summary, train=train, heldout=heldout)

    async def state(self, user: str) -> Personalize:
        """The user's job and adapters, asked of the backend (which also resumes pushing steps)."""
        job = (await self.client.request(lambda id: PersonalizeStatus(id=id, user=user))).job
        versions = await self.client.request(lambda id: AdapterVersions(id=id, user=user))
        self._adapters[user] = versions.adapters
        known = self._jobs[user].state if user in self._jobs else None
        if job is None and known is not None:
            # A restarted backend knows no job: keep the last one seen, and say what became of a
            # running one rather than let it vanish.
            job = known if known.state != "running" else replace(
                known, state="failed", phase="finished", predictions_before=[], predictions_after=[],
                error="the model backend restarted while the job ran; nothing was published and the adapter "
                      "in service is unchanged")  # fmt: skip
        self._remember(user, job)
        return self._message(user)

    async def start(self, user: str) -> Personalize:
        """Collect the user's data and start their job; ``BackendError`` says why not."""
        collected = await self.collect(user)
        if collected.summary.refusal:
            raise BackendError("bad_request", collected.summary.refusal)
        s = self.settings
        heldout = collected.heldout
        variants = self._variants(len(collected.train))
        request = lambda id: PersonalizeStart(  # noqa: E731
            id=id, user=user, train=[_wire(e) for e in collected.train], heldout=[_wire(e) for e in heldout],
            variants=variants, steps=s.steps, judge=s.judge and bool(heldout), kind=s.kind)
        job = self._jobs.setdefault(user, _UserJob())
        answer = await self.client.request(request, timeout_s=120)
        job.heldout, job.judging = heldout, False
        self._remember(user, answer.job)
        log.info("personalize job of %s started: %d training, %d held-out examples, %d variants", user,
                 len(collected.train), len(heldout), variants)
        return self._message(user)

    async def cancel(self, user: str) -> Personalize:
        answer = await self.client.request(lambda id: PersonalizeCancel(id=id, user=user))
        if answer.job is not None:  # none running: the last job seen stays what the panel shows
            self._remember(user, answer.job)
        return self._message(user)

    async def rollback(self, user: str, request: RollbackRequest) -> Personalize:
        versions = await self.client.request(
            lambda id: AdapterRollback(id=id, user=user, adapter=request.adapter, to=request.to))
        self._adapters[user] = versions.adapters
        message = self._message(user)
        self._push(user, message)  # the user's other tabs
        return message

    async def record_feedback(self, user: str, report: FeedbackReport) -> str:
        """Store a report; return the outcome stored (``feedback.py`` has the rule)."""
        if report.ran is not None and not report.accepted:
            raise BackendError("bad_request", "FeedbackReport.ran is the next run of an accepted suggestion's cell; "
                               "a dismissed suggestion has none")
        if report.ran is not None and not report.key:
            raise BackendError("bad_request", "FeedbackReport.ran needs the key of the accept it settles")
        active = report.active if 0 <= report.active <= len(report.cells) else len(report.cells)
        if not report.accepted:
            outcome = "dismissed"
        elif report.ran is None:
            outcome = "pending"
        else:
            outcome = accept_outcome(report.suggestion, report.ran.source, report.ran.success)
        record = FeedbackRecord(notebook=report.path, prefix=report.prefix, suggestion=report.suggestion,
                                accepted=report.accepted, outcome=outcome, key=report.key, cell_id=report.cell_id,
                                cells_before=[{"cell_type": c.cell_type, "source": c.source} for c in report.cells[:active]])
        return await asyncio.to_thread(self.feedback.record, user, record)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- what the backend pushes -----------------------------------------------------------

    def on_job(self, state: JobState) -> None:
        """A step of a job (from the backend client's read loop): remember it, tell the tabs,
        judge when asked, refresh the adapters when it ends."""
        user = state.user
        job = self._jobs.setdefault(user, _UserJob())
        previous = job.state
        timings = self._clock.observe(state)
        if timings is not None:
            self._timings = timings
            self._spawn(asyncio.to_thread(save_timings, self._timings_path, timings))
        self._remember(user, state)
        if state.state == "running" and state.phase == "judge" and state.predictions_after and not job.judging:
            job.judging = True
            self._spawn(self._judge(user, state))
        if state.state != "running" and (previous is None or previous.state == "running"):
            self._spawn(self._finished(user))
        else:
            self._push(user, self._message(user))

    def on_backend_ready(self) -> None:
        """After a reconnect: ask again about running jobs, so their steps are pushed here again."""
        for user, job in list(self._jobs.items()):
            if job.state is not None and job.state.state == "running":
                self._spawn(self._resume(user))

    # -- internals ---------------------------------------------------------------------------

    async def _judge(self, user: str, state: JobState) -> None:
        heldout = self._jobs[user].heldout
        before = after = None
        try:
            if len(heldout) == len(state.predictions_after) == len(state.predictions_before):
                rates = await self._run_judge(heldout, state.predictions_before, state.predictions_after)
                before, after = rates.get("before"), rates.get("after")
            else:  # a job this server did not start (it restarted since): nothing to run them with
                log.warning("cannot judge %s's job: its held-out examples are not known here", user)
        except Exception:
            log.exception("judging %s's held-out predictions failed", user)
        try:
            await self.client.request(lambda id: PersonalizeJudged(id=id, user=user, before=before, after=after))
        except BackendError as exc:
            log.warning("could not hand the executable rates of %s's job to the backend: %s", user, exc.message)

    async def _run_judge(self, heldout: list[Example], before: list[str], after: list[str]) -> dict:
        """Executable rates by side (None where no held-out cell could be replayed)."""
        request = json.dumps({"examples": [asdict(e) for e in heldout], "sides": {"before": before, "after": after}})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "jupyter_specgen.personalize", "judge", "--root", str(self.root_dir),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            cwd=str(self.root_dir), env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
        try:
            out, err = await asyncio.wait_for(proc.communicate(request.encode()), self.settings.judge_timeout_s)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            log.warning("the judge took longer than %.0f s; the job goes on without executable rates",
                        self.settings.judge_timeout_s)
            return {}
        if proc.returncode != 0:
            log.error("the judge failed (exit %s): %s", proc.returncode, err.decode(errors="replace")[-2000:])
            return {}
        reports = json.loads(out)
        return {side: r["rate"] if r["evaluable"] else None for side, r in reports.items()}

    async def _finished(self, user: str) -> None:
        """A job ended: its report is in the state; the versions may have changed."""
        try:
            versions = await self.client.request(lambda id: AdapterVersions(id=id, user=user))
            if isinstance(versions, Versions):
                self._adapters[user] = versions.adapters
        except BackendError as exc:
            log.warning("could not list %s's adapters after their job: %s", user, exc.message)
        self._push(user, self._message(user))

    async def _resume(self, user: str) -> None:
        try:
            self._push(user, await self.state(user))
        except BackendError as exc:
            log.warning("could not ask about %s's job after reconnecting: %s", user, exc.message)

    async def _log_entries(self) -> list[LogEntry]:
        """The execution logs of the server's running kernels (a kernel that does not answer adds none)."""
        if self.kernels is None:
            return []
        ids = list(self.kernels.kernel_manager.list_kernel_ids())
        replies = await asyncio.gather(*(self.kernels.execution_log(k, limit=self.settings.log_entries) for k in ids),
                                       return_exceptions=True)
        return [e for r in replies if r is not None and not isinstance(r, BaseException) for e in r.entries]

    def _capped(self, examples: list[Example], *, count: int, size: int) -> tuple[list[Example], int, int]:
        """At most ``count`` examples and ``size`` bytes of them, from the newest notebooks;
        returns (kept in their order, how many were left out, bytes kept)."""
        root = Path(self.root_dir)

        def mtime(e: Example) -> float:
            try:
                return (root / e.notebook).stat().st_mtime
            except OSError:
                return 0.0

        newest_first = sorted(examples, key=lambda e: (-mtime(e), e.notebook, e.cell_index))
        kept, used = [], 0
        for example in newest_first:
            n = len(json.dumps(asdict(example)))
            if len(kept) >= count or used + n > size:
                break
            kept.append(example)
            used += n
        chosen = {id(e) for e in kept}
        return [e for e in examples if id(e) in chosen], len(examples) - len(kept), used

    def _variants(self, train: int) -> int:
        """Variants a job trains: they need two examples each and a LoRA adapter to start from."""
        s = self.settings
        return s.variants if s.kind == "lora" and train >= 2 * s.variants else 0

    def _remember(self, user: str, state: Optional[JobState]) -> None:
        self._jobs.setdefault(user, _UserJob()).state = state

    def _message(self, user: str) -> Personalize:
        job = self._jobs.get(user)
        return Personalize(reply_to=None, job=job.state if job else None, adapters=self._adapters.get(user, []),
                           enabled=self.settings.enabled)

    def _spawn(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _preview(target: str, chars: int = 80) -> str:
    """The first line of ``target`` (cut to ``chars``), what the panel lists."""
    line = next((line for line in target.splitlines() if line.strip()), "")
    return line if len(line) <= chars else line[: chars - 1] + "…"


def _wire(example: Example) -> WireExample:
    """A dataset example as the backend protocol carries it."""
    return build(WireExample, asdict(example), path="example")
