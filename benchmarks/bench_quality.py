"""Suggestion quality end to end: the real Jupyter server, a real kernel, the embedded model.

Per configuration a fresh ``jupyter server`` (the jupyter_specgen extension and its own child
backend with the server's default model; a token, a free loopback port, empty data, runtime and
config dirs) and one kernel started through its REST API. The servers start together; then each
case runs on every configuration in turn, one request at a time. For a case, the kernel (reset
when the notebook changes) has run the notebook's setup cells; a browser-side client sends
``complete`` over ``/specgen/ws`` and reads ``progress``/``shown`` up to ``done`` (or ``error``).
The best item (first of ``done.items``; the shown ones if ``done`` has none) is the suggestion;
its cell ``prefix + suggestion + suffix`` runs in a fork of the kernel and the case's check is
evaluated there (``quality_cases/harness.py``).

Printed per configuration (one row each, then the same as a markdown table):

- shown: share of cases where a suggestion reached the browser;
- exec of shown, check of shown: of those, the share whose cell executes / whose check passes;
- check: check passes over all cases; check (live): over the cases needing live state;
- exact: the suggestion equals the reference (whitespace-normalised), over all cases;
- cold/warm p50/p95 ms: from sending ``complete`` to the first ghost text, i.e. the first
  ``shown`` frame (a ``done`` with items when the server sends no ``shown``). "cold" is a case's
  first request (a new cell; every case's notebook starts with its own title cell, so no two
  cases share a prompt prefix from the first token); "warm" the next keystroke on that cell (the
  first character of the cold suggestion typed, or the same request again when nothing was
  shown), cancelled once its ghost text is there as typing on would;
- n: cases, shown, live-state cases, latencies measured (cold, warm), requests that failed.

    python benchmarks/bench_quality.py [--cases N] [--configs default,validation-off,...]
        [--minutes M] [--out results.json] [--quick] [--decontaminate] [--model NAME=FOLDER ...]

``--cases N`` takes N cases spread over the notebooks (round robin); ``--quick`` is 20 of them
(one per notebook); ``--minutes M`` starts no case that would, at the average pace so far, end
after M minutes from the start (all configurations then still ran the same cases). ``--decontaminate`` checks the case set against the default model's
training corpus instead (``quality_cases/decontaminate.py``). ``--model NAME=FOLDER`` (repeatable) runs each
configuration once per model folder, side by side on the same cases (rows ``config@NAME``); the
``fim-on`` and ``fim-off`` configurations (not in the default set) prompt with and without the text after
the cursor, whatever the model's folder advises (the default follows it: the embedded model's says plain
prompts). A case costs each configuration
two requests and a check: ~5 s on 2 idle cores, a minute or more when 8 people share them.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import logging
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
try:
    import specgen_backend  # noqa: F401
except ImportError:  # a source checkout that is not installed
    sys.path.insert(0, str(HERE.parent / "backend"))

from jupyter_client.asynchronous import AsyncKernelClient  # noqa: E402
from tqdm import tqdm  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

from jupyter_specgen.protocol import PROTOCOL_VERSION  # noqa: E402
from quality_cases import Case, Markdown, Notebook, notebooks, select  # noqa: E402

__all__ = ["CONFIGS", "Server", "Kernel", "Session", "run_configs", "summarize", "markdown_table", "main"]

log = logging.getLogger(__name__)

# Each configuration switches one part off; "default" is the server as a user gets it.
CONFIGS: dict[str, list[str]] = {
    "default": [],
    "validation-off": ["--SpecgenExtension.validate=False"],
    "specs-off": ["--SpecgenExtension.kernel_specs=False"],
    "constraint-off": ["--SpecgenExtension.constrain=False"],
    # Not in the default run: for comparing models, whose FIM may help or hurt (--configs default,fim-on,fim-off).
    "fim-on": ["--SpecgenExtension.fim=True"],
    "fim-off": ["--SpecgenExtension.fim=False"],
    # Not in the default run either: more samples per request (the default is 3).
    "candidates-5": ["--SpecgenExtension.candidates=5"],
}
DEFAULT_CONFIGS = ("default", "validation-off", "specs-off", "constraint-off")
REQUEST_TIMEOUT_S = 120.0  # one complete, generous: the machine is shared
CHECK_TIMEOUT_S = 10.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _missing_settings(args: list[str]) -> list[str]:
    """The ``--SpecgenExtension.X=`` settings of ``args`` this tree's extension does not have."""
    from jupyter_specgen.extension import SpecgenExtension

    traits = set(SpecgenExtension.class_trait_names())
    names = [a.split("=", 1)[0].split(".", 1)[1] for a in args if a.startswith("--SpecgenExtension.")]
    return [n for n in names if n not in traits]


class Server:
    """A ``jupyter server`` subprocess with the extension, isolated in ``root``."""

    def __init__(self, root: Path, args: list[str]):
        self.root, self.args = root, args
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.runtime = root / "runtime"
        self.log_path = root / "server.log"
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout_s: float = 180.0) -> None:
        for d in ("data", "runtime", "config", "notebooks"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        config = self.root / "config" / "jupyter_server_config.json"
        config.write_text(json.dumps({"ServerApp": {"jpserver_extensions": {"jupyter_specgen": True}}}))
        cmd = [
            sys.executable, "-m", "jupyter_server", "--no-browser", "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root / 'notebooks'}", *self.args,
        ]  # fmt: skip
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        # Empty data/runtime/config dirs: no adapters, feedback or settings of whoever runs this.
        env = {**os.environ, "JUPYTER_DATA_DIR": str(self.root / "data"), "JUPYTER_RUNTIME_DIR": str(self.runtime),
               "JUPYTER_CONFIG_DIR": str(self.root / "config"), "PYTHONPATH": os.pathsep.join(
                   p for p in (str(HERE.parent), str(HERE.parent / "backend"), os.environ.get("PYTHONPATH", "")) if p)}
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                await self.http("GET", "api/status")
                return
            except OSError:
                await asyncio.sleep(0.5)
        raise RuntimeError(f"jupyter server did not answer within {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    async def http(self, method: str, path: str, body: Any = None) -> Any:
        def go():
            data = None if body is None else json.dumps(body).encode()
            req = urllib.request.Request(f"{self.url}/{path}", data=data, method=method,
                                         headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=60) as reply:
                raw = reply.read()
            return json.loads(raw) if raw else None

        return await asyncio.to_thread(go)

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # the server shuts its kernels and backend down
            for _ in range(60):
                if self.proc.poll() is not None:
                    break
                await asyncio.sleep(0.5)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group this script started, nothing else
            self.proc.wait()
        self._log.close()


class Kernel:
    """A kernel started through the server's REST API, driven with a KernelClient."""

    def __init__(self, server: Server):
        self.server = server
        self.id = ""
        self.client: Optional[AsyncKernelClient] = None

    async def start(self) -> None:
        self.id = (await self.server.http("POST", "api/kernels", {"name": "python3"}))["id"]
        path = self.server.runtime / f"kernel-{self.id}.json"
        for _ in range(120):
            if path.exists():
                break
            await asyncio.sleep(0.25)
        # A client without the manager judges "alive" by heartbeats, which a kernel still starting
        # on a busy machine does not send yet: wait until the server has seen it idle.
        for _ in range(240):
            state = (await self.server.http("GET", f"api/kernels/{self.id}")).get("execution_state")
            if state in ("idle", "busy"):
                break
            if state == "dead":
                raise RuntimeError(f"kernel {self.id} died while starting:\n{self.server.log_tail()}")
            await asyncio.sleep(0.5)
        self.client = AsyncKernelClient()
        self.client.load_connection_file(str(path))
        self.client.start_channels()
        for attempt in range(5):
            try:
                await self.client.wait_for_ready(timeout=120)
                break
            except RuntimeError:
                if attempt == 4:
                    raise
                await asyncio.sleep(2)
        # The check harness is imported by expression, never bound in the user's namespace.
        await self.execute(f"__import__('sys').path.insert(0, {str(HERE)!r})", silent=True)

    async def execute(self, code: str, *, silent: bool = False, expressions: Optional[dict] = None,
                      timeout: float = 120.0) -> dict:
        reply = await self.client.execute_interactive(
            code, silent=silent, store_history=not silent, user_expressions=expressions or {}, timeout=timeout,
            output_hook=lambda msg: None,
        )
        return reply["content"]

    async def setup(self, nb: Notebook) -> str:
        """Reset the namespace and run the notebook's setup cells; "" or what went wrong."""
        await self.execute("%reset -f", silent=True)
        for cell in nb.code:
            content = await self.execute(cell)
            if content["status"] != "ok":
                return f"setup of {nb.id} failed: {content.get('ename')}: {content.get('evalue')}"
        return ""

    async def check(self, case: Case, completion: str) -> dict:
        cell = case.prefix + completion + case.suffix
        expr = (f"__import__('quality_cases.harness', fromlist=['run_check_json']).run_check_json("
                f"get_ipython().user_ns, {cell!r}, {case.check!r}, {completion!r}, {CHECK_TIMEOUT_S!r})")
        content = await self.execute("", silent=True, expressions={"r": expr}, timeout=CHECK_TIMEOUT_S + 30)
        result = content.get("user_expressions", {}).get("r", {})
        if result.get("status") != "ok":
            return {"executed": False, "passed": False, "error": f"harness: {result.get('ename')}: {result.get('evalue')}"}
        return json.loads(ast.literal_eval(result["data"]["text/plain"]))

    async def stop(self) -> None:
        if self.client is not None:
            self.client.stop_channels()
        if self.id:
            try:
                await self.server.http("DELETE", f"api/kernels/{self.id}")
            except OSError as exc:
                log.warning("could not shut kernel %s down: %s", self.id, exc)


def _cells(nb: Notebook, case: Case, prefix: str) -> list[dict]:
    cells = [{"cell_type": "markdown", "source": f"{nb.title} ({case.id})"}]
    cells += [{"cell_type": "markdown", "source": c.source} if isinstance(c, Markdown) else {"cell_type": "code", "source": c}
              for c in nb.setup]  # fmt: skip
    if case.intent:
        cells.append({"cell_type": "markdown", "source": f"## {case.intent}"})
    cells.append({"cell_type": "code", "source": prefix + case.suffix})
    return cells


async def _request(ws, frame: dict, *, until_ghost: bool = False) -> dict:
    """Send one ``complete``; read its frames up to the final one. Times in ms from sending.

    ``until_ghost``: cancel the request once the first ghost text is there (the next keystroke
    would), then read on to its final frame so the stream stays in step.
    """
    start = time.perf_counter()
    await ws.send(json.dumps(frame))
    out: dict[str, Any] = {"first_shown_ms": None, "shown": [], "stages": [], "stage_ms": {}, "final": None,
                           "final_ms": None}
    deadline = start + REQUEST_TIMEOUT_S
    while True:
        try:
            raw = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.perf_counter()))
        except asyncio.TimeoutError:
            await ws.send(json.dumps({"type": "cancel", "version": PROTOCOL_VERSION, "id": frame["id"]}))
            out["final"] = {"type": "error", "error": {"type": "timeout", "message": f"no answer in {REQUEST_TIMEOUT_S:.0f} s"}}
            return out
        msg = json.loads(raw)
        if msg.get("reply_to") != frame["id"]:
            continue
        ms = (time.perf_counter() - start) * 1000
        if msg["type"] == "shown":
            out["shown"].append(msg["item"])
            if out["first_shown_ms"] is None:
                out["first_shown_ms"] = ms
                if until_ghost:
                    await ws.send(json.dumps({"type": "cancel", "version": PROTOCOL_VERSION, "id": frame["id"]}))
        elif msg["type"] == "progress":
            out["stages"].append(msg.get("stage"))
            out["stage_ms"].setdefault(msg.get("stage"), ms)  # when each stage began
        elif msg["type"] in ("done", "error"):
            out["final"], out["final_ms"] = msg, ms
            return out


def _ghost_ms(reply: dict) -> Optional[float]:
    """Time to the first ghost text: the first ``shown``, else a ``done`` that has items."""
    if reply["first_shown_ms"] is not None:
        return reply["first_shown_ms"]
    final = reply["final"]
    if final and final["type"] == "done" and final.get("items"):
        return reply["final_ms"]
    return None


def _norm(text: str) -> str:
    return " ".join(text.split())


class _Ids:
    def __init__(self):
        self.n = 0

    def __call__(self) -> int:
        self.n += 1
        return self.n


async def _run_case(ws, kernel: Kernel, nb: Notebook, case: Case, ids: _Ids) -> dict:
    def frame(prefix: str) -> dict:
        return {"type": "complete", "version": PROTOCOL_VERSION, "id": ids(), "path": f"quality/{case.id}.ipynb",
                "cell_id": case.id, "prefix": prefix, "suffix": case.suffix, "cells": _cells(nb, case, prefix),
                "active": -1, "kernel_id": kernel.id}  # fmt: skip

    first = frame(case.prefix)
    first["active"] = len(first["cells"]) - 1
    cold = await _request(ws, first)
    final = cold["final"] or {}
    items = (final.get("items") or []) if final.get("type") == "done" else []
    items = items or cold["shown"]
    record: dict[str, Any] = {
        "case": case.id, "live_state": case.live_state, "cursor": case.cursor,
        "final": final.get("type"), "error": (final.get("error") or {}).get("message", "") if final.get("type") == "error" else "",
        "summary": final.get("summary", ""), "rejected": final.get("rejected", 0), "n_items": len(items),
        "verdicts": [i.get("verdict") for i in items], "stages": sorted(set(filter(None, cold["stages"]))),
        "cold_ms": _ghost_ms(cold), "cold_done_ms": cold["final_ms"], "shown": bool(items),
        "text": items[0]["text"] if items else None, "executed": False, "passed": False, "exact": False, "check_error": "",
    }  # fmt: skip
    if items:
        text = items[0]["text"]
        result = await kernel.check(case, text)
        record.update(executed=result["executed"], passed=result["passed"], check_error=result.get("error", ""),
                      exact=_norm(text) == _norm(case.reference))
    # One more keystroke on the same cell: what the prefix cache and the specs cache are for.
    typed = case.prefix + (record["text"][0] if record["text"] else "")
    second = frame(typed)
    second["active"] = len(second["cells"]) - 1
    warm = await _request(ws, second, until_ghost=True)
    record["warm_ms"] = _ghost_ms(warm)
    record["warm_done_ms"] = warm["final_ms"]
    return record


class Session:
    """One configuration: its own fresh server, its browser websocket and its kernel."""

    def __init__(self, name: str, args: list[str], root: Path):
        self.name, self.args = name, args
        self.server = Server(root, args)
        self.kernel = Kernel(self.server)
        self.ws = None
        self.model = ""
        self.records: list[dict] = []
        self._ids = _Ids()
        self._current: Optional[Notebook] = None
        self._problem = ""
        self._by_nb = {nb.id: nb for nb in notebooks()}

    async def start(self) -> None:
        try:
            await self.server.start()
            self.ws = await connect(f"ws://127.0.0.1:{self.server.port}/specgen/ws", max_size=None,
                                    additional_headers={"Authorization": f"token {self.server.token}"})  # fmt: skip
            status: dict = {}
            while status.get("state") != "ready":
                status = json.loads(await asyncio.wait_for(self.ws.recv(), 300))
                if status.get("type") == "status" and status.get("state") == "error":
                    raise RuntimeError(f"backend: {status.get('message')}")
            self.model = status.get("model", "")
            await self.kernel.start()
        except Exception:
            log.error("configuration %s did not start; server log:\n%s", self.name, self.server.log_tail())
            raise

    async def run(self, case: Case) -> dict:
        nb = self._by_nb[case.notebook]
        record = {"case": case.id, "live_state": case.live_state, "final": "setup", "error": "", "shown": False,
                  "executed": False, "passed": False, "exact": False, "cold_ms": None, "warm_ms": None}  # fmt: skip
        try:
            if nb is not self._current:  # a fresh namespace with that notebook's setup
                self._problem, self._current = await self.kernel.setup(nb), nb
            if self._problem:
                record["error"] = self._problem
            else:
                record = await _run_case(self.ws, self.kernel, nb, case, self._ids)
        except (asyncio.TimeoutError, RuntimeError, OSError, ValueError, KeyError) as exc:
            # One case going wrong (a kernel that stopped answering) is a failed case, not a lost run.
            log.warning("%s: case %s failed: %r", self.name, case.id, exc)
            self._current = None  # the next case sets its notebook up again
            record.update(final="harness", error=repr(exc))
        self.records.append(record)
        return record

    async def stop(self) -> None:
        try:
            await self.kernel.stop()
            if self.ws is not None:
                await self.ws.close()
        finally:
            await self.server.stop()


async def run_configs(configs: dict[str, list[str]], cases: list[Case], *, deadline: Optional[float] = None,
                      out: Optional[Path] = None) -> list[dict]:
    """Run ``cases`` on one fresh server per configuration (label: server arguments); per
    configuration, the records.

    The servers start together (their start-up is most of the waiting on a busy machine), then
    each case runs on every configuration in turn, one request at a time, so no two
    configurations ever compete for the CPU during a measurement, and a run cut short by
    ``deadline`` (``time.monotonic()``; no case starts after it) still compares all
    configurations on the same cases.
    """
    with tempfile.TemporaryDirectory(prefix="specgen-quality-") as tmp:
        sessions = [Session(name, args, Path(tmp) / name.replace("@", "-")) for name, args in configs.items()]
        started = time.perf_counter()
        load = [os.getloadavg()[0]]
        try:
            await asyncio.gather(*(s.start() for s in sessions))
            startup_s = time.perf_counter() - started
            with tqdm(total=len(cases) * len(sessions), desc="cases x configurations", file=sys.stderr) as bar:
                spent: list[float] = []  # seconds per case, all configurations
                for case in cases:
                    # A case is started only if one more of the usual length still ends in time.
                    expected = sum(spent) / len(spent) if spent else 0.0
                    if deadline is not None and time.monotonic() + expected > deadline:
                        log.warning("time is up after %d of %d cases", len(sessions[0].records), len(cases))
                        break
                    t0 = time.monotonic()
                    for session in sessions:
                        await session.run(case)
                        bar.update(1)
                    spent.append(time.monotonic() - t0)
                    if out is not None:  # what has run so far survives a run that is stopped
                        out.write_text(json.dumps({"partial": True, "records": {x.name: x.records for x in sessions}}))
            load.append(os.getloadavg()[0])
        finally:
            await asyncio.gather(*(s.stop() for s in sessions), return_exceptions=True)
    return [{"config": s.name, "args": s.args, "model": s.model, "startup_s": round(startup_s, 1),
             "wall_s": round(time.perf_counter() - started, 1), "load_1min": load, "records": s.records}
            for s in sessions]  # fmt: skip


def _pct(values: list[float], q: float) -> Optional[float]:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


def summarize(records: list[dict]) -> dict:
    n = len(records)
    shown = [r for r in records if r["shown"]]
    live = [r for r in records if r["live_state"]]
    cold = [r["cold_ms"] for r in records if r.get("cold_ms") is not None]
    warm = [r["warm_ms"] for r in records if r.get("warm_ms") is not None]

    def share(part: int, whole: int) -> Optional[float]:
        return part / whole if whole else None

    return {
        "cases": n, "shown_n": len(shown), "live_n": len(live), "cold_n": len(cold), "warm_n": len(warm),
        "failed_n": sum(r["final"] not in ("done",) for r in records),
        "shown": share(len(shown), n),
        "exec_of_shown": share(sum(r["executed"] for r in shown), len(shown)),
        "check_of_shown": share(sum(r["passed"] for r in shown), len(shown)),
        "check": share(sum(r["passed"] for r in records), n),
        "check_live": share(sum(r["passed"] for r in live), len(live)),
        "exact": share(sum(r["exact"] for r in records), n),
        "cold_p50": _pct(cold, 50), "cold_p95": _pct(cold, 95), "warm_p50": _pct(warm, 50), "warm_p95": _pct(warm, 95),
    }  # fmt: skip


_COLUMNS = ["config", "shown", "exec of shown", "check of shown", "check", "check (live)", "exact",
            "cold p50/p95 ms", "warm p50/p95 ms", "n: cases/shown/live/lat cold,warm/failed"]  # fmt: skip


def _cells_of(name: str, s: dict) -> list[str]:
    def p(x):
        return "-" if x is None else f"{100 * x:.0f}%"

    def ms(a, b):
        return "-" if a is None else f"{a:.0f}/{b:.0f}"

    return [name, p(s["shown"]), p(s["exec_of_shown"]), p(s["check_of_shown"]), p(s["check"]), p(s["check_live"]),
            p(s["exact"]), ms(s["cold_p50"], s["cold_p95"]), ms(s["warm_p50"], s["warm_p95"]),
            f"{s['cases']}/{s['shown_n']}/{s['live_n']}/{s['cold_n']},{s['warm_n']}/{s['failed_n']}"]  # fmt: skip


_WIDTHS = [15, 6, 13, 14, 6, 12, 6, 15, 15, 30]


def _row(cells: list[str]) -> str:
    return " ".join(c.ljust(w) for c, w in zip(cells, _WIDTHS))


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _commit() -> str:
    try:
        head = subprocess.run(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(HERE.parent), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" (+ uncommitted changes in the tree)" if dirty else "")


def _decontaminate() -> int:
    from quality_cases.decontaminate import contamination, training_documents

    hits = contamination(notebooks(), training_documents())
    for case_id, found in sorted(hits.items()):
        for what in found:
            print(f"{case_id}: {what}")
    n = sum(len(nb.cases) for nb in notebooks())
    print(f"{len(hits)} of {n} cases found in the training corpus")
    return 1 if hits else 0


async def _main(args) -> None:
    cases = select(20 if args.quick and args.cases is None else args.cases)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configuration(s) {unknown}; choose from {list(CONFIGS)}")
    live = sum(c.live_state for c in cases)
    print(f"commit {_commit()}; {len(cases)} cases ({live} need live state) over "
          f"{len({c.notebook for c in cases})} notebooks; CPU cores: {os.cpu_count()}, load {os.getloadavg()[0]:.1f}",
          flush=True)  # fmt: skip
    skipped = []
    for name in configs:
        missing = _missing_settings(CONFIGS[name])
        if missing:
            skipped.append([name, *["n/a"] * (len(_COLUMNS) - 2), f"setting {', '.join(missing)} not in this tree"])
    runnable = {n: CONFIGS[n] for n in configs if not _missing_settings(CONFIGS[n])}
    if args.model:  # each configuration once per model, side by side on the same cases
        models = dict(_named_model(m) for m in args.model)
        runnable = {f"{n}@{label}": [*a, f"--SpecgenExtension.model={path}"]
                    for n, a in runnable.items() for label, path in models.items()}
    deadline = None if args.minutes is None else time.monotonic() + 60 * args.minutes
    results = await run_configs(runnable, cases, deadline=deadline, out=Path(args.out) if args.out else None)
    rows = []
    print(_row(_COLUMNS))
    for r in results:
        r["summary"] = summarize(r["records"])
        rows.append(_cells_of(r["config"], r["summary"]))
        print(_row(rows[-1]), flush=True)
    for row in skipped:
        print(_row(row))
    ran = len(results[0]["records"]) if results else 0
    print(f"\n{ran} of {len(cases)} cases run" + (" (time budget)" if ran < len(cases) else "")
          + (f"; servers started in {results[0]['startup_s']:.0f} s, whole run {results[0]['wall_s']:.0f} s, "
             f"1-min load average {results[0]['load_1min']}" if results else ""))
    print()
    print(markdown_table(rows + skipped))
    if args.out:
        Path(args.out).write_text(json.dumps({"commit": _commit(), "cases": [c.id for c in cases], "results": results}, indent=1))
        print(f"\nper-case records: {args.out}")


def _named_model(text: str) -> tuple[str, str]:
    """``NAME=PATH`` (or a bare path, named by its folder) of ``--model``."""
    label, sep, path = text.partition("=")
    if not sep:
        label, path = Path(text).name, text
    if not label or "," in label or not Path(path).expanduser().is_dir():
        raise SystemExit(f"--model {text!r}: expected NAME=FOLDER with a model folder")
    return label, str(Path(path).expanduser().resolve())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, help="run N cases, spread over the notebooks (default: all)")
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help=f"comma-separated, from {','.join(CONFIGS)}")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=FOLDER",
                        help="run every configuration with this model (SpecgenExtension.model) instead of the server's "
                             "default; repeat to compare models side by side (rows 'config@NAME')")
    parser.add_argument("--out", help="write every case's record and the summaries to this JSON file")
    parser.add_argument("--quick", action="store_true", help="20 cases, one per notebook")
    parser.add_argument("--minutes", type=float, help="time budget of the whole run: no case starts that would end "
                        "after it at the pace so far (every configuration runs each case, so all compare the same cases)")
    parser.add_argument("--decontaminate", action="store_true", help="check the cases against the model's training corpus")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.decontaminate:
        sys.exit(_decontaminate())

    def interrupted(signum, frame):  # `timeout` or a kill: unwind, so the servers started here are stopped
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
