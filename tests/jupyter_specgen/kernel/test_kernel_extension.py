"""The kernel extension in a real ipykernel, through KernelLinks as the server uses it."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from jupyter_specgen.kernel_client import KernelLinks

pytestmark = pytest.mark.asyncio(loop_scope="module")

SETUP = """
import numpy as np, pandas as pd, torch, functools
df = pd.DataFrame({"price": [1.5, 2.0, 3.25], "city": ["Oslo", "Rome", "Lima"], "n": [1, 2, 3]})
s = df["price"]
arr = np.arange(12, dtype=np.float32).reshape(3, 4)
t = torch.zeros(2, 3, dtype=torch.int64)
nested = {"a": [1, 2, {"x": 1.0}], "b": (1, "two")}
xs = [1, 2, 3]
def area(w: float, h: float = 1.0) -> float:
    "Area of a rectangle."
    return w * h
class BadRepr:
    def __repr__(self):
        raise ValueError("no repr for you")
class SlowRepr:
    def __repr__(self):
        import time
        while True:
            time.sleep(0.01)
bad, slow = BadRepr(), SlowRepr()
"""

DIGEST = """
import hashlib, pickle
def _specgen_digest():
    keep = {k: v for k, v in get_ipython().user_ns.items()
            if k in ("df", "xs", "nested", "arr", "counter", "victim")}
    return hashlib.sha256(pickle.dumps((sorted(keep), [pickle.dumps(keep[k]) for k in sorted(keep)]))).hexdigest()
"""


async def ensure_setup(kernel):
    if not getattr(kernel, "setup_done", False):
        await kernel.run(SETUP)
        kernel.setup_done = True


@pytest.fixture(scope="module")
def links_factory():
    made = []

    def make(kernel):
        links = KernelLinks(kernel.mkm, connect_timeout_s=30)
        made.append(links)
        return links

    return make


async def specs_of(kernel, links, names, **kw):
    reply = await links.get_specs(kernel.kernel_id, names=names, **kw)
    assert reply is not None
    return {s.name: s for s in reply.specs}, reply


async def test_specs_of_frames_arrays_containers_callables(kernel, links_factory):
    """specs: DataFrame columns/dtypes/rows, Series, ndarray, tensor, nested containers, callables, modules."""
    await ensure_setup(kernel)
    links = links_factory(kernel)
    specs, reply = await specs_of(kernel, links, [], code="df.price * arr.sum() + len(nested) + area(2) + t + s + np + nope")
    df = specs["df"]
    assert (df.kind, df.shape) == ("dataframe", [3, 3])
    assert [(c.name, c.dtype) for c in df.columns] == [("price", "float64"), ("city", "str"), ("n", "int64")]
    assert "Oslo" in df.examples and "3.25" in df.examples
    assert (specs["s"].kind, specs["s"].dtype, specs["s"].shape) == ("series", "float64", [3])
    assert (specs["arr"].kind, specs["arr"].shape, specs["arr"].dtype) == ("array", [3, 4], "float32")
    assert (specs["t"].kind, specs["t"].shape, specs["t"].dtype) == ("tensor", [2, 3], "int64")
    assert specs["nested"].length == 2 and specs["nested"].element_type == "str: list[int | dict[str, float]] | tuple[int | str]"
    assert specs["area"].signature == "(w: float, h: float = 1.0) -> float" and specs["area"].doc == "Area of a rectangle."
    assert (specs["np"].kind, specs["np"].examples) == ("module", "numpy")
    assert reply.missing == ["nope"] and "len" not in reply.missing


async def test_specs_of_ten_million_rows_within_budget(kernel, links_factory):
    """specs: a 10-million-row frame is described within the budget, with its rows counted, not copied."""
    await ensure_setup(kernel)
    await kernel.run("big = pd.DataFrame({'a': np.arange(10_000_000), 'b': np.zeros(10_000_000, dtype=np.int32)})")
    links = links_factory(kernel)
    start = time.perf_counter()
    specs, reply = await specs_of(kernel, links, ["big"], budget_ms=50)
    assert specs["big"].shape == [10_000_000, 2]
    assert [(c.name, c.dtype) for c in specs["big"].columns] == [("a", "int64"), ("b", "int32")]
    assert reply.elapsed_ms < 50, reply.elapsed_ms
    assert time.perf_counter() - start < 1.0
    await kernel.run("del big")


async def test_reprs_that_raise_or_hang_are_cut(kernel, links_factory):
    """specs: an object whose __repr__ raises or hangs is cut with a note; the kernel goes on."""
    await ensure_setup(kernel)
    links = links_factory(kernel)
    # The hanging repr is cut by its own limit (Limits.repr_timeout_s); the budget leaves room for
    # the rest even when forks are slow on a busy machine.
    specs, _ = await specs_of(kernel, links, ["bad", "slow", "xs"], budget_ms=1500)
    assert specs["bad"].truncated and "ValueError: no repr for you" in specs["bad"].note
    assert specs["slow"].truncated and "still running" in specs["slow"].note
    assert specs["xs"].examples == "[1, 2, 3]"  # what came after was still described
    assert await kernel.eval("1 + 1") == 2


async def test_specs_answered_while_a_cell_runs(kernel, links_factory):
    """specs go through a subshell: answered during a long cell; validate then says not_validated."""
    await ensure_setup(kernel)
    links = links_factory(kernel)
    link = await links.link(kernel.kernel_id)
    assert link.subshell_id
    running = asyncio.ensure_future(kernel.run("import time; time.sleep(4); after_sleep = 1"))
    for _ in range(100):
        if link.busy:
            break
        await asyncio.sleep(0.02)
    assert link.busy
    start = time.perf_counter()
    specs, _ = await specs_of(kernel, links, ["xs"])
    assert time.perf_counter() - start < 1.0 and specs["xs"].length == 3
    verdicts = await links.validate(kernel.kernel_id, ["1 + 1"], wait_ms=300)
    assert verdicts[0].status == "not_validated" and "busy" in verdicts[0].message
    assert not running.done()
    await running


async def test_validate_reports_value_output_and_assignments(kernel, links_factory):
    """validate: ran/raised with type, message and line; stdout; the last value; the assigned names."""
    await ensure_setup(kernel)
    links = links_factory(kernel)
    ok, bad = await links.validate(
        kernel.kernel_id,
        ["print('hi')\ntotal = df.price.sum()\ndf[df.price > 1.6]", "df['nope']"],
        prefix="import pandas as pd\n",
    )
    assert ok.status == "ran" and ok.stdout == "hi\n"
    assert ok.value.kind == "dataframe" and ok.value.shape == [2, 3]
    assert [(s.name, s.examples) for s in ok.assigned] == [("pd", "pandas"), ("total", "np.float64(6.75)")]
    assert (bad.status, bad.error_type, bad.message, bad.line) == ("raised", "KeyError", "'nope'", 2)
    assert await kernel.eval("'total' in globals()") is False


HOSTILE = {
    "write": "open({d!r} + '/new.txt', 'w').write('x')",
    "append": "open({d!r} + '/keep.txt', 'a').write('x')",
    "delete": "os.remove({d!r} + '/keep.txt')",
    "rmtree": "import shutil; shutil.rmtree({d!r})",
    "rename": "os.rename({d!r} + '/keep.txt', {d!r} + '/moved.txt')",
    "os.system": "os.system('touch ' + {d!r} + '/sys.txt')",
    "subprocess": "import subprocess; subprocess.run(['touch', {d!r} + '/sub.txt'])",
    "socket": "import socket; socket.create_connection(('127.0.0.1', {port}), timeout=1)",
    "fork bomb": "while True: os.fork()",
    "memory bomb": "hog = bytearray(64 * 2**30)",
    "list bomb": "hog = [0] * (4 * 10**9)",
    "infinite loop": "while True: pass",
    "os._exit": "os._exit(0)",
    "sys.exit": "import sys; sys.exit(3)",
    "KeyboardInterrupt": "raise KeyboardInterrupt",
    "kill kernel": "import signal; os.kill(os.getppid(), signal.SIGTERM)",
    "mutate global": "xs.append(99); nested['a'].clear(); counter[0] += 1",
    "del user vars": "del df, xs, victim",
    "fd write": "os.write(1, b'escaped')",
}


async def test_hostile_candidates_are_reported_and_contained(kernel, links_factory, tmp_path):
    """validate: each hostile candidate is reported; files, the kernel and the user's namespace are untouched."""
    await ensure_setup(kernel)
    (tmp_path / "keep.txt").write_text("keep")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    await kernel.run("import os\ncounter = [0]\nvictim = {'kept': True}\n" + DIGEST)
    before = await kernel.eval("_specgen_digest()")
    pid = await kernel.eval("os.getpid()")
    links = links_factory(kernel)
    names = list(HOSTILE)
    code = [HOSTILE[n].format(d=str(tmp_path), port=port) for n in names]
    verdicts = {}
    for start in (0, 10):  # two parallel batches (a request runs at most 16 at once)
        batch = await links.validate(kernel.kernel_id, code[start:start + 10], prefix="import os\n",
                                     timeout_ms=1500, memory_mb=512)
        verdicts.update(zip(names[start:start + 10], batch))

    def raised(name, error_type):
        v = verdicts[name]
        assert (v.status, v.error_type) == ("raised", error_type), (name, v)

    for name in ("write", "append", "delete", "rmtree", "rename", "os.system", "subprocess", "socket",
                 "fork bomb", "kill kernel"):
        raised(name, "PermissionError")
        assert verdicts[name].refused, name
    raised("memory bomb", "MemoryError")
    raised("list bomb", "MemoryError")
    raised("os._exit", "GuardExit")
    raised("sys.exit", "SystemExit")
    raised("KeyboardInterrupt", "KeyboardInterrupt")
    assert verdicts["infinite loop"].status == "timeout"
    assert verdicts["mutate global"].status == "ran" and verdicts["del user vars"].status == "ran"
    assert verdicts["fd write"].status == "ran"  # fd 1 of the child is /dev/null

    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    assert (tmp_path / "keep.txt").read_text() == "keep"
    with pytest.raises(socket.timeout):
        listener.accept()
    listener.close()
    assert await kernel.eval("os.getpid()") == pid
    assert await kernel.eval("_specgen_digest()") == before
    assert await kernel.eval("(xs, counter, nested['a'][:2])") == ([1, 2, 3], [0], [1, 2])


async def test_execution_log_records_reads_and_assignments(kernel, links_factory):
    """log: each cell with the specs of the names it read before and assigned after, in order."""
    await ensure_setup(kernel)
    await kernel.run("doubled = [x * 2 for x in xs]")
    links = links_factory(kernel)
    log = await links.execution_log(kernel.kernel_id, limit=1)
    (entry,) = log.entries
    assert entry.code == "doubled = [x * 2 for x in xs]" and entry.success
    assert [s.name for s in entry.read] == ["xs"] and entry.read[0].length == 3
    assert [(s.name, s.examples) for s in entry.assigned] == [("doubled", "[2, 4, ... 1 more]")]  # two example items in the log


async def test_kernel_without_the_extension_gives_no_link(kernel, tmp_path):
    """A kernel without the comm target: no specs (None) and not_validated verdicts, quickly and without errors."""
    from jupyter_client.multikernelmanager import AsyncMultiKernelManager

    mkm = AsyncMultiKernelManager(connection_dir=str(tmp_path))  # no autoload
    kernel_id = await mkm.start_kernel(kernel_name="python3")
    try:
        links = KernelLinks(mkm, connect_timeout_s=20)
        assert await links.get_specs(kernel_id, names=["xs"]) is None
        (verdict,) = await links.validate(kernel_id, ["1"])
        assert verdict.status == "not_validated"
        assert await links.get_specs("no-such-kernel", names=["xs"]) is None
    finally:
        await mkm.shutdown_all(now=True)
