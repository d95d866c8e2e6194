"""The interpreter of a session branch: Python contexts, a shell, files (stdlib only).

Runs as pid 2 of its branch (see ``_vmpool_branch``), with no capability left. Unlike the
grading agent (a fork per program, everything wiped after it), it keeps its state across
calls: Python contexts (namespaces that persist, Jupyter-style), a shell working directory
and the files under its home. Everything in it belongs to the model being trained, so
nothing here is trusted by the host: replies are data, grading happens elsewhere.

Requests (length-prefixed JSON from the supervisor, ``session.py``):

* ``{"op": "exec", "code", "context", "timeout"}``: run Python cells in a persistent
  context; the value of a trailing expression comes back as ``repr`` text (and as plain
  data where it is plain data); stdout and stderr of the cell and of everything it starts.
* ``{"op": "shell", "command", "timeout"}``: ``bash -c`` in the shell's working directory,
  which persists (``cd`` sticks; Python cells keep a working directory of their own, as a
  Jupyter kernel does beside a terminal); exit code, stdout, stderr.
* ``{"op": "write" | "read" | "list", "path", ...}``: files, relative to the home directory.
* ``{"op": "restart", "context"}``: a fresh namespace for that context.
* ``{"op": "checkpoint"}``: fork the checkpoint holder (see :func:`checkpoint`); the
  holder then serves ``{"op": "spawn", "n"}``: n new branches with this state.

A call that runs past its timeout is interrupted (``TimeoutError`` raised in the cell, the
shell's process group killed) and every process it started is killed; the session goes on.
"""

import ast
import base64
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import traceback

import _vmpool_branch as branch
from _vmpool_chan import HEADER, Channel

PROTOCOL = 2  # the same framing and hello as the grading agent (vmpool.PROTOCOL_VERSION)
HOME = "/tmp/home"
SHELL = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"  # a microVM image may have busybox only


class CellTimeout(BaseException):
    """Raised inside a cell that ran past its timeout (a BaseException: ``except Exception`` misses it)."""


def _on_alarm(signum, frame):
    raise CellTimeout("the cell ran past its timeout")


def _pids():
    return {int(e) for e in os.listdir("/proc") if e.isdigit()}


def _kill_new(before):
    """Kill every process that did not exist before the call (what the call started)."""
    me = os.getpid()
    for _ in range(20):
        new = _pids() - before - {me}
        if not new:
            return
        for pid in new:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.005)
        _reap()


def _reap():
    """Collect our exited children (the ones a timeout killed), so none lingers as a zombie."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


class Output:
    """The session's fds 1 and 2 pointed at per-call files, so cells and what they start write there."""

    def __init__(self, limit):
        self.limit = limit
        self.files = [tempfile.TemporaryFile(dir="/tmp"), tempfile.TemporaryFile(dir="/tmp")]

    def start(self):
        for fd, fh in zip((1, 2), self.files):
            fh.seek(0)
            fh.truncate()
            os.dup2(fh.fileno(), fd)

    def take(self):
        sys.stdout.flush()
        sys.stderr.flush()
        out = []
        for fh in self.files:
            fh.seek(0)
            data = fh.read(self.limit + 1)
            out.append((data[: self.limit].decode("utf-8", "replace"), len(data) > self.limit))
        return out


class Streamer:
    """Sends what a call writes while it runs (every 50 ms), when the host asked for it: a thread
    reading the per-call output files from where it last stopped, within the output cap."""

    def __init__(self, chan, rid, output):
        import codecs
        import threading

        self.chan, self.rid, self.files, self.limit = chan, rid, output.files, output.limit
        self.sent = [0, 0]
        self.decoders = [codecs.getincrementaldecoder("utf-8")("replace") for _ in range(2)]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="vmpool-stream", daemon=True)

    def start(self):
        self.thread.start()

    def _pump(self, final=False):
        for i, (name, fh) in enumerate(zip(("stdout", "stderr"), self.files)):
            data = b""
            while self.sent[i] < self.limit:
                chunk = os.pread(fh.fileno(), min(1 << 16, self.limit - self.sent[i]), self.sent[i])
                if not chunk:
                    break
                self.sent[i] += len(chunk)
                data += chunk
            text = self.decoders[i].decode(data, final=final)
            if text:
                self.chan.send({"id": self.rid, "stream": name, "text": text})

    def _run(self):
        while not self.stop.wait(0.05):
            self._pump()

    def finish(self):
        """Stop the thread (a checkpoint finds the interpreter alone) and send the rest."""
        sys.stdout.flush()
        sys.stderr.flush()
        self.stop.set()
        self.thread.join()
        self._pump(final=True)


def _plain(value, depth=0):
    """``value`` itself when it is JSON-like plain data (small), else ``None``-marker."""
    if depth > 20:
        raise TypeError
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _plain(v, depth + 1) for k, v in value.items()}
    raise TypeError


class Kernel:
    def __init__(self, output):
        self.output = output
        self.contexts = {}
        self.counts = {}
        self.cwd = HOME

    def _namespace(self, name):
        if name not in self.contexts:
            self.contexts[name] = {"__name__": "__main__", "__builtins__": __builtins__}
            self.counts[name] = 0
        return self.contexts[name]

    def exec(self, req, streamer=None):
        name = str(req.get("context") or "default")
        ns = self._namespace(name)
        self.counts[name] += 1
        reply = {"execution_count": self.counts[name], "result": None, "data": None, "has_data": False,
                 "error": None, "timed_out": False}
        before = _pids()
        self.output.start()
        if streamer is not None:
            streamer.start()
        signal.signal(signal.SIGALRM, _on_alarm)  # a cell may have replaced it
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
        signal.setitimer(signal.ITIMER_REAL, float(req.get("timeout") or 30.0))
        try:
            tree = ast.parse(req.get("code", ""), "<cell>", "exec")
            last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
            exec(compile(tree, "<cell>", "exec"), ns)
            if last is not None:
                value = eval(compile(ast.Expression(last.value), "<cell>", "eval"), ns)
                if value is not None:
                    reply["result"] = repr(value)[:100_000]
                    try:
                        reply["data"], reply["has_data"] = _plain(value), True
                    except (TypeError, RecursionError):
                        pass
                    ns["_"] = value
        except CellTimeout:
            reply["timed_out"] = True
            reply["error"] = {"name": "TimeoutError", "value": "the cell ran past its timeout and was interrupted",
                              "traceback": ""}
        except BaseException as exc:  # the cell's own error (SystemExit included): data, not our failure
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
            reply["error"] = {"name": type(exc).__name__, "value": str(exc)[:10_000],
                              "traceback": "".join(tb)[-20_000:]}
        finally:
            # Ignored until the next cell: a late SIGALRM (the supervisor's, for a call's CPU or
            # memory limit) must not land in the kernel's own code.
            signal.signal(signal.SIGALRM, signal.SIG_IGN)
            signal.setitimer(signal.ITIMER_REAL, 0)
        if reply["timed_out"]:
            _kill_new(before)
        if streamer is not None:
            streamer.finish()
        (reply["stdout"], reply["stdout_truncated"]), (reply["stderr"], reply["stderr_truncated"]) = self.output.take()
        return reply

    def shell(self, req, streamer=None):
        before = _pids()
        self.output.start()
        if streamer is not None:
            streamer.start()
        cwd_file = os.path.join("/tmp", f".cwd-{os.getpid()}")
        # An EXIT trap records the working directory however the command ends (``exit 3`` too).
        script = f"trap 'printf \"%s\" \"$PWD\" > {cwd_file}' EXIT\n{req.get('command', '')}\n"
        timed_out = False
        try:
            proc = subprocess.Popen([SHELL, "-c", script], cwd=self.cwd, stdin=subprocess.DEVNULL,
                                    stdout=1, stderr=2, start_new_session=True, env=os.environ.copy())
            try:
                code = proc.wait(float(req.get("timeout") or 30.0))
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                code = proc.wait()
        except OSError as exc:
            if streamer is not None:
                streamer.finish()
            return {"exit_code": None, "stdout": "", "stderr": f"cannot run bash: {exc}", "timed_out": False,
                    "stdout_truncated": False, "stderr_truncated": False}
        if timed_out:
            _kill_new(before)
        if streamer is not None:
            streamer.finish()
        try:
            with open(cwd_file) as fh:
                cwd = fh.read()
            os.unlink(cwd_file)
            if cwd and os.path.isdir(cwd):
                self.cwd = cwd
        except OSError:
            pass
        (out, out_cut), (err, err_cut) = self.output.take()
        return {"exit_code": None if timed_out else code, "stdout": out, "stderr": err, "timed_out": timed_out,
                "stdout_truncated": out_cut, "stderr_truncated": err_cut, "cwd": self.cwd}


def _path(raw):
    return os.path.normpath(os.path.join(HOME, raw or "."))


def _files(req, limit):
    op, path = req["op"], _path(req.get("path"))
    try:
        if op == "write":
            data = base64.b64decode(req.get("b64", ""))
            if len(data) > limit:
                return {"error": f"file of {len(data)} bytes is over the session's limit of {limit}"}
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(data)
            return {"path": path, "size": len(data)}
        if op == "read":
            size = os.stat(path).st_size
            if size > limit:
                return {"error": f"{path} has {size} bytes, over the session's limit of {limit}"}
            with open(path, "rb") as fh:
                return {"path": path, "b64": base64.b64encode(fh.read()).decode()}
        entries = []
        for name in sorted(os.listdir(path))[:10_000]:
            st = os.lstat(os.path.join(path, name))
            kind = "dir" if stat.S_ISDIR(st.st_mode) else "link" if stat.S_ISLNK(st.st_mode) else "file"
            entries.append({"name": name, "type": kind, "size": st.st_size})
        return {"path": path, "entries": entries}
    except OSError as exc:
        return {"error": f"{path}: {exc.strerror or exc}"}



def send_with_fds(fd, message, fds):
    """One frame on the channel socket ``fd`` with descriptors attached (SCM_RIGHTS)."""
    import json

    body = json.dumps(message, separators=(",", ":")).encode()
    sock = socket.socket(fileno=os.dup(fd))
    try:
        sock.setblocking(True)
        data = HEADER.pack(len(body)) + body
        sent = socket.send_fds(sock, [data[:1]], fds)
        if sent != 1:
            raise OSError("short send of descriptors")
        sock.sendall(data[1:])
    finally:
        sock.close()


def _quiet_signals():
    """Every handler a cell may have installed back to the default, so none runs after the
    fork (the checkpoint holder runs this module's code only)."""
    branch.set_all_signals(lambda sig: signal.SIG_IGN if sig == signal.SIGPIPE else signal.SIG_DFL)


def checkpoint(chan, req):
    """Fork the checkpoint holder. Returns in the holder only; this process answers the
    supervisor and waits to be killed (the supervisor has stopped everything else).

    Raises:
        ValueError: the state cannot be forked in isolation (shared memory mappings).
    """
    shared = branch.shared_mappings()
    if shared:
        raise ValueError("the session has shared memory mappings a fork would share with its parent "
                         f"({', '.join(sorted(set(shared))[:5])}): unmap them first")
    _quiet_signals()
    pid = os.fork()
    if pid == 0:
        return
    chan.send({"id": req.get("id"), "forked": pid})
    while True:
        signal.pause()


def read_to_end(fd, timeout):
    """What a branch's set-up reported on its pipe (read until every writer closed it)."""
    import select

    deadline = time.monotonic() + timeout
    data = b""
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return "the branch's set-up did not finish in time"
            chunk = os.read(fd, 4096)
            if not chunk:
                return data.decode("utf-8", "replace")
            data += chunk
    finally:
        os.close(fd)


def hold(chan, kernel, opts):
    """The checkpoint holder's loop: spawn branches with this process's state on request.
    Returns in each new branch's interpreter (the caller then serves its channel)."""
    while True:
        req = chan.recv()
        if req is None:
            os._exit(0)
        if req.get("op") != "spawn":
            chan.send({"id": req.get("id"), "error": f"a checkpoint only spawns, not {req.get('op')!r}"})
            continue
        ends = []
        try:
            for _ in range(max(1, min(int(req.get("n", 1)), 64))):
                ours, theirs = socket.socketpair()
                why_r, why_w = os.pipe()
                fd = theirs.fileno()
                try:
                    pid = branch.spawn(fd, opts, True, (branch.INNER_ID, branch.INNER_ID), why_w)
                except BaseException:  # in the new branch, its set-up failed: report and go
                    os.write(why_w, traceback.format_exc()[-2000:].encode())
                    os._exit(1)
                if pid == 0:  # the new branch's interpreter
                    for sock in (theirs, ours, *ends):  # their fds are closed or ours now: never close them again
                        sock.detach()
                    kernel.output = Output(kernel.output.limit)
                    return Channel(fd, fd)
                theirs.close()
                os.close(why_w)
                why = read_to_end(why_r, 30.0)
                _reap()  # the pid 1 of branches closed since: children of this holder
                if why:  # the set-up of the branch itself reports on the pipe
                    ours.close()
                    raise OSError(f"a branch failed to start: {why}")
                ends.append(ours)
            send_with_fds(chan.wfd, {"id": req.get("id"), "spawned": len(ends)}, [s.fileno() for s in ends])
        except OSError as exc:
            chan.send({"id": req.get("id"), "error": f"cannot spawn: {exc}"})
        finally:
            for s in ends:
                s.close()


def serve(chan, kernel, opts, file_limit):
    """The interpreter's request loop (returns never; the supervisor kills the branch)."""
    while True:
        chan.send({"ready": True, "protocol": PROTOCOL, "pid": os.getpid(), "python": sys.version.split()[0],
                   "session": True})
        while True:
            req = chan.recv()
            if req is None:
                os._exit(0)
            op = req.get("op")
            streamer = Streamer(chan, req.get("id"), kernel.output) if req.get("stream") else None
            if op == "exec":
                try:
                    reply = kernel.exec(req, streamer)
                except CellTimeout:  # the alarm landed between the cell and its cleanup
                    signal.signal(signal.SIGALRM, signal.SIG_IGN)
                    if streamer is not None:
                        streamer.finish()
                    reply = {"execution_count": kernel.counts.get(str(req.get("context") or "default"), 0),
                             "result": None, "error": {"name": "TimeoutError", "value": "the cell was interrupted",
                                                       "traceback": ""}, "timed_out": True, "stdout": "", "stderr": ""}
            elif op == "shell":
                reply = kernel.shell(req, streamer)
            elif op in ("write", "read", "list"):
                reply = _files(req, file_limit)
            elif op == "restart":
                name = str(req.get("context") or "default")
                kernel.contexts.pop(name, None)
                reply = {"restarted": name}
            elif op == "ping":
                reply = {"pong": True}
            elif op == "checkpoint":
                try:
                    checkpoint(chan, req)
                except ValueError as exc:
                    chan.send({"id": req.get("id"), "error": str(exc)})
                    continue
                chan = hold(chan, kernel, opts)  # in a new branch from here on
                break
            else:
                reply = {"error": f"unknown op {op!r}"}
            reply["id"] = req.get("id")
            chan.send(reply)


def start(sock_fd, opts):
    """Set up a fresh interpreter in a new branch and serve it (called in the branch)."""
    os.makedirs(HOME, exist_ok=True)
    os.chdir(HOME)  # Python cells keep their own working directory (os.chdir in a cell sticks); the shell its own
    os.environ.update({"HOME": HOME, "PWD": HOME})
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # nothing of the supervisor's (its stderr is the host's) stays open here
        os.dup2(devnull, fd)
    os.close(devnull)
    kernel = Kernel(Output(int(opts["output_bytes"])))
    sys.stdout = open(1, "w", buffering=1, closefd=False, errors="replace")
    sys.stderr = open(2, "w", buffering=1, closefd=False, errors="replace")
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, _on_alarm)
    serve(Channel(sock_fd, sock_fd), kernel, opts, int(opts["file_size"]))
