"""The unsandboxed baselines of ``python -m harness bench``: the fork floor and ``python3 -c``.

See :mod:`bench.throughput` for what they measure; re-exported from there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from vmpool import PRELOADED_MODULES

SANDBOX_PYTHON = "/usr/bin/python3"
BASELINE_TIMEOUT_S = 30

# One fork-floor worker. argv: [timeout_s]. stdin: one JSON line {"preload", "programs"},
# later one byte: go. stdout: one byte (ready) once preloaded and holding its programs,
# then one JSON object {"start", "ends", "statuses"} after the loop (CLOCK_MONOTONIC
# seconds, comparable across processes; raw wait statuses). Per program the parent does
# fork, waitpid and one clock read, nothing else; the child compiles and runs the program.
_FORK_WORKER = r"""
import gc, json, os, signal, sys, time
job = json.loads(sys.stdin.buffer.readline())
if job.get("cpu") is not None:  # one worker per core, run as the pool's pinned sandboxes are
    os.sched_setaffinity(0, {job["cpu"]})
    os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
for name in job["preload"]:  # the zygote's template state
    try:
        __import__(name)
    except Exception:
        pass
programs, timeout = job["programs"], int(sys.argv[1])
del job
devnull = os.open(os.devnull, os.O_RDWR)
fork, waitpid, clock = os.fork, os.waitpid, time.monotonic
ends, statuses = [], []
gc.collect()
gc.freeze()  # children's collections leave the inherited heap (and its pages) alone
sys.stdout.buffer.write(b"R")
sys.stdout.buffer.flush()
if sys.stdin.buffer.read(1) != b"G":
    sys.exit(2)
start = clock()
for src in programs:
    pid = fork()
    if pid == 0:
        code = 1
        try:
            os.dup2(devnull, 0)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            signal.alarm(timeout)
            exec(compile(src, "<program>", "exec"), {"__name__": "__main__"})
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            code = 1
        os._exit(code & 0xFF)
    statuses.append(waitpid(pid, 0)[1])
    ends.append(clock())
sys.stdout.write(json.dumps({"start": start, "ends": ends, "statuses": statuses}))
"""


class _ForkWorker:
    """One fork-floor worker process and its share of the programs.

    Args:
        share: indices of its programs in the workload.
    """

    def __init__(self, share: list[int]) -> None:
        self.share = share
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [SANDBOX_PYTHON, "-c", _FORK_WORKER, str(BASELINE_TIMEOUT_S)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.err,
            start_new_session=True,  # its own process group: a kill takes its children too
        )

    def send(self, data: bytes, *, last: bool = False) -> bool:
        """Write ``data`` to the worker's stdin (closing it when ``last``).

        Args:
            data: bytes to write.
            last: close stdin afterwards.

        Returns:
            False when the worker is gone (broken pipe).
        """
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            stdin.write(data)
            stdin.flush()
            if last:
                stdin.close()
            return True
        except (BrokenPipeError, ValueError):  # ValueError: already closed
            return False

    def read(self, n: int = -1) -> bytes:
        """Read ``n`` bytes (all, up to EOF, when -1) of the worker's stdout."""
        assert self.proc.stdout is not None
        return self.proc.stdout.read(n)

    def kill(self) -> None:
        """Kill the worker and the children it has running, if it still runs."""
        if self.proc.poll() is None:  # not reaped: its pid still names its process group
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def why(self) -> str:
        """Exit status and the end of the stderr of a worker that failed (killing it first)."""
        self.kill()
        self.proc.wait()
        self.err.seek(0)
        return f"exit {self.proc.returncode}: {self.err.read().decode(errors='replace')[-500:]}"

    def close(self) -> None:
        """Kill, reap and close everything of this worker."""
        self.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:  # unflushed data to a dead worker
                    pass
        self.err.close()


def _run_fork_workers(programs: Sequence[str], workers: int) -> tuple[list[float], list[int], float, list[str]]:
    """Run ``programs`` on ``workers`` fork-per-program workers (the fork floor).

    Program ``i`` goes to worker ``i % workers``. Every worker starts, preloads and reads
    its whole share first; then all are told to go at once, and each runs its share with
    one ``fork`` + ``waitpid`` per program and reports once, at the end.

    Args:
        programs: whole programs (solution + tests), each run as ``__main__``.
        workers: parallel workers (at most one per program is started).

    Returns:
        ``(per-program seconds, exit codes, wall seconds, failures)``: times and codes in
        program order (a program of a failed worker has time 0.0 and code -1); the wall
        runs from the earliest worker's loop start to the latest worker's loop end (0.0
        when no worker reported).
    """
    shares = [share for w in range(max(1, workers)) if (share := list(range(w, len(programs), workers)))]
    times = [0.0] * len(programs)
    codes = [-1] * len(programs)
    failures: list[str] = []
    first_start, last_end = float("inf"), 0.0
    limit_s = BASELINE_TIMEOUT_S * (max(map(len, shares), default=0) + 1)
    timed_out = threading.Event()
    pool: list[_ForkWorker] = []

    def kill_all() -> None:
        timed_out.set()
        for worker in pool:
            worker.kill()

    watchdog = threading.Timer(limit_s, kill_all)
    watchdog.daemon = True
    try:
        pool += [_ForkWorker(share) for share in shares]
        watchdog.start()
        cpus = sorted(os.sched_getaffinity(0))
        pin = len(pool) <= len(cpus)  # one worker per core when there are cores enough
        for n, worker in enumerate(pool):
            job = {"preload": list(PRELOADED_MODULES), "programs": [programs[i] for i in worker.share],
                   "cpu": cpus[n] if pin else None}
            worker.send(json.dumps(job).encode() + b"\n")  # a failure shows as no ready byte
        ready = []
        for worker in pool:
            if worker.read(1) == b"R":
                ready.append(worker)
            else:
                what = f"timed out after {limit_s} s" if timed_out.is_set() else "did not start"
                failures.append(f"fork worker {what}: {worker.why()}")
        for worker in list(ready):  # go: the loops start now
            if not worker.send(b"G", last=True):
                ready.remove(worker)
                failures.append(f"fork worker did not take the start signal: {worker.why()}")
        for worker in ready:
            out = worker.read()
            worker.proc.wait()
            try:
                report = json.loads(out)
                start, ends, statuses = float(report["start"]), report["ends"], report["statuses"]
                n = len(worker.share)
                if worker.proc.returncode != 0 or len(ends) != n or len(statuses) != n:
                    raise ValueError(f"{len(ends)} of {n} results")
            except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
                what = f"timed out after {limit_s} s" if timed_out.is_set() else f"failed ({exc})"
                failures.append(f"fork worker {what}: {worker.why()}")
                continue
            first_start, last_end = min(first_start, start), max(last_end, ends[-1])
            previous = start
            for i, end, status in zip(worker.share, ends, statuses):
                times[i], previous = end - previous, end
                codes[i] = os.waitstatus_to_exitcode(status)
    finally:
        watchdog.cancel()
        for worker in pool:
            worker.close()
    return times, codes, (last_end - first_start if last_end > 0 else 0.0), failures


def _run_naive(programs: Sequence[str], workers: int) -> tuple[list[int], float]:
    """Run each program as ``python3 -c`` from ``workers`` threads; returns (exit codes, wall seconds)."""

    def one(src: str) -> int:
        try:
            return subprocess.run(
                [SANDBOX_PYTHON, "-c", src],
                check=False,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=BASELINE_TIMEOUT_S,
            ).returncode
        except subprocess.TimeoutExpired:
            return -1

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as ex:
        codes = list(ex.map(one, programs))
    return codes, time.perf_counter() - start
