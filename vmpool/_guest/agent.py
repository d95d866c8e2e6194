"""Guest agent: the zygote (fork server) that runs inside every sandbox.

This file is executed by the sandbox's own interpreter (``/usr/bin/python3 -I``), not
imported by the harness: it must stay standalone (stdlib only, no imports from the
project) so the same file can run inside a namespace sandbox or a microVM guest. That
is also why it is one file of more than the usual module size.

Protocol, on the two file descriptors it is started with (stdin/stdout of the
sandbox process, moved away from 0/1 at start so programs never inherit them):
every message is a 4-byte big-endian length followed by that many bytes of UTF-8
JSON. The agent sends ``{"ready": true, "protocol": 2, ...}`` once, then answers each
request ``{"id", "code", "stdin", "files", "limits", "argv", "cache_code", "companion"}``
with one result ``{"id", "status", "exit_code", "signal", "stdout", "stderr", ...}``.

Three kinds of process, three uids (where the agent is root in its namespace):

* the agent (this process): trusted, uid 0 of the sandbox, not dumpable;
* the program zygote: forked at start, before any request reached the agent, so its
  memory holds no request's data (no test code, no other program); it forks every
  program and reports its exit. A program is never a fork of the agent itself;
* programs run as ``PROGRAM_UID`` in their own session, with rlimits; a request's
  *companion* (a trusted tester) runs as ``TESTER_UID``, forked from the agent, connected
  to the program by one socket (the program's fd 3, the companion's fd 4), and writes
  its report on its own fd 3, which no program can reach. Different uids: a program can
  neither signal nor ptrace the companion or the agent, nor open their ``/proc`` files.

The agent enforces the CPU limit (polled, so fractional limits hold; RLIMIT_CPU is the
backstop), the wall-clock backstop and output caps, kills the program's session and then
every other process left in the sandbox's pid namespace, and empties the scratch mounts
without recursion (a program's 10,000-deep directory tree is no problem). Anything that
goes wrong after a program ran is reported as an ``anomaly``: the host retires the sandbox.
"""

from __future__ import annotations

import base64
import fcntl
import gc
import json
import os
import resource
import selectors
import signal
import socket
import stat
import struct
import sys
import time
import traceback

PROTOCOL = 2
# Modules most graded programs import: loaded once here so a program pays a fork,
# not an import. The list is the zygote's "template" state.
PRELOAD = (
    "abc array bisect builtins calendar cmath collections collections.abc copy dataclasses datetime "
    "decimal enum fractions functools hashlib heapq io itertools json math numbers operator random re "
    "statistics string struct sys textwrap types typing unicodedata ast traceback tokenize inspect "
    "sysconfig warnings threading queue time resource signal contextlib base64 socket selectors"
).split()

# Code objects of requests marked ``cache_code`` (harness-authored code such as a test
# runner, identical across many requests), compiled once per zygote so every child reuses
# them. Model-written code is never compiled in a zygote.
_CODE_CACHE: dict = {}
_CODE_CACHE_MAX = 16

PROGRAM_UID = 65534  # nobody: what programs run as
TESTER_UID = 65533  # what companions (trusted testers) run as
MEMORY_EXIT = 121  # exit code the child uses after an uncaught MemoryError
WORK_ROOT = "/tmp"
SCRATCH_DIRS = ("/tmp", "/dev/shm")  # the only writable mounts in the sandbox
# microVM guests only: a directory that survives from one program to the next when
# the host asked for a persistent session (an agent's workspace, carried into
# checkpoints and forks); wiped after every program otherwise, like the others.
STATE_DIR = "/state"
STATE_SIZE = "32m"
_SESSION = {"persist": False}
HEADER = struct.Struct(">I")
MAX_FRAME = 256 << 20
CPU_POLL_S = 0.02
CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_DUMPABLE = 4
PF_KTHREAD = 0x00200000
# Set at start: True when this agent may switch uids (root in its namespace).
_PRIV = {"on": False, "zygote": 0}


def _preload() -> list:
    loaded = []
    for name in PRELOAD:
        try:
            __import__(name)
            loaded.append(name)
        except Exception:  # a missing optional module must not stop the zygote
            pass
    return loaded


def _not_dumpable() -> bool:
    """No core dumps, and /proc/<pid>/mem and ptrace closed to anyone without CAP_SYS_PTRACE."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
    except Exception:
        return False


class Channel:
    """Length-prefixed JSON frames over a pair of file descriptors."""

    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd = rfd
        self.wfd = wfd

    def _read_exact(self, n: int):
        chunks = []
        while n:
            chunk = os.read(self.rfd, min(n, 1 << 20))
            if not chunk:
                return None
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def recv(self):
        head = self._read_exact(HEADER.size)
        if head is None:
            return None
        (size,) = HEADER.unpack(head)
        if size > MAX_FRAME:
            raise ValueError(f"frame of {size} bytes exceeds {MAX_FRAME}")
        body = self._read_exact(size)
        if body is None:
            return None
        return json.loads(body)

    def send(self, message: dict) -> None:
        body = json.dumps(message, separators=(",", ":")).encode()
        data = HEADER.pack(len(body)) + body
        view = memoryview(data)
        while view:
            n = os.write(self.wfd, view)
            view = view[n:]


# ------------------------------------------------------------------ processes and cleanup
def _is_kernel_thread(pid: int) -> bool:
    """True for a kernel thread (visible only where this agent runs in the initial pid
    namespace, i.e. as a microVM guest's pid 1): SIGKILL does not end those."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return bool(int(fields[6]) & PF_KTHREAD)
    except (OSError, IndexError, ValueError):
        return False


def _other_pids(keep=()) -> list:
    """Every process in this pid namespace except init (1), this agent, the program
    zygote, ``keep`` and kernel threads."""
    me = os.getpid()
    guest_init = me == 1
    spared = {1, me, _PRIV["zygote"], *(t.pid for t in _TESTERS.values()), *keep}
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            pid = int(entry)
            if pid not in spared and not (guest_init and _is_kernel_thread(pid)):
                pids.append(pid)
    return pids


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _sweep(keep=()) -> bool:
    """SIGKILL every process left in the sandbox but init, the agent and its zygote. True if clean.

    Processes that called setsid() left the program's session; this catches them. A
    fork bomb can race the sweep, so repeat; RLIMIT_NPROC bounds how many there are.
    Orphans are reparented to pid 1 (bubblewrap's init), which reaps them, so a
    killed process may linger briefly as a zombie: wait for it to vanish. In a
    microVM guest the agent itself is pid 1, so it reaps them here (by pid, never
    ``keep``, which the caller waits for).
    """
    reaper = os.getpid() == 1
    for attempt in range(400):
        pids = _other_pids(keep)
        if not pids:
            return True
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if reaper:
            for pid in pids:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:  # not (yet) our child: its parent reaps it or dies
                    pass
        time.sleep(0.0002 if attempt < 20 else 0.005)
    return not _other_pids(keep)


def _empty_dir(root: str) -> None:
    """Remove everything under ``root`` without recursion and without long paths.

    Subdirectories are renamed up into ``root`` before they are emptied, so the depth
    of a tree (a program can build one far deeper than PATH_MAX or the recursion
    limit) never matters: every operation works on a name relative to an open
    directory one level down. Raises OSError when something cannot be removed.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    rfd = os.open(root, flags)
    try:
        pending = os.listdir(rfd)
        moved = 0
        while pending:
            name = pending.pop()
            if not stat.S_ISDIR(os.lstat(name, dir_fd=rfd).st_mode):
                os.unlink(name, dir_fd=rfd)
                continue
            dfd = os.open(name, flags, dir_fd=rfd)
            try:
                try:
                    os.fchmod(dfd, 0o700)  # a program's mode-000 directory (the agent may not be root)
                except OSError:
                    pass
                for entry in os.listdir(dfd):
                    if stat.S_ISDIR(os.lstat(entry, dir_fd=dfd).st_mode):
                        moved += 1
                        new = f".wipe-{moved}"
                        os.rename(entry, new, src_dir_fd=dfd, dst_dir_fd=rfd)
                        pending.append(new)
                    else:
                        os.unlink(entry, dir_fd=dfd)
            finally:
                os.close(dfd)
            os.rmdir(name, dir_fd=rfd)
    finally:
        os.close(rfd)


def _wipe_scratch(roots=SCRATCH_DIRS) -> str:
    """Empty every writable place so no program sees files of an earlier one.

    Returns an anomaly description if something could not be removed.
    """
    for root in roots:
        if not os.path.isdir(root):
            continue
        try:
            _empty_dir(root)
        except Exception as exc:  # RecursionError, MemoryError... included: never let cleanup raise
            return f"cannot empty {root}: {exc!r}"
    return ""


# ------------------------------------------------------------------ children
def _set_limits(limits: dict, nproc_extra: int, cpu: bool = True) -> None:
    mem = int(limits["memory_mb"]) << 20
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    if cpu:
        seconds = int(-(-float(limits["cpu_s"]) // 1)) + 1  # the backstop: the agent polls the precise limit
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limits["file_size_bytes"]),) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (int(limits["max_open_files"]),) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    nproc = int(limits["max_processes"]) + nproc_extra
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


def _become(uid: int) -> None:
    if _PRIV["on"]:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)  # from root: every capability is gone after this


def _exec_main(code, argv: list, filename: str, workdir: str) -> int:
    """Run ``code`` as ``__main__`` (or call it, for a warm module's entry); the exit code."""
    sys.argv = [filename, *argv]
    if workdir:
        sys.path[0:0] = [workdir]
    sys.modules.pop("__main__", None)  # the zygote's interpreter state must not leak into the program's view
    module_globals = {"__name__": "__main__", "__file__": os.path.join(workdir or "/", filename),
                      "__builtins__": __builtins__}
    try:
        if callable(code):
            code()
            return 0
        if not hasattr(code, "co_code"):
            code = compile(code, filename, "exec")
        exec(code, module_globals)
        return 0
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code & 0xFF
        print(exc.code, file=sys.stderr)
        return 1
    except MemoryError:
        traceback.print_exc()
        return MEMORY_EXIT
    except BaseException:
        traceback.print_exc()
        return 1


def _child_main(fds: list, setup) -> None:
    """Common body of a forked child: own session, fds 0.. from ``fds``, then ``setup()``
    returns (code, argv, filename, workdir) to run. Never returns."""
    code = 1
    try:
        os.setsid()
        # Move the sources above every target first: a source may sit on a target number.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 256) for fd in fds]
        for target, fd in enumerate(high):
            os.dup2(fd, target)
        os.closerange(len(fds), 1 << 16)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGXCPU, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        code = _exec_main(*setup())
    except MemoryError:
        code = MEMORY_EXIT
    except BaseException:
        try:
            traceback.print_exc()
        except BaseException:
            pass
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
        os._exit(code)


def _cached(code: str):
    compiled = _CODE_CACHE.get(code)
    if compiled is None:
        try:
            if len(_CODE_CACHE) >= _CODE_CACHE_MAX:
                _CODE_CACHE.pop(next(iter(_CODE_CACHE)))
            compiled = _CODE_CACHE[code] = compile(code, "main.py", "exec")
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            return code  # the child compiles it again and reports the error as its own
    return compiled


# Modules of requests with an ``entry`` (harness-authored, cached): their top level is run
# once per zygote, here, and each run only calls the entry function, so a run does not pay
# for defining the module's classes and functions again in a freshly forked child.
_WARM: dict = {}


def _warm_entry(code: str, entry: str):
    """The ``entry`` function of the module ``code``, executed once; or the code when it
    cannot be (the run then fails as its own)."""
    ns = _WARM.get(code)
    if ns is None:
        compiled = _cached(code)
        if not hasattr(compiled, "co_code"):
            return compiled
        ns = {"__name__": "__vmpool_warm__", "__builtins__": __builtins__}
        try:
            exec(compiled, ns)
        except Exception:
            return compiled
        finally:
            # Whatever it printed must not sit in a buffer that every forked child inherits.
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
        if len(_WARM) >= _CODE_CACHE_MAX:
            _WARM.pop(next(iter(_WARM)))
        _WARM[code] = ns
    fn = ns.get(entry)
    return fn if callable(fn) else _cached(code)


def _program_setup(spec: dict):
    """In the program child, before it runs: read its code, drop to the program uid."""
    def setup():
        workdir = spec["workdir"]
        os.chdir(workdir)
        if spec.get("cached") is not None:
            code = spec["cached"]
        else:
            with open(spec["code_file"], "rb") as fh:
                code = fh.read().decode("utf-8", "surrogateescape")
            os.unlink(spec["code_file"])
        # NPROC counts the program uid's processes; with one uid for everything the
        # init process, the agent and its zygote are three of them.
        _set_limits(spec["limits"], 0 if _PRIV["on"] else 3)
        _become(PROGRAM_UID)
        return code, spec.get("argv") or [], "main.py", workdir
    return setup


def _recv_spec(sock: socket.socket):
    """One JSON message with its fds from the agent; exits the process once the agent is gone."""
    try:
        msg, fds, _flags, _addr = socket.recv_fds(sock, 1 << 20, 8)
    except OSError:
        os._exit(0)
    if not msg:
        os._exit(0)
    return json.loads(msg), fds


def _zygote_main(sock: socket.socket) -> None:
    """The program zygote: forks programs on the agent's word, reports their exits. Never returns.

    It was forked before the agent read any request, and it never reads a program's code
    or a companion's data itself (the child reads its code from a file), so a program
    that reads its own memory finds nothing but the harness's own modules.
    """
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ, None)
    while True:
        for key, _ in sel.select():
            if key.data is None:
                spec, fds = _recv_spec(sock)
                if spec.get("cache_code"):
                    code = spec.pop("code")
                    spec["cached"] = _warm_entry(code, spec["entry"]) if spec.get("entry") else _cached(code)
                pid = os.fork()
                if pid == 0:
                    sock.close()
                    _child_main(fds, _program_setup(spec))
                for fd in fds:
                    os.close(fd)
                pidfd = os.pidfd_open(pid)
                sel.register(pidfd, selectors.EVENT_READ, pid)
                sock.send(json.dumps({"pid": pid}).encode())
            else:
                pid = key.data
                sel.unregister(key.fd)
                os.close(key.fd)
                _, wstatus, usage = os.wait4(pid, 0)
                sock.send(json.dumps({"exited": pid, "wstatus": wstatus,
                                      "cpu": usage.ru_utime + usage.ru_stime}).encode())


def _start_zygote() -> socket.socket:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        ours.close()
        keep = theirs.fileno()
        os.closerange(3, keep)  # the host channel stays with the agent alone
        os.closerange(keep + 1, 1 << 16)
        try:
            _zygote_main(theirs)
        finally:
            os._exit(1)
    theirs.close()
    _PRIV["zygote"] = pid
    return ours


# ------------------------------------------------------------------ one run
def _proc_cpu(pid: int) -> float:
    """CPU seconds of a live process and its reaped children (0 when it is gone).

    /proc/<pid>/stat counts in clock ticks (10 ms); its reaped children's time is only
    there, so it is the sum of that and the nanosecond-exact runtime of the process itself
    (/proc/<pid>/schedstat) where the kernel has it.
    """
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as fh:
            own = int(fh.read().split()[0]) / 1e9
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return own + (int(fields[13]) + int(fields[14])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return sum(int(f) for f in fields[11:15]) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def _write_files(workdir: str, files: dict) -> None:
    for name, spec in files.items():
        path = os.path.join(workdir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = base64.b64decode(spec["b64"]) if "b64" in spec else spec["text"].encode()
        with open(path, "wb") as fh:
            fh.write(data)


def _prepare(req: dict, seq: int):
    """Work dir (owned by the program uid) and code file. Returns (workdir, code_file)."""
    workdir = os.path.join(WORK_ROOT, f"run{seq}")
    code_file = os.path.join(WORK_ROOT, f"run{seq}.py")
    os.mkdir(workdir, 0o700)
    _write_files(workdir, req.get("files") or {})
    if _PRIV["on"]:
        for root, dirs, names in os.walk(workdir):
            for name in [*dirs, *names]:
                os.chown(os.path.join(root, name), PROGRAM_UID, PROGRAM_UID)
        os.chown(workdir, PROGRAM_UID, PROGRAM_UID)
    if not req.get("cache_code"):
        fd = os.open(code_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(req["code"].encode("utf-8", "surrogateescape"))
    return workdir, code_file


class _Tester:
    """A companion (trusted tester) process that serves one run after another.

    Forked from the agent once per companion code and limits, as TESTER_UID, and kept:
    a fork and an exit per run would double what a test costs (the program's own fork
    is the floor). Trusted code only ever runs in it; the program reaches it through
    nothing but the run's socket, and only plain data it decodes. Per run it receives
    five fds (stdin, stdout, stderr, report, link to the program) over its control
    socket, puts them on 0..4, runs the companion code as ``__main__`` in fresh globals,
    puts /dev/null back on 0..4 (closing the run's pipes) and says it is done. The
    agent kills it (and starts a new one next time) if a run overruns its limits.
    """

    def __init__(self, comp: dict, key: tuple) -> None:
        self.key = key
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ours.close()
            try:
                os.setsid()
                fd = fcntl.fcntl(theirs.fileno(), fcntl.F_DUPFD, 64)
                null = os.open(os.devnull, os.O_RDWR)
                for target in range(5):
                    os.dup2(null, target)
                os.closerange(5, fd)
                os.closerange(fd + 1, 1 << 16)
                _set_limits(comp["limits"], 0 if _PRIV["on"] else 4, cpu=False)  # CPU: polled per run
                _become(TESTER_UID)
                _tester_serve(fd, comp)
            finally:
                os._exit(1)
        theirs.close()
        self.pid = pid
        self.sock = ours
        self.pidfd = os.pidfd_open(pid)
        self.dead = False

    def cpu(self) -> float:
        return _proc_cpu(self.pid)

    def kill(self) -> None:
        """End it (mid-run, or when it died): the next run starts a fresh one."""
        if not self.dead:
            self.dead = True
            _kill_group(self.pid)
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
        for closer in (self.sock.close, lambda: os.close(self.pidfd)):
            try:
                closer()
            except OSError:
                pass
        _TESTERS.pop(self.key, None)


_TESTERS: dict = {}


def _tester_for(comp: dict):
    key = (comp["code"], json.dumps(comp["limits"], sort_keys=True), bool(comp.get("cache_code")), comp.get("entry"))
    tester = _TESTERS.get(key)
    if tester is None:
        for old in list(_TESTERS.values()):  # one at a time: a new kind replaces the old
            old.kill()
        tester = _TESTERS[key] = _Tester(comp, key)
    return tester


def _tester_serve(fd: int, comp: dict) -> None:
    """The companion process's loop (see :class:`_Tester`). Never returns."""
    sock = socket.socket(fileno=fd)
    if comp.get("cache_code"):
        code = _warm_entry(comp["code"], comp["entry"]) if comp.get("entry") else _cached(comp["code"])
    else:
        code = comp["code"]
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    # A program that exits closes its end of the link: writing to it must be an error the
    # companion sees (EPIPE), never the death of this long-lived process.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    while True:
        spec, fds = _recv_spec(sock)
        null = os.open(os.devnull, os.O_RDWR)
        for target, received in enumerate(fds):  # received fds are >= 5: 0..4 are always held
            os.dup2(received, target)
            os.close(received)
        sys.stdin = open(0, encoding="utf-8", errors="surrogateescape", closefd=False)
        rc = _exec_main(code, spec.get("argv") or [], "companion.py", "")
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
        for target in range(5):
            os.dup2(null, target)
        os.close(null)
        sock.send(json.dumps({"exit_code": rc}).encode())


class _Stream:
    """One pipe read by the agent, with its cap."""

    __slots__ = ("fd", "cap", "buf", "truncated", "open")

    def __init__(self, fd: int, cap: int) -> None:
        self.fd, self.cap, self.buf, self.truncated, self.open = fd, cap, bytearray(), False, True

    def take(self, chunk: bytes) -> bool:
        """Append; False when the cap was exceeded."""
        room = self.cap - len(self.buf)
        if len(chunk) > room:
            self.buf += chunk[:max(room, 0)]
            self.truncated = True
            return False
        self.buf += chunk
        return True

    def drain(self) -> None:
        try:
            while len(self.buf) <= self.cap:
                chunk = os.read(self.fd, 65536)
                if not chunk or not self.take(chunk):
                    break
        except OSError:
            pass

    def text(self) -> str:
        return self.buf.decode("utf-8", "replace")


class _Feeder:
    """Data written to a child's stdin without ever blocking the agent."""

    def __init__(self, fd: int, data: bytes) -> None:
        self.fd, self.data, self.off = fd, data, 0

    def step(self) -> bool:
        """Write some; True when finished (and the fd is closed)."""
        try:
            self.off += os.write(self.fd, self.data[self.off:self.off + 65536])
        except BlockingIOError:
            return False
        except BrokenPipeError:  # the child closed stdin or exited: stop feeding it
            self.off = len(self.data)
        if self.off >= len(self.data):
            os.close(self.fd)
            self.fd = -1
            return True
        return False


def _exit_info(wstatus: int) -> dict:
    return {"exit_code": os.WEXITSTATUS(wstatus) if os.WIFEXITED(wstatus) else None,
            "signal": os.WTERMSIG(wstatus) if os.WIFSIGNALED(wstatus) else None}


def run_one(req: dict, seq: int, zsock: socket.socket) -> dict:
    limits = req["limits"]
    comp = req.get("companion")
    cap = int(limits["output_bytes"])
    try:
        workdir, code_file = _prepare(req, seq)
    except OSError as exc:
        _wipe_scratch()
        return {"id": req["id"], "status": "sandbox_error", "infra": True, "error": f"cannot prepare work dir: {exc}"}

    p_in, p_out, p_err = os.pipe(), os.pipe(), os.pipe()
    streams = {p_out[0]: _Stream(p_out[0], cap), p_err[0]: _Stream(p_err[0], cap)}
    feeders = [_Feeder(p_in[1], (req.get("stdin") or "").encode())]
    theirs = [p_in[0], p_out[1], p_err[1]]  # fds handed to children, closed here once sent
    tester = None
    if comp:
        tester = _tester_for(comp)
        comp_cap = int(comp["limits"]["output_bytes"])
        link_t, link_p = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        t_in, t_out, t_err, t_rep = os.pipe(), os.pipe(), os.pipe(), os.pipe()
        for r, _w in (t_out, t_err, t_rep):
            streams[r] = _Stream(r, comp_cap)
        feeder = _Feeder(t_in[1], (comp.get("stdin") or "").encode())
        feeders.append(feeder)
        tester_cpu0 = tester.cpu()
        socket.send_fds(tester.sock, [json.dumps({"argv": list(comp.get("argv") or [])}).encode()],
                        [t_in[0], t_out[1], t_err[1], t_rep[1], link_t.fileno()])
        # Most payloads fit in the pipe: hand it over now, so the tester starts while the
        # program is being forked.
        os.set_blocking(feeder.fd, False)
        if feeder.data and feeder.step():
            feeders.remove(feeder)
        for fd in (t_in[0], t_out[1], t_err[1], t_rep[1]):
            os.close(fd)
        link_t.close()
        fd3 = link_p.fileno()
        report = streams[t_rep[0]]
        ended_by = {t_out[0], t_err[0], t_rep[0]}  # the run ends when the companion is done
    else:
        p_rep = os.pipe()
        streams[p_rep[0]] = _Stream(p_rep[0], cap)
        fd3 = p_rep[1]
        theirs.append(p_rep[1])
        report = streams[p_rep[0]]
        link_p = None
        ended_by = {p_out[0], p_err[0], p_rep[0]}

    spec = {"workdir": workdir, "code_file": code_file, "limits": limits, "argv": list(req.get("argv") or []),
            "cache_code": bool(req.get("cache_code")), "entry": req.get("entry") or ""}
    if spec["cache_code"]:
        spec["code"] = req["code"]
    start = time.monotonic()
    socket.send_fds(zsock, [json.dumps(spec).encode()], [p_in[0], p_out[1], p_err[1], fd3])
    pid = json.loads(zsock.recv(1 << 16))["pid"]
    for fd in theirs:
        os.close(fd)
    if link_p is not None:
        link_p.close()

    sel = selectors.DefaultSelector()
    for fd, stream in streams.items():
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ, stream)
    for feeder in feeders:
        os.set_blocking(feeder.fd, False)
        if feeder.data:
            sel.register(feeder.fd, selectors.EVENT_WRITE, feeder)
        else:
            os.close(feeder.fd)
            feeder.fd = -1
    sel.register(zsock, selectors.EVENT_READ, "zygote")
    if tester is not None:
        sel.register(tester.sock, selectors.EVENT_READ, "tester-done")
        sel.register(tester.pidfd, selectors.EVENT_READ, "tester-died")

    cpu_limit = float(limits["cpu_s"])
    tester_cpu_limit = float(comp["limits"]["cpu_s"]) if comp else 0.0
    deadline = start + float(limits["wall_s"])
    verdict = None  # set when the agent itself ends the run
    timeout_by = ""
    program_exit = None  # (wstatus, cpu) once the zygote reported it
    program_killed = False  # the agent ended the program (normal end of a companion run)
    tester_end = None  # {"exit_code", "signal", "cpu_s"} once the companion's run ended
    linger_until = 0.0  # grace for the companion's pipes to show EOF after it said done
    next_poll = start + CPU_POLL_S
    while True:
        done_streams = all(not streams[fd].open for fd in ended_by)
        now = time.monotonic()
        if comp:
            if tester_end is not None:
                if done_streams:
                    break
                if not linger_until:
                    linger_until = now + 0.2
                elif now >= linger_until:
                    _sweep(keep=(pid,))  # something the tests started still holds their pipes
        elif program_exit is not None:
            if done_streams:
                break
            # The child is gone but something still holds its pipes (a daemonised
            # grandchild): end it now rather than wait for the deadline.
            _sweep(keep=(pid,))
        if now >= deadline:
            verdict, timeout_by = "timeout", "wall"
            break
        if now >= next_poll:
            next_poll = now + CPU_POLL_S
            if program_exit is None and _proc_cpu(pid) > cpu_limit:
                verdict, timeout_by = "timeout", "cpu"
                _kill_group(pid)
                program_killed = True
                if not comp:
                    break
            if tester is not None and tester_end is None and tester.cpu() - tester_cpu0 > tester_cpu_limit:
                verdict, timeout_by = "timeout", "cpu"  # the tests themselves ran out of CPU time
                break
        wake = min(deadline, next_poll, linger_until or deadline)
        for key, _ in sel.select(max(0.0, wake - now)):
            obj = key.data
            if obj == "zygote":
                msg = json.loads(zsock.recv(1 << 16))
                program_exit = (msg["wstatus"], float(msg["cpu"]))
                sel.unregister(zsock)
            elif obj == "tester-done" or obj == "tester-died":
                if tester_end is not None:
                    continue  # both of its events fired in one round: handled already
                sel.unregister(tester.sock)
                sel.unregister(tester.pidfd)
                if obj == "tester-done" and (msg := tester.sock.recv(1 << 16)):
                    tester_end = {"exit_code": json.loads(msg)["exit_code"], "signal": None}
                else:  # the companion process died during the run: a fresh one next time
                    _, tstat = os.waitpid(tester.pid, 0)
                    tester.dead = True
                    tester_end = _exit_info(tstat)
                    tester.kill()
                tester_end["cpu_s"] = max(0.0, tester.cpu() - tester_cpu0) if not tester.dead else 0.0
            elif isinstance(obj, _Feeder):
                if obj.step():
                    sel.unregister(key.fd)
            else:
                try:
                    chunk = os.read(obj.fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(obj.fd)
                    obj.open = False
                elif not obj.take(chunk):
                    verdict = "output_limit"
        if verdict == "output_limit":
            break

    # ---- teardown: end everything, collect exits, then clean up
    anomaly = ""
    if program_exit is None:
        if comp and verdict is None:
            program_killed = True  # the companion finished; the program was still serving it
        _kill_group(pid)
    if tester is not None and tester_end is None:
        # Cut off mid-run (a limit, the backstop): this companion process is not reused.
        cpu_used = max(0.0, tester.cpu() - tester_cpu0)
        tester.kill()
        tester_end = {"exit_code": None, "signal": signal.SIGKILL, "cpu_s": cpu_used}
    if program_exit is None:
        zsock.settimeout(10.0)
        try:
            msg = json.loads(zsock.recv(1 << 16))
            program_exit = (msg["wstatus"], float(msg["cpu"]))
        except (OSError, ValueError, KeyError) as exc:
            anomaly = f"program zygote did not report the program's exit: {exc!r}"
            program_exit = (signal.SIGKILL, 0.0)
        finally:
            zsock.settimeout(None)
    clean = _sweep()
    wall = time.monotonic() - start
    for stream in streams.values():
        stream.drain()
    sel.close()
    for fd in [*streams, *(f.fd for f in feeders)]:
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
    try:
        os.unlink(code_file)
    except OSError:
        pass
    anomaly = anomaly or _wipe_scratch(SCRATCH_DIRS if _SESSION["persist"] else SCRATCH_DIRS + (STATE_DIR,))
    if not clean:
        anomaly = "processes survived the kill sweep"

    wstatus, cpu = program_exit
    exited = _exit_info(wstatus)
    exit_code, sig = exited["exit_code"], exited["signal"]
    stderr_text = streams[p_err[0]].text()
    if verdict is None:
        if program_killed:
            verdict, exit_code, sig = "ok", None, None
        else:
            verdict = _classify(exit_code, sig, cpu, limits, stderr_text)
            if verdict == "timeout":
                timeout_by = "cpu"
    result = {
        "id": req["id"],
        "status": verdict,
        "timeout_by": timeout_by,
        "exit_code": exit_code,
        "signal": sig,
        "stdout": streams[p_out[0]].text(),
        "stderr": stderr_text,
        "stdout_truncated": streams[p_out[0]].truncated,
        "stderr_truncated": streams[p_err[0]].truncated,
        "report": base64.b64encode(bytes(report.buf)).decode(),
        "wall_s": wall,
        "cpu_s": cpu,
        "anomaly": anomaly,
    }
    if comp:
        result["companion"] = {**tester_end, "stdout": streams[t_out[0]].text(), "stderr": streams[t_err[0]].text()}
    return result


def _classify(exit_code, sig, cpu: float, limits: dict, stderr: str) -> str:
    if sig in (signal.SIGXCPU,) or (sig == signal.SIGKILL and cpu >= float(limits["cpu_s"]) - 0.05):
        return "timeout"
    tail = stderr[-2000:]
    if exit_code == MEMORY_EXIT or (exit_code != 0 and ("MemoryError" in tail or "Cannot allocate memory" in tail)):
        return "memory_limit"
    if sig is not None and "out of memory" in tail.lower():
        return "memory_limit"
    if exit_code == 0:
        return "ok"
    return "runtime_error"


# ------------------------------------------------------------------ microVM guest only
def _make_state_dir() -> None:
    """Guest only: a size-capped tmpfs at STATE_DIR owned by the program uid."""
    import subprocess

    try:
        os.makedirs(STATE_DIR, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"nosuid,nodev,size={STATE_SIZE},mode=0755", "tmpfs",
                        STATE_DIR], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.chown(STATE_DIR, PROGRAM_UID, PROGRAM_UID)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"vmpool agent: no {STATE_DIR}: {exc}", file=sys.stderr)


RNDADDENTROPY = 0x40085203  # _IOW('R', 0x03, int[2])
RNDRESEEDCRNG = 0x5207  # _IO('R', 0x07)


def _resume(req: dict) -> dict:
    """After a snapshot restore every clone holds the template's clock and RNG state:
    set the clock from the host and mix fresh host entropy into the kernel RNG (then
    force a reseed), so no two clones share random numbers. Children reseed Python's
    ``random`` from the kernel at fork."""
    import random

    done = {}
    try:
        time.clock_settime(time.CLOCK_REALTIME, float(req["time"]))
        done["clock"] = True
    except (OSError, KeyError, ValueError) as exc:
        done["clock"] = f"{exc}"
    try:
        seed = bytes.fromhex(req["seed"])
        with open("/dev/urandom", "wb", buffering=0) as fh:
            try:
                info = struct.pack("ii", len(seed) * 8, len(seed)) + seed
                fcntl.ioctl(fh.fileno(), RNDADDENTROPY, info)
                fcntl.ioctl(fh.fileno(), RNDRESEEDCRNG)
            except OSError:  # not root (namespace sandbox): plain mixing still helps
                fh.write(seed)
        random.seed(seed)
        done["rng"] = True
    except (OSError, KeyError, ValueError) as exc:
        done["rng"] = f"{exc}"
    return done


def main() -> None:
    # Keep the protocol off fds 0/1 so no program ever inherits it.
    rfd = os.dup(0)
    wfd = os.dup(1)
    os.set_inheritable(rfd, False)
    os.set_inheritable(wfd, False)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    chan = Channel(rfd, wfd)
    # A dying program must not take the agent with it through a broken pipe or ^C.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _PRIV["on"] = os.geteuid() == 0
    if os.getpid() == 1:
        _make_state_dir()
    if _PRIV["on"]:
        for root in SCRATCH_DIRS:  # programs (another uid) may create temp files there, like in any /tmp
            try:
                os.chmod(root, 0o1777)
            except OSError:
                pass
    dumpable = not _not_dumpable()
    loaded = _preload()
    # Everything loaded so far lives as long as the agent: keep the collector off it, so
    # a forked child's collections do not touch (and copy) every page it shares with us.
    gc.freeze()
    zsock = _start_zygote()  # before any request: the zygote's memory holds none
    chan.send({"ready": True, "protocol": PROTOCOL, "pid": os.getpid(), "python": sys.version.split()[0],
               "preloaded": len(loaded), "uid_separation": _PRIV["on"], "dumpable": dumpable})
    seq = 0
    while True:
        req = chan.recv()
        if req is None:
            if os.getpid() != 1:
                return  # the host closed the channel: the sandbox is being torn down
            # In a microVM guest a virtio port reads EOF while no host is connected,
            # e.g. between a snapshot restore and the host's connect: wait for it.
            time.sleep(0.001)
            continue
        if req.get("op") == "persist":
            _SESSION["persist"] = bool(req.get("on"))
            chan.send({"id": req.get("id"), "persist": _SESSION["persist"]})
            continue
        if req.get("op") == "resume":
            chan.send({"id": req.get("id"), "resumed": _resume(req)})
            continue
        if req.get("op") == "ping":
            chan.send({"id": req.get("id"), "pong": True})
            continue
        seq += 1
        try:
            result = run_one(req, seq, zsock)
        except BaseException as exc:  # report, never die silently: the host retires this sandbox
            result = {"id": req.get("id"), "status": "sandbox_error",
                      "error": f"agent failure: {exc!r}", "anomaly": traceback.format_exc()[-2000:]}
        chan.send(result)


if __name__ == "__main__":
    main()
