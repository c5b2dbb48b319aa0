"""The judge of a personalize job: executable rates of held-out predictions, with and without
importing the notebooks' packages once before forking.

Each held-out cell is replayed (its notebook's earlier cells, then the prediction) in guarded forks
(``jupyter_specgen.personalize.executable``). The notebooks import pandas; without the pre-import
every fork imports it again. Prints seconds per held-out cell for both, and their ratio, measured
side by side in one run on the same notebooks (the fixture notebooks of the personalization tests:
pandas, CSV files, a private helper module).

    PYTHONPATH=backend:. python benchmarks/bench_judge.py [--notebooks 12] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from jupyter_specgen.personalize.dataset import DatasetOptions, build_dataset
from jupyter_specgen.personalize.notebooks import scan_notebooks

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.personal_data import write_notebooks  # noqa: E402  (the same notebooks as the tests)

# A fresh process per run, as the server extension runs it; JUDGE_NO_PREIMPORT switches the
# pre-import off so that both variants run the same code otherwise.
_RUNNER = """
import json, sys
from jupyter_specgen.personalize import __main__ as m
if sys.argv[2] == "off":
    m._preimport = lambda examples, root: None
request = json.load(sys.stdin)
print(json.dumps(m.judge(request, root=sys.argv[1])))
"""


def _run(root: Path, request: str, preimport: bool) -> tuple[float, dict]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _RUNNER, str(root), "on" if preimport else "off"], input=request,
                         capture_output=True, text=True, check=True, cwd=root)
    return time.perf_counter() - start, json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notebooks", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_notebooks(root, count=args.notebooks)
        data = build_dataset(scan_notebooks(root).notebooks, options=DatasetOptions(context_cells=3, heldout_fraction=0.25))
        cells = data.heldout
        # "Predictions": the true cell (runs) and a typo of it (raises), as a job's two sides.
        request = json.dumps({"examples": [asdict(e) for e in cells],
                              "sides": {"before": [e.target.replace("zq_tidy", "zq_tiddy") for e in cells],
                                        "after": [e.target for e in cells]}})
        times: dict[bool, list[float]] = {True: [], False: []}
        reports = {}
        for _ in range(args.repeat):
            for preimport in (True, False):  # interleaved, so drift in machine load hits both
                seconds, reports[preimport] = _run(root, request, preimport)
                times[preimport].append(seconds)
        assert reports[True] == reports[False], (reports[True], reports[False])
        n = len(cells)
        on, off = statistics.median(times[True]), statistics.median(times[False])
        print(f"{n} held-out cells, 3 forks each (baseline, before, after), median of {args.repeat} runs")
        print(f"rates: before {reports[True]['before']['rate']:.2f}, after {reports[True]['after']['rate']:.2f} "
              f"({reports[True]['after']['evaluable']} evaluable)")
        print(f"{'':24}{'total s':>10}{'s per cell':>12}")
        print(f"{'pre-imported packages':24}{on:10.2f}{on / n:12.3f}")
        print(f"{'imports in every fork':24}{off:10.2f}{off / n:12.3f}")
        print(f"ratio (every fork / pre-imported): {off / on:.2f}x")


if __name__ == "__main__":
    main()
