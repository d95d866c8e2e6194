"""Result types and report formatting of ``python -m harness bench --suite ray``.

See :mod:`bench.ray_suite`, which re-exports them.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class PathThroughput:
    """Throughput of one path over the rounds.

    Attributes:
        name: ``local`` (rewards.Grader on a vmpool Pool) or ``ray`` (RayGrader).
        n_programs: programs per round.
        n_ok: programs that passed, in the worst round.
        walls_s: wall seconds of each round.
        programs_per_s: ``n_programs / median(walls_s)``.
        best_programs_per_s: ``n_programs / min(walls_s)`` (the round least disturbed by other load).
    """

    name: str
    n_programs: int
    n_ok: int
    walls_s: list[float]
    programs_per_s: float
    best_programs_per_s: float


@dataclass
class PathLatency:
    """Call-to-return latency of one reward path for the GRPO batch.

    Attributes:
        name: ``code_reward`` (harness.CodeReward, local pool) or ``ray`` (RayGrader +
            compute_reward).
        times_s: seconds of each timed repetition.
        median_s / p90_s: over ``times_s`` (p90 linearly interpolated).
        rewards_ok: every repetition returned the expected reward for every completion.
    """

    name: str
    times_s: list[float]
    median_s: float
    p90_s: float
    rewards_ok: bool


@dataclass
class ScalingPoint:
    """RayGrader on ``nodes`` simulated worker nodes.

    Attributes:
        nodes: worker nodes (1 CPU each) in the cluster.
        sandboxes: sandboxes over all live actors.
        n_programs / n_ok: programs graded / passed.
        start_s: RayGrader start (actors + pools) and warm-up, not in the throughput.
        wall_s / programs_per_s: the timed batch.
    """

    nodes: int
    sandboxes: int
    n_programs: int
    n_ok: int
    start_s: float
    wall_s: float
    programs_per_s: float


@dataclass
class RayBench:
    """Numbers from one ``--suite ray`` run (see the module docstring)."""

    cores: int
    ray_version: str
    backend: str
    sandboxes: int
    repeat: int
    rounds: int
    load_avg_start: tuple[float, float, float]
    load_avg_end: tuple[float, float, float] = (0.0, 0.0, 0.0)
    ray_start_s: float = 0.0
    pool_start_s: float = 0.0
    actors: int = 0
    throughput: dict[str, PathThroughput] = field(default_factory=dict)
    grpo_prompts: int = 0
    grpo_group: int = 0
    grpo_unique: int = 0
    grpo_expected_pass: int = 0
    latency: dict[str, PathLatency] = field(default_factory=dict)
    scaling_repeat: int = 0
    scaling: list[ScalingPoint] = field(default_factory=list)
    wall_s: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def _overhead(self, attr: str) -> float | None:
        local, ray = self.throughput.get("local"), self.throughput.get("ray")
        if not local or not ray or getattr(local, attr) <= 0:
            return None
        return (getattr(local, attr) - getattr(ray, attr)) / getattr(local, attr) * 100.0

    @property
    def ray_overhead_pct(self) -> float | None:
        """How much slower the Ray path is than the local one (median rounds), in percent of the local rate."""
        return self._overhead("programs_per_s")

    @property
    def ray_overhead_best_pct(self) -> float | None:
        """The same from each path's best round."""
        return self._overhead("best_programs_per_s")

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "ray_overhead_pct": self.ray_overhead_pct,
            "ray_overhead_best_pct": self.ray_overhead_best_pct,
            "ok": self.ok,
        }


def format_ray_bench(b: RayBench) -> str:
    """Render the Ray bench as tables.

    Args:
        b: the bench result.

    Returns:
        Multi-line text.
    """
    la0, la1 = (" ".join(f"{x:.2f}" for x in la) for la in (b.load_avg_start, b.load_avg_end))
    lines = [
        f"Ray benchmark: ray {b.ray_version}, backend {b.backend}, {b.cores} CPU core(s) on this machine; "
        f"load average {la0} at start, {la1} at end; {b.wall_s:.0f} s in all",
        "",
        f"1. Throughput: HumanEval canonical x{b.repeat}, {b.sandboxes} sandboxes per path, "
        f"median of {b.rounds} alternating round(s)",
        f"   ray   = RayGrader on an embedded local Ray, {b.actors} actor(s) (start + warm-up {b.ray_start_s:.2f} s, "
        "not timed)",
        f"   local = rewards.Grader on a vmpool Pool (start + warm-up {b.pool_start_s:.2f} s, not timed)",
        f"   {'path':<8} {'programs':>9} {'ok':>6} {'wall s':>8} {'programs/s':>11} {'best':>7}   rounds (s)",
    ]
    for name in ("local", "ray"):
        t = b.throughput.get(name)
        if t:
            rounds = ", ".join(f"{w:.2f}" for w in t.walls_s)
            lines.append(f"   {t.name:<8} {t.n_programs:>9} {t.n_ok:>6} {statistics.median(t.walls_s):>8.2f} "
                         f"{t.programs_per_s:>11.1f} {t.best_programs_per_s:>7.1f}   {rounds}")  # fmt: skip
    overhead = b.ray_overhead_pct
    if overhead is not None:
        verdict = "within" if overhead < 10.0 else "OVER"
        lines.append(
            f"   Ray overhead: {overhead:+.1f}% of the local rate, medians ({verdict} the 10% target); "
            f"best rounds {b.ray_overhead_best_pct:+.1f}%"
        )
    if b.latency:
        per = b.grpo_prompts * b.grpo_group
        reps = len(next(iter(b.latency.values())).times_s)
        lines += [
            "",
            f"2. GRPO reward latency: {b.grpo_prompts} prompts x {b.grpo_group} completions = {per} "
            f"({b.grpo_unique} distinct programs, {b.grpo_expected_pass} must pass), call to return,",
            f"   {reps} alternating repetition(s) after one warm-up call per path",
            f"   {'path':<34} {'median ms':>10} {'p90 ms':>8} {'min ms':>8} {'max ms':>8}  rewards",
        ]
        labels = {"code_reward": "harness.CodeReward (local pool)", "ray": "RayGrader.grade_batch + reward"}
        for name, lat in b.latency.items():
            lines.append(f"   {labels.get(name, name):<34} {lat.median_s * 1e3:>10.1f} {lat.p90_s * 1e3:>8.1f} "
                         f"{min(lat.times_s) * 1e3:>8.1f} {max(lat.times_s) * 1e3:>8.1f}  "
                         f"{'as expected' if lat.rewards_ok else 'WRONG'}")  # fmt: skip
    if b.scaling:
        base = b.scaling[0].programs_per_s / b.scaling[0].nodes if b.scaling[0].nodes else 0.0
        lines += [
            "",
            f"3. Scaling: ray.cluster_utils.Cluster, head num_cpus=0, worker nodes num_cpus=1 (one 1-sandbox actor "
            f"each), HumanEval canonical x{b.scaling_repeat}",
            f"   {'nodes':>5} {'sandboxes':>9} {'programs':>9} {'ok':>6} {'start s':>8} {'wall s':>8} "
            f"{'programs/s':>11} {'vs 1 node':>10}",
        ]
        for p in b.scaling:
            rel = p.programs_per_s / base if base else 0.0
            lines.append(f"   {p.nodes:>5} {p.sandboxes:>9} {p.n_programs:>9} {p.n_ok:>6} {p.start_s:>8.2f} "
                         f"{p.wall_s:>8.2f} {p.programs_per_s:>11.1f} {rel:>9.2f}x")  # fmt: skip
        lines.append(
            f"   This machine has {b.cores} CPU core(s). Simulated nodes are processes on it: a node's 1 CPU is a "
            "logical Ray resource, not a core."
        )
        lines.append(
            f"   Past {b.cores} node(s) the extra nodes share the same {b.cores} core(s): no gain in compute is "
            "possible there; what gain shows comes from overlapping one sandbox's waits (fork, IPC, result "
            "hand-off) with another's work, and throughput is capped by the cores (flat or falling once they "
            "are saturated). These numbers show placement spreading work over nodes, not real-cluster scaling."
        )
    if b.failures:
        lines += ["", "FAILURES:", *(f"  {f}" for f in b.failures)]
    else:
        lines += ["", "All verdicts as expected: canonical programs pass, wrong completions fail, both reward paths "
                      "agree."]  # fmt: skip
    return "\n".join(lines)


def write_json(bench: RayBench, path: str | Path) -> None:
    Path(path).write_text(json.dumps(bench.to_dict(), indent=2), encoding="utf-8")
