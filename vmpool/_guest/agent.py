"""Guest agent: the zygote (fork server) that runs inside every sandbox.

This file is executed by the sandbox's own interpreter (``/usr/bin/python3 -I``), not
imported by the harness: it must stay standalone (stdlib only, no imports from the
project) so the same files can run inside a namespace sandbox or a microVM guest. Its
modules sit beside it (every ``_guest/*.py`` is bound or copied into the sandbox):
``_vmpool_procs`` (the program zygote, forked children, limits), ``_vmpool_sweep`` (kill
sweeps, scratch cleanup, a run's CPU time and resident memory),
``_vmpool_run`` (one run: work dir, event loop, teardown, result) and ``_vmpool_tester``
(the persistent tester process). With ``--cpu N`` the agent pins itself (and so every
process it starts) to CPU N and runs ``SCHED_BATCH`` (see ``vmpool._cpus``).

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

import gc
import os
import signal
import sys
import time
import traceback

# The agent's other modules sit next to this file; -I keeps the script's directory off
# sys.path, so it is put there for these imports only (programs never see it).
_HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, _HERE)
from _vmpool_chan import Channel  # noqa: E402
from _vmpool_procs import (  # noqa: E402
    _PRIV,
    _SESSION,
    PROGRAM_UID,
    SCRATCH_DIRS,
    STATE_DIR,
    _code_of,
    _start_zygote,
)
from _vmpool_restore import resume as _resume  # noqa: E402
from _vmpool_run import run_one  # noqa: E402

sys.path.remove(_HERE)

PROTOCOL = 2
# Modules most graded programs import: loaded once here so a program pays a fork,
# not an import. The list is the zygote's "template" state.
PRELOAD = (
    "abc array bisect builtins calendar cmath collections collections.abc copy dataclasses datetime "
    "decimal enum fractions functools hashlib heapq io itertools json math numbers operator random re "
    "statistics string struct sys textwrap types typing unicodedata ast traceback tokenize inspect "
    "sysconfig warnings threading queue time resource signal contextlib base64 socket selectors"
).split()
STATE_SIZE = "32m"
PR_SET_DUMPABLE = 4


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


def _apply_argv() -> None:
    """``--cpu N``: run this agent, and everything it forks, on CPU N (the host leased it).
    ``--path DIR`` (repeatable): a read-only package directory the host mounted, appended
    to ``sys.path`` so every program and tester can import from it."""
    argv = sys.argv[1:]
    cpu = None
    while len(argv) >= 2 and argv[0] in ("--cpu", "--path"):
        if argv[0] == "--cpu":
            cpu = argv[1]
        elif argv[1] not in sys.path:
            sys.path.append(argv[1])
        argv = argv[2:]
    if cpu is None:
        return
    try:
        os.sched_setaffinity(0, {int(cpu)})
    except (OSError, ValueError) as exc:  # a CPU this sandbox may not use: run unpinned
        print(f"vmpool agent: cannot pin to CPU {cpu}: {exc}", file=sys.stderr)
        return
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except OSError as exc:
        print(f"vmpool agent: cannot use SCHED_BATCH: {exc}", file=sys.stderr)


def _become_sessions(rfd: int, wfd: int, req: dict) -> None:
    """A microVM session sandbox: hand the channel to the session supervisor (``session.py``,
    which answers from now on) and stay pid 1, reaping orphans."""
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(rfd, 0)
            os.dup2(wfd, 1)
            args = [str(a) for a in req.get("args", [])]
            os.execve(sys.executable, [sys.executable, "-I", "-B", "/opt/vmpool/session.py", *args],
                      {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "VMPOOL_GUEST": "microvm"})
        finally:
            os._exit(127)
    os.close(rfd)
    os.close(wfd)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(1)
        except InterruptedError:
            continue


def main() -> None:
    _apply_argv()  # first: the zygote and every program inherit it
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
        if req.get("op") == "session" and os.getpid() == 1:
            _become_sessions(rfd, wfd, req)  # never returns: the channel is the supervisor's now
        seq += 1
        try:
            for spec in (req, req.get("companion")):
                if spec and spec.get("cache_code"):
                    spec["code"] = _code_of(spec)
            result = run_one(req, seq, zsock)
        except BaseException as exc:  # report, never die silently: the host retires this sandbox
            result = {"id": req.get("id"), "status": "sandbox_error",
                      "error": f"agent failure: {exc!r}", "anomaly": traceback.format_exc()[-2000:]}
        chan.send(result)


if __name__ == "__main__":
    main()
