"""The OS fence around validation children, attacked through KernelLinks on a real ipykernel.

Every case of ``sandbox_cases.CASES`` runs twice: as written, and after the candidate disarmed
the audit hook, so that only seccomp, Landlock, the closed descriptors, the process group and
the limits stand in its way. After each batch: the sentinel files are byte-identical, no file
appeared in the kernel's TMPDIR or /dev/shm, no listener of the test was reached, no process is
left, the kernel runs with the same pid, priority, affinity, limits and namespace digest, and no
forged message reached IOPub or another candidate's verdict.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
from pathlib import Path

import psutil
import pytest
import pytest_asyncio
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.multikernelmanager import AsyncMultiKernelManager

from jupyter_specgen.kernel import autoload, forking
from jupyter_specgen.kernel.validate import ValidateOptions, validate
from jupyter_specgen.kernel_client import KernelLinks

from .sandbox_cases import CASES, DISARM, MAY_RUN, MAY_TIME_OUT, render

in_kernel = pytest.mark.asyncio(loop_scope="module")

MARK = f"specgen_battery_{os.getpid()}"
CANARY = "canary = 41 + 1\ncanary"
BATCH = 15  # + the canary: a request runs at most 16 children
TIMEOUT_MS = 10000  # one deadline for 16 children, from the first fork: forking a big kernel is slow on busy cores
SETUP = """
import os, numpy as np, pandas as pd, torch, pyarrow, pyarrow.parquet, pyarrow.csv, pyarrow.fs, zmq, readline, sqlite3
df = pd.read_csv('data.csv')
arr = np.arange(64, dtype=np.float64).reshape(8, 8)
victim = {'kept': True, 'xs': [1, 2, 3]}
userlog = open('log.txt', 'a')  # the kernel holds a writable file: the children must not reach it
def _battery_state():
    import hashlib, pickle, resource
    ns = get_ipython().user_ns
    keep = {k: ns[k] for k in ('df', 'arr', 'victim')}
    digest = hashlib.sha256(pickle.dumps((sorted(keep), [pickle.dumps(keep[k]) for k in sorted(keep)]))).hexdigest()
    return [digest, os.getpid(), os.getpriority(os.PRIO_PROCESS, 0), sorted(os.sched_getaffinity(0)),
            list(resource.getrlimit(resource.RLIMIT_NOFILE)), list(resource.getrlimit(resource.RLIMIT_AS)),
            sorted(k for k in ns if k.startswith('canary') or k == 'pwned'), 'pwned' in victim]
"""


def snapshot(folder: Path) -> dict[str, tuple[int, str, int]]:
    """path -> (size, sha256, mode) of every file under ``folder``."""
    out = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        data = path.read_bytes() if path.is_file() else b""
        out[str(path.relative_to(folder))] = (st.st_size, hashlib.sha256(data).hexdigest(), st.st_mode)
    return out


def make_sentinels(folder: Path) -> None:
    import numpy as np
    import pandas as pd
    import torch

    frame = pd.DataFrame({"city": ["Oslo", "Rome", "Lima"], "units": [3, 5, 8]})
    frame.to_csv(folder / "data.csv", index=False)
    frame.to_parquet(folder / "sales.parquet")
    torch.save(torch.arange(4), folder / "model.pt")
    np.save(folder / "arr.npy", np.arange(5))
    (folder / "keep.txt").write_text("keep")
    (folder / "hist.txt").write_text("history\n")
    (folder / "log.txt").write_text("log\n")
    (folder / "big.bin").write_bytes(bytes(range(256)) * 16)
    import sqlite3

    con = sqlite3.connect(folder / "db.sqlite")
    con.execute("create table t (x)")
    con.execute("insert into t values (1)")
    con.commit()
    con.close()


class Listeners:
    """A TCP, a UDP, a unix-path and an abstract unix listener; none may be reached."""

    def __init__(self, root: Path):
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(8)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.unix_path = str(root / "listener.sock")
        self.unix = socket.socket(socket.AF_UNIX)
        self.unix.bind(self.unix_path)
        self.unix.listen(8)
        self.abstract_name = f"{MARK}_abstract_{root.name}"  # one per Listeners: the module's kernel holds its own
        self.abstract = socket.socket(socket.AF_UNIX)
        self.abstract.bind("\0" + self.abstract_name)
        self.abstract.listen(8)
        for s in (self.tcp, self.udp, self.unix, self.abstract):
            s.setblocking(False)

    def values(self) -> dict[str, str]:
        return {"PORT": str(self.tcp.getsockname()[1]), "UDP": str(self.udp.getsockname()[1]),
                "UNIX": self.unix_path, "ABSTRACT": self.abstract_name}

    def reached(self) -> list[str]:
        hits = []
        for name, s in (("tcp", self.tcp), ("unix", self.unix), ("abstract", self.abstract)):
            try:
                conn, _ = s.accept()
                conn.close()
                hits.append(name)
            except (BlockingIOError, socket.timeout):
                pass
        try:
            self.udp.recv(100)
            hits.append("udp")
        except BlockingIOError:
            pass
        return hits

    def close(self) -> None:
        for s in (self.tcp, self.udp, self.unix, self.abstract):
            s.close()


class Battery:
    """A kernel working in a sentinel folder, with an empty TMPDIR, and what to check after each batch."""

    def __init__(self, mkm, kernel_id, client, root: Path):
        self.mkm, self.kernel_id, self.client, self.root = mkm, kernel_id, client, root
        self.sentinel, self.tmp = root / "sentinel", root / "tmp"
        self.listeners = Listeners(root)
        self.links = KernelLinks(mkm, connect_timeout_s=60)
        self.values = {"S": str(self.sentinel), "T": str(self.tmp), "MARK": MARK, **self.listeners.values()}
        self.files = snapshot(self.sentinel)
        self.state = None
        self.pid = 0

    async def run(self, code: str, timeout: float = 120) -> list[dict]:
        outputs: list = []
        reply = await self.client.execute_interactive(code, timeout=timeout, output_hook=outputs.append)
        assert reply["content"]["status"] == "ok", (code, reply["content"])
        return outputs

    async def eval(self, expr: str):
        outputs = await self.run(f"print(__import__('json').dumps({expr}))")
        text = "".join(o["content"].get("text", "") for o in outputs if o["header"]["msg_type"] == "stream")
        return json.loads(text)

    async def iopub_backlog(self) -> list[dict]:
        msgs = []
        while True:
            try:
                msgs.append(await self.client.get_iopub_msg(timeout=0.3))
            except Exception:  # noqa: BLE001 - queue.Empty from the client: drained
                return msgs

    async def effects(self) -> list[str]:
        """What the last batch changed outside its children; [] when nothing."""
        found = []
        forged = [m for m in await self.iopub_backlog() if MARK in json.dumps(m, default=str) and not _a_reply(m)]
        if forged:
            found.append(f"forged IOPub messages: {forged[:2]}")
        now = snapshot(self.sentinel)
        if now != self.files:
            changed = sorted(k for k in set(now) | set(self.files) if now.get(k) != self.files.get(k))
            found.append(f"sentinel files changed: {changed}")
        if list(self.tmp.iterdir()):
            found.append(f"new files in TMPDIR: {sorted(p.name for p in self.tmp.iterdir())}")
        shm = [n for n in os.listdir("/dev/shm") if MARK in n]
        if shm:
            found.append(f"new /dev/shm entries: {shm}")
        reached = self.listeners.reached()
        if reached:
            found.append(f"listeners reached: {reached}")
        try:
            kernel = psutil.Process(self.pid)
            children = kernel.children(recursive=True)
        except psutil.NoSuchProcess:
            return found + ["the kernel process is gone"]
        if children:
            found.append(f"processes left: {[(c.pid, c.name()) for c in children]}")
        marked = []
        for proc in psutil.process_iter(["cmdline"]):
            if MARK in " ".join(proc.info["cmdline"] or []):
                marked.append(proc.pid)
                proc.kill()
        if marked:
            found.append(f"marked processes alive: {marked}")
        state = await self.eval("_battery_state()")
        if state != self.state:
            found.append(f"kernel state changed: {self.state} -> {state}")
        return found


def _a_reply(msg: dict) -> bool:
    """The kernel's own validate replies travel on IOPub too (comm messages), and quote the candidates."""
    data = msg.get("content", {}).get("data") or {}
    return (msg["header"]["msg_type"] == "comm_msg" and isinstance(data, dict) and data.get("type") == "validate_reply"
            and isinstance(data.get("verdicts"), list) and "reply_to" in data)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def battery(tmp_path_factory):
    root = tmp_path_factory.mktemp("sandbox")
    (root / "sentinel").mkdir()
    (root / "tmp").mkdir()
    make_sentinels(root / "sentinel")
    ksm = KernelSpecManager()
    autoload.install(ksm)
    mkm = AsyncMultiKernelManager(kernel_spec_manager=ksm, connection_dir=str(root))
    env = {**os.environ, "TMPDIR": str(root / "tmp")}
    kernel_id = await mkm.start_kernel(kernel_name="python3", env=env, cwd=str(root / "sentinel"))
    client = AsyncKernelClient()
    client.load_connection_info(mkm.get_kernel(kernel_id).get_connection_info())
    client.hb_channel.time_to_dead = 10.0  # a loaded machine is not a dead kernel
    client.start_channels()
    await client.wait_for_ready(timeout=120)
    b = Battery(mkm, kernel_id, client, root)
    try:
        await b.run(SETUP)
        b.state = await b.eval("_battery_state()")
        b.pid = b.state[1]
        b.files = snapshot(b.sentinel)
        await b.iopub_backlog()
        yield b
    finally:
        b.listeners.close()
        await b.links.close()
        client.stop_channels()
        await mkm.shutdown_all(now=True)


async def run_cases(b: Battery, names: list[str], *, disarm: bool) -> dict:
    """Verdicts of ``names`` (in batches with a canary each); fails on any effect outside the children."""
    prefix = "import os\n" + (DISARM if disarm else "")
    verdicts = {}
    for start in range(0, len(names), BATCH):
        batch = names[start:start + BATCH]
        # The canary first: the children share one deadline from the first fork, and forking a
        # big kernel on a loaded machine eats into the time of the last ones.
        codes = [CANARY] + [render(CASES[n], **b.values) for n in batch]
        canary, *got = await b.links.validate(b.kernel_id, codes, prefix=prefix, timeout_ms=TIMEOUT_MS,
                                              memory_mb=256, wait_ms=5000)
        assert canary.status == "ran" and canary.value.examples == "42" and not canary.stdout, (batch, canary)
        effects = await b.effects()
        assert not effects, (("disarmed" if disarm else "as written"), batch, effects)
        verdicts.update(zip(batch, got))
    return verdicts


def ordered() -> list[str]:
    """The cases, those that may run to the deadline last: the other batches end as soon as all report."""
    return [n for n in CASES if n not in MAY_TIME_OUT] + [n for n in CASES if n in MAY_TIME_OUT]


def check_verdicts(verdicts: dict, *, disarm: bool) -> None:
    for name, v in verdicts.items():
        assert v.status != "not_validated", (name, v)
        if name not in MAY_RUN:
            assert v.status != "ran", (name, "disarmed" if disarm else "as written", v)
        if name not in MAY_TIME_OUT:  # it reached its refusal: not a case passed by being killed first
            assert v.status != "timeout", (name, "disarmed" if disarm else "as written", v)
    for name in ("read_csv", "np.load", "open read", "read_parquet", "torch.load", "numpy threads", "torch threads",
                 "python threads", "import a C extension", "connection file read"):
        assert verdicts[name].status == "ran", (name, verdicts[name])
    assert verdicts["read_csv"].value.examples == "(3, 2)"
    assert verdicts["to_parquet existing"].message == \
        "refused: writing files is not allowed while validating (sales.parquet)", verdicts["to_parquet existing"]
    for name, v in verdicts.items():  # a candidate may lie about itself, never speak for another
        if "FORGED" in v.stdout:
            assert name in ("forge verdicts on every fd", "thread forges the report later"), (name, v)


@in_kernel
async def test_the_battery_as_written(battery):
    """Every hostile case, as written, has no effect outside its child; reads and threads still work."""
    assert len(CASES) >= 80
    verdicts = await run_cases(battery, ordered(), disarm=False)
    check_verdicts(verdicts, disarm=False)
    v = verdicts["open 'w' existing"]
    assert v.error_type == "PermissionError" and any(r.startswith("write ") for r in v.refused), v


@in_kernel
async def test_the_battery_with_the_audit_hook_disarmed(battery):
    """Every hostile case after disarming the audit hook: the OS fence alone holds, with the same clear messages."""
    verdicts = await run_cases(battery, ordered(), disarm=True)
    check_verdicts(verdicts, disarm=True)
    v = verdicts["open 'w' existing"]  # the hook did not speak: the refusal came from the system call
    assert v.error_type == "OSError" and not any(r.startswith("write ") for r in v.refused), v
    assert v.message == f"refused: writing files is not allowed while validating ({battery.sentinel}/keep.txt)"


@in_kernel
async def test_plain_data_code_gets_a_clear_verdict(battery):
    """df.to_parquet is refused with a clear message; read_csv, np.load and reading parquet run."""
    ok_read, ok_np, parquet, csv_write = await battery.links.validate(
        battery.kernel_id, ["pd.read_csv('data.csv').units.sum()", "np.load('arr.npy').sum()",
                            "df.to_parquet('sales.parquet')", "df.to_csv('data.csv')"],
        prefix="import os\n", timeout_ms=5000)
    assert (ok_read.status, ok_read.value.examples) == ("ran", "np.int64(16)")
    assert (ok_np.status, ok_np.value.examples) == ("ran", "np.int64(10)")
    assert parquet.status == "raised"
    assert parquet.message == "refused: writing files is not allowed while validating (sales.parquet)"
    assert csv_write.status == "raised" and csv_write.message.startswith("refused: writing files is not allowed")
    assert not await battery.effects()


@in_kernel
async def test_nothing_runs_without_a_sandbox(battery):
    """Where the fence cannot be built, no candidate runs: 'not validated: no sandbox on this system (why)'."""
    why = "not validated: no sandbox on this system (simulated: seccomp unavailable)"
    await battery.run("from jupyter_specgen.kernel import forking as _fk\n_saved = _fk._status\n"
                      f"_fk._status = (False, {why!r})")
    try:
        verdicts = await battery.links.validate(
            battery.kernel_id, [f"open({str(battery.tmp / 'unfenced')!r}, 'w').write('x')", "1 + 1"], timeout_ms=3000)
    finally:
        await battery.run("_fk._status = _saved\ndel _fk, _saved")
    assert [(v.status, v.message) for v in verdicts] == [("not_validated", why)] * 2
    assert not await battery.effects()


@in_kernel
async def test_the_filter_is_compiled_once_in_the_kernel(battery):
    """Children only load the filter: with compiling made impossible in the kernel, validation still runs."""
    await battery.run("from jupyter_specgen.kernel import sandbox as _sb\n_prepare = _sb.prepare\n"
                      "def _no(*a, **k): raise AssertionError('compiled again')\n_sb.prepare = _no")
    try:
        (v,) = await battery.links.validate(battery.kernel_id, ["sum(range(10))"], timeout_ms=3000)
        status = await battery.eval("list(__import__('jupyter_specgen.kernel.forking').kernel.forking.sandbox_status())")
    finally:
        await battery.run("_sb.prepare = _prepare\ndel _sb, _prepare, _no")
    assert (v.status, v.value.examples) == ("ran", "45")
    assert status[0] and "seccomp allowlist" in status[1]
    assert not await battery.effects()


# ------------------------------------------------------------------------------------------------
# Not root: the same fence entered by an unprivileged user (uid 65534), in a fork of this process

# The non-root "kernel" cannot read this interpreter's files under /root, so the cases it runs use
# only what is imported here first.
_PRELOAD = ("ctypes", "subprocess", "socket", "threading", "json", "glob", "signal", "mmap", "fcntl", "resource",
            "multiprocessing", "multiprocessing.shared_memory", "_posixshmem", "shutil", "_posixsubprocess", "pty",
            "urllib.request", "asyncio", "atexit", "weakref", "time", "errno", "struct", "pyseccomp")
_NEEDS_KERNEL = ("torch", "df", "pd.", "np.", "arr", "userlog", "victim", "get_ipython", "ipykernel", "pyarrow",
                 "readline", "sqlite3", "zmq", "_decimal", "jupyter_specgen")


def test_the_fence_holds_for_a_non_root_user():
    """As uid 65534 (no capabilities), the fence is built and the cases that need no kernel have no effect."""
    import importlib
    import shutil
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("switching to uid 65534 needs root; this run is already not root")
    # Not under pytest's tmp_path: its parent folder is private to root, and uid 65534 must reach it.
    tmp_path = Path(tempfile.mkdtemp(prefix="specgen-nonroot-", dir="/tmp"))
    try:
        _non_root_battery(tmp_path, importlib)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _non_root_battery(tmp_path: Path, importlib) -> None:
    for name in _PRELOAD:
        importlib.import_module(name)
    names = [n for n, code in CASES.items() if not any(k in code for k in _NEEDS_KERNEL)]
    assert len(names) >= 50, len(names)
    (tmp_path / "sentinel").mkdir()
    (tmp_path / "tmp").mkdir()
    for name in ("keep.txt", "hist.txt", "big.bin"):
        (tmp_path / "sentinel" / name).write_bytes(b"keep" * 64)
    for path in [tmp_path, *tmp_path.rglob("*")]:  # writable by the user, so only the fence stands in the way
        os.chown(path, 65534, 65534)
    tmp_path.chmod(0o777)
    before = snapshot(tmp_path / "sentinel")
    listeners = Listeners(tmp_path)
    os.chown(listeners.unix_path, 65534, 65534)
    values = {"S": str(tmp_path / "sentinel"), "T": str(tmp_path / "tmp"), "MARK": MARK, **listeners.values()}
    already = {p.pid for p in psutil.Process().children(recursive=True)}  # e.g. the module's kernel
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the unprivileged "kernel": builds its own fence, validates, reports on the pipe
        code = 1
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            os.chdir(tmp_path / "sentinel")
            forking._status = forking._fence = None  # computed again, as this user

            ok, why = forking.sandbox_status()
            results = {"status": [ok, why], "uid": os.getuid(), "verdicts": {}}
            for disarm in (False, True):
                prefix = "import os\n" + (DISARM if disarm else "")
                for start in range(0, len(names), 16):
                    batch = names[start:start + 16]
                    got = validate({}, [render(CASES[n], **values) for n in batch], prefix=prefix,
                                   options=ValidateOptions(timeout_s=TIMEOUT_MS / 1000, memory_mb=256))
                    for n, v in zip(batch, got):
                        results["verdicts"][f"{disarm}:{n}"] = [v.status, v.error_type, v.message[:200]]
            os.write(write_fd, json.dumps(results).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 1 << 16):
        chunks.append(chunk)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    results = json.loads(b"".join(chunks))
    assert results["uid"] == 65534 and results["status"][0], results["status"]
    for key, (status_, error_type, message) in results["verdicts"].items():
        name = key.split(":", 1)[1]
        assert status_ != "not_validated", (key, message)
        if name not in MAY_RUN:
            assert status_ != "ran", (key, error_type, message)
        if name not in MAY_TIME_OUT:
            assert status_ != "timeout", (key, error_type, message)
    assert snapshot(tmp_path / "sentinel") == before
    assert list((tmp_path / "tmp").iterdir()) == []
    assert not [n for n in os.listdir("/dev/shm") if MARK in n]
    assert listeners.reached() == []
    listeners.close()
    assert not [p.pid for p in psutil.Process().children(recursive=True) if p.pid not in already]
    assert not [p.pid for p in psutil.process_iter(["cmdline"]) if MARK in " ".join(p.info["cmdline"] or [])]


def test_sandbox_status_is_computed_once_and_says_what_fences():
    """sandbox_status names the walls on this machine (seccomp + Landlock here) and is cached."""
    first = forking.sandbox_status()
    assert first[0], first
    assert "seccomp allowlist" in first[1]
    assert forking.sandbox_status() is first
    if sys.platform.startswith("linux") and forking.sandbox.landlock_abi() >= 1:
        assert f"Landlock ABI {forking.sandbox.landlock_abi()}" in first[1]


def test_refusals_are_worded_from_what_libraries_report():
    """EROFS in a C library's words or Python's becomes 'refused: writing files ...(path)'; other errors stay."""
    assert forking.refusal_message("Failed to open local file 'sales.parquet'. Detail: [errno 30] Read-only file system") \
        == "refused: writing files is not allowed while validating (sales.parquet)"
    assert forking.refusal_message("[Errno 30] Read-only file system: '/data/x.npy'") \
        == "refused: writing files is not allowed while validating (/data/x.npy)"
    assert forking.refusal_message("[Errno 1] Operation not permitted").startswith("refused: not allowed while validating")
    assert forking.refusal_message("[Errno 2] No such file or directory: 'x.csv'") == ""
    assert forking.refusal_message("name 'x' is not defined") == ""


def test_each_child_gets_its_own_pid_and_pipe_in_the_filter():
    """The pid and report fd patched into the filter: a child may signal itself and report, not its parent."""
    own, parent, write_null = validate(
        {}, ["os.kill(os.getpid(), 0)\n'alive'", "os.kill(os.getppid(), 0)", "os.write(1, b'to /dev/null')"],
        prefix="import os\n" + DISARM, options=ValidateOptions(timeout_s=10))
    assert (own.status, own.value.examples) == ("ran", "'alive'")
    assert (parent.status, parent.error_type) == ("raised", "PermissionError") and parent.message.startswith("refused")
    assert write_null.status == "ran"
