"""``python -m harness bench --suite ray``: the Ray path against the local path, in one run.

Three measurements, one after the other in the same process, on the same programs:

* **throughput**: HumanEval canonical x ``repeat`` (1,640 programs by default; each copy gets
  its own ``# bench copy i`` comment so the Grader's in-batch de-duplication cannot collapse
  them) through ``RayGrader`` on an embedded local Ray sized to the machine (one pool actor
  holding all sandboxes) and through ``rewards.Grader`` on a local ``vmpool.Pool`` with the
  same total sandbox count. The two paths alternate for ``rounds`` rounds so that load on a
  shared machine hits both alike; the medians give programs/s and the Ray overhead
  ``(local - ray) / local``.
* **GRPO reward latency**: ``prompts`` x ``group`` completions (64 x 8 = 512), canonical
  solutions and wrong ones (``pass``, ``return None``) with duplicates inside each group as GRPO
  produces, through ``harness.CodeReward`` (local pool) and through ``RayGrader.grade_batch`` +
  ``rewards.compute_reward``; call to return, median and p90 over ``latency_reps`` alternating
  repetitions after one untimed warm-up call each (pool and actor start-up excluded).
* **scaling**: the same ``RayGrader`` on a ``ray.cluster_utils.Cluster`` (head ``num_cpus=0``,
  worker nodes ``num_cpus=1``, so one 1-sandbox actor per worker node) with 1, 2, 4 worker
  nodes, on a smaller workload (HumanEval x ``scaling_repeat``). Simulated nodes share this
  machine's cores: past the core count the nodes only oversubscribe it, so throughput stays
  flat or falls there. The report prints the core count next to the numbers.

Every verdict is checked: canonical programs must pass, wrong completions must fail, and the
two reward paths must agree; any difference is a failure (exit code 1 from the CLI).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import HarnessConfig, InputError

from ._ray_report import (
    PathLatency,
    PathThroughput,
    RayBench,
    ScalingPoint,
    format_ray_bench,
    write_json,
)
from ._ray_workload import (  # noqa: F401  (re-exported)
    _GROUP_PATTERN,
    _WRONG,
    _check_rewards,
    _grpo_batch,
    _ideal,
    _percentile,
    _records,
    _time,
)

__all__ = ["RayBench", "format_ray_bench", "run_ray_bench", "write_json"]

logger = logging.getLogger(__name__)

#: Object store of each simulated node of the scaling cluster (the embedded Ray gets 200 MB).
CLUSTER_OBJECT_STORE_BYTES = 100 * 1024 * 1024
EMBEDDED_OBJECT_STORE_BYTES = 200 * 1024 * 1024


def run_ray_bench(
    config: HarnessConfig | None = None,
    *,
    repeat: int = 10,
    programs: int | None = None,
    rounds: int = 3,
    workers: int | None = None,
    backend: str | None = None,
    grpo_prompts: int = 64,
    grpo_group: int = 8,
    latency_reps: int = 5,
    nodes: Sequence[int] = (1, 2, 4),
    scaling_repeat: int = 3,
    problems_path: str | Path | None = None,
) -> RayBench:
    """Run the three measurements (see the module docstring).

    Args:
        config: harness config (pool backend, limits, reward); defaults when None.
        repeat: copies of the 164 HumanEval programs for the throughput pass.
        programs: use only the first N HumanEval tasks everywhere (default: all 164).
        rounds: alternating local/ray throughput rounds (the median is reported).
        workers: total sandboxes of each path (default: the config's pool size, one per CPU);
            the embedded Ray gets one actor holding them all, the local pool the same number.
        backend: sandbox backend override.
        grpo_prompts / grpo_group: the GRPO batch is ``grpo_prompts x grpo_group`` completions.
        latency_reps: timed repetitions of the GRPO batch per path (after one warm-up each).
        nodes: worker-node counts of the scaling pass (empty: skip it).
        scaling_repeat: copies of the HumanEval programs per scaling point.
        problems_path: HumanEval JSONL (default: the one bundled with rewards).

    Returns:
        The :class:`RayBench`; ``ok`` is False when any verdict or reward was not as expected.

    Raises:
        InputError: the dataset is missing or malformed.
        vmpool.SandboxStartError: a pool or grader actor could not start.
    """
    import ray

    from harness import CodeReward, RayGrader, bundled_dataset
    from rewards import Grader, compute_reward, load_problems, reference_solutions
    from vmpool import Pool

    started = time.perf_counter()
    config = (config or HarnessConfig()).with_overrides(workers=workers, backend=backend)
    path = Path(problems_path) if problems_path else Path(bundled_dataset("humaneval.jsonl"))
    records = _records(path)[: programs or None]
    problems = {str(p.task_id): p for p in load_problems(str(path))}
    solutions = {str(k): v for k, v in reference_solutions(str(path)).items()}
    missing = [r["task_id"] for r in records if r["task_id"] not in problems or r["task_id"] not in solutions]
    if missing:
        raise InputError(f"rewards could not load {len(missing)} task(s), e.g. {missing[0]}", str(path))
    task_ids = [str(r["task_id"]) for r in records]
    limits = config.limits
    reward_config = config.reward
    sandboxes = config.pool.sandboxes
    cores = os.cpu_count() or 1

    def pairs(copies: int) -> list[tuple[Any, str]]:
        # Each copy gets its own trailing comment: the Grader runs identical programs of a
        # batch only once, and the bench must time every program, not a cache hit.
        return [(problems[t], f"{solutions[t]}\n# bench copy {r}\n") for r in range(copies) for t in task_ids]

    bench = RayBench(
        cores=cores,
        ray_version=ray.__version__,
        backend=config.pool.backend,
        sandboxes=sandboxes,
        repeat=repeat,
        rounds=rounds,
        load_avg_start=os.getloadavg(),
    )
    workload = pairs(repeat)
    n = len(workload)

    # ------------------------------------------------------------ 1 + 2: embedded Ray vs local pool
    if ray.is_initialized():
        raise RuntimeError("the Ray bench starts its own Ray instances; call it with Ray not initialised")
    grader = pool = reward = None
    try:
        logger.info("starting the embedded Ray (%d CPUs) and one actor with %d sandboxes", cores, sandboxes)
        start = time.perf_counter()
        grader = RayGrader(
            None,
            pool_size=sandboxes,
            pool_config=dataclasses.replace(config.pool, size=1),
            limits=limits,
            # "local": always a fresh embedded instance. With no address, ray.init would join the
            # latest `ray start` cluster on this machine (/tmp/ray/ray_current_cluster), e.g. another run's.
            init_kwargs={
                "address": "local",
                "include_dashboard": False,
                "object_store_memory": EMBEDDED_OBJECT_STORE_BYTES,
            },
        )
        grader.grade_batch(workload[: 2 * sandboxes])  # every sandbox runs one program, untimed
        bench.ray_start_s = time.perf_counter() - start
        bench.actors = sum(1 for a in grader.actors() if a["state"] == "live")
        if grader.capacity != sandboxes:
            bench.failures.append(f"ray: {grader.capacity} sandboxes live, wanted {sandboxes}")

        start = time.perf_counter()
        pool = Pool(dataclasses.replace(config.pool, size=sandboxes))
        local = Grader(pool, limits)
        local.grade_batch(workload[: 2 * sandboxes])
        bench.pool_start_s = time.perf_counter() - start

        walls: dict[str, list[float]] = {"local": [], "ray": []}
        n_ok: dict[str, int] = {"local": n, "ray": n}
        for i in range(rounds):
            for name, run in (("local", local.grade_batch), ("ray", grader.grade_batch))[:: 1 if i % 2 == 0 else -1]:
                logger.info("throughput round %d, %s: %d programs", i + 1, name, n)
                verdicts, wall = _time(functools.partial(run, workload))
                walls[name].append(wall)
                n_ok[name] = min(n_ok[name], sum(v.passed is True for v in verdicts))
        for name in ("local", "ray"):
            bench.throughput[name] = PathThroughput(
                name, n, n_ok[name], walls[name], n / statistics.median(walls[name]), n / min(walls[name])
            )
            if n_ok[name] != n:
                bench.failures.append(f"throughput {name}: only {n_ok[name]} of {n} canonical programs passed")

        # GRPO batch: CodeReward (the TRL reward function, local pool) vs RayGrader + compute_reward.
        cols, expect = _grpo_batch(records, grpo_prompts, grpo_group)
        bench.grpo_prompts, bench.grpo_group = grpo_prompts, grpo_group
        bench.grpo_unique = len(set(zip(cols["task_id"], cols["completions"])))
        bench.grpo_expected_pass = sum(expect)
        want = [compute_reward(_ideal(problems[t], e), reward_config) for t, e in zip(cols["task_id"], expect)]
        reward = CodeReward(reward_config, limits, pool=pool)
        columns = {k: cols[k] for k in ("task_id", "test", "entry_point")}

        def via_code_reward() -> list[float | None]:
            return reward(prompts=cols["prompts"], completions=cols["completions"], **columns)

        def via_ray() -> list[float | None]:
            items = [(problems[t], c) for t, c in zip(cols["task_id"], cols["completions"])]
            return [compute_reward(v, reward_config) for v in grader.grade_batch(items)]

        paths = {"code_reward": via_code_reward, "ray": via_ray}
        times: dict[str, list[float]] = {name: [] for name in paths}
        good = dict.fromkeys(paths, True)
        last: dict[str, list[float | None]] = {}
        for name, fn in paths.items():  # warm-up: problem parsing cache, first chunks
            last[name] = fn()
            good[name] &= _check_rewards(name, last[name], want, bench.failures)
        for i in range(latency_reps):
            for name, fn in list(paths.items())[:: 1 if i % 2 == 0 else -1]:
                last[name], elapsed = _time(fn)
                times[name].append(elapsed)
                good[name] &= _check_rewards(name, last[name], want, bench.failures)
        if last["code_reward"] != last["ray"]:
            diff = sum(a != b for a, b in zip(last["code_reward"], last["ray"]))
            bench.failures.append(f"GRPO: CodeReward and the Ray path disagree on {diff} reward(s)")
        for name, ts in times.items():
            if ts:
                bench.latency[name] = PathLatency(name, ts, statistics.median(ts), _percentile(ts, 0.9), good[name])
    finally:
        if reward is not None:
            reward.close()  # does not close a pool it was given
        if pool is not None:
            pool.close()
        if grader is not None:
            grader.close()  # shuts down the embedded Ray it started
        if ray.is_initialized():
            ray.shutdown()

    # ------------------------------------------------------------ 3: simulated nodes
    if nodes:
        bench.scaling_repeat = scaling_repeat
        _run_scaling(bench, pairs(scaling_repeat), sorted(set(nodes)), config, limits)

    bench.load_avg_end = os.getloadavg()
    bench.wall_s = time.perf_counter() - started
    return bench


def _run_scaling(bench: RayBench, workload: list[tuple[Any, str]], counts: list[int], config: HarnessConfig,
                 limits: Any) -> None:  # fmt: skip
    """RayGrader on a ``ray.cluster_utils.Cluster`` grown to each node count in turn."""
    import ray
    from ray.cluster_utils import Cluster

    from harness import RayGrader

    def worker_nodes() -> int:
        return sum(1 for node in ray.nodes() if node.get("Alive") and node.get("Resources", {}).get("CPU", 0) >= 1)

    def wait_for_nodes(count: int, timeout_s: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while worker_nodes() < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return worker_nodes() >= count

    n = len(workload)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "object_store_memory": CLUSTER_OBJECT_STORE_BYTES},
    )
    try:
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        added = 0
        for count in counts:
            while added < count:
                cluster.add_node(num_cpus=1, object_store_memory=CLUSTER_OBJECT_STORE_BYTES)
                added += 1
            cluster.wait_for_nodes()
            if not wait_for_nodes(count):
                bench.failures.append(f"scaling: only {worker_nodes()} of {count} worker nodes alive")
                continue
            logger.info("scaling: %d worker node(s), %d programs", count, n)
            start = time.perf_counter()
            with RayGrader(cluster.address, pool_config=dataclasses.replace(config.pool, size=1),
                           limits=limits) as grader:
                grader.grade_batch(workload[: 2 * max(1, grader.capacity)])  # warm every sandbox
                start_s = time.perf_counter() - start
                sandboxes = grader.capacity
                verdicts, wall = _time(functools.partial(grader.grade_batch, workload))
            ok = sum(v.passed is True for v in verdicts)
            bench.scaling.append(ScalingPoint(count, sandboxes, n, ok, start_s, wall, n / wall))
            if ok != n:
                bench.failures.append(f"scaling {count} node(s): only {ok} of {n} canonical programs passed")
            if sandboxes != count:
                bench.failures.append(f"scaling {count} node(s): {sandboxes} sandboxes live, wanted {count}")
    finally:
        ray.shutdown()
        cluster.shutdown()
