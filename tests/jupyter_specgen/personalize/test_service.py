"""What one personalize job uploads: within its caps, from the newest notebooks, the rest counted."""

from __future__ import annotations

import asyncio
import os

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from jupyter_specgen.personalize.dataset import DatasetOptions
from jupyter_specgen.personalize.feedback import FeedbackStore
from jupyter_specgen.personalize.service import PersonalizeService, PersonalizeSettings


def _notebook(path, name: str, mtime: float) -> None:
    cells = [new_code_cell(f"{name}_a = load('{name}')", execution_count=1),
             new_code_cell(f"{name}_b = {name}_a.dropna()", execution_count=2)]
    nbformat.write(new_notebook(cells=cells), str(path))
    os.utime(path, (mtime, mtime))


def _service(root, tmp_path, **settings) -> PersonalizeService:
    options = DatasetOptions(heldout_fraction=0.0)  # everything in train: the caps are what is tested
    return PersonalizeService(client=None, root_dir=str(root), kernels=None,
                              feedback=FeedbackStore(tmp_path / "feedback.sqlite"),
                              settings=PersonalizeSettings(dataset=options, **settings), push=lambda *_: None)


def test_upload_keeps_the_newest_notebooks_and_counts_what_it_leaves_out(tmp_path):
    """Three examples allowed of six: the newest notebook's two and one of the next; three left out."""
    root = tmp_path / "root"
    root.mkdir()
    for i, name in enumerate(["old", "mid", "new"]):
        _notebook(root / f"{name}.ipynb", name, 1_000_000 + i * 1000)
    collected = asyncio.run(_service(root, tmp_path, max_examples=3).collect("alice"))
    assert collected.summary.train == 3 and collected.summary.left_out == 3
    assert sorted(e.notebook for e in collected.train) == ["mid.ipynb", "new.ipynb", "new.ipynb"]

    everything = asyncio.run(_service(root, tmp_path).collect("alice"))
    assert everything.summary.train == 6 and everything.summary.left_out == 0
    # Each example is a JSON object of about 200 bytes: 800 bytes hold three of them.
    tight = asyncio.run(_service(root, tmp_path, max_upload_bytes=800).collect("alice"))
    assert 1 <= tight.summary.train < 6 and tight.summary.train + tight.summary.left_out == 6
    assert [e.notebook for e in tight.train].count("new.ipynb") == 2 and "old.ipynb" not in {e.notebook for e in tight.train}
