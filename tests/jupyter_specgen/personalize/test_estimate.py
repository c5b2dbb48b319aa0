"""The estimate shown before a job starts: planned steps times a step's time, measured on the last job
that finished here (a first guess before), and it grows with the steps the data plans."""

from __future__ import annotations

import asyncio
import os

import nbformat
from nbformat.v4 import new_code_cell, new_notebook
from specgen_backend.protocol import JobReport, JobState

from jupyter_specgen.personalize.dataset import DatasetOptions
from jupyter_specgen.personalize.estimate import (FIRST_GUESS, JobClock, Timings, estimate, load_timings,
                                                  say_duration)
from jupyter_specgen.personalize.feedback import FeedbackStore
from jupyter_specgen.personalize.service import PersonalizeService, PersonalizeSettings


def test_estimate_scales_with_the_planned_steps_and_says_how():
    """2 examples plan 20 steps, 40 plan 100: five times the stepping time; the text is a rounded duration."""
    timings = Timings(seconds_per_step=1.2, seconds_per_heldout=2.0, loading=10.0, measured=True)
    small = estimate(train=2, heldout=3, timings=timings)
    large = estimate(train=40, heldout=3, timings=timings)
    assert (small.steps, large.steps) == (20, 100)
    assert small.seconds == 10 + 20 * 1.2 + 3 * 2.0 and large.seconds == 10 + 100 * 1.2 + 3 * 2.0
    assert small.text == "under a minute" and large.text == "about 2 minutes"
    assert "100 training steps × 1.2 s a step" in large.how and "measured" in large.how
    assert estimate(train=40, heldout=3, steps_setting=300, timings=timings).steps == 300  # the server's setting
    assert estimate(train=40, heldout=3, variants=2, variant_steps=60, timings=timings).steps == 220
    first = estimate(train=40, heldout=3)
    assert not first.measured and "first guess" in first.how
    assert say_duration(3 * 3600 + 20 * 60) == "about 3 hours 20 minutes" and say_duration(61) == "about 1 minute"


def _state(phase, step=0, total=0, state="running", heldout=0):
    report = JobReport(published=True, heldout_examples=heldout) if state == "done" else None
    return JobState(user="alice", state=state, phase=phase, step=step, total=total, started=100.0, report=report)


def test_the_clock_measures_a_step_from_the_phases_a_job_pushes():
    """Loading 5 s, 20 steps in 10 s, 4 held-out cells measured in 8 s: 0.5 s a step, 2 s a cell."""
    clock = JobClock()
    pushes = [(0, _state("starting")), (5, _state("train", 1, 20)), (10, _state("train", 10, 20)),
              (15, _state("evaluate")), (20, _state("judge")), (23, _state("publish")),
              (24, _state("finished", state="done", heldout=4))]
    results = [clock.observe(state, now=t) for t, state in pushes]
    assert results[:-1] == [None] * (len(pushes) - 1)
    assert results[-1] == Timings(seconds_per_step=0.5, seconds_per_heldout=2.0, loading=5.0, measured=True)
    failed = JobClock()
    for t, state in [(0, _state("starting")), (5, _state("train", 1, 20))]:
        failed.observe(state, now=t)
    assert failed.observe(_state("finished", state="failed"), now=9) is None  # a failed job measures nothing


def _notebooks(root, names):
    for i, name in enumerate(names):
        cells = [new_code_cell(f"{name}_{j} = load('{name}', {j})", execution_count=j + 1) for j in range(3)]
        nbformat.write(new_notebook(cells=cells), str(root / f"{name}.ipynb"))
        os.utime(root / f"{name}.ipynb", (1e6 + i, 1e6 + i))


class _NoBackend:
    """The backend client of a server whose backend is away: every request fails, as a real one would."""

    async def request(self, *args, **kwargs):
        from jupyter_specgen.backend_client import BackendError

        raise BackendError("backend_unavailable", "no backend in this test")


def test_the_summary_carries_the_estimate_and_a_measured_job_replaces_the_first_guess(tmp_path):
    """Two notebooks: an estimate in the summary; after a job's pushes reach the service, it uses that
    job's step time, also in a new service on the same folder (a restarted server)."""
    root = tmp_path / "root"
    root.mkdir()
    _notebooks(root, ["sales", "visits"])

    def service():
        return PersonalizeService(client=_NoBackend(), root_dir=str(root), kernels=None,
                                  feedback=FeedbackStore(tmp_path / "feedback.sqlite"),
                                  settings=PersonalizeSettings(dataset=DatasetOptions(heldout_fraction=0.5)),
                                  push=lambda *_: None)

    first = service()
    summary = asyncio.run(first.collect("alice")).summary
    assert summary.refusal == "" and summary.estimate is not None
    assert summary.estimate.steps == 20 and summary.estimate.seconds_per_step == FIRST_GUESS.seconds_per_step

    now = [0.0]
    first._clock = JobClock(clock=lambda: now[0])  # noqa: SLF001 - the pushes' arrival times, made up

    async def a_job():
        for t, state in [(0, _state("starting")), (2, _state("train", 1, 20)), (42, _state("evaluate")),
                         (48, _state("finished", state="done", heldout=3))]:
            now[0] = t
            first.on_job(state)
        await asyncio.wait_for(asyncio.gather(*first._tasks), 30)  # noqa: SLF001 - the save and the refresh

    asyncio.run(a_job())
    measured = asyncio.run(first.collect("alice")).summary.estimate
    assert measured.measured and measured.seconds_per_step == 2.0 and measured.seconds == 2 + 20 * 2.0 + 3 * 2.0
    assert load_timings(tmp_path / "personalize_timings.json").seconds_per_step == 2.0
    again = asyncio.run(service().collect("alice")).summary.estimate
    assert again.measured and again.seconds == measured.seconds
