"""``python -m harness bench``: sandboxed grading throughput against two unsandboxed baselines.

The workload is HumanEval's canonical solutions with their tests, repeated ``repeat``
times (164 x 10 = 1,640 programs by default). Each mode runs it with the same number of
parallel workers (the sandbox pool's size, ``pool.size`` or the CPU count), one mode after
the other so they do not compete for CPUs:

* ``sandboxed``: through ``rewards.Grader`` and the warm ``vmpool`` pool (the product).
* ``pool``: the same whole programs straight through ``vmpool.Pool.map``, no Grader:
  splits the sandboxed cost between the sandbox itself and the rewards layer.
* ``fork``: the floor - the least work that still runs every program in a fresh process.
  One warm ``/usr/bin/python3`` per pool slot, with the sandbox zygote's modules
  preloaded (``vmpool._guest.agent.PRELOAD``) and every program of its share already in
  memory, forks one child per program; the child compiles and execs the whole program
  (solution + tests) and exits with its status; the parent only waits. All workers start
  their loops together on one signal, and the wall time runs from the earliest loop start
  to the latest loop end (interpreter start and preload excluded, as the pool's start is).
  Results go back in one message per worker after its loop.
* ``naive``: ``/usr/bin/python3 -c PROGRAM`` per program, from a thread pool.

The headline is throughput ``sandboxed/fork``. Then a latency pass runs the first
``latency_samples`` programs one at a time through the sandbox and through one fork
worker: the difference of the medians is the sandbox's per-program overhead over the fork
floor. The baselines use the same interpreter the sandboxes run, so the comparison
isolates the sandbox.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vmpool import ExecRequest, Status
from vmpool._guest.agent import PRELOAD

from ._config import HarnessConfig
from ._errors import InputError

__all__ = ["BenchResult", "ModeResult", "format_bench", "humaneval_programs", "run_bench"]

logger = logging.getLogger(__name__)

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


@dataclass
class ModeResult:
    """Throughput of one way of running the workload.

    Attributes:
        name: ``sandboxed``, ``pool``, ``fork`` or ``naive``.
        n_programs: programs run.
        n_ok: programs that passed (sandboxed) or exited 0 (baselines).
        wall_s: seconds the timed part took.
        programs_per_s: ``n_programs / wall_s``.
    """

    name: str
    n_programs: int
    n_ok: int
    wall_s: float
    programs_per_s: float


@dataclass
class BenchResult:
    """Numbers from one bench run.

    Attributes:
        workers: parallel workers (pool size) used by every mode.
        backend: the sandbox backend.
        repeat: copies of the HumanEval programs.
        pool_start_s: time to start the warm pool (not in the sandboxed throughput).
        modes: results by mode name.
        latency_n: programs in the one-at-a-time latency pass (0 when skipped).
        sandbox_latency_ms / pool_latency_ms / fork_latency_ms: median per-program latency
            in that pass (through the Grader, straight through the pool, fork floor).
        overhead_ms: ``sandbox_latency_ms - fork_latency_ms``.
        failures: what went wrong (a canonical program not passing, a worker crashing).
    """

    workers: int
    backend: str
    repeat: int
    pool_start_s: float = 0.0
    modes: dict[str, ModeResult] = field(default_factory=dict)
    latency_n: int = 0
    sandbox_latency_ms: float | None = None
    pool_latency_ms: float | None = None
    fork_latency_ms: float | None = None
    overhead_ms: float | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def ratio(self, a: str, b: str) -> float | None:
        """Throughput of mode ``a`` over mode ``b`` (None when either is missing)."""
        if a in self.modes and b in self.modes and self.modes[b].programs_per_s > 0:
            return self.modes[a].programs_per_s / self.modes[b].programs_per_s
        return None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratios"] = {
            "sandboxed/fork": self.ratio("sandboxed", "fork"),
            "sandboxed/naive": self.ratio("sandboxed", "naive"),
        }
        return data


def humaneval_programs(path: str | Path) -> list[tuple[str, str]]:
    """Whole HumanEval test programs: prompt + canonical solution + tests + ``check(entry_point)``.

    Args:
        path: the HumanEval JSONL.

    Returns:
        ``(task_id, program)`` pairs in file order.

    Raises:
        InputError: when a line is not a HumanEval record.
    """
    programs: list[tuple[str, str]] = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                program = (
                    f"{rec['prompt']}{rec['canonical_solution']}\n\n{rec['test']}\n\ncheck({rec['entry_point']})\n"
                )
                programs.append((str(rec["task_id"]), program))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise InputError(f"not a HumanEval record: {exc}", str(path), number) from exc
    return programs


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
        for worker in pool:
            job = {"preload": list(PRELOAD), "programs": [programs[i] for i in worker.share]}
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


def run_bench(
    config: HarnessConfig | None = None,
    *,
    repeat: int = 10,
    workers: int | None = None,
    backend: str | None = None,
    latency_samples: int = 164,
    naive: bool = True,
    problems_path: str | Path | None = None,
) -> BenchResult:
    """Run the benchmark.

    Args:
        config: harness config (pool, limits, reward); defaults when None.
        repeat: copies of the HumanEval programs to run.
        workers: pool size and baseline worker count (default: the config's pool size).
        backend: sandbox backend override.
        latency_samples: programs timed one at a time (0 skips the latency pass).
        naive: also run the slow ``python3 -c`` baseline.
        problems_path: HumanEval JSONL (default: the one bundled with rewards).

    Returns:
        The :class:`BenchResult`.

    Raises:
        InputError: when the dataset is missing or malformed.
    """
    from rewards import load_problems, reference_solutions

    from ._demo import bundled_dataset
    from ._grading import Harness

    path = Path(problems_path) if problems_path else bundled_dataset("humaneval.jsonl")
    programs = humaneval_programs(path)
    problems = {str(p.task_id): p for p in load_problems(str(path))}
    solutions = {str(k): v for k, v in reference_solutions(str(path)).items()}
    missing = [t for t, _ in programs if t not in problems or t not in solutions]
    if missing:
        raise InputError(f"rewards could not load {len(missing)} task(s), e.g. {missing[0]}", str(path))
    with Harness(config, workers=workers, backend=backend) as harness:
        n_workers = harness.config.pool.resolved_size()
        result = BenchResult(workers=n_workers, backend=harness.config.pool.backend, repeat=repeat)
        # Each copy gets its own trailing comment: the Grader runs identical programs of a
        # batch only once, and the bench must time every program, not a cache hit.
        workload = [f"{src}\n# bench copy {r}\n" for r in range(repeat) for _, src in programs]
        pairs = [(problems[t], f"{solutions[t]}\n# bench copy {r}\n") for r in range(repeat) for t, _ in programs]
        n = len(workload)

        logger.info("fork floor: %d programs on %d workers", n, n_workers)
        _, codes, wall, failures = _run_fork_workers(workload, n_workers)
        result.failures += failures
        result.modes["fork"] = ModeResult("fork", n, sum(c == 0 for c in codes), wall, n / wall if wall else 0.0)

        if naive:
            logger.info("naive baseline: %d programs", n)
            codes, wall = _run_naive(workload, n_workers)
            result.modes["naive"] = ModeResult("naive", n, sum(c == 0 for c in codes), wall, n / wall)

        start = time.perf_counter()
        harness.verdicts(pairs[:n_workers])  # start the pool and warm every sandbox once
        result.pool_start_s = time.perf_counter() - start
        logger.info("sandboxed: %d programs on %d sandboxes", n, n_workers)
        start = time.perf_counter()
        verdicts = harness.verdicts(pairs)
        wall = time.perf_counter() - start
        result.modes["sandboxed"] = ModeResult("sandboxed", n, sum(v.passed is True for v in verdicts), wall, n / wall)

        # The same whole programs straight through the pool, without the Grader: splits
        # the sandboxed cost between vmpool (sandbox) and rewards (test runner, judging).
        limits = harness.config.limits.to_limits()
        requests = [ExecRequest(code=src, limits=limits) for src in workload]
        start = time.perf_counter()
        results = harness.pool.map(requests)
        wall = time.perf_counter() - start
        result.modes["pool"] = ModeResult("pool", n, sum(r.status is Status.OK for r in results), wall, n / wall)

        m = min(latency_samples, len(programs))
        if m > 0:
            result.latency_n = m
            sandbox_times, pool_times = [], []
            for pair, request in zip(pairs[:m], requests[:m], strict=True):
                t0 = time.perf_counter()
                harness.verdicts([pair])
                t1 = time.perf_counter()
                harness.pool.run(request)
                sandbox_times.append(t1 - t0)
                pool_times.append(time.perf_counter() - t1)
            fork_times, _, _, failures = _run_fork_workers(workload[:m], 1)
            result.failures += failures
            result.sandbox_latency_ms = statistics.median(sandbox_times) * 1e3
            result.fork_latency_ms = statistics.median(fork_times) * 1e3
            result.pool_latency_ms = statistics.median(pool_times) * 1e3
            result.overhead_ms = result.sandbox_latency_ms - result.fork_latency_ms

    for mode in result.modes.values():
        if mode.n_ok != mode.n_programs:
            result.failures.append(f"{mode.name}: only {mode.n_ok} of {mode.n_programs} canonical programs passed")
    return result


def format_bench(result: BenchResult) -> str:
    """Render the bench numbers as a table.

    Args:
        result: the bench result.

    Returns:
        Multi-line text.
    """
    lines = [
        (
            f"HumanEval canonical x{result.repeat}, {result.workers} worker(s), backend {result.backend} "
            f"(pool start + warm-up {result.pool_start_s:.2f} s, not timed)"
        ),
        f"  {'mode':<10} {'programs':>9} {'ok':>6} {'wall s':>8} {'programs/s':>11}",
    ]
    for name in ("sandboxed", "pool", "fork", "naive"):
        m = result.modes.get(name)
        if m:
            lines.append(f"  {m.name:<10} {m.n_programs:>9} {m.n_ok:>6} {m.wall_s:>8.2f} {m.programs_per_s:>11.1f}")
    for a, b in (("sandboxed", "fork"), ("sandboxed", "naive"), ("pool", "fork")):
        r = result.ratio(a, b)
        if r is not None:
            lines.append(f"  throughput {a}/{b}: {r:.2f}x")
    if result.overhead_ms is not None:
        lines.append(
            f"  per-program latency, one at a time over {result.latency_n} programs (median): sandboxed "
            f"{result.sandbox_latency_ms:.2f} ms, fork {result.fork_latency_ms:.2f} ms -> sandbox overhead "
            f"{result.overhead_ms:.2f} ms/program"
        )
        lines.append(
            f"  of which vmpool alone (same programs via pool.run, no Grader): {result.pool_latency_ms:.2f} ms "
            f"(+{result.pool_latency_ms - result.fork_latency_ms:.2f} ms over fork)"
        )
    if result.failures:
        lines.append("FAILURES:")
        lines += [f"  {f}" for f in result.failures]
    return "\n".join(lines)
