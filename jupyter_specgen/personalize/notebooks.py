"""Find the user's notebooks under the Jupyter root and read their cells, within caps.

What is skipped and why: checkpoint folders (copies of notebooks already counted), hidden folders
(environments, caches), files over ``max_file_bytes`` (mostly outputs: plots, big frames), and
notebooks that nbformat cannot read. Outputs are read only to know whether a cell ran cleanly.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

__all__ = ["ScanOptions", "NotebookCell", "ScannedNotebook", "ScanReport", "scan_notebooks", "read_notebook"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScanOptions:
    max_files: int = 500  # notebooks read at most (sorted by path, so the choice is stable)
    max_file_bytes: int = 5_000_000  # bigger files are mostly outputs; skipped whole
    max_cell_chars: int = 20_000  # longer cells are generated code or data; dropped
    max_depth: int = 12  # folder levels below the root


@dataclass(frozen=True)
class NotebookCell:
    cell_type: str  # "code" | "markdown" | "raw"
    source: str
    executed: bool = False  # a code cell with an execution count
    errored: bool = False  # a code cell with an "error" output


@dataclass(frozen=True)
class ScannedNotebook:
    path: str  # relative to the root, with "/" separators
    cells: tuple[NotebookCell, ...]


@dataclass
class ScanReport:
    """What a scan used and what it left out (shown to the user before training)."""

    notebooks: list[ScannedNotebook] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # relative path -> reason
    truncated: bool = False  # stopped at ``max_files``


def read_notebook(path: Path, *, options: ScanOptions = ScanOptions(), relative: Optional[str] = None) -> ScannedNotebook:
    """The cells of one notebook; raises ``ValueError`` with the reason if it cannot be used."""
    import nbformat

    size = path.stat().st_size
    if size > options.max_file_bytes:
        raise ValueError(f"{size} bytes, over the {options.max_file_bytes}-byte cap")
    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception as exc:  # nbformat raises several unrelated types for a bad file
        raise ValueError(f"not a readable notebook: {exc}") from None
    cells = []
    for cell in nb.cells:
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(source)
        if len(source) > options.max_cell_chars:
            continue
        cell_type = cell.get("cell_type", "code")
        outputs = cell.get("outputs", []) if cell_type == "code" else []
        cells.append(NotebookCell(
            cell_type=cell_type,
            source=source,
            executed=cell_type == "code" and cell.get("execution_count") is not None,
            errored=any(o.get("output_type") == "error" for o in outputs),
        ))
    return ScannedNotebook(path=relative or path.name, cells=tuple(cells))


def scan_notebooks(root: str | os.PathLike, options: ScanOptions = ScanOptions()) -> ScanReport:
    """Every usable ``.ipynb`` under ``root`` (sorted, capped), and why the others were skipped."""
    root = Path(root).resolve()
    report = ScanReport()
    candidates: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        depth = 0 if str(rel_dir) == "." else len(rel_dir.parts)
        # Pruning in place keeps os.walk out of checkpoints, hidden folders and deep trees.
        dirnames[:] = sorted(d for d in dirnames
                             if not d.startswith(".") and d != "__pycache__" and depth < options.max_depth)
        for name in filenames:
            if name.endswith(".ipynb") and not name.startswith("."):
                candidates.append(Path(dirpath) / name)
    candidates.sort()
    for path in candidates:
        rel = path.relative_to(root).as_posix()
        if len(report.notebooks) >= options.max_files:
            report.truncated = True
            break
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            report.skipped[rel] = "a link to outside the Jupyter root"
            continue
        try:
            report.notebooks.append(read_notebook(path, options=options, relative=rel))
        except (OSError, ValueError) as exc:
            report.skipped[rel] = str(exc)
            log.debug("skipping %s: %s", rel, exc)
    return report
