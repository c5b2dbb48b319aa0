"""The hostile battery of test_sandbox.py: candidates an attacker or a plain model mistake could write.

Each case is code run as a candidate in a fork of a real kernel. ``$S`` is the sentinel folder
(the kernel's working directory, files that must stay byte-identical), ``$T`` the kernel's
TMPDIR (must stay empty), ``$PORT``/``$UDP``/``$UNIX``/``$ABSTRACT`` listeners the test holds,
``$MARK`` a marker that any process or /dev/shm entry the candidate manages to create carries.
Attacks assert their own success, so a fenced attack ends "raised" (or "crashed"/"timeout"),
never "ran"; cases in ``MAY_RUN`` act later (threads after the report) or are plain reads.
"""

from __future__ import annotations

__all__ = ["CASES", "MAY_RUN", "MAY_TIME_OUT", "DISARM", "render"]

_LIBC = "import ctypes, errno\nlibc = ctypes.CDLL(None, use_errno=True)\nlibc.syscall.restype = ctypes.c_long\n"


def _sys(name: str) -> str:
    """The syscall number of ``name`` on this machine (x86_64 or aarch64), resolved by libseccomp."""
    return f"__import__('pyseccomp').resolve_syscall(0, {name!r})"


def _ok(expr: str) -> str:
    return f"r = {expr}\nassert r >= 0, ('refused', ctypes.get_errno())\n"


CASES: dict[str, str] = {
    # -- C-level truncation and creation of the user's files -----------------------------------
    "to_parquet existing": "df.to_parquet('sales.parquet')",
    "to_parquet new file": "df.to_parquet('$T/new.parquet')",
    "pyarrow write_csv": "import pyarrow as pa, pyarrow.csv as pc\npc.write_csv(pa.table({'a': [1]}), '$S/data.csv')",
    "pyarrow write_table": "import pyarrow as pa, pyarrow.parquet as pq\npq.write_table(pa.table({'a': [1]}), '$S/sales.parquet')",
    "pyarrow fs delete": "import pyarrow.fs as fs\nfs.LocalFileSystem().delete_file('$S/keep.txt')",
    "pyarrow fs mkdir": "import pyarrow.fs as fs\nfs.LocalFileSystem().create_dir('$T/made')",
    "pyarrow output stream": "import pyarrow.fs as fs\nfs.LocalFileSystem().open_output_stream('$S/hist.txt').write(b'x')",
    "torch.save existing": "torch.save(torch.ones(3), '$S/model.pt')",
    "torch.save new": "torch.save(torch.ones(3), '$T/new.pt')",
    "torch.from_file shared": "x = torch.from_file('$S/big.bin', shared=True, size=16, dtype=torch.uint8)\nx.fill_(7)",
    "readline write_history": "import readline\nreadline.add_history('x')\nreadline.write_history_file('$S/hist.txt')",
    "readline append_history": "import readline\nreadline.add_history('x')\nreadline.append_history_file(1, '$S/hist.txt')",
    "np.save existing": "np.save('$S/arr.npy', np.zeros(3))",
    "np.memmap r+": "m = np.memmap('$S/big.bin', mode='r+', dtype=np.uint8)\nm[:] = 9\nm.flush()",
    "np.memmap w+": "m = np.memmap('$T/mm.bin', mode='w+', dtype=np.uint8, shape=(10,))",
    "df.to_csv": "df.to_csv('$S/data.csv')",
    "sqlite write": "import sqlite3\nc = sqlite3.connect('$S/db.sqlite')\nc.execute('delete from t')\nc.commit()",
    "os.mknod": "os.mknod('$T/node')",
    "os.mkfifo": "os.mkfifo('$T/fifo')",
    "shared_memory create": "from multiprocessing import shared_memory\nshared_memory.SharedMemory(name='$MARK_shm', create=True, size=64)",
    "_posixshmem.shm_open": "import _posixshmem\n_posixshmem.shm_open('/$MARK_posix', os.O_CREAT | os.O_RDWR, 0o600)",
    "open /dev/shm": "open('/dev/shm/$MARK_file', 'w').write('x')",
    "os.truncate": "os.truncate('$S/keep.txt', 0)",
    "os.open O_TRUNC": "os.open('$S/keep.txt', os.O_WRONLY | os.O_TRUNC)",
    "open 'w' existing": "open('$S/keep.txt', 'w').write('gone')",
    "open 'a'": "open('$S/keep.txt', 'a').write('more')",
    "open 'x' new": "open('$T/new.txt', 'x').write('x')",
    "ctypes open O_TRUNC": _LIBC + _ok("libc.open(b'$S/keep.txt', os.O_WRONLY | os.O_TRUNC)"),
    "ctypes open O_CREAT": _LIBC + _ok("libc.open(b'$T/c.txt', os.O_WRONLY | os.O_CREAT, 0o644)"),
    "ctypes fopen w": _LIBC + "libc.fopen.restype = ctypes.c_void_p\nassert libc.fopen(b'$S/hist.txt', b'w'), 'refused'",
    "syscall openat O_RDWR": _LIBC + _ok(f"libc.syscall({_sys('openat')}, -100, b'$S/keep.txt', os.O_RDWR)")
    + "os.write(r, b'XXXX')",
    "syscall open O_TMPFILE": _LIBC + _ok(f"libc.syscall({_sys('openat')}, -100, b'$T', os.O_TMPFILE | os.O_WRONLY, 0o600)"),
    "syscall truncate": _LIBC + _ok(f"libc.syscall({_sys('truncate')}, b'$S/keep.txt', 0)"),
    "syscall unlinkat": _LIBC + _ok(f"libc.syscall({_sys('unlinkat')}, -100, b'$S/keep.txt', 0)"),
    "syscall renameat2": _LIBC + _ok(f"libc.syscall({_sys('renameat2')}, -100, b'$S/keep.txt', -100, b'$T/moved', 0)"),
    "syscall mknodat": _LIBC + _ok(f"libc.syscall({_sys('mknodat')}, -100, b'$T/n2', 0o10644, 0)"),
    "syscall fchmodat": _LIBC + _ok(f"libc.syscall({_sys('fchmodat')}, -100, b'$S/keep.txt', 0)"),
    "ftruncate of a read-only fd": _LIBC + "fd = os.open('$S/keep.txt', os.O_RDONLY)\n"
    + _ok(f"libc.syscall({_sys('ftruncate')}, fd, 0)"),
    "fallocate": _LIBC + "fd = os.open('$S/keep.txt', os.O_RDONLY)\n" + _ok(f"libc.syscall({_sys('fallocate')}, fd, 0, 0, 4096)"),
    "mmap shared writable": "import mmap\nfd = os.open('$S/big.bin', os.O_RDONLY)\nm = mmap.mmap(fd, 16, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)\nm[:4] = b'XXXX'",
    "raw mmap MAP_SHARED PROT_WRITE": _LIBC + "libc.mmap.restype = ctypes.c_void_p\nfd = os.open('$S/big.bin', os.O_RDONLY)\n"
    "p = libc.mmap(None, 4096, 3, 1, fd, 0)\nassert p not in (None, ctypes.c_void_p(-1).value), 'refused'\nctypes.memset(p, 88, 16)",
    "os.link": "os.link('$S/keep.txt', '$T/hard')",
    "os.symlink": "os.symlink('$S/keep.txt', '$T/soft')",
    "os.chmod": "os.chmod('$S/keep.txt', 0)",
    "os.utime": "os.utime('$S/keep.txt', (0, 0))",
    "os.setxattr": "os.setxattr('$S/keep.txt', 'user.$MARK', b'1')",
    "shutil.rmtree": "import shutil\nshutil.rmtree('$S')",
    "os.rename": "os.rename('$S/keep.txt', '$T/renamed')",
    "os.mkdir": "os.mkdir('$T/dir')",
    "memfd_create": "fd = os.memfd_create('$MARK')\nos.write(fd, b'x')",
    "io_uring_setup": _LIBC + "params = ctypes.create_string_buffer(120)\n" + _ok(f"libc.syscall({_sys('io_uring_setup')}, 8, params)"),
    "kernel's open log file": "userlog.write('forged'); userlog.flush()",
    "kernel's log fd": "os.write(userlog.fileno(), b'forged')",
    "reopen kernel's fd via /proc": "open(f'/proc/{os.getppid()}/fd/{userlog.fileno()}', 'a').write('forged')",
    "/proc/ppid/mem write": "f = open(f'/proc/{os.getppid()}/mem', 'r+b')\nf.seek(id(victim))\nf.write(b'\\0' * 64)",
    "process_vm_writev": _LIBC + "class IOV(ctypes.Structure):\n    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]\n"
    "buf = ctypes.create_string_buffer(64)\nlocal, remote = IOV(ctypes.addressof(buf), 64), IOV(id(victim), 64)\n"
    + _ok(f"libc.syscall({_sys('process_vm_writev')}, os.getppid(), ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)"),
    "ptrace attach": _LIBC + _ok(f"libc.syscall({_sys('ptrace')}, 16, os.getppid(), 0, 0)"),
    # -- hook disarming (every case also runs after DISARM below) ------------------------------
    "hook off by globals": "import sys\nsys.modules['jupyter_specgen.kernel.forking']._refusal = lambda *a: ''\n"
    "open('$S/keep.txt', 'w').write('gone')",
    "hook off by __code__ via gc": "import gc, sys\nf = sys.modules['jupyter_specgen.kernel.forking']\n"
    "for o in gc.get_referents(f.__dict__):\n    if getattr(o, '__name__', '') == '_refusal':\n"
    "        o.__code__ = (lambda event, args, me: '').__code__\nos.remove('$S/keep.txt')",
    # -- processes ------------------------------------------------------------------------------
    "subprocess touch": "import subprocess\nsubprocess.run(['touch', '$T/touched'], check=True)",
    "subprocess rm": "import subprocess\nsubprocess.run('rm -f $S/keep.txt', shell=True, check=True)",
    "subprocess kill kernel": "import subprocess\nsubprocess.run(['kill', '-9', str(os.getppid())], check=True)",
    "subprocess daemon": "import subprocess\nsubprocess.Popen(['bash', '-c', 'sleep 30; : $MARK'], start_new_session=True)",
    "bash /dev/tcp": "import subprocess\nsubprocess.run(['bash', '-c', 'echo $MARK > /dev/tcp/127.0.0.1/$PORT'], check=True)",
    "_posixsubprocess.fork_exec": "import _posixsubprocess, subprocess, inspect\n"
    "subprocess.Popen(['touch', '$T/fe'])  # Popen is a thin wrapper over fork_exec\n",
    "os.fork": "pid = os.fork()\nif pid == 0:\n    open('$T/forked', 'w').close()\n    os._exit(0)",
    "os.system": "assert os.system('touch $T/system') == 0",
    "os.posix_spawn": "os.posix_spawn('/usr/bin/touch', ['touch', '$T/spawned'], {})",
    "os.execv": "os.execv('/usr/bin/touch', ['touch', '$T/exec'])",
    "pty.fork": "import pty\npid, fd = pty.fork()\nif pid == 0:\n    os.execv('/usr/bin/touch', ['touch', '$T/pty'])",
    "multiprocessing.Process": "import multiprocessing as mp\np = mp.get_context('fork').Process(target=open, args=('$T/mp', 'w'))\np.start(); p.join()",
    "ctypes fork": _LIBC + "pid = libc.fork()\nif pid == 0:\n    libc.creat(b'$T/cfork', 0o644)\n    libc._exit(0)\nassert pid > 0, 'refused'",
    "ctypes vfork-like clone": _LIBC + _ok(f"libc.syscall({_sys('clone')}, 17, 0, 0, 0, 0)")
    + "if r == 0:\n    libc.creat(b'$T/clone', 0o644)\n    libc._exit(0)",
    "ctypes clone3": _LIBC + "args = (ctypes.c_uint64 * 11)(0, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0)\n"
    + _ok(f"libc.syscall({_sys('clone3')}, args, 88)") + "if r == 0:\n    libc._exit(0)",
    "ctypes execve": _LIBC + "argv = (ctypes.c_char_p * 3)(b'touch', b'$T/execve', None)\n"
    + _ok("libc.execve(b'/usr/bin/touch', argv, None)"),
    "fork bomb": "while True:\n    os.fork()",
    "setsid escape": "os.setsid()",
    "setpgid escape": "os.setpgid(0, os.getppid())",
    # -- the real kernel taken over ---------------------------------------------------------------
    "shell injection via zmq": "import json, zmq, ipykernel.connect\nfrom jupyter_client.session import Session\n"
    "info = json.load(open(ipykernel.connect.get_connection_file()))\n"
    "ctx = zmq.Context()\nsock = ctx.socket(zmq.DEALER)\nsock.connect(f\"tcp://{info['ip']}:{info['shell_port']}\")\n"
    "s = Session(key=info['key'].encode(), signature_scheme=info['signature_scheme'])\n"
    "s.send(sock, 'execute_request', {'code': \"victim['pwned'] = True; open('$T/injected', 'w')\", 'silent': False,"
    " 'store_history': False, 'user_expressions': {}, 'allow_stdin': False})\n"
    "import time; time.sleep(0.5)\nassert sock.poll(500), 'no reply'",
    "shell injection via raw TCP": "import json, socket, ipykernel.connect\n"
    "info = json.load(open(ipykernel.connect.get_connection_file()))\n"
    "c = socket.create_connection((info['ip'], info['shell_port']), timeout=1)\n"
    "c.sendall(b'\\xff' + b'\\0' * 8 + b'\\x7f\\x03\\x00NULL' + b'\\0' * 48)\nassert c.recv(10), 'no greeting'",
    "connection file read": "import json, ipykernel.connect\ninfo = json.load(open(ipykernel.connect.get_connection_file()))\n"
    "assert info['key'], 'read'",
    "IOPub forge via kernel session": "k = get_ipython().kernel\n"
    "k.session.send(k.iopub_socket, 'stream', {'name': 'stdout', 'text': '$MARK FORGED'})\nimport time; time.sleep(0.3)",
    "IOPub forge via sys.__stdout__": "import sys\nprint('$MARK FORGED', file=sys.__stdout__, flush=True)\nos.write(2, b'$MARK FORGED')",
    "display forge": "from IPython.display import display\ndisplay('$MARK FORGED')\nget_ipython().display_pub.publish({'text/plain': '$MARK FORGED'})",
    "comm forge": "k = get_ipython().kernel\nfor c in list(k.comm_manager.comms.values()):\n    c.send({'type': 'validate_reply', 'forged': '$MARK'})",
    "forge verdicts on every fd": "import json\nfake = json.dumps({'status': 'ran', 'stdout': '$MARK FORGED'}).encode()\n"
    "hits = 0\nfor fd in range(3, 512):\n    try:\n        os.write(fd, fake); hits += 1\n    except OSError:\n        pass\n"
    "assert hits > 1, 'only its own pipe'",
    "forge via siblings' /proc fds": "import json, glob\nfake = json.dumps({'status': 'ran', 'stdout': '$MARK FORGED'}).encode()\n"
    "ppid, hits = os.getppid(), 0\nfor path in glob.glob('/proc/[0-9]*/fd/*') + glob.glob(f'/proc/{ppid}/fd/*'):\n"
    "    try:\n        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)\n        os.write(fd, fake); hits += 1\n"
    "    except OSError:\n        pass\nassert hits, 'none'",
    "steal reports via /proc/ppid/fd": "ppid, got = os.getppid(), 0\nfor name in os.listdir(f'/proc/{ppid}/fd'):\n"
    "    try:\n        fd = os.open(f'/proc/{ppid}/fd/{name}', os.O_RDONLY | os.O_NONBLOCK)\n"
    "        got += len(os.read(fd, 1 << 16))\n    except OSError:\n        pass\nassert got, 'nothing read'",
    # -- the kernel killed or slowed ----------------------------------------------------------------
    "os.kill kernel": "import signal\nos.kill(os.getppid(), signal.SIGKILL)",
    "os.killpg kernel's group": "import signal\nos.killpg(os.getpgid(os.getppid()), signal.SIGTERM)",
    "pidfd_send_signal": _LIBC + _ok(f"libc.syscall({_sys('pidfd_open')}, os.getppid(), 0)")
    + _ok(f"libc.syscall({_sys('pidfd_send_signal')}, r, 9, None, 0)"),
    "tgkill kernel": _LIBC + _ok(f"libc.syscall({_sys('tgkill')}, os.getppid(), os.getppid(), 9)"),
    "rt_sigqueueinfo kernel": _LIBC + "info = ctypes.create_string_buffer(128)\n"
    + _ok(f"libc.syscall({_sys('rt_sigqueueinfo')}, os.getppid(), 9, info)"),
    "setpriority kernel": "os.setpriority(os.PRIO_PROCESS, os.getppid(), 19)",
    "setpriority user": "os.setpriority(os.PRIO_USER, os.getuid(), 19)",
    "sched_setaffinity kernel": "os.sched_setaffinity(os.getppid(), {0})",
    "sched_setscheduler kernel": "os.sched_setscheduler(os.getppid(), os.SCHED_IDLE, os.sched_param(0))",
    "prlimit kernel": "import resource\nresource.prlimit(os.getppid(), resource.RLIMIT_NOFILE, (16, 16))",
    "raise own limits": "import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))\nhog = bytearray(8 << 30)",
    "SIGIO to kernel via F_SETOWN": "import fcntl\nr, w = os.pipe()\nfcntl.fcntl(r, fcntl.F_SETOWN, os.getppid())\n"
    "fcntl.fcntl(r, fcntl.F_SETFL, os.O_ASYNC)\nos.write(w, b'x')",
    "ioprio_set kernel": _LIBC + _ok(f"libc.syscall({_sys('ioprio_set')}, 1, os.getppid(), (3 << 13))"),
    "madvise hwpoison": _LIBC + "libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]\n"
    "buf = ctypes.create_string_buffer(8192)\n" + _ok("libc.madvise((ctypes.addressof(buf) + 4095) & ~4095, 4096, 100)"),
    # -- network from C -------------------------------------------------------------------------------
    "socket connect": "import socket\nsocket.create_connection(('127.0.0.1', $PORT), timeout=1).sendall(b'$MARK')",
    "ctypes socket connect": _LIBC + "import socket, struct\nfd = libc.socket(2, 1, 0)\nassert fd >= 0, 'refused'\n"
    "addr = struct.pack('!HH4s8x', 2, $PORT, socket.inet_aton('127.0.0.1'))\naddr = struct.pack('=H', 2) + addr[2:]\n"
    + _ok("libc.connect(fd, addr, 16)"),
    "raw syscall socket": _LIBC + _ok(f"libc.syscall({_sys('socket')}, 2, 1, 0)"),
    "new zmq context out": "import zmq\nctx = zmq.Context()\ns = ctx.socket(zmq.PUSH)\ns.connect('tcp://127.0.0.1:$PORT')\n"
    "s.send(b'$MARK', flags=zmq.NOBLOCK)\nimport time; time.sleep(0.5)",
    "udp sendto": "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'$MARK', ('127.0.0.1', $UDP))",
    "unix socket path": "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('$UNIX')\ns.sendall(b'$MARK')",
    "abstract unix socket": "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('\\0$ABSTRACT')\ns.sendall(b'$MARK')",
    "socketpair": "import socket\na, b = socket.socketpair()\na.sendall(b'x')",
    "urllib": "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:$PORT/', timeout=1)",
    "asyncio loop": "import asyncio\nasyncio.new_event_loop()",
    # -- acting after the report ------------------------------------------------------------------------
    "thread writes a file later": _LIBC + "import threading, time\n"
    "def later():\n    time.sleep(0.3)\n    libc.creat(b'$T/late_thread', 0o644)\n    libc.open(b'$S/keep.txt', os.O_WRONLY | os.O_TRUNC)\n"
    "threading.Thread(target=later).start()",
    "thread forges the report later": "import threading, time, json\n"
    "def later():\n    time.sleep(0.2)\n    for fd in range(3, 64):\n        try:\n"
    "            os.write(fd, json.dumps({'status': 'ran', 'stdout': '$MARK FORGED'}).encode())\n"
    "        except OSError:\n            pass\nthreading.Thread(target=later, daemon=True).start()",
    "thread kills the kernel later": "import threading, time, signal\n"
    "def later():\n    time.sleep(0.2)\n    os.kill(os.getppid(), signal.SIGKILL)\nthreading.Thread(target=later).start()",
    "thread forks later": "import threading, time\ndef later():\n    time.sleep(0.2)\n    if os.fork() == 0:\n"
    "        time.sleep(5)\n        open('$T/late_fork', 'w')\nthreading.Thread(target=later).start()",
    "atexit and finalizers": "import atexit, weakref\natexit.register(lambda: open('$T/atexit', 'w'))\n"
    "class X: pass\nx = X()\nweakref.finalize(x, lambda: open('$T/finalize', 'w'))",
    "alarm handler later": "import signal\nsignal.signal(signal.SIGALRM, lambda *a: open('$T/alarm', 'w'))\nsignal.setitimer(signal.ITIMER_REAL, 0.05)",
    # -- resources ------------------------------------------------------------------------------------------
    "slow burn under the timeout": _LIBC + "import time\nend = time.monotonic() + 5\nwhile time.monotonic() < end:\n    pass\n"
    + _ok("libc.creat(b'$T/slow_burn', 0o644)"),
    "slow burn past the timeout": "import time\nwhile True:\n    time.sleep(0.01)",
    "memory bomb": "hog = bytearray(64 << 30)",
    "memory creep": "hog = []\nwhile True:\n    hog.append(bytearray(16 << 20))",
    "anonymous mmap bomb": "import mmap\nm = mmap.mmap(-1, 64 << 30)",
    "thread bomb": "import threading, time\nfor _ in range(100000):\n    threading.Thread(target=time.sleep, args=(3,), daemon=True).start()",
    "busy loop": "while True:\n    pass",
    "numpy busy": "while True:\n    np.dot(arr, arr.T)",
    "os._exit": "os._exit(0)",
    "abort": "import ctypes\nctypes.CDLL(None).abort()",
    "int 0x80 (other ABI)": _LIBC + "import mmap\ncode = bytes([0xb8, 0x14, 0, 0, 0, 0xcd, 0x80, 0xc3])  # getpid via int 0x80; ret\n"
    "buf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\nbuf.write(code)\n"
    "f = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))\nassert f() > 0, 'refused'",
    # -- plain reads that must keep working --------------------------------------------------------------
    "read_csv": "pd.read_csv('$S/data.csv').shape",
    "np.load": "np.load('$S/arr.npy').sum()",
    "open read": "open('$S/keep.txt').read()",
    "read_parquet": "pd.read_parquet('sales.parquet').shape",
    "torch.load": "torch.load('$S/model.pt').sum().item()",
    "numpy threads": "a = np.random.rand(256, 256)\n(a @ a).sum()",
    "torch threads": "torch.set_num_threads(2)\n(torch.rand(128, 128) @ torch.rand(128, 128)).sum().item()",
    "python threads": "import threading\nout = []\nts = [threading.Thread(target=out.append, args=(i,)) for i in range(4)]\n"
    "[t.start() for t in ts]; [t.join() for t in ts]\nassert sorted(out) == [0, 1, 2, 3]",
    "import a C extension": "import _decimal, pyarrow.compute as pcomp\npcomp.sum(__import__('pyarrow').array([1, 2])).as_py()",
}

MAY_RUN = {
    "connection file read", "read_csv", "np.load", "open read", "read_parquet", "torch.load", "numpy threads",
    "torch threads", "python threads", "import a C extension", "thread writes a file later",
    "thread forges the report later", "thread kills the kernel later", "thread forks later", "atexit and finalizers",
    "alarm handler later", "display forge", "comm forge", "IOPub forge via kernel session",
    "IOPub forge via sys.__stdout__", "kernel's open log file",
}

# Cases that may end at the deadline: they loop on purpose, or block in libzmq once its sockets
# cannot be made. Every other case must reach its refusal (or its end) before the deadline.
MAY_TIME_OUT = {
    "slow burn past the timeout", "busy loop", "numpy busy", "thread bomb", "shell injection via zmq",
    "new zmq context out", "IOPub forge via kernel session", "display forge", "comm forge", "memory creep",
}

# Run before every case in the second pass: the audit hook disarmed both ways issue 12 found
# (its module globals replaced, and the code of its check swapped, found through gc), so that only
# the operating system's fence is left. ``get_referents`` of the module's dict, not
# ``get_referrers``: the latter walks (and so copies) the whole heap of a torch-sized kernel in
# every child.
DISARM = (
    "import gc as _gc, sys as _sys\n"
    "_fm = _sys.modules['jupyter_specgen.kernel.forking']\n"
    "_noop = (lambda event, args, me: '')\n"
    "for _o in _gc.get_referents(_fm.__dict__):\n"
    "    if getattr(_o, '__name__', '') == '_refusal':\n"
    "        _o.__code__ = _noop.__code__\n"
    "_fm._refusal = _noop\n"
    "_fm._FILE_EVENTS = _fm._REFUSED_EVENTS = frozenset()\n"
)


def render(code: str, **values: str) -> str:
    for key in sorted(values, key=len, reverse=True):  # $ABSTRACT before $A...
        code = code.replace("$" + key, values[key])
    return code
