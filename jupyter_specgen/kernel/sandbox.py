"""The operating system's fence around a validation child: a seccomp-bpf allowlist and Landlock.

``prepare()`` runs once in the kernel: it compiles the seccomp allowlist with libseccomp (through
the ``pyseccomp`` ctypes bindings), exports it as a raw BPF program, and notes where the two
values that differ per child (its pid, its report descriptor) go: they are compiled in as
sentinels. ``Fence.enter(report_fd=...)`` runs in each forked child: it patches the two values
into a copy of the program, sets ``no_new_privs``, restricts the child with Landlock where the
kernel has it, and loads the filter last. From then on the kernel of the operating system
answers every system call of the child and of its threads, whatever code makes it: Python,
a C extension, ctypes or a raw ``syscall()``.

The filter allows what reading and computing need and refuses the rest (see docs/validation.md):

- calls that would change the filesystem (write-mode opens, truncate, unlink, rename, mkdir,
  mknod, chmod, ...) fail with ``EROFS`` ("Read-only file system"), so that what a library
  reports says what happened and validation can tell the user "writing files is not allowed";
- everything else not allowed (processes, sockets, ptrace, io_uring, pidfd, bpf, ...) fails
  with ``EPERM``; ``clone3`` and ``openat2`` with ``ENOSYS`` so that libc falls back to
  ``clone``/``openat``, whose arguments the filter can see;
- a system call of another architecture (``int 0x80`` on x86_64) kills the child.

Landlock (a Linux security module, unprivileged) adds a second wall that does not depend on
the allowlist being complete: no filesystem right beyond reading and no exec (ABI >= 1), no TCP
bind/connect (ABI >= 4), no signals and abstract unix sockets outside the child (ABI >= 6); it
also keeps the child out of ``/proc/<kernel pid>/{mem,fd}`` (ptrace rules of its domain).
Landlock is bound with a few lines of ctypes here (three system calls and one struct) rather than
a PyPI package: the ones there wrap the same calls and would add a dependency for no gain.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import struct
import sys
import time
from dataclasses import dataclass

__all__ = ["Fence", "SandboxUnavailable", "prepare", "landlock_abi"]

log = logging.getLogger(__name__)


class SandboxUnavailable(RuntimeError):
    """The OS fence cannot be built (or entered) here; the message says why."""


# Values compiled into the filter in place of the child's pid and report descriptor: far above
# any pid (pid_max <= 2**22) or descriptor a child has, and unlike any other constant of the
# program (syscall numbers, flags, actions), so each occurrence is one of ours.
_PID_SENTINEL = 0x5EC51D01
_FD_SENTINEL = 0x5EC5FD02

_CLONE_THREAD = 0x10000
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_PR_GET_SECCOMP = 21
_SECCOMP_MODE_FILTER = 2

# Landlock (include/uapi/linux/landlock.h). The syscall numbers are the same on every
# architecture (they come after the unified numbering of 5.x).
_SYS_LANDLOCK_CREATE_RULESET = 444
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_FS_EXECUTE = 1 << 0
_FS_WRITE_FILE = 1 << 1
_FS_REMOVE_DIR, _FS_REMOVE_FILE = 1 << 4, 1 << 5
_FS_MAKE = sum(1 << b for b in range(6, 13))  # char, dir, reg, sock, fifo, block, sym
_FS_REFER, _FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1

_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
if _libc is not None:
    _libc.syscall.restype = ctypes.c_long
    _libc.prctl.restype = ctypes.c_int


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


def landlock_abi() -> int:
    """The Landlock ABI version of the running kernel; 0 when it has none (or it is disabled)."""
    if _libc is None:
        return 0
    abi = _libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                        ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION))
    return max(0, int(abi))


@dataclass(frozen=True)
class Fence:
    """A compiled filter and what the child needs to enter it; built once by ``prepare``."""

    program: bytes  # struct sock_filter[], with sentinels in place of the child's pid and fd
    pid_slots: tuple[int, ...]  # indices of the instructions whose ``k`` is the pid sentinel
    fd_slots: tuple[int, ...]
    landlock_abi: int  # 0: no Landlock on this kernel; the filter alone fences the child
    compile_ms: float  # what ``prepare`` took (the filter is never compiled in a child)

    @property
    def description(self) -> str:
        walls = f"seccomp allowlist ({len(self.program) // 8} BPF instructions)"
        return walls + (f" + Landlock ABI {self.landlock_abi}" if self.landlock_abi else " (no Landlock on this kernel)")

    def enter(self, *, report_fd: int) -> None:
        """Fence in the calling process (a single-threaded fork). Irreversible; raises on failure.

        Nothing may run in the child after a failure: the caller reports it and exits.
        """
        if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise SandboxUnavailable(f"no_new_privs refused: {os.strerror(ctypes.get_errno())}")
        if self.landlock_abi:
            _restrict_with_landlock(self.landlock_abi)
        program = bytearray(self.program)
        for slot in self.pid_slots:
            struct.pack_into("=I", program, slot * 8 + 4, os.getpid())
        for slot in self.fd_slots:
            struct.pack_into("=I", program, slot * 8 + 4, report_fd)
        buffer = (ctypes.c_char * len(program)).from_buffer(program)
        fprog = _SockFprog(len(program) // 8, ctypes.addressof(buffer))
        if _libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
            raise SandboxUnavailable(f"loading the seccomp filter failed: {os.strerror(ctypes.get_errno())}")


def _restrict_with_landlock(abi: int) -> None:
    fs = _FS_EXECUTE | _FS_WRITE_FILE | _FS_REMOVE_DIR | _FS_REMOVE_FILE | _FS_MAKE
    fs |= (_FS_REFER if abi >= 2 else 0) | (_FS_TRUNCATE if abi >= 3 else 0) | (_FS_IOCTL_DEV if abi >= 5 else 0)
    net = _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0
    scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0
    attr = _RulesetAttr(fs, net, scoped)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8  # the struct grew with the ABI
    # No rule is added: every handled right is refused everywhere; reading is not handled.
    fd = _libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if fd < 0:
        raise SandboxUnavailable(f"Landlock ruleset refused: {os.strerror(ctypes.get_errno())}")
    try:
        if _libc.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(fd), ctypes.c_uint32(0)) != 0:
            raise SandboxUnavailable(f"Landlock restrict_self refused: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------
# The allowlist

# Reading, computing, threads' bookkeeping, time, own-process information: allowed as they are.
_ALLOWED = (
    "read readv pread64 preadv preadv2 close close_range dup dup2 dup3 lseek "
    "fstat stat lstat newfstatat statx fstatfs statfs access faccessat faccessat2 readlink readlinkat "
    "getdents getdents64 getcwd chdir fchdir umask getxattr lgetxattr fgetxattr listxattr llistxattr "
    "flistxattr fadvise64 readahead "
    "poll ppoll select pselect6 epoll_create epoll_create1 epoll_ctl epoll_wait epoll_pwait epoll_pwait2 "
    "eventfd eventfd2 pipe pipe2 timerfd_create timerfd_settime timerfd_gettime signalfd signalfd4 "
    "munmap mremap mprotect brk mincore get_mempolicy set_mempolicy mbind "
    "futex futex_waitv set_robust_list rseq set_tid_address arch_prctl "
    "rt_sigaction rt_sigprocmask rt_sigreturn rt_sigpending rt_sigtimedwait rt_sigsuspend sigaltstack "
    "restart_syscall pause nanosleep clock_nanosleep clock_gettime clock_getres gettimeofday time "
    "getitimer setitimer alarm getrandom "
    "getpid gettid getppid getuid geteuid getgid getegid getresuid getresgid getgroups getpgrp getpgid "
    "getsid getrusage sysinfo uname times getpriority capget getcpu getrlimit ugetrlimit "
    "sched_yield sched_getaffinity sched_getparam sched_getscheduler sched_get_priority_max "
    "sched_get_priority_min sched_getattr sched_rr_get_interval "
    "exit exit_group wait4 waitid"
).split()

# Calls that change the filesystem: EROFS, so that C libraries report "Read-only file system".
_FILESYSTEM_WRITES = (
    "creat mkdir mkdirat rmdir unlink unlinkat rename renameat renameat2 link linkat symlink symlinkat "
    "mknod mknodat truncate ftruncate fallocate chmod fchmod fchmodat fchmodat2 chown fchown lchown "
    "fchownat utime utimes utimensat futimesat setxattr lsetxattr fsetxattr removexattr lremovexattr "
    "fremovexattr copy_file_range"
).split()

# Answered "not implemented" so that libc falls back to a call whose arguments the filter sees.
_FALLBACK = ("clone3", "openat2")

_MADVISE_ALLOWED = (0, 1, 2, 3, 4, 8, 10, 11, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23)  # not REMOVE, HWPOISON, ...
_IOCTL_ALLOWED = (0x5401, 0x5413, 0x541B, 0x5421, 0x5450, 0x5451)  # TCGETS TIOCGWINSZ FIONREAD FIONBIO FIONCLEX FIOCLEX
# fcntl: descriptor flags, dup, status flags, record locks (read locks only: every file is
# open read-only), pipe size, seals; not F_SETOWN/F_SETSIG (signals to other processes), leases.
_FCNTL_ALLOWED = (0, 1, 2, 3, 4, 5, 6, 7, 36, 37, 38, 1030, 1032, 1034)
# prctl: names, read-only queries, naming anonymous mappings (glibc does it for thread stacks).
_PRCTL_ALLOWED = (2, 3, 15, 16, 21, 23, 30, 39, 42, 0x53564D41)


def _write_open_flags() -> list[int]:
    tmpfile = getattr(os, "O_TMPFILE", 0) & ~getattr(os, "O_DIRECTORY", 0)
    return [f for f in (os.O_WRONLY, os.O_RDWR, os.O_CREAT, os.O_TRUNC, os.O_APPEND, tmpfile) if f]


def prepare() -> Fence:
    """Compile the filter for this machine; raises ``SandboxUnavailable`` with the reason."""
    if not sys.platform.startswith("linux"):
        raise SandboxUnavailable(f"seccomp and Landlock are Linux only (this is {sys.platform})")
    try:
        import pyseccomp as sc
    except (ImportError, OSError, RuntimeError) as exc:  # RuntimeError: "Unable to find libseccomp"
        raise SandboxUnavailable(f"libseccomp not usable ({type(exc).__name__}: {exc}); "
                                 "install libseccomp2 and the pyseccomp package") from exc
    if _libc.prctl(_PR_GET_SECCOMP, 0, 0, 0, 0) < 0:
        raise SandboxUnavailable(f"the kernel has no seccomp ({os.strerror(ctypes.get_errno())})")
    started = time.perf_counter()
    try:
        program = _compile(sc)
    except Exception as exc:  # noqa: BLE001 - an old or odd libseccomp/pyseccomp: say which, never half a filter
        raise SandboxUnavailable(f"compiling the seccomp filter failed: {type(exc).__name__}: {exc}") from exc
    pid_slots, fd_slots = _slots(program, _PID_SENTINEL), _slots(program, _FD_SENTINEL)
    if not pid_slots or not fd_slots:
        raise SandboxUnavailable("the compiled seccomp filter lacks its per-child slots")
    return Fence(program=program, pid_slots=pid_slots, fd_slots=fd_slots, landlock_abi=landlock_abi(),
                 compile_ms=(time.perf_counter() - started) * 1000)


def _compile(sc) -> bytes:
    flt = sc.SyscallFilter(sc.ERRNO(errno.EPERM))
    flt.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)  # int 0x80 and other ABIs
    try:
        flt.set_attr(sc.Attr.CTL_OPTIMIZE, 2)  # a binary tree: fewer instructions run per call
    except OSError:
        pass  # libseccomp < 2.5: a linear filter, slower, as strict
    native = sc.Arch.NATIVE
    A, EQ, LE, MASKED_EQ = sc.Arg, sc.EQ, sc.LE, sc.MASKED_EQ
    allow = sc.ALLOW

    def number(name: str) -> int:
        nr = sc.resolve_syscall(native, name)
        return nr if isinstance(nr, int) and nr >= 0 else -1  # negative: not on this architecture

    def add(action: int, name: str, *args) -> None:
        nr = number(name)
        if nr >= 0:
            flt.add_rule(action, nr, *args)

    for name in _ALLOWED:
        add(allow, name)
    for name in _FILESYSTEM_WRITES:
        add(sc.ERRNO(errno.EROFS), name)
    for name in _FALLBACK:
        add(sc.ERRNO(errno.ENOSYS), name)
    # write only to /dev/null (0, 1, 2) and the report pipe
    for name in ("write", "writev", "pwrite64", "pwritev", "pwritev2"):
        add(allow, name, A(0, LE, 2))
        add(allow, name, A(0, EQ, _FD_SENTINEL))
    # opens read-only; with any write flag: EROFS
    write_flags = _write_open_flags()
    mask = sum(write_flags)
    for name, flags_arg in (("open", 1), ("openat", 2)):
        add(allow, name, A(flags_arg, MASKED_EQ, mask, 0))
        for flag in write_flags:
            add(sc.ERRNO(errno.EROFS), name, A(flags_arg, MASKED_EQ, flag, flag))
    # private or anonymous memory, or a read-only view: never a writable shared file mapping
    import mmap as _mmap

    add(allow, "mmap", A(3, MASKED_EQ, 0x3, _mmap.MAP_PRIVATE))
    add(allow, "mmap", A(3, MASKED_EQ, _mmap.MAP_ANONYMOUS, _mmap.MAP_ANONYMOUS))
    add(allow, "mmap", A(2, MASKED_EQ, _mmap.PROT_WRITE, 0))
    for advice in _MADVISE_ALLOWED:
        add(allow, "madvise", A(2, EQ, advice))
    # threads only: a clone without CLONE_THREAD would be a new process
    add(allow, "clone", A(0, MASKED_EQ, _CLONE_THREAD, _CLONE_THREAD))
    # signals to itself only (raise(), abort(), pthread_kill)
    for name in ("kill", "tgkill", "tkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
        add(allow, name, A(0, EQ, _PID_SENTINEL))
    # about itself only
    add(allow, "prlimit64", A(2, EQ, 0))  # reading a limit (new_limit NULL), never raising one
    add(allow, "setpriority", A(0, EQ, 0), A(1, EQ, 0), A(2, MASKED_EQ, 0xFFFFFFFFFFFFFFE0, 0))  # nicer only
    add(allow, "sched_setaffinity", A(0, EQ, 0))
    for cmd in _IOCTL_ALLOWED:
        add(allow, "ioctl", A(1, EQ, cmd))
    for cmd in _FCNTL_ALLOWED:
        add(allow, "fcntl", A(1, EQ, cmd))
    for option in _PRCTL_ALLOWED:
        add(allow, "prctl", A(0, EQ, option))
    # libseccomp 2.5 exports to a descriptor only; an anonymous memory file, not the disk.
    with os.fdopen(os.memfd_create("specgen-seccomp"), "w+b") as sink:
        flt.export_bpf(sink)
        sink.seek(0)
        program = sink.read()
    if not program or len(program) % 8:
        raise OSError(errno.EINVAL, f"libseccomp exported {len(program)} bytes of BPF")
    return program


def _slots(program: bytes, value: int) -> tuple[int, ...]:
    """Indices of the instructions of ``program`` whose constant ``k`` is ``value``."""
    return tuple(i for i, (_code, _jt, _jf, k) in enumerate(struct.iter_unpack("=HBBI", program)) if k == value)
