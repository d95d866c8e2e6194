"""``python -m harness bench``: sandboxed grading throughput against two unsandboxed baselines.

The workload is HumanEval's canonical solutions with their tests, repeated ``repeat``
times (164 x 10 = 1,640 programs by default). Each mode runs it with the same number of
parallel workers (the sandbox pool's size, ``pool.size`` or the CPU count), never two
modes at once so they do not compete for CPUs; the modes take turns in ``BENCH_ROUNDS``
rounds, one slice of the workload each per round, so drift in the machine's speed reaches
them alike. Each mode's wall time is the sum over its slices:

* ``sandboxed``: through ``rewards.Grader`` and the warm ``vmpool`` pool (the product).
* ``pool``: the same whole programs straight through ``vmpool.Pool.map``, no Grader:
  splits the sandboxed cost between the sandbox itself and the rewards layer.
* ``fork``: the floor - the least work that still runs every program in a fresh process.
  One warm ``/usr/bin/python3`` per pool slot (each pinned to a core of its own, as the
  pool pins its sandboxes, when there are cores enough), with the sandbox zygote's modules
  preloaded (``vmpool.PRELOADED_MODULES``) and every program of its share already in
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
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness import HarnessConfig, InputError
from vmpool import ExecRequest, Status

from ._baselines import (  # noqa: F401  (re-exported)
    _FORK_WORKER,
    BASELINE_TIMEOUT_S,
    SANDBOX_PYTHON,
    _ForkWorker,
    _run_fork_workers,
    _run_naive,
)

BENCH_ROUNDS = 5  # the modes take turns this many times (see run_bench)

__all__ = ["BenchResult", "ModeResult", "format_bench", "humaneval_programs", "run_bench"]

logger = logging.getLogger(__name__)


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
    from harness import Harness, bundled_dataset
    from rewards import load_problems, reference_solutions

    path = Path(problems_path) if problems_path else bundled_dataset("humaneval.jsonl")
    programs = humaneval_programs(path)
    problems = {str(p.task_id): p for p in load_problems(str(path))}
    solutions = {str(k): v for k, v in reference_solutions(str(path)).items()}
    missing = [t for t, _ in programs if t not in problems or t not in solutions]
    if missing:
        raise InputError(f"rewards could not load {len(missing)} task(s), e.g. {missing[0]}", str(path))
    with Harness(config, workers=workers, backend=backend) as harness:
        n_workers = harness.config.pool.sandboxes
        result = BenchResult(workers=n_workers, backend=harness.config.pool.backend, repeat=repeat)
        # Each copy gets its own trailing comment: the Grader runs identical programs of a
        # batch only once, and the bench must time every program, not a cache hit.
        workload = [f"{src}\n# bench copy {r}\n" for r in range(repeat) for _, src in programs]
        pairs = [(problems[t], f"{solutions[t]}\n# bench copy {r}\n") for r in range(repeat) for t, _ in programs]
        n = len(workload)

        limits = harness.config.limits
        requests = [ExecRequest(code=src, limits=limits) for src in workload]

        start = time.perf_counter()
        harness.verdicts(pairs[:n_workers])  # start the pool and warm every sandbox once
        result.pool_start_s = time.perf_counter() - start

        # The modes take turns, one slice of the workload each per round, so a change in
        # the machine's speed during the run (other tenants, frequency) reaches every
        # mode alike instead of favouring whichever ran in the quiet minute.
        rounds = max(1, min(repeat, BENCH_ROUNDS))
        slices = [range(n * r // rounds, n * (r + 1) // rounds) for r in range(rounds)]
        walls = {"fork": 0.0, "naive": 0.0, "sandboxed": 0.0, "pool": 0.0}
        oks = {name: 0 for name in walls}
        logger.info("%d programs on %d workers, in %d rounds", n, n_workers, rounds)
        for part in slices:
            if not part:
                continue
            _, codes, wall, failures = _run_fork_workers([workload[i] for i in part], n_workers)
            result.failures += failures
            walls["fork"] += wall
            oks["fork"] += sum(c == 0 for c in codes)

            start = time.perf_counter()
            verdicts = harness.verdicts([pairs[i] for i in part])
            walls["sandboxed"] += time.perf_counter() - start
            oks["sandboxed"] += sum(v.passed is True for v in verdicts)

            # The same whole programs straight through the pool, without the Grader: splits
            # the sandboxed cost between vmpool (sandbox) and rewards (test runner, judging).
            start = time.perf_counter()
            results = harness.pool.map([requests[i] for i in part])
            walls["pool"] += time.perf_counter() - start
            oks["pool"] += sum(r.status is Status.OK for r in results)

            if naive:  # last: the floor and the sandboxes run back to back
                codes, wall = _run_naive([workload[i] for i in part], n_workers)
                walls["naive"] += wall
                oks["naive"] += sum(c == 0 for c in codes)
        for name in ("sandboxed", "pool", "fork", "naive"):
            if name == "naive" and not naive:
                continue
            wall = walls[name]
            result.modes[name] = ModeResult(name, n, oks[name], wall, n / wall if wall else 0.0)

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
    sandbox_ms, pool_ms, fork_ms = result.sandbox_latency_ms, result.pool_latency_ms, result.fork_latency_ms
    if result.overhead_ms is not None and sandbox_ms is not None and fork_ms is not None:
        lines.append(
            f"  per-program latency, one at a time over {result.latency_n} programs (median): sandboxed "
            f"{sandbox_ms:.2f} ms, fork {fork_ms:.2f} ms -> sandbox overhead "
            f"{result.overhead_ms:.2f} ms/program"
        )
        if pool_ms is not None:
            lines.append(
                f"  of which vmpool alone (same programs via pool.run, no Grader): {pool_ms:.2f} ms "
                f"(+{pool_ms - fork_ms:.2f} ms over fork)"
            )
    if result.failures:
        lines.append("FAILURES:")
        lines += [f"  {f}" for f in result.failures]
    return "\n".join(lines)
