"""The session kernel: one agent's computer inside a sandbox (stdlib only, standalone).

Unlike the grading agent (a fork per program, everything wiped after it), a session keeps
its state across calls: Python contexts (namespaces that persist, Jupyter-style), a shell
working directory and the files under its home. Everything in it belongs to the model
being trained, so it runs as the sandbox's program uid from the start and holds no
secrets: isolation is between sessions and from the host, which the sandbox provides.

Requests (length-prefixed JSON on the fds the host gave as stdin/stdout, kept off 0/1):

* ``{"op": "exec", "code", "context", "timeout"}``: run Python cells in a persistent
  context; the value of a trailing expression comes back as ``repr`` text (and as plain
  data where it is plain data); stdout and stderr of the cell and of everything it starts.
* ``{"op": "shell", "command", "timeout"}``: ``bash -c`` in the shell's working directory,
  which persists (``cd`` sticks; Python cells keep a working directory of their own, as a
  Jupyter kernel does beside a terminal); exit code, stdout, stderr.
* ``{"op": "write" | "read" | "list", "path", ...}``: files, relative to the home directory.
* ``{"op": "restart", "context"}``: a fresh namespace for that context.

A call that runs past its timeout is interrupted (``TimeoutError`` raised in the cell, the
shell's process group killed) and every process it started is killed; the session goes on.
"""

import ast
import base64
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
import traceback

# The wire module sits next to this file; -I keeps the script's directory off sys.path,
# so it is put there for this import only (cells never see it).
_HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, _HERE)
from _vmpool_chan import Channel  # noqa: E402

sys.path.remove(_HERE)

PROTOCOL = 2  # the same framing and hello as the grading agent (vmpool.PROTOCOL_VERSION)
HOME = "/tmp/home"
PROGRAM_UID = 65534


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

    def exec(self, req):
        name = str(req.get("context") or "default")
        ns = self._namespace(name)
        self.counts[name] += 1
        reply = {"execution_count": self.counts[name], "result": None, "data": None, "has_data": False,
                 "error": None, "timed_out": False}
        before = _pids()
        self.output.start()
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
            signal.setitimer(signal.ITIMER_REAL, 0)
        if reply["timed_out"]:
            _kill_new(before)
        (reply["stdout"], reply["stdout_truncated"]), (reply["stderr"], reply["stderr_truncated"]) = self.output.take()
        return reply

    def shell(self, req):
        before = _pids()
        self.output.start()
        cwd_file = os.path.join("/tmp", f".cwd-{os.getpid()}")
        # An EXIT trap records the working directory however the command ends (``exit 3`` too).
        script = f"trap 'printf \"%s\" \"$PWD\" > {cwd_file}' EXIT\n{req.get('command', '')}\n"
        timed_out = False
        try:
            proc = subprocess.Popen(["/bin/bash", "-c", script], cwd=self.cwd, stdin=subprocess.DEVNULL,
                                    stdout=1, stderr=2, start_new_session=True, env=os.environ.copy())
            try:
                code = proc.wait(float(req.get("timeout") or 30.0))
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                code = proc.wait()
        except OSError as exc:
            return {"exit_code": None, "stdout": "", "stderr": f"cannot run bash: {exc}", "timed_out": False,
                    "stdout_truncated": False, "stderr_truncated": False}
        if timed_out:
            _kill_new(before)
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


def _drop_privileges():
    """Run as the program uid: everything in a session is the model's, nothing of the host's."""
    if os.geteuid() != 0:
        return False
    os.makedirs(HOME, exist_ok=True)
    os.chown(HOME, PROGRAM_UID, PROGRAM_UID)
    os.chmod("/tmp", 0o1777)
    os.setgroups([])
    os.setgid(PROGRAM_UID)
    os.setuid(PROGRAM_UID)  # from uid 0 to another: every capability is gone
    return True


def _limits(argv):
    import resource

    opts = dict(zip(argv[::2], argv[1::2]))
    if "--memory-mb" in opts:
        n = int(opts["--memory-mb"]) << 20
        resource.setrlimit(resource.RLIMIT_AS, (n, n))
    if "--max-processes" in opts:
        n = int(opts["--max-processes"])
        resource.setrlimit(resource.RLIMIT_NPROC, (n, n))
    if "--file-size" in opts:
        n = int(opts["--file-size"])
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))
    return int(opts.get("--output-bytes", 1 << 20)), int(opts.get("--file-size", 16 << 20))


def main():
    rfd, wfd = os.dup(0), os.dup(1)
    for fd in (rfd, wfd):
        os.set_inheritable(fd, False)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.close(devnull)
    chan = Channel(rfd, wfd)
    separated = _drop_privileges()
    os.makedirs(HOME, exist_ok=True)
    os.chdir(HOME)  # Python cells keep their own working directory (os.chdir in a cell sticks); the shell its own
    os.environ.update({"HOME": HOME, "PWD": HOME})
    output_limit, file_limit = _limits(sys.argv[1:])
    output = Output(output_limit)
    sys.stdout = open(1, "w", buffering=1, closefd=False, errors="replace")
    sys.stderr = open(2, "w", buffering=1, closefd=False, errors="replace")
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, _on_alarm)
    kernel = Kernel(output)
    chan.send({"ready": True, "protocol": PROTOCOL, "pid": os.getpid(), "python": sys.version.split()[0],
               "uid_separation": separated, "session": True})
    while True:
        req = chan.recv()
        if req is None:
            return
        op = req.get("op")
        if op == "exec":
            reply = kernel.exec(req)
        elif op == "shell":
            reply = kernel.shell(req)
        elif op in ("write", "read", "list"):
            reply = _files(req, file_limit)
        elif op == "restart":
            name = str(req.get("context") or "default")
            kernel.contexts.pop(name, None)
            reply = {"restarted": name}
        elif op == "ping":
            reply = {"pong": True}
        else:
            reply = {"error": f"unknown op {op!r}"}
        reply["id"] = req.get("id")
        chan.send(reply)


if __name__ == "__main__":
    main()
