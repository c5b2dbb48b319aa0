"""Validation with pyarrow-backed data: a fork's first arrow allocation must not fail under the
address-space limit (pyarrow's own allocator reserves a wide range when its pool is first made)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

PROBE = r"""
import sys
sys.path[:0] = [{repo!r}, {backend!r}]
import pandas  # imports pyarrow when it is installed; its memory pool is not made yet
from jupyter_specgen.kernel.validate import validate
cell = "import io\nimport pandas as pd\ndf = pd.read_csv(io.StringIO('region,units\\nnorth,3\\nsouth,5\\n'))\ndf['region'].str.upper().tolist()"
verdict = validate({{}}, [cell])[0]
print(verdict.status, verdict.error_type, verdict.message)
"""


def test_the_first_arrow_allocation_in_a_fork_succeeds():
    """A frame read in a validation fork of a process whose arrow pool was never used: ran, not ArrowMemoryError."""
    pytest.importorskip("pyarrow")
    code = PROBE.format(repo=str(REPO), backend=str(REPO / "backend"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[0] == "ran", out.stdout
