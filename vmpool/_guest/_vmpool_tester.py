"""The persistent tester (companion) process of the guest agent: started once per
companion code and limits, it serves one run after another (part of the guest agent, see
agent.py; stdlib only, standalone).
"""

import fcntl
import json
import os
import signal
import socket
import sys
import time

from _vmpool_procs import (
    _PRIV,
    _TESTERS,
    TESTER_UID,
    _become,
    _cached,
    _exec_main,
    _Receiver,
    _set_limits,
    _warm_entry,
)
from _vmpool_sweep import _kill_group, _proc_cpu


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
        # Its CPU seconds at the end of its last run, as it reported them itself (it is
        # trusted code): saves reading /proc twice per run. None until it has reported.
        self.cpu_mark = None

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


def _tester_for(comp: dict):
    """The companion process for ``comp``, started when none runs its code with its limits.

    Its key holds the limits it took at its start; CPU and wall time are watched per run,
    so runs with other time limits share the process."""
    limits = comp["limits"]
    key = (comp["code"], limits["memory_mb"], limits["max_processes"], limits["max_open_files"],
           limits["file_size_bytes"], bool(comp.get("cache_code")), comp.get("entry"))
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
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)  # put back on 0..4 after every run
    recv = _Receiver(sock).recv
    while True:
        msg, fds = recv()
        spec = json.loads(msg)
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
        times = os.times()
        sock.send(json.dumps({"exit_code": rc,
                              "cpu": time.process_time() + times.children_user + times.children_system}).encode())
