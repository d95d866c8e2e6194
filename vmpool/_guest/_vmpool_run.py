"""One run of the guest agent: work dir, the persistent tester, the event loop that
enforces limits, teardown and the result (part of the guest agent, see agent.py).
"""

import base64
import json
import marshal
import os
import select
import signal
import socket
import stat
import time

from _vmpool_procs import (
    _PRIV,
    _SESSION,
    CPU_POLL_S,
    MEMORY_EXIT,
    PROGRAM_UID,
    SCRATCH_DIRS,
    STATE_DIR,
    _cached,
    _run_paths,
)
from _vmpool_sweep import _kill_group, _proc_cpu, _run_usage, _sweep, _wipe_scratch
from _vmpool_tester import _tester_for

# Every status this agent sends. The host's vmpool.Status has each one, plus
# sandbox_killed, which only the pool decides (tests/test_structure.py checks both, and
# that no other status literal appears in the guest). An unknown status reaching the
# host is an anomaly of the program, never a verdict.
STATUSES = ("ok", "runtime_error", "timeout", "memory_limit", "output_limit", "sandbox_error")


def _write_files(workdir: str, files: dict) -> None:
    for name, spec in files.items():
        path = os.path.join(workdir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = base64.b64decode(spec["b64"]) if "b64" in spec else spec["text"].encode()
        with open(path, "wb") as fh:
            fh.write(data)


def _fetch_files(workdir: str, names, cap: int) -> dict:
    """The files the request asked back, read after the program and all it started are dead
    (nothing can swap them meanwhile): regular files inside the work dir only, never through a
    symlink, ``cap`` bytes in all; a missing or refused one is left out."""
    out, left = {}, cap
    root = os.path.realpath(workdir) + "/"
    for name in names or ():
        path = os.path.join(workdir, str(name))
        if not os.path.realpath(path).startswith(root):
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size > left:
                continue
            data = os.read(fd, st.st_size + 1)[: st.st_size]
        finally:
            os.close(fd)
        left -= len(data)
        out[str(name)] = base64.b64encode(data).decode()
    return out


def _prepare(req: dict, seq: int):
    """Work dir (owned by the program uid) and code file. Returns (workdir, code_file)."""
    workdir, code_file = _run_paths(seq)
    os.mkdir(workdir, 0o700)
    files = req.get("files") or {}
    _write_files(workdir, files)
    for name in req.get("executable") or ():
        os.chmod(os.path.join(workdir, name), 0o755)
    if _PRIV["on"]:
        if files:
            for root, dirs, names in os.walk(workdir):
                for name in [*dirs, *names]:
                    os.chown(os.path.join(root, name), PROGRAM_UID, PROGRAM_UID)
        os.chown(workdir, PROGRAM_UID, PROGRAM_UID)
    if not req.get("cache_code") and not req.get("command"):
        fd = os.open(code_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(req["code"].encode("utf-8", "surrogateescape"))
    return workdir, code_file


_ZYGOTE_KNOWS: set = set()  # digests of sources the program zygote was sent


class _Watch:
    """The fds one run waits on, each with what it stands for (a poll object: the run
    loop's cost is per program, so no selector objects or epoll fd per run)."""

    __slots__ = ("poll", "objs")

    def __init__(self) -> None:
        self.poll = select.poll()
        self.objs: dict = {}

    def add(self, fd: int, obj, write: bool = False) -> None:
        self.poll.register(fd, select.POLLOUT if write else select.POLLIN)
        self.objs[fd] = obj

    def drop(self, fd: int) -> None:
        if self.objs.pop(fd, None) is not None:
            self.poll.unregister(fd)

    def wait(self, timeout: float) -> list:
        """(fd, obj) of the ready fds still watched, waiting at most ``timeout`` seconds."""
        events = self.poll.poll(-(-timeout * 1000 // 1))
        objs = self.objs
        return [(fd, objs[fd]) for fd, _ in events if fd in objs]


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


def _zygote_pid(msg: bytes) -> int:
    """The pid in the zygote's ``P <pid>`` reply. Raises ValueError for anything else."""
    tag, _, pid = msg.partition(b" ")
    if tag != b"P":
        raise ValueError(f"unexpected zygote reply {msg[:64]!r}")
    return int(pid)


def _zygote_exit(msg: bytes, pid: int) -> tuple:
    """(wstatus, cpu seconds) from the zygote's ``X <pid> <wstatus> <cpu>`` report of
    ``pid``. Raises ValueError for anything else (one program runs at a time)."""
    parts = msg.split(b" ")
    if len(parts) != 4 or parts[0] != b"X" or int(parts[1]) != pid:
        raise ValueError(f"unexpected zygote report {msg[:64]!r}")
    return int(parts[2]), float(parts[3])


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

    # Interactive: the program's stdin and stdout are its end of the companion link (no pipes).
    interactive = bool(comp and req.get("interactive"))
    p_err = os.pipe()
    streams = {p_err[0]: _Stream(p_err[0], cap)}
    out, feeders = _Stream(-1, cap), []
    if interactive:
        p_in = p_out = (-1, -1)
    else:
        p_out = os.pipe()
        out = streams[p_out[0]] = _Stream(p_out[0], cap)
        stdin = (req.get("stdin") or "").encode()
        if stdin:
            p_in = os.pipe()
            feeders.append(_Feeder(p_in[1], stdin))
        else:  # nothing to feed: the program reads EOF from /dev/null (no pipe to make and watch)
            p_in = (os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC), -1)
    theirs = [fd for fd in (p_in[0], p_out[1], p_err[1]) if fd >= 0]  # handed to children, closed once sent
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
        tester_cpu0 = tester.cpu() if tester.cpu_mark is None else tester.cpu_mark
        # Most payloads fit in the pipe: written (and the pipe closed) before the tester
        # is woken, so it reads all of it at once instead of waking, waiting for the rest
        # and waking again; and it starts while the program is being forked.
        os.set_blocking(feeder.fd, False)
        if feeder.data and feeder.step():
            feeders.remove(feeder)
        socket.send_fds(tester.sock, [json.dumps({"argv": list(comp.get("argv") or [])}).encode()],
                        [t_in[0], t_out[1], t_err[1], t_rep[1], link_t.fileno()])
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

    # The run's number travels in front of the spec (the child derives its paths from it),
    # so the spec of runs with equal limits and code is the same text, which the zygote
    # parses once.
    spec = {"limits": limits, "argv": list(req.get("argv") or []),
            "cache_code": bool(req.get("cache_code")), "entry": req.get("entry") or ""}
    for key in ("command", "env"):
        if req.get(key):
            spec[key] = req[key]
    if spec["cache_code"]:
        # The zygote is told a source once; after that its digest is enough.
        spec["code_ref"] = req["code_ref"]
        if req["code_ref"] not in _ZYGOTE_KNOWS:
            _ZYGOTE_KNOWS.add(req["code_ref"])
            spec["code"] = req["code"]
            # Compiled here, not in the zygote: compiling leaves ~2 MB of parser arenas
            # behind, and every page of the zygote is copied at each fork and torn
            # down at each exit. The zygote loads the code object (marshal, between
            # two trusted processes of the same interpreter; harness code only).
            compiled = _cached(req["code"])
            if hasattr(compiled, "co_code"):
                spec["marshal"] = base64.b64encode(marshal.dumps(compiled)).decode()
    start = time.monotonic()
    socket.send_fds(zsock, [b"%d " % seq + json.dumps(spec).encode()],
                    [fd3, fd3, p_err[1], fd3] if interactive else [p_in[0], p_out[1], p_err[1], fd3])
    pid = _zygote_pid(zsock.recv(64))
    for fd in theirs:
        os.close(fd)
    if link_p is not None:
        link_p.close()

    sel = _Watch()
    for fd, stream in streams.items():
        os.set_blocking(fd, False)
        sel.add(fd, stream)
    for feeder in feeders:
        os.set_blocking(feeder.fd, False)
        if feeder.data:
            sel.add(feeder.fd, feeder, write=True)
        else:
            os.close(feeder.fd)
            feeder.fd = -1
    sel.add(zsock.fileno(), "zygote")
    if tester is not None:
        sel.add(tester.sock.fileno(), "tester-done")
        sel.add(tester.pidfd, "tester-died")

    cpu_limit = float(limits["cpu_s"])
    # Resident mode: the run's memory (and CPU) is summed over its processes at each poll
    # (RLIMIT_AS is only a backstop).
    memory_cap = int(limits["memory_mb"]) << 20 if limits.get("memory_mode") == "resident" else 0
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
            # On a starved CPU the agent may first look after the program is over its CPU
            # limit as well: then that is what ended it, not the backstop.
            over_cpu = program_exit is None and _proc_cpu(pid) > cpu_limit
            verdict, timeout_by = "timeout", "cpu" if over_cpu else "wall"
            break
        if now >= next_poll:
            next_poll = now + CPU_POLL_S
            # Resident mode looks at every process of the run (their memory, and their CPU too).
            others_cpu, rss = _run_usage(pid) if memory_cap else (0.0, 0)
            if program_exit is None and _proc_cpu(pid) + others_cpu > cpu_limit:
                verdict, timeout_by = "timeout", "cpu"
                _kill_group(pid)
                program_killed = True
                if not comp:
                    break
            if memory_cap and verdict is None and rss > memory_cap:
                verdict = "memory_limit"
                _kill_group(pid)
                _sweep(keep=(pid,))  # every process of the run, not only the program's group (the zygote reaps pid)
                program_killed = True
                if not comp:
                    break
            if tester is not None and tester_end is None and tester.cpu() - tester_cpu0 > tester_cpu_limit:
                verdict, timeout_by = "timeout", "cpu"  # the tests themselves ran out of CPU time
                break
        wake = min(deadline, next_poll, linger_until or deadline)
        for fd, obj in sel.wait(max(0.0, wake - now)):
            if obj == "zygote":
                program_exit = _zygote_exit(zsock.recv(64), pid)
                sel.drop(zsock.fileno())
            elif obj == "tester-done" or obj == "tester-died":
                if tester_end is not None:
                    continue  # both of its events fired in one round: handled already
                sel.drop(tester.sock.fileno())
                sel.drop(tester.pidfd)
                if obj == "tester-done" and (msg := tester.sock.recv(1 << 16)):
                    said = json.loads(msg)
                    tester.cpu_mark = float(said["cpu"])
                    tester_end = {"exit_code": said["exit_code"], "signal": None,
                                  "cpu_s": max(0.0, tester.cpu_mark - tester_cpu0)}
                else:  # the companion process died during the run: a fresh one next time
                    _, tstat = os.waitpid(tester.pid, 0)
                    tester.dead = True
                    tester_end = {**_exit_info(tstat), "cpu_s": 0.0}
                    tester.kill()
            elif isinstance(obj, _Feeder):
                if obj.step():
                    sel.drop(fd)
            else:
                try:
                    chunk = os.read(obj.fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.drop(obj.fd)
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
            program_exit = _zygote_exit(zsock.recv(64), pid)
        except (OSError, ValueError, KeyError) as exc:
            anomaly = f"program zygote did not report the program's exit: {exc!r}"
            program_exit = (signal.SIGKILL, 0.0)
        finally:
            zsock.settimeout(None)
    clean = _sweep()
    wall = time.monotonic() - start
    fetched = _fetch_files(workdir, req.get("fetch_files"), cap) if req.get("fetch_files") and clean else {}
    for stream in streams.values():
        if stream.open:  # one that showed EOF has nothing more to read
            stream.drain()
    for fd in [*streams, *(f.fd for f in feeders)]:
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
    if not req.get("cache_code") and not req.get("command"):
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
        "stdout": out.text(),
        "stderr": stderr_text,
        "stdout_truncated": out.truncated,
        "stderr_truncated": streams[p_err[0]].truncated,
        "report": base64.b64encode(bytes(report.buf)).decode(),
        "wall_s": wall,
        "cpu_s": cpu,
        "anomaly": anomaly,
        "files": fetched,
    }
    if comp:
        result["companion"] = {**tester_end, "stdout": streams[t_out[0]].text(), "stderr": streams[t_err[0]].text()}
    return result


def _classify(exit_code, sig, cpu: float, limits: dict, stderr: str) -> str:
    if sig in (signal.SIGXCPU,) or (sig == signal.SIGKILL and cpu >= float(limits["cpu_s"]) - 0.05):
        return "timeout"
    tail = stderr[-2000:]
    # Python's MemoryError (the JVM's OutOfMemoryError too), a C allocation refused, C++'s bad_alloc, Go's and Node's words.
    if exit_code == MEMORY_EXIT or (exit_code != 0 and any(
            w in tail for w in ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory"))):
        return "memory_limit"
    if sig is not None and "out of memory" in tail.lower():
        return "memory_limit"
    if exit_code == 0:
        return "ok"
    return "runtime_error"
