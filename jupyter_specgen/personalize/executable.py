"""Executable rate of completions: does each one run after its notebook's earlier cells?

For each example, the code cells before the target are replayed and then the completion is run,
all inside one fork guarded like candidate validation (``kernel.validate``: no file writes, no
processes, no network, time and memory limits), with the working directory set to the
notebook's folder so that relative data paths resolve. Nothing runs in the calling process.

An example whose earlier cells do not run on their own (the data is not there, a package is
missing) says nothing about the completion and is left out of the rate; the report counts it.

``executable_rates`` judges several sets of completions of the same examples at once (the adapter
in service and the candidate of a personalize job): one fork per run, all runs of an example
started together from the same snapshot, and the notebook's baseline run once for all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..kernel.validate import ValidateOptions, validate
from .dataset import Example
from .notebooks import read_notebook

__all__ = ["ExecutableReport", "executable_rate", "executable_rates"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExecutableReport:
    rate: float  # share of evaluable examples whose completion ran; 0.0 when none was evaluable
    ran: int
    evaluable: int  # examples whose earlier cells ran on their own
    skipped: int  # examples left out (no data, not validated)


def _replay(example: Example, root: Path) -> str:
    path = root / example.notebook
    folder = path.parent.resolve()
    code = [c["source"] for c in example.cells_before if c.get("cell_type") == "code"]
    if example.cell_index >= 0 and path.is_file():
        # The example keeps only a few cells of context; the data may have been loaded earlier.
        try:
            cells = read_notebook(path).cells[: example.cell_index]
            code = [c.source for c in cells if c.cell_type == "code" and not c.errored]
        except (OSError, ValueError) as exc:
            log.debug("replaying the example's context only: %s", exc)
    # chdir first so that the cells read the notebook's own data files.
    return "\n".join([f"__import__('os').chdir({str(folder)!r})", *code, example.prefix]) + "\n"


def executable_rate(examples: Sequence[Example], completions: Sequence[str], *, root: str | Path,
                    options: ValidateOptions = ValidateOptions(timeout_s=5.0)) -> ExecutableReport:
    """Run ``completions[i]`` after the cells before ``examples[i]`` (notebooks under ``root``)."""
    return executable_rates(examples, {"": completions}, root=root, options=options)[""]


def executable_rates(examples: Sequence[Example], sides: Mapping[str, Sequence[str]], *, root: str | Path,
                     options: ValidateOptions = ValidateOptions(timeout_s=5.0),
                     progress: Optional[Callable[[int, int], None]] = None) -> dict[str, ExecutableReport]:
    """``executable_rate`` of each side's completions (``sides[name][i]`` completes ``examples[i]``)."""
    for name, completions in sides.items():
        if len(completions) != len(examples):
            raise ValueError(f"{len(examples)} examples but {len(completions)} completions in {name!r}")
    root = Path(root)
    names = list(sides)
    ran = dict.fromkeys(names, 0)
    evaluable = skipped = 0
    for i, example in enumerate(examples):
        prefix = _replay(example, root)
        runs = ["pass\n", *(sides[name][i] + "\n" for name in names)]
        baseline, *verdicts = validate({}, runs, prefix=prefix, options=options)
        if progress is not None:
            progress(i + 1, len(examples))
        if baseline.status != "ran":
            skipped += 1
            log.debug("not evaluable (%s): %s %s", example.notebook, baseline.status, baseline.message)
            continue
        evaluable += 1
        for name, verdict in zip(names, verdicts):
            ran[name] += verdict.status == "ran"
    return {name: ExecutableReport(rate=ran[name] / evaluable if evaluable else 0.0, ran=ran[name],
                                   evaluable=evaluable, skipped=skipped) for name in names}
