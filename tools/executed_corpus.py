"""Execution-grounded notebooks for the default model (GIFT4Code style), built from the usage
examples that data-science packages ship in their docstrings.

Each docstring with ``>>>`` examples is a little notebook (``corpus.docstring_notebooks``: its
summary as a markdown cell, then code cells). Here it is *run*, cell after cell, in a worker
process (a throw-away working directory and home, a per-notebook alarm, no network, a memory
cap); before each code cell runs, the values it can read are described by the kernel's
own ``describe_names`` and the cell is rendered as the completion prompt would render it at that
moment: ``grounded_context`` puts each dataframe's schema after its defining cell and the spec
block above the cursor, ``linearise`` turns it into text. So the model sees, at training time,
exactly the prompt shape it is given in a live notebook, and learns to use the columns,
attributes and shapes the prompt shows.

Two forms of one target cell:

- causal: the notebook up to the end of the target cell (the prompt when the cursor is at the
  end of the cell);
- fill-in-the-middle, as the backend builds FIM prompts (``<|fim_prefix|>`` head
  ``<|fim_suffix|>`` tail ``<|fim_middle|>`` middle): the cursor at a random point of a random
  line of the target cell, the middle the rest of that line (what a mid-line completion writes
  before it stops at the end of the statement), the tail the rest of the cell.

A cell that raises ends its notebook (what follows depends on it); cells up to it are kept.
Notebooks whose text overlaps the quality benchmark's cases (its 13-gram decontamination) are
dropped. Nothing is downloaded; the packages read are those installed, under a permissive
licence (``corpus._license_of``).

    python tools/executed_corpus.py --out tools/runs/executed.jsonl   # a few minutes on 2 cores
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import multiprocessing
import os
import random
import resource
import signal
import socket
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import (  # noqa: E402
    CELL_SEPARATOR,
    SourceInfo,
    _heldout,
    _package_files,
    _read,
    docstring_notebooks,
    permissive_distributions,
)

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO, REPO / "backend"):
    if str(extra) not in sys.path:
        sys.path.insert(1, str(extra))

log = logging.getLogger("executed_corpus")

__all__ = ["EXEC_PACKAGES", "ExecutedDoc", "build", "load", "render_forms", "run_notebook", "targets"]

# Packages whose docstring examples are run: the libraries notebooks use most.
EXEC_PACKAGES = ("pandas", "numpy", "scipy", "scikit-learn", "matplotlib", "seaborn")
FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE = "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"
NOTEBOOK_TIMEOUT_S = 6
MEMORY_CAP_BYTES = 3 << 30
TARGETS_PER_NOTEBOOK = 3  # one notebook's context, several cells to complete in it
SPEC_BUDGET_MS = 200.0  # what the extension gives the kernel for specs (SpecgenExtension default)


@dataclass(frozen=True)
class ExecutedDoc:
    text: str
    origin: str  # "<package>/<path>::<notebook index>"
    form: str  # "causal" | "fim"
    heldout: bool
    specs: int  # specs rendered into it


def _split(notebook: str) -> tuple[str, list[str]]:
    header, *cells = notebook.split(CELL_SEPARATOR)
    return header, cells


def _no_network(*args, **kwargs):
    raise OSError("no network for docstring examples (tools/executed_corpus.py)")


def _limit_worker() -> None:
    """A worker's fence against what examples do: a memory cap, no network (examples that fetch
    datasets fail and end their notebook), and a throw-away folder as working directory and home,
    so files they write (``to_csv``, dataset caches, matplotlib's config) land there."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP_BYTES, MEMORY_CAP_BYTES))
    socket.setdefaulttimeout(1.0)
    socket.socket.connect = _no_network
    socket.create_connection = _no_network
    scratch = tempfile.mkdtemp(prefix="specgen-exec-")
    os.environ.update(MPLBACKEND="Agg", HOME=scratch, SCIKIT_LEARN_DATA=scratch, MPLCONFIGDIR=scratch)
    os.chdir(scratch)
    sys.stdin = io.StringIO()  # an example that asks for input gets EOF, not a hang
    warnings.simplefilter("ignore")


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def run_notebook(notebook: str) -> list[tuple[str, list]]:
    """Run the code cells of ``notebook`` in a fresh namespace; returns, for each cell that ran,
    ``(source, specs of what it can read before it runs)``. Stops at the first cell that raises."""
    from jupyter_specgen.kernel.names import referenced_names
    from jupyter_specgen.kernel.specs import describe_names

    _, cells = _split(notebook)
    namespace: dict = {"__name__": "__main__"}
    done: list[tuple[str, list]] = []
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(NOTEBOOK_TIMEOUT_S)
    sink = io.StringIO()
    try:
        for index, cell in enumerate(cells):
            code = "\n".join([*cells[:index], cell])
            specs, _, _ = describe_names(namespace, referenced_names(code), budget_ms=SPEC_BUDGET_MS,
                                         hidden=("__builtins__", "__name__"), fork_repr=False)
            try:
                with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                    exec(compile(cell, "<cell>", "exec"), namespace)  # noqa: S102 - a build tool running library examples
            except BaseException:  # noqa: BLE001 - any failure ends the notebook; SystemExit too
                break
            done.append((cell, specs))
            sink.seek(0)
            sink.truncate()
    except _Timeout:
        pass
    finally:
        signal.alarm(0)
        try:
            import matplotlib.pyplot as plt

            plt.close("all")
        except Exception:  # noqa: BLE001
            pass
    return done


def targets(ran: list[tuple[str, list]], rng: random.Random, most: int = TARGETS_PER_NOTEBOOK) -> list[int]:
    """Up to ``most`` target cells of a run notebook: cells after the first whose specs are not
    empty (they read earlier values), else the last cell."""
    candidates = [i for i, (_, specs) in enumerate(ran) if i > 0 and specs] or [len(ran) - 1]
    return sorted(rng.sample(candidates, min(most, len(candidates))))


def render_forms(header: str, ran: list[tuple[str, list]], t: int, rng: random.Random) -> list[tuple[str, str, int]]:
    """(form, text, specs) for target cell ``t`` of a run notebook: its causal and FIM renderings."""
    from jupyter_specgen.completions.context import grounded_context
    from specgen_backend.prompt import linearise
    from specgen_backend.protocol import Cell, CompletionContext

    source, specs = ran[t]
    cells = [Cell(cell_type="markdown", source=header.removeprefix("# ")),
             *(Cell(cell_type="code", source=s) for s, _ in ran[: t + 1])]
    active = len(cells) - 1
    out = []
    whole = grounded_context(CompletionContext(prefix=source, suffix="", cells=cells, active=active), specs)
    head, _ = linearise(whole)
    out.append(("causal", head, len(specs)))

    lines = source.split("\n")
    k = rng.randrange(len(lines))
    line = lines[k]
    indent = len(line) - len(line.lstrip())
    if len(line.strip()) >= 2:
        cut = rng.randint(indent, len(line) - 1)
        prefix = "\n".join(lines[:k] + [line[:cut]])
        middle = line[cut:]
        suffix = "\n".join(["", *lines[k + 1 :]]) if k + 1 < len(lines) else ""
        fim = grounded_context(CompletionContext(prefix=prefix, suffix=suffix, cells=cells, active=active), specs)
        fhead, ftail = linearise(fim)
        out.append(("fim", f"{FIM_PREFIX}{fhead}{FIM_SUFFIX}{ftail}{FIM_MIDDLE}{middle}", len(specs)))
    return out


def _work(task: tuple[str, str, int]) -> list[dict]:
    origin, notebook, seed = task
    ran = run_notebook(notebook)
    if not ran:
        return []
    header, _ = _split(notebook)
    rng = random.Random(seed)
    held = _heldout(origin.split("::")[0], 0.04)
    return [asdict(ExecutedDoc(text, origin, form, held, n))
            for t in targets(ran, rng) for form, text, n in render_forms(header, ran, t, rng)]


def notebooks_of(packages=EXEC_PACKAGES) -> tuple[list[tuple[str, str]], list[SourceInfo]]:
    """(origin, notebook text) of every docstring example notebook in ``packages``."""
    found, sources = [], []
    for dist, lic in permissive_distributions(packages):
        info = SourceInfo(dist.metadata["Name"], dist.version, lic)
        root = Path(str(dist.locate_file("")))
        for path in _package_files(dist):
            if "/tests/" in f"/{path.relative_to(root)}":
                continue  # test modules' docstrings are not usage examples
            text = _read(path, 400_000)
            if text is None:
                continue
            notebooks = docstring_notebooks(text)
            if notebooks:
                info.files += 1
                info.chars += sum(len(n) for n in notebooks)
            rel = path.relative_to(root)
            found += [(f"{info.name}/{rel}::{i}", nb) for i, nb in enumerate(notebooks)]
        sources.append(info)
    return found, sources


def _contaminated(docs: list[dict]) -> set[str]:
    """Origins of documents that overlap the quality benchmark's cases: a 13-gram of a case, or
    a case's completed line (the benchmark's own decontamination test, applied the other way)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from quality_cases import notebooks
    from quality_cases.decontaminate import case_units, ngrams, tokens

    cases = [(nb, case) for nb in notebooks() for case in nb.cases]
    grams = {g for nb, case in cases for unit in case_units(nb, case) for g in ngrams(tokens(unit))}
    lines = {" ".join(case.target_line.split()) for _, case in cases}
    return {d["origin"] for d in docs
            if any(" ".join(x.split()) in lines for x in d["text"].splitlines())
            or any(g in grams for g in ngrams(tokens(d["text"])))}


def build(out: Path, *, processes: int = 2, limit: int | None = None, seed: int = 0) -> dict:
    """Run every example notebook, write the documents to ``out`` (JSON lines); a summary."""
    from tqdm import tqdm

    notebooks, sources = notebooks_of()
    rng = random.Random(seed)
    rng.shuffle(notebooks)
    if limit:
        notebooks = notebooks[:limit]
    tasks = [(origin, nb, seed + i) for i, (origin, nb) in enumerate(notebooks)]
    docs: list[dict] = []
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(processes, initializer=_limit_worker, maxtasksperchild=40) as pool:
        for result in tqdm(pool.imap_unordered(_work, tasks, chunksize=4), total=len(tasks), desc="run examples",
                           unit="nb", mininterval=5):
            docs.extend(result)
    dropped = _contaminated(docs)
    kept = [d for d in docs if d["origin"] not in dropped]
    kept.sort(key=lambda d: (d["origin"], d["text"]))  # the pool's order is not reproducible
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as f:
        for d in kept:
            f.write(json.dumps(d) + "\n")
    summary = {
        "notebooks": len(notebooks),
        "notebooks_run": len({d["origin"] for d in docs}),
        "decontaminated_out": len(dropped),
        "documents": len(kept),
        "with_specs": sum(1 for d in kept if d["specs"]),
        "chars": sum(len(d["text"]) for d in kept),
        "sources": [asdict(s) for s in sources],
    }
    out.with_suffix(".summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def load(path: Path) -> list[ExecutedDoc]:
    with open(path) as f:
        return [ExecutedDoc(**json.loads(line)) for line in f if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "runs" / "executed.jsonl")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--limit", type=int, help="run only this many notebooks (a dry run)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    summary = build(args.out, processes=args.processes, limit=args.limit, seed=args.seed)
    print(json.dumps({k: v for k, v in summary.items() if k != "sources"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
