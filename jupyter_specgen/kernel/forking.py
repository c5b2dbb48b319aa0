"""Fork a child of the kernel, fence it in, and collect what it reports.

The child is a copy-on-write snapshot of the kernel: it sees the user's namespace as it is and
can do anything to its copy without the kernel noticing. What it must not do is reach outside:
write or delete files, spawn processes, talk to the network, signal other processes, or touch
the kernel's sockets. ``enter_sandbox`` builds that fence from what one process can do to
itself (see docs/validation.md for what it does not cover):

- every inherited file descriptor is closed, stdin/stdout/stderr point at /dev/null, so the
  kernel's ZMQ sockets and the user's open files are out of reach (a shared file offset would
  otherwise leak reads back into the kernel);
- resource limits: address space (what it inherits + ``memory_mb``), CPU seconds, file size 0
  (no byte can be written to a regular file, even through C code), no core dumps, no new
  processes for non-root users;
- an audit hook (PEP 578) that refuses writing opens, deletes and renames, process creation,
  signals to other processes, socket connections and lookups, ctypes, and writable mmaps;
- ``os._exit``/``os.abort`` raise instead of ending the child, so code calling them is reported;
- the child never returns into the kernel's code: it ends with the real ``os._exit``, so no
  atexit handler, finaliser or buffered stream of the kernel runs in it.
"""

from __future__ import annotations

import gc
import io
import logging
import os
import resource
import selectors
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "fork_available",
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


@dataclass
class Child:
    """A forked child whose report arrives on ``fd``."""

    pid: int
    fd: int
    started: float  # time.monotonic() at fork


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

    Whatever ``child_main`` does or raises, the child never comes back here.
    """
    read_fd, write_fd = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child
        code = 0
        try:
            os.close(read_fd)
            child_main(write_fd)
        except BaseException:  # noqa: BLE001 - nothing may escape into the kernel's code
            code = 70
        finally:
            _real_exit(code)
    os.close(write_fd)
    return Child(pid=pid, fd=read_fd, started=started)


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
            os.close(c.fd)
    outcomes = []
    for c in children:
        killed, status = _reap(c.pid, deadline)
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


def _reap(pid: int, deadline: float) -> tuple[bool, int | None]:
    """Wait for ``pid`` until ``deadline``, then kill it; (killed by us, wait status)."""
    killed = False
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # someone else reaped it
            return killed, None
        if done:
            return killed, status
        if time.monotonic() >= deadline and not killed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            killed = True
            try:
                return killed, os.waitpid(pid, 0)[1]
            except ChildProcessError:
                return killed, None
        time.sleep(0.0005)


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
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def enter_sandbox(*, keep_fd: int, timeout_s: float, memory_mb: int, output_chars: int = 4000) -> Sandbox:
    """Fence in the current (forked) process; see the module docstring. Irreversible."""
    _close_fds(keep_fd)
    _set_limits(timeout_s=timeout_s, memory_mb=memory_mb)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a refused write raises OSError(EFBIG)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # interrupting the kernel is not about us
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # die with the kernel
    # A full collection touches every object and so copies every page of the kernel; the
    # child is short-lived and the address-space limit bounds what garbage it can make.
    gc.disable()
    box = Sandbox(stdout=_BoundedText(output_chars), stderr=_BoundedText(output_chars))
    sys.stdout, sys.stderr = box.stdout, box.stderr
    sys.stdin = io.StringIO("")
    os._exit = _refuse_exit  # type: ignore[assignment]
    os.abort = _refuse_abort  # type: ignore[assignment]
    me = os.getpid()

    def hook(event: str, args: tuple) -> None:
        why = _refusal(event, args, me)
        if why:
            if len(box.refused) < 20:
                box.refused.append(why)
            raise PermissionError(f"refused while validating a suggestion: {why}")

    sys.addaudithook(hook)
    return box


def _refusal(event: str, args: tuple, me: int) -> str:
    """Why ``event`` is refused, or "" when it is allowed."""
    if event == "open":
        path, mode, flags = (tuple(args) + (None, None, None))[:3]
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS
        )
        return f"open {path!r} mode {mode!r}" if writes else ""
    if event in ("os.kill", "os.killpg"):
        pid = args[0] if args else None
        return "" if pid == me and event == "os.kill" else f"{event} {pid!r}"
    if event == "mmap.__new__":
        fileno, _length, access = (tuple(args) + (None, None, None))[:3]
        import mmap

        return "" if fileno == -1 or access == mmap.ACCESS_READ else f"writable mmap of fd {fileno}"
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
    if hasattr(resource, "RLIMIT_NPROC"):
        limits.append((resource.RLIMIT_NPROC, (0, 0)))  # not enforced for root; the hook is
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
