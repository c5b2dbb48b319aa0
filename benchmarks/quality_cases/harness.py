"""Run a case's cell and its check in a fork, so the namespace it runs in is never changed.

Used in two places with the same code: inside the benchmark's kernel (called through a user
expression on the kernel's own namespace, after the notebook's setup cells ran there) and in a
plain Python process by the case-set test (on a dict the setup cells were executed into).

The cell is model-generated code in the benchmark, so the child is fenced the way the project
fences validation (``jupyter_specgen.kernel.forking.enter_sandbox``: no file writes, no
processes, no network, time and memory limits) when that module is importable; otherwise it gets
CPU and wall-clock limits only.
"""

from __future__ import annotations

import ast
import io
import json
import math
import os
import select
import signal
import sys
import time
from typing import Any

try:  # imported here, not in each child: an import per fork would cost more than the check
    from jupyter_specgen.kernel import forking as _forking
except ImportError:  # pragma: no cover - a checkout without the package installed
    _forking = None

__all__ = ["same", "run_check", "run_check_json"]

_FILENAME = "<quality-case>"


def _numeric(x: Any, pd: Any) -> list[bool]:
    dtypes = list(x.dtypes) if isinstance(x, pd.DataFrame) else [x.dtype]
    return [pd.api.types.is_numeric_dtype(t) for t in dtypes]


def same(a: Any, b: Any, *, tol: float = 1e-6) -> bool:
    """Equal as a user would judge: numbers within ``tol``, arrays/Series/frames element-wise
    (names and dtypes not compared), anything else with ``==``."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - the cases need pandas anyway
        pd = None
    import numpy as np

    if pd is not None and isinstance(a, (pd.Series, pd.DataFrame, pd.Index)):
        if type(a) is not type(b) or a.shape != b.shape:
            return False
        if isinstance(a, (pd.Series, pd.DataFrame)) and _numeric(a, pd) != _numeric(b, pd):
            return False  # dtypes are not compared, but numbers against other things (dtype objects) are wrong
        try:
            if isinstance(a, pd.DataFrame):
                pd.testing.assert_frame_equal(a, b, check_dtype=False, check_names=False, rtol=tol)
            elif isinstance(a, pd.Series):
                pd.testing.assert_series_equal(a, b, check_dtype=False, check_names=False, rtol=tol)
            else:
                pd.testing.assert_index_equal(a, b, exact=False, check_names=False)
        except AssertionError:
            return False
        return True
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return False
        if a.dtype.kind in "fc" or b.dtype.kind in "fc":
            return bool(np.allclose(a, b, rtol=tol, atol=tol, equal_nan=True))
        return bool((a == b).all())
    if isinstance(a, (int, float, np.number)) and isinstance(b, (int, float, np.number)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=tol, abs_tol=tol)
    result = a == b
    return result if isinstance(result, bool) else bool(np.all(result))


def _child(namespace: dict, cell: str, check: str, completion: str, fd: int, timeout_s: float) -> None:
    """In the fork: fence, run ``cell`` like IPython (last expression's value kept), eval ``check``."""
    stdout: Any = None
    try:
        if _forking is None:
            raise RuntimeError("no fence available")
        box = _forking.enter_sandbox(keep_fd=fd, timeout_s=timeout_s, memory_mb=2048, output_chars=20000)
        stdout = box.stdout
    except Exception:  # noqa: BLE001 - no fence here: limits only (the test runs reference code)
        import resource

        resource.setrlimit(resource.RLIMIT_CPU, (int(timeout_s) + 1, int(timeout_s) + 2))
        stdout = io.StringIO()
        sys.stdout = sys.stderr = stdout
    signal.alarm(int(math.ceil(timeout_s)))
    report: dict[str, Any] = {"executed": False, "passed": False, "error": ""}
    try:
        tree = ast.parse(cell, filename=_FILENAME)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, _FILENAME, "exec"), namespace)  # noqa: S102 - in the fenced fork only
        value = None
        if last is not None:
            value = eval(compile(ast.Expression(last.value), _FILENAME, "eval"), namespace)  # noqa: S307
        report["executed"] = True
    except BaseException as exc:  # noqa: BLE001 - SystemExit and guards included: report, never escape
        report["error"] = f"{type(exc).__name__}: {exc}"[:300]
    if report["executed"]:
        namespace.update(_value=value, _stdout=stdout.getvalue(), _completion=completion, _same=same)
        try:
            report["passed"] = bool(eval(compile(check, "<check>", "eval"), namespace))  # noqa: S307
        except BaseException as exc:  # noqa: BLE001
            report["error"] = f"check: {type(exc).__name__}: {exc}"[:300]
    data = json.dumps(report).encode()
    while data:
        data = data[os.write(fd, data):]


def run_check(namespace: dict, cell: str, check: str, *, completion: str = "", timeout_s: float = 10.0) -> dict:
    """Run ``cell`` then ``check`` in a fork of this process over ``namespace``.

    Returns ``{"executed": bool, "passed": bool, "error": str}``: executed = the cell ran without
    raising; passed = it ran and the check was true.
    """
    read_fd, write_fd = os.pipe()
    real_exit = os._exit  # the fence replaces os._exit in the child
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            _child(namespace, cell, check, completion, write_fd, timeout_s)
        finally:
            real_exit(0)
    os.close(write_fd)
    chunks = []
    deadline = time.monotonic() + timeout_s + 5
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([read_fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        return {"executed": False, "passed": False, "error": "the check's process ended without a report (timeout or crash)"}


def run_check_json(namespace: dict, cell: str, check: str, completion: str = "", timeout_s: float = 10.0) -> str:
    """``run_check`` as a JSON string (what a kernel user expression can hand back)."""
    return json.dumps(run_check(namespace, cell, check, completion=completion, timeout_s=timeout_s))
