"""Prompts are deterministic: specs never carry memory addresses, so identical requests give identical
specs (and prompts) in two processes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from jupyter_specgen.kernel.specs import safe_repr

_SCRIPT = """
import json, sys
import numpy as np
from dataclasses import asdict
from jupyter_specgen.kernel.specs import describe_names

class Thing:
    pass

def f(x, default=object()):
    return x

ns = {"rng": np.random.default_rng(0), "thing": Thing(), "f": f, "items": [Thing(), object()], "fn": len}
specs, _, _ = describe_names(ns, ["rng", "thing", "f", "items", "fn"], budget_ms=60_000, fork_repr=False)
print(json.dumps([asdict(s) for s in specs], sort_keys=True))
"""


def _specs_in_a_fresh_process() -> str:
    return subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, check=True).stdout


def test_identical_requests_give_identical_specs_without_addresses():
    """A numpy Generator, plain objects, functions with object defaults: no ``0x`` address in any spec,
    and two processes (different addresses) render the same text."""
    first, second = _specs_in_a_fresh_process(), _specs_in_a_fresh_process()
    assert " at 0x" not in first, first
    assert first == second
    rng = json.loads(first)[0]
    assert "Generator" in rng["type"] + rng["examples"] and "PCG64" in rng["examples"], rng
    assert " at 0x" not in safe_repr([np.random.default_rng(1), object()])
