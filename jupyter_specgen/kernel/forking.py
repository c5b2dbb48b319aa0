"""Fork a child of the kernel, fence it in, and collect what it reports.

The child is a copy-on-write snapshot of the kernel: it sees the user's namespace as it is and
can do anything to its copy without the kernel noticing. What it must not do is reach outside:
write or delete files, spawn processes, talk to the network, signal other processes, or touch
the kernel's sockets. ``enter_sandbox`` builds that fence in the child, in this order, before
any code of the candidate runs (see docs/validation.md for the full table and its limits):

- ``spawn`` puts the child in its own process group (set on both sides of the fork), and
  ``collect`` kills that whole group at the deadline and once the child has ended;
- every inherited file descriptor is closed, stdin/stdout/stderr point at /dev/null, so the
  kernel's ZMQ sockets, other children's pipes and the user's open files are out of reach;
- resource limits: address space (what it inherits + ``memory_mb``), CPU seconds, file size 0,
  no core dumps; ``PR_SET_PDEATHSIG`` so that it dies with the kernel;
- the operating system's fence (``sandbox.py``): ``no_new_privs``, Landlock where the kernel
  has it, and last a seccomp-bpf allowlist compiled once in the kernel. This is the guarantee:
  it holds whatever the candidate does in Python, C, ctypes or raw system calls;
- an audit hook (PEP 578) that refuses the same things from Python with a clear message
  ("refused: writing files is not allowed while validating (sales.parquet)"). It only makes
  the messages clear: a candidate that disarms it still meets the system calls' refusal;
- ``os._exit``/``os.abort`` raise instead of ending the child, so code calling them is reported;
- the child never returns into the kernel's code: it ends with the real ``os._exit``, so no
  atexit handler, finaliser or buffered stream of the kernel runs in it.

Where the operating system's fence cannot be built (``sandbox_status()``), nothing is run:
``enter_sandbox`` raises ``SandboxUnavailable`` and validation answers "not validated".
"""

from __future__ import annotations

import errno
import gc
import io
import re
import logging
import os
import resource
import selectors
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Optional

from . import sandbox
from .sandbox import SandboxUnavailable

__all__ = [
    "fork_available",
    "sandbox_status",
    "SandboxUnavailable",
    "refusal_message",
    "Child",
    "Outcome",
    "GuardExit",
    "Sandbox",
    "spawn",
    "collect",
    "enter_sandbox",
]

log = logging.getLogger(__name__)

_real_exit = os._exit  # the sandbox replaces os._exit in the child; the child itself needs this

try:  # the parent-death signal is Linux only; looked up once here, not in every child
    import ctypes

    _libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
except (ImportError, OSError):  # pragma: no cover - platforms without ctypes/libc
    _libc = None
_PR_SET_PDEATHSIG = 1


def fork_available() -> bool:
    """Whether candidates can be run in a fork of this process."""
    return hasattr(os, "fork") and os.name == "posix"


# The fence compiled once (``sandbox.prepare``) and whether it held in a probe child; filled by
# the first ``sandbox_status()`` call, under the lock (specs run on a subshell thread).
_fence: Optional[sandbox.Fence] = None
_status: Optional[tuple[bool, str]] = None
_status_lock = threading.Lock()

# Off only in benchmarks/bench_validate.py's own kernel, to measure what the OS fence costs:
# never a setting, and with it off the audit hook alone stands between a candidate and the
# machine (the weak fence of issue 12).
_OS_FENCE_FOR_BENCHMARK_ONLY = True


def sandbox_status() -> tuple[bool, str]:
    """(True, what fences the children) or (False, "not validated: no sandbox on this system (why)").

    Computed once per process: the filter is compiled, then a probe child enters the whole
    fence and checks that a write-mode open and a socket are refused by the system.
    """
    global _fence, _status
    with _status_lock:
        if _status is None:
            try:
                if not fork_available():
                    raise SandboxUnavailable("this platform cannot fork")
                fence = sandbox.prepare()
                _fence = fence
                _probe()
                _status = (True, fence.description)
                log.info("validation sandbox: %s (compiled in %.1f ms)", fence.description, fence.compile_ms)
            except _ProbeTimeout as exc:  # a machine too busy to answer: say so, try again next time
                _fence = None
                log.warning("jupyter_specgen: %s", exc)
                return (False, f"not validated: {exc}")
            except SandboxUnavailable as exc:
                _fence = None
                _status = (False, f"not validated: no sandbox on this system ({exc})")
                log.warning("jupyter_specgen: %s", _status[1])
        return _status


class _ProbeTimeout(SandboxUnavailable):
    """The probe child did not answer in time: no verdict on the fence, nothing cached."""


def _probe() -> None:
    """Enter the fence in a child and check that the system refuses what it must; raise if not."""
    def child(fd: int) -> None:
        _enter_os_fence(keep_fd=fd, timeout_s=2.0, memory_mb=64, fence=_fence)
        import socket

        checks = []
        try:
            os.close(os.open(os.path.join(os.sep, "tmp", f".specgen-probe-{os.getpid()}"), os.O_WRONLY | os.O_CREAT, 0o600))
            checks.append("a write-mode open succeeded")
        except OSError as exc:
            if exc.errno != errno.EROFS:
                checks.append(f"a write-mode open failed with {errno.errorcode.get(exc.errno, exc.errno)}, not EROFS")
        try:
            socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
            checks.append("a socket was created")
        except OSError:
            pass
        os.write(fd, ("; ".join(checks) or "ok").encode())

    (outcome,) = collect([_spawn(child)], deadline=time.monotonic() + 10.0)
    text = outcome.data.decode("utf-8", "replace")
    if outcome.killed and not text:
        raise _ProbeTimeout("the sandbox's probe did not answer within 10 s (the machine is very busy)")
    if text != "ok":
        why = text or f"the probe child ended with {outcome.exit_code if outcome.signal is None else 'signal %d' % outcome.signal}"
        raise SandboxUnavailable(f"the seccomp/Landlock fence did not hold in a probe: {why}")


@dataclass
class Child:
    """A forked child whose report arrives on ``fd``."""

    pid: int
    fd: int
    started: float  # time.monotonic() at fork
    group: bool = False  # the child leads its own process group (pgid == pid): kill the group


@dataclass
class Outcome:
    """How a child ended and what it wrote."""

    data: bytes
    killed: bool  # by ``collect`` at the deadline
    exit_code: int | None  # None when it died of a signal or could not be reaped
    signal: int | None
    elapsed: float  # seconds from fork to end


class GuardExit(BaseException):
    """Raised in the child in place of ``os._exit``/``os.abort``."""


def spawn(child_main: Callable[[int], None]) -> Child:
    """Fork; in the child call ``child_main(write_fd)`` and end it with ``os._exit``.

    Whatever ``child_main`` does or raises, the child never comes back here. The fence is
    prepared here, in the parent, before the first fork (``sandbox_status``), never in a child.
    """
    sandbox_status()
    return _spawn(child_main)


def _spawn(child_main: Callable[[int], None]) -> Child:
    read_fd, write_fd = os.pipe()
    parent = os.getpid()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child
        code = 0
        try:
            os.close(read_fd)
            # Its own process group, before anything else: the kernel kills the group as a
            # whole, and an interrupt of the kernel's group does not reach it. Set here and in
            # the parent, so that whichever runs first, the group exists before either goes on.
            os.setpgid(0, 0)
            if _libc is not None:
                _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # die with the kernel
            if os.getppid() != parent:  # the kernel died before the line above
                raise SystemExit
            child_main(write_fd)
        except BaseException:  # noqa: BLE001 - nothing may escape into the kernel's code
            code = 70
        finally:
            _real_exit(code)
    os.close(write_fd)
    try:
        os.setpgid(pid, pid)
        group = True
    except OSError:  # it already ended (ESRCH) or set it itself (EACCES after exec: never here)
        try:
            group = os.getpgid(pid) == pid
        except OSError:
            group = False
    return Child(pid=pid, fd=read_fd, started=started, group=group)


def collect(children: Sequence[Child], *, deadline: float, max_bytes: int = 1 << 20) -> list[Outcome]:
    """Read every child's report until EOF, reap them; SIGKILL what is alive at ``deadline``.

    ``deadline`` is a ``time.monotonic()`` value. Reports beyond ``max_bytes`` are cut.
    """
    buffers: dict[int, bytearray] = {c.fd: bytearray() for c in children}
    ended: dict[int, float] = {}
    selector = selectors.DefaultSelector()
    for c in children:
        selector.register(c.fd, selectors.EVENT_READ, c)
    try:
        while selector.get_map():
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
            for key, _ in selector.select(timeout):
                child: Child = key.data
                try:
                    chunk = os.read(child.fd, 1 << 16)
                except OSError:
                    chunk = b""
                if chunk:
                    buf = buffers[child.fd]
                    if len(buf) < max_bytes:
                        buf += chunk[: max_bytes - len(buf)]
                else:
                    selector.unregister(child.fd)
                    ended[child.pid] = time.monotonic()
    finally:
        selector.close()
        for c in children:
            if c.pid not in ended:  # what a late child wrote before the deadline still counts
                _drain(c.fd, buffers[c.fd], max_bytes)
            os.close(c.fd)
    outcomes = []
    for c in children:
        # A child whose whole report arrived (EOF after data) and that is still tearing down
        # its address space at the deadline is killed, but that does not make it "killed".
        killed, status = _reap(c, deadline)
        killed = killed and not (c.pid in ended and buffers[c.fd])
        end = ended.get(c.pid, time.monotonic())
        exit_code = sig = None
        if status is not None:
            if os.WIFEXITED(status):
                exit_code = os.WEXITSTATUS(status)
            elif os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
        outcomes.append(
            Outcome(bytes(buffers[c.fd]), killed=killed, exit_code=exit_code, signal=sig, elapsed=end - c.started)
        )
    return outcomes


def _drain(fd: int, buf: bytearray, max_bytes: int) -> None:
    """Read what is already in the pipe, without waiting."""
    try:
        os.set_blocking(fd, False)
        while len(buf) < max_bytes:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return
            buf += chunk[: max_bytes - len(buf)]
    except OSError:  # BlockingIOError: nothing more for now
        pass


def _reap(child: Child, deadline: float) -> tuple[bool, int | None]:
    """Wait for ``child`` until ``deadline``, then kill it; (killed by us, wait status).

    Its process group is killed as well, before the child is reaped: while the child is a
    zombie its pid (the group's id) cannot be reused, so the signal cannot reach a stranger.
    """
    pid = child.pid
    killed = False
    while True:
        try:
            ended = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # someone else reaped it
            return killed, None
        if ended is None and time.monotonic() >= deadline:
            _kill(child)
            killed = True
            ended = True
        if ended is not None:
            if child.group:
                _killpg(pid)  # whatever else is in its group (nothing can be: no fork)
            try:
                return killed, os.waitpid(pid, 0)[1]
            except ChildProcessError:
                return killed, None
        time.sleep(0.0005)


def _kill(child: Child) -> None:
    if child.group:
        _killpg(child.pid)
    try:
        os.kill(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ----------------------------------------------------------------------------------------------
# In the child


@dataclass
class Sandbox:
    """What the fence caught, filled while the child runs."""

    stdout: "_BoundedText"
    stderr: "_BoundedText"
    refused: list[str] = field(default_factory=list)


class _BoundedText(io.TextIOBase):
    """A text sink keeping the first ``limit`` characters."""

    def __init__(self, limit: int):
        self._parts: list[str] = []
        self._size = 0
        self._limit = limit
        self.cut = 0

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        room = self._limit - self._size
        if room > 0:
            self._parts.append(s[:room])
            self._size += min(len(s), room)
        self.cut += max(0, len(s) - max(room, 0))
        return len(s)

    def getvalue(self) -> str:
        text = "".join(self._parts)
        return text + (f"\n[... {self.cut} more characters]" if self.cut else "")


# Events refused outright. Names from the audit events table of the Python docs.
_REFUSED_EVENTS = frozenset(
    {
        # files
        "os.remove", "os.rmdir", "os.rename", "os.truncate", "os.mkdir", "os.chmod",
        "os.chown", "os.link", "os.symlink", "os.utime", "os.chflags", "os.lchflags",
        "os.setxattr", "os.removexattr", "shutil.rmtree", "shutil.copyfile",
        "shutil.copymode", "shutil.copystat", "shutil.chown", "shutil.make_archive",
        "shutil.unpack_archive", "sqlite3.connect", "sqlite3.connect/handle",
        # processes
        "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
        "os.startfile", "subprocess.Popen", "pty.spawn", "os.setuid", "os.setgid",
        "signal.pthread_kill", "resource.setrlimit", "resource.prlimit",
        # network
        "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
        "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
        "socket.getnameinfo", "urllib.Request", "ftplib.connect", "smtplib.connect",
        "imaplib.open", "poplib.connect", "nntplib.connect", "telnetlib.Telnet.open",
        "webbrowser.open",
        # ways around the hook
        "ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.call_function",
        "ctypes.cdata", "ctypes.addressof", "ctypes.string_at", "ctypes.wstring_at",
        "cpython.run_command", "cpython.run_file", "cpython.run_module",
        "sys.remote_exec", "sys.setprofile", "sys.settrace",
    }
)
_FILE_EVENTS = frozenset(
    {"os.remove", "os.rmdir", "os.rename", "os.truncate", "os.mkdir", "os.chmod", "os.chown", "os.link",
     "os.symlink", "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.make_archive"}
)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def enter_sandbox(*, keep_fd: int, timeout_s: float, memory_mb: int, output_chars: int = 4000) -> Sandbox:
    """Fence in the current (forked) process; see the module docstring. Irreversible.

    Raises ``SandboxUnavailable`` when the operating system's fence cannot be built or entered;
    the caller must then run nothing (``spawn`` ends the child).
    """
    _enter_os_fence(keep_fd=keep_fd, timeout_s=timeout_s, memory_mb=memory_mb)
    # A full collection touches every object and so copies every page of the kernel; the
    # child is short-lived and the address-space limit bounds what garbage it can make.
    gc.disable()
    box = Sandbox(stdout=_BoundedText(output_chars), stderr=_BoundedText(output_chars))
    sys.stdout, sys.stderr = box.stdout, box.stderr
    sys.stdin = io.StringIO("")
    os._exit = _refuse_exit  # type: ignore[assignment]
    os.abort = _refuse_abort  # type: ignore[assignment]
    me = os.getpid()

    # The hook only words the refusals (the system calls are refused anyway, see above): a
    # candidate that swaps its globals or code disarms the messages, not the fence.
    def hook(event: str, args: tuple) -> None:
        why = _refusal(event, args, me)
        if why:
            if len(box.refused) < 20:
                box.refused.append(why)
            if why.startswith("write "):
                raise PermissionError(f"refused: writing files is not allowed while validating ({why[6:]})")
            raise PermissionError(f"refused while validating a suggestion: {why}")

    sys.addaudithook(hook)
    return box


def _enter_os_fence(*, keep_fd: int, timeout_s: float, memory_mb: int, fence: Optional[sandbox.Fence] = None) -> None:
    """Descriptors, limits, then the operating system's fence (Landlock, seccomp last).

    ``fence``: given by the probe only (``sandbox_status`` holds its lock while it runs).
    """
    if fence is None:
        ok, why = _status if _status is not None else (False, "not validated: the sandbox was not prepared before the fork")
        fence = _fence
        if not ok or fence is None:
            raise SandboxUnavailable(why)
    _close_fds(keep_fd)
    # pyarrow's default allocator (mimalloc or jemalloc) reserves a wide range of address space
    # when its pool is first made; made in a child under RLIMIT_AS that fails ("malloc of size
    # 128 failed"), and every frame with pyarrow-backed columns (pandas' default strings when
    # pyarrow is installed) would raise. A pool the kernel already made is inherited and used as
    # it is; new allocations here use the C library's malloc, which the limit only bounds (the
    # variable covers a pyarrow first imported in the child, the call one the kernel imported).
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    arrow = sys.modules.get("pyarrow")
    if arrow is not None:
        try:
            arrow.set_memory_pool(arrow.system_memory_pool())
        except Exception:  # noqa: BLE001 - an old or partial pyarrow: its own pool, as before
            pass
    _set_limits(timeout_s=timeout_s, memory_mb=memory_mb)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past RLIMIT_FSIZE raises OSError(EFBIG)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # interrupting the kernel is not about us
    if _OS_FENCE_FOR_BENCHMARK_ONLY:
        fence.enter(report_fd=keep_fd)


def refusal_message(message: str) -> str:
    """The clear wording of an error the fence caused, or "" when ``message`` is not one.

    C libraries report the system's refusal in their own words ("Failed to open local file
    'sales.parquet'. Detail: [errno 30] Read-only file system"); the filter answers every call
    that would change the filesystem with EROFS so that it can be told apart here.
    """
    if "refused: writing files is not allowed" in message:
        return message
    if "Read-only file system" in message or "[errno 30]" in message.lower():
        path = _QUOTED.search(message)
        return f"refused: writing files is not allowed while validating ({path.group(1) if path else 'a file'})"
    if "Operation not permitted" in message and "refused" not in message:
        return f"refused: not allowed while validating ({message})"
    return ""


_QUOTED = re.compile(r"""['"]([^'"]+)['"]""")


def _refusal(event: str, args: tuple, me: int) -> str:
    """Why ``event`` is refused, or "" when it is allowed."""
    if event == "open":
        path, mode, flags = (tuple(args) + (None, None, None))[:3]
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS
        )
        return f"write {os.fsdecode(path) if isinstance(path, (str, bytes)) else path!r}" if writes else ""
    if event in ("os.kill", "os.killpg"):
        pid = args[0] if args else None
        return "" if pid == me and event == "os.kill" else f"{event} {pid!r}"
    if event == "mmap.__new__":
        fileno, _length, access = (tuple(args) + (None, None, None))[:3]
        import mmap

        return "" if fileno == -1 or access == mmap.ACCESS_READ else f"writable mmap of fd {fileno}"
    if event in _FILE_EVENTS and isinstance(args, tuple) and args and isinstance(args[0], (str, bytes, os.PathLike)):
        return f"write {os.fsdecode(args[0])}"
    if event in _REFUSED_EVENTS:
        shown = ", ".join(repr(a)[:80] for a in args[:2]) if isinstance(args, tuple) else ""
        return f"{event} {shown}".strip()
    return ""


def _refuse_exit(code: int = 0) -> None:
    raise GuardExit(f"os._exit({code!r}) called")


def _refuse_abort() -> None:
    raise GuardExit("os.abort() called")


def _close_fds(keep_fd: int) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    top = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    top = top if 0 < top < (1 << 20) else (1 << 20)
    os.closerange(3, keep_fd)
    os.closerange(keep_fd + 1, top)


def _set_limits(*, timeout_s: float, memory_mb: int) -> None:
    cpu = max(1, int(timeout_s + 1.0))
    limits = [
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_FSIZE, (0, 0)),
        (resource.RLIMIT_CORE, (0, 0)),
    ]
    # No RLIMIT_NPROC: it counts threads too (numpy's and torch's pools must start), and the
    # seccomp filter refuses every clone that is not a thread, for root as well.
    inherited = _address_space()
    if inherited:
        budget = inherited + memory_mb * (1 << 20)
        limits.append((resource.RLIMIT_AS, (budget, budget)))
    for which, value in limits:
        try:
            soft, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                value = (min(value[0], hard), min(value[1], hard))
            resource.setrlimit(which, value)
        except (ValueError, OSError):
            pass  # a limit this platform lacks or refuses; the others still hold


def _address_space() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0
