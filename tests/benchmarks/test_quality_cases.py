"""The case set of benchmarks/bench_quality.py, tested without a model: its size and make-up,
that every setup runs and every reference completion passes its own check in a plain Python
process (and an empty completion does not), and that no case text is in the embedded model's
training corpus."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from quality_cases import all_cases, notebooks, select  # noqa: E402


def _word(name: str, text: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", text) is not None


def test_at_least_120_cases_a_third_needing_live_state():
    """≥120 cases with unique ids; ≥1/3 marked live_state, most of those naming a label written nowhere in the notebook."""
    cases = all_cases()
    assert len(cases) >= 120
    assert len({c.id for c in cases}) == len(cases)
    live = [c for c in cases if c.live_state]
    assert 3 * len(live) >= len(cases), (len(live), len(cases))
    by_id = {nb.id: nb for nb in notebooks()}
    hidden = [c for c in live if by_id[c.notebook].hidden(c)]
    assert 2 * len(hidden) >= len(live), (len(hidden), len(live))


def test_live_state_cases_need_a_name_the_active_cell_does_not_write():
    """Each live_state case names what it needs; the reference writes it and the active cell does not."""
    for case in all_cases():
        if not case.live_state:
            assert not case.needs, case.id
            continue
        name = case.needs.rstrip("=").strip("'\"")
        assert name and _word(name, case.reference), case.id
        assert not _word(name, case.prefix + case.suffix), case.id


def test_cursor_positions_and_kinds_vary():
    """Mid-line and end-of-line cursors, function bodies and open blocks are all represented."""
    cases = all_cases()
    assert sum(c.cursor == "mid" for c in cases) >= 30
    assert sum(c.cursor == "end" for c in cases) >= 30
    assert sum("def " in c.prefix for c in cases) >= 6
    assert sum(re.search(r"^\s*for .*:$", c.prefix, re.M) is not None for c in cases) >= 3  # inside an open for block


def test_a_subset_spreads_over_every_notebook():
    """`--cases N` picks round robin, so 20 cases touch every notebook."""
    assert {c.notebook for c in select(len(notebooks()))} == {nb.id for nb in notebooks()}


@pytest.mark.slow
def test_setups_run_and_references_pass_their_checks():
    """In a plain Python subprocess: every setup runs, every reference passes, every empty completion fails."""
    env = {**os.environ, "PYTHONPATH": str(BENCHMARKS), "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-m", "quality_cases.selfcheck"], env=env, capture_output=True, text=True,
                          timeout=800)  # fmt: skip
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines and lines[-1]["checked"] == len(all_cases()), proc.stderr[-2000:]
    assert lines[-1]["problems"] == 0, lines[:-1]
    assert proc.returncode == 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_no_case_text_is_in_the_training_corpus():
    """No completed cursor line and no 13-token run of any case is in the default model's corpus."""
    from quality_cases.decontaminate import contamination, training_documents

    assert contamination(notebooks(), training_documents()) == {}


def test_summary_shares_are_over_the_right_cases():
    """exec|shown and check|shown divide by the shown cases, check(live) by the live ones, latencies skip the unshown."""
    import bench_quality

    def rec(shown, executed, passed, live, cold):
        return {"shown": shown, "executed": executed, "passed": passed, "exact": False, "live_state": live,
                "final": "done", "cold_ms": cold, "warm_ms": None}  # fmt: skip

    s = bench_quality.summarize([rec(True, True, True, True, 100.0), rec(True, False, False, False, 300.0),
                                 rec(False, False, False, True, None), rec(False, False, False, False, None)])  # fmt: skip
    assert (s["shown"], s["exec_of_shown"], s["check_of_shown"]) == (0.5, 0.5, 0.5)
    assert (s["check"], s["check_live"], s["exact"]) == (0.25, 0.5, 0.0)
    assert (s["cold_p50"], s["cold_p95"], s["warm_p50"], s["cold_n"]) == (100.0, 300.0, None, 2)


def test_same_does_not_take_dtype_objects_for_numbers():
    """`units_per_region = shop.groupby('region')['units'].dtype` is not the sum (it once passed the check)."""
    import pandas as pd

    from quality_cases.harness import same

    frame = pd.DataFrame({"k": ["a", "b", "a"], "v": [1, 2, 3]})
    sums = frame.groupby("k")["v"].sum()
    assert not same(frame.groupby("k")["v"].dtype, sums)
    assert same(sums, sums.astype(float)) and not same(sums, sums + 1)
