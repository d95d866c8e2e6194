"""The agent's processes: the program zygote, forked children (Python code, or a command
executed in place of the child) and their limits (part of the guest agent, see agent.py;
stdlib only, standalone).
"""

import base64
import fcntl
import gc
import json
import marshal
import mmap
import os
import resource
import signal
import socket
import sys
import traceback

PROGRAM_UID = 65534  # nobody: what programs run as
TESTER_UID = 65533  # what companions (trusted testers) run as
MEMORY_EXIT = 121  # exit code the child uses after an uncaught MemoryError
WORK_ROOT = "/tmp"
SCRATCH_DIRS = ("/tmp", "/dev/shm")  # the only writable mounts in the sandbox
# microVM guests only: a directory that survives from one program to the next when
# the host asked for a persistent session (an agent's workspace, carried into
# checkpoints and forks); wiped after every program otherwise, like the others.
STATE_DIR = "/state"
CPU_POLL_S = 0.02

# State shared by the agent's modules (mutated, never rebound).
# Set at start: True when this agent may switch uids (root in its namespace); the zygote's pid.
_PRIV = {"on": False, "zygote": 0}
_SESSION = {"persist": False}
# Code objects of requests marked ``cache_code`` (harness-authored code such as a test
# runner, identical across many requests), compiled once per zygote so every child reuses
# them. Model-written code is never compiled in a zygote.
_CODE_CACHE: dict = {}
_CODE_CACHE_MAX = 16
# Sources of cache_code requests by the digest the host names them with: the host sends a
# source once per sandbox and then only its digest (see _code_of); likewise agent -> zygote.
_SOURCES: dict = {}
# The persistent companion processes (see _vmpool_tester._Tester), by code and limits.
_TESTERS: dict = {}


def _put(cache: dict, key, value) -> None:
    """``cache[key] = value``, dropping the oldest entry once ``_CODE_CACHE_MAX`` are held."""
    if key not in cache and len(cache) >= _CODE_CACHE_MAX:
        cache.pop(next(iter(cache)))
    cache[key] = value


def _run_paths(seq: int) -> tuple:
    """(work dir, code file) of run ``seq``: made by the agent, used by the program child."""
    workdir = os.path.join(WORK_ROOT, f"run{seq}")
    return workdir, workdir + ".py"


# ------------------------------------------------------------------ children
def _rlimits(limits: dict, nproc_extra: int, cpu: bool = True) -> tuple:
    """The ``(resource, (soft, hard))`` pairs a child under ``limits`` sets (see :func:`_set_limits`)."""
    mem = int(limits["memory_mb"]) << 20
    if limits.get("memory_mode") == "resident":  # the agent polls resident memory: this is the backstop
        mem = 4 * mem + (4 << 30)
    pairs = [(resource.RLIMIT_AS, (mem, mem))]
    if cpu:
        seconds = int(-(-float(limits["cpu_s"]) // 1)) + 1  # the backstop: the agent polls the precise limit
        pairs.append((resource.RLIMIT_CPU, (seconds, seconds + 1)))
    nproc = int(limits["max_processes"]) + nproc_extra
    pairs += [(resource.RLIMIT_FSIZE, (int(limits["file_size_bytes"]),) * 2),
              (resource.RLIMIT_NOFILE, (int(limits["max_open_files"]),) * 2),
              (resource.RLIMIT_CORE, (0, 0)),
              (resource.RLIMIT_NPROC, (nproc, nproc))]
    return tuple(pairs)


def _set_limits(limits: dict, nproc_extra: int, cpu: bool = True) -> None:
    for which, values in _rlimits(limits, nproc_extra, cpu):
        resource.setrlimit(which, values)


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


def _place_fds(fds: list) -> None:
    """Put ``fds`` on 0, 1, 2, ... in order.

    Placing them in order never overwrites a source still to come while every source
    sits at or above the last target but one (the zygote always holds 0..2, so what it
    receives lands on 3 and up); otherwise all are first moved above every target.
    """
    if min(fds, default=len(fds)) < len(fds) - 1:
        fds = [fcntl.fcntl(fd, fcntl.F_DUPFD, 256) for fd in fds]
    for target, fd in enumerate(fds):
        if fd != target:
            os.dup2(fd, target)
        else:
            os.set_inheritable(fd, True)


def _child_main(fds: list, setup) -> None:
    """Common body of a forked child: own session, fds 0.. from ``fds``, then ``setup()``
    returns (code, argv, filename, workdir) to run. Never returns."""
    code = 1
    try:
        os.setsid()
        _place_fds(fds)
        os.closerange(len(fds), 1 << 16)
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
            compiled = compile(code, "main.py", "exec")
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            return code  # the child compiles it again and reports the error as its own
        _put(_CODE_CACHE, code, compiled)
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
        _put(_WARM, code, ns)
    fn = ns.get(entry)
    return fn if callable(fn) else _cached(code)


EXEC_PATH = ("/usr/local/bin", "/usr/bin", "/bin")


def _exec_command(argv: list, env: dict) -> None:
    """Replace this child with ``argv`` (it has its uid, limits and fds already). Never returns:
    a program that cannot be started exits with 127, saying why on stderr."""
    name = argv[0]
    paths = [name] if "/" in name else [os.path.join(d, name) for d in EXEC_PATH]
    environ = {**os.environ, **env}
    err = None
    for path in paths:
        try:
            os.execve(path, argv, environ)
        except OSError as exc:
            err = err if isinstance(exc, FileNotFoundError) and err else exc
    os.write(2, f"cannot execute {name}: {err.strerror if err else 'not found'}\n".encode())
    os._exit(127)


def _program_setup(spec: dict, seq: int):
    """In the program child of run ``seq``, before it runs: read its code, drop to the program
    uid (a ``command`` is executed right there, in place of the child)."""
    def setup():
        workdir, code_file = _run_paths(seq)
        os.chdir(workdir)
        if spec.get("command"):
            for which, values in spec["rlimits"]:
                resource.setrlimit(which, values)
            _become(PROGRAM_UID)
            _exec_command(spec["command"], spec.get("env") or {})
        if spec.get("env"):
            os.environ.update(spec["env"])
        if spec.get("cached") is not None:
            code = spec["cached"]
        else:
            with open(code_file, "rb") as fh:
                code = fh.read().decode("utf-8", "surrogateescape")
            os.unlink(code_file)
        for which, values in spec["rlimits"]:
            resource.setrlimit(which, values)
        _become(PROGRAM_UID)
        return code, spec.get("argv") or [], "main.py", workdir
    return setup


def _code_of(spec: dict) -> str:
    """The code of a request (or companion, or zygote spec): given, remembered under its
    ``code_ref``, or looked up by it. Raises KeyError for a digest never sent."""
    ref = spec.get("code_ref")
    if ref is None:
        return spec["code"]
    if "code" in spec:
        _put(_SOURCES, ref, spec["code"])
        return spec["code"]
    return _SOURCES[ref]


class _Receiver:
    """Messages with fds from the agent over a SOCK_SEQPACKET socket, received into one
    buffer kept for the life of the process (a fresh 1 MiB buffer per message is an mmap,
    page faults and an munmap each time); exits the process once the agent is gone.

    The buffer is an anonymous mapping, so only the pages messages reach are ever touched
    (a zero-filled bytearray would be 1 MiB more for every fork to copy and every child's
    exit to tear down)."""

    __slots__ = ("recvmsg_into", "buf", "view", "room")

    MAX_FDS = 8

    def __init__(self, sock: socket.socket) -> None:
        self.recvmsg_into = sock.recvmsg_into
        self.buf = mmap.mmap(-1, 1 << 20)
        self.view = memoryview(self.buf)
        self.room = socket.CMSG_LEN(self.MAX_FDS * 4)

    def recv(self) -> tuple:
        """(message bytes, received fds)."""
        try:
            n, ancdata, _flags, _addr = self.recvmsg_into([self.buf], self.room)
        except OSError:
            os._exit(0)
        if not n:
            os._exit(0)
        fds: list = []
        for _level, _type, data in ancdata:  # SCM_RIGHTS: the only kind the agent sends
            fds += memoryview(data).cast("i").tolist()
        return self.view[:n].tobytes(), fds




# Specs by their text (runs with the same limits and code send the same text), each
# ready to fork with: parsed, its cached code resolved.
_SPECS: dict = {}


def _ready_spec(body: bytes) -> dict:
    """The spec of a ``<seq> <spec JSON>`` message body, parsed and its code resolved
    (the zygote's side of ``cache_code``: it keeps code objects so children reuse them)."""
    spec = json.loads(body)
    # NPROC counts the program uid's processes; with one uid for everything the init
    # process, the agent and its zygote are three of them.
    spec["rlimits"] = _rlimits(spec["limits"], 0 if _PRIV["on"] else 3)
    if spec.get("cache_code"):
        code = _code_of(spec)
        fresh = code not in _CODE_CACHE
        if "marshal" in spec and fresh:
            _put(_CODE_CACHE, code, marshal.loads(base64.b64decode(spec.pop("marshal"))))
        spec["cached"] = _warm_entry(code, spec["entry"]) if spec.get("entry") else _cached(code)
        if fresh:
            gc.freeze()  # what warming made lives as long as the zygote: keep collections off it
    if "code" not in spec:  # a spec that teaches the zygote a source is sent once
        _put(_SPECS, body, spec)
    return spec


def _zygote_main(sock: socket.socket) -> None:
    """The program zygote: forks programs on the agent's word, reports their exits. Never returns.

    It was forked before the agent read any request, and it never reads a program's code
    or a companion's data itself (the child reads its code from a file), so a program
    that reads its own memory finds nothing but the harness's own modules.

    Every fork write-protects the whole heap again, so each page this loop writes costs a
    fault (and a copy while the child lives), and a fork costs the floor's: the loop
    touches as little as it can. It receives into one buffer, finds a spec seen
    before with one lookup, and after the fork only closes the child's fds, says the pid
    and blocks in wait4 (the agent runs one program at a time and waits for its exit
    before it sends the next spec); replies are short byte strings.
    """
    # Programs start with default dispositions; set here once, not in every child.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGXCPU, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    recv, send, fork, wait4, close = _Receiver(sock).recv, sock.send, os.fork, os.wait4, os.close
    specs = _SPECS
    while True:
        msg, fds = recv()
        seq, _, body = msg.partition(b" ")
        spec = specs.get(body) or _ready_spec(body)
        pid = fork()
        if pid == 0:
            sock.close()
            _child_main(fds, _program_setup(spec, int(seq)))
        for child_fd in fds:
            close(child_fd)
        send(b"P %d" % pid)
        _, wstatus, usage = wait4(pid, 0)
        send(b"X %d %d %r" % (pid, wstatus, usage.ru_utime + usage.ru_stime))


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
