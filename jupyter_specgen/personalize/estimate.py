"""How long a personalize job will take, said before it starts ("about 2 minutes").

    seconds = loading + steps × seconds_per_step + heldout × seconds_per_heldout

- ``steps``: planned exactly as the backend's training process will plan them
  (``specgen_backend.training.train.planned_steps`` with the server's ``personalize_steps``, 0 meaning
  "from the data": 20 passes, 20 to 100 steps), plus ``variants × variant_steps`` when variants train.
- ``seconds_per_step``, ``seconds_per_heldout`` and ``loading``: measured on this server's last job
  that finished (:class:`JobClock` times its phases from the steps the backend pushes: the time in
  "train" and "variants" over the steps they took; "evaluate" and "judge" over the held-out cells;
  "starting" is loading the model into the training process). They are kept in a small JSON file
  beside the feedback store, so a restart keeps them. Before any job finished here they are first
  guesses (:data:`FIRST_GUESS`, a step of a small model on one CPU thread), and the estimate says so.

The step time depends on the model and the machine, not on the user, so one measurement serves
every user of the server. The training process takes half the CPU threads
(``training_threads``), which is what the measurement saw; a busier machine makes it an underestimate.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

from specgen_backend.protocol import JobState
from specgen_backend.training.runner import RunnerConfig
from specgen_backend.training.train import TrainConfig, planned_steps

from ..protocol import Estimate

__all__ = ["Timings", "FIRST_GUESS", "JobClock", "estimate", "say_duration", "load_timings", "save_timings"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timings:
    seconds_per_step: float
    seconds_per_heldout: float  # two greedy completions (before, after) and their judging forks
    loading: float  # the training process loads the base model and the examples
    measured: bool = False


# A step of the embedded model on a few short examples with one thread took 0.6 s on 2 busy cores;
# a held-out cell costs two greedy completions and, judged, two forks.
FIRST_GUESS = Timings(seconds_per_step=1.0, seconds_per_heldout=3.0, loading=20.0, measured=False)

_STEPPED = ("train", "variants")
_EVALUATING = ("evaluate", "judge")


def say_duration(seconds: float) -> str:
    """Rounded the way a person says it: "under a minute", "about 2 minutes", "about 1 hour 10 minutes"."""
    if seconds < 50:
        return "under a minute"
    minutes = max(1, round(seconds / 60))
    if minutes < 60:
        return f"about {minutes} minute{'s' if minutes != 1 else ''}"
    hours, rest = divmod(minutes, 60)
    rest = int(round(rest / 5) * 5)
    return f"about {hours} hour{'s' if hours != 1 else ''}" + (f" {rest} minutes" if rest else "")


def estimate(*, train: int, heldout: int, steps_setting: int = 0, variants: int = 0,
             variant_steps: int = RunnerConfig.variant_steps, timings: Timings = FIRST_GUESS) -> Estimate:
    """The estimate of a job on ``train`` training and ``heldout`` held-out examples."""
    steps = planned_steps(TrainConfig(steps=steps_setting), train) + variants * variant_steps
    seconds = timings.loading + steps * timings.seconds_per_step + heldout * timings.seconds_per_heldout
    source = ("measured on this server's last job" if timings.measured
              else "a first guess until a job has finished on this server")
    how = (f"{steps} training steps × {timings.seconds_per_step:.2g} s a step, {heldout} held-out cells × "
           f"{timings.seconds_per_heldout:.2g} s to measure each, {timings.loading:.0f} s to load the model; "
           f"the times are {source}")
    return Estimate(seconds=round(seconds, 1), text=say_duration(seconds), steps=steps,
                    seconds_per_step=timings.seconds_per_step, measured=timings.measured, how=how)


class JobClock:
    """Times the phases of the jobs the backend pushes (any user: one model, one machine).

    ``observe`` each pushed state with the time it arrived; when a job ends done, ``finished``
    returns the timings it measured (None if it told too little: no step, or it failed)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._jobs: dict[str, dict] = {}  # user -> {"started", "phase", "since", "seconds": {phase: s}, "steps"}

    def observe(self, state: JobState, now: Optional[float] = None) -> Optional[Timings]:
        now = self._clock() if now is None else now
        job = self._jobs.get(state.user)
        if job is None or job["started"] != state.started:
            job = self._jobs[state.user] = {"started": state.started, "phase": state.phase, "since": now,
                                            "seconds": {}, "steps": {}}
        if state.phase != job["phase"]:
            job["seconds"][job["phase"]] = job["seconds"].get(job["phase"], 0.0) + now - job["since"]
            job["phase"], job["since"] = state.phase, now
        if state.phase in _STEPPED and state.total > 0:
            job["steps"][state.phase] = state.total
        if state.state == "running":
            return None
        del self._jobs[state.user]
        if state.state != "done" or state.report is None:
            return None
        seconds, steps = job["seconds"], sum(job["steps"].values())
        stepping = sum(seconds.get(p, 0.0) for p in _STEPPED)
        if steps <= 0 or stepping <= 0:
            return None
        heldout = state.report.heldout_examples
        evaluating = sum(seconds.get(p, 0.0) for p in _EVALUATING)
        return Timings(
            seconds_per_step=round(stepping / steps, 3),
            seconds_per_heldout=round(evaluating / heldout, 3) if heldout else FIRST_GUESS.seconds_per_heldout,
            loading=round(seconds.get("starting", FIRST_GUESS.loading), 1), measured=True,
        )


def load_timings(path: Path) -> Timings:
    """The timings saved at ``path``, or the first guesses (missing or unreadable file)."""
    try:
        data = json.loads(path.read_text())
        timings = Timings(**{k: data[k] for k in ("seconds_per_step", "seconds_per_heldout", "loading")},
                          measured=True)
    except (OSError, ValueError, KeyError, TypeError):
        return FIRST_GUESS
    if not all(math.isfinite(v) and v >= 0 for v in (timings.seconds_per_step, timings.seconds_per_heldout,
                                                     timings.loading)):
        return FIRST_GUESS
    return timings


def save_timings(path: Path, timings: Timings) -> None:
    """Write atomically (temp file + replace); a failure is logged, never raised."""
    try:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(asdict(timings)))
        tmp.replace(path)
    except OSError:
        log.warning("could not save the personalize timings to %s", path, exc_info=True)
