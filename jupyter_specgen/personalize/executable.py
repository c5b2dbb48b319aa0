"""Executable rate of completions: does each one run after its notebook's earlier cells?

For each example, the code cells before the target are replayed and then the completion is run,
all inside one fork guarded like candidate validation (``kernel.validate``: no file writes, no
processes, no network, time and memory limits), with the working directory set to the
notebook's folder so that relative data paths resolve. Nothing runs in the calling process.

An example whose earlier cells do not run on their own (the data is not there, a package is
missing) says nothing about the completion and is left out of the rate; the report counts it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..kernel.validate import ValidateOptions, validate
from .dataset import Example
from .notebooks import read_notebook

__all__ = ["ExecutableReport", "executable_rate"]

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
    if len(examples) != len(completions):
        raise ValueError(f"{len(examples)} examples but {len(completions)} completions")
    root = Path(root)
    ran = evaluable = skipped = 0
    for example, completion in zip(examples, completions):
        prefix = _replay(example, root)
        baseline, verdict = validate({}, ["pass\n", completion + "\n"], prefix=prefix, options=options)
        if baseline.status != "ran":
            skipped += 1
            log.debug("not evaluable (%s): %s %s", example.notebook, baseline.status, baseline.message)
            continue
        evaluable += 1
        ran += verdict.status == "ran"
    return ExecutableReport(rate=ran / evaluable if evaluable else 0.0, ran=ran, evaluable=evaluable, skipped=skipped)
