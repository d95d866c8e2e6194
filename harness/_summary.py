"""pass@k and the summary of a grading run.

pass@k uses the unbiased estimator of Chen et al. (2021), "Evaluating Large Language
Models Trained on Code": for a task with ``n`` graded samples of which ``c`` passed,
``pass@k = 1 - C(n - c, k) / C(n, k)``, averaged over tasks. Samples whose verdict is an
infrastructure failure (``passed is None``) are left out of ``n`` and counted separately:
a sandbox that could not run a program says nothing about the model.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ._config import AUTO_KS_ABOVE_10
from ._io import InputIssue, ResultRow

__all__ = ["GradeSummary", "format_summary", "pass_at_k", "summarize"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimate for one task.

    Computed as ``1 - prod_{i=n-c+1..n} (1 - k / i)``, which equals
    ``1 - C(n-c, k) / C(n, k)`` without forming huge binomials.

    Args:
        n: samples graded for the task.
        c: samples that passed (``0 <= c <= n``).
        k: the k of pass@k (``1 <= k <= n``).

    Returns:
        The probability that at least one of k samples drawn without replacement passes.

    Raises:
        ValueError: when the arguments are out of range.
    """
    if not (0 <= c <= n) or not (1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0  # every draw of k samples contains a passing one
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


@dataclass
class GradeSummary:
    """What a grading run produced.

    Attributes:
        out: the results file.
        n_rows: result rows in the output (resumed plus new).
        n_tasks: distinct tasks among them.
        n_graded: samples graded by this run.
        n_resumed: rows found in the output and kept (not re-graded).
        n_regraded: stored rows graded again because their completion, problem or settings changed.
        n_infra_failures: rows with ``passed is None`` (left out of pass@k).
        pass_at_k: ``{k: estimate}`` for each requested k that every task's sample count allows.
        status_counts: rows per verdict outcome.
        mean_reward: mean reward over rows that have one (None when none do).
        wall_s: seconds this run took, sandbox start-up included.
        startup_s: of which starting the sandbox pool (or the Ray actors).
        programs_per_s: ``n_graded / (wall_s - startup_s)``: the grading rate (0 when nothing was graded).
        programs_per_s_overall: ``n_graded / wall_s``, start-up included.
        input_issues: skipped input records (malformed lines, unknown task ids), ``file:line``.
        skipped_ks: requested ks that were too large for the sample counts.
        isolation_lost: what the sandboxes lacked compared with the full design ("" = nothing;
            e.g. run as an ordinary user without subordinate uids).
        rows: the result rows themselves (not in :meth:`to_dict`).
    """

    out: str = ""
    n_rows: int = 0
    n_tasks: int = 0
    n_graded: int = 0
    n_resumed: int = 0
    n_regraded: int = 0
    n_infra_failures: int = 0
    pass_at_k: dict[int, float] = field(default_factory=dict)
    status_counts: dict[str, int] = field(default_factory=dict)
    mean_reward: float | None = None
    wall_s: float = 0.0
    startup_s: float = 0.0
    programs_per_s: float = 0.0
    programs_per_s_overall: float = 0.0
    input_issues: list[InputIssue] = field(default_factory=list)
    skipped_ks: list[int] = field(default_factory=list)
    isolation_lost: str = ""
    rows: list[ResultRow] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready view (input issues as ``file:line: why`` strings)."""
        return {
            "out": self.out,
            "n_rows": self.n_rows,
            "n_tasks": self.n_tasks,
            "n_graded": self.n_graded,
            "n_resumed": self.n_resumed,
            "n_regraded": self.n_regraded,
            "n_infra_failures": self.n_infra_failures,
            "pass_at_k": {f"pass@{k}": v for k, v in self.pass_at_k.items()},
            "status_counts": dict(self.status_counts),
            "mean_reward": self.mean_reward,
            "wall_s": self.wall_s,
            "startup_s": self.startup_s,
            "programs_per_s": self.programs_per_s,
            "programs_per_s_overall": self.programs_per_s_overall,
            "input_issues": [str(i) for i in self.input_issues],
            "skipped_ks": list(self.skipped_ks),
            "isolation_lost": self.isolation_lost,
        }


def summarize(
    rows: Iterable[ResultRow],
    ks: Sequence[int] | None = None,
    *,
    n_graded: int = 0,
    n_resumed: int = 0,
    n_regraded: int = 0,
    wall_s: float = 0.0,
    startup_s: float = 0.0,
    input_issues: Sequence[InputIssue] = (),
    out: str = "",
    isolation_lost: str = "",
) -> GradeSummary:
    """Summarise result rows.

    Args:
        rows: every result row of the run's output.
        ks: the pass@k values wanted; each is reported only when ``k <= n`` for every task
            that has at least one non-infrastructure verdict. ``None``: every k from 1 to
            that smallest ``n`` (up to 10; beyond it 20, 50, 100, 200, 500 and 1000).
        n_graded: samples graded in this run (for programs/s).
        n_resumed: rows kept from an earlier run.
        n_regraded: stored rows that were stale and graded again.
        wall_s: time this run took.
        startup_s: of which sandbox start-up (left out of ``programs_per_s``).
        input_issues: skipped input records to report.
        out: the results file name.
        isolation_lost: what the sandboxes lacked (see :class:`GradeSummary`).

    Returns:
        The :class:`GradeSummary`.
    """
    rows = list(rows)
    per_task: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # task -> [n, c]
    tasks: set[str] = set()
    statuses: Counter[str] = Counter()
    infra = 0
    rewards: list[float] = []
    for row in rows:
        tasks.add(row.problem)
        statuses[row.status] += 1
        if row.reward is not None:
            rewards.append(row.reward)
        if row.passed is None:
            infra += 1
            continue
        counts = per_task[row.problem]
        counts[0] += 1
        counts[1] += int(bool(row.passed))
    min_n = min((n for n, _ in per_task.values()), default=0)
    estimates: dict[int, float] = {}
    skipped: list[int] = []
    wanted = ks if ks is not None else [k for k in (*range(1, 11), *AUTO_KS_ABOVE_10) if k <= max(min_n, 1)]
    for k in sorted(wanted):
        if per_task and k <= min_n:
            estimates[k] = sum(pass_at_k(n, c, k) for n, c in per_task.values()) / len(per_task)
        else:
            skipped.append(k)
    return GradeSummary(
        out=out,
        n_rows=len(rows),
        n_tasks=len(tasks),
        n_graded=n_graded,
        n_resumed=n_resumed,
        n_regraded=n_regraded,
        n_infra_failures=infra,
        pass_at_k=estimates,
        status_counts=dict(sorted(statuses.items(), key=lambda kv: (-kv[1], kv[0]))),
        mean_reward=(math.fsum(rewards) / len(rewards)) if rewards else None,
        wall_s=wall_s,
        startup_s=startup_s,
        programs_per_s=(n_graded / (wall_s - startup_s)) if wall_s > startup_s and n_graded else 0.0,
        programs_per_s_overall=(n_graded / wall_s) if wall_s > 0 and n_graded else 0.0,
        input_issues=list(input_issues),
        skipped_ks=skipped,
        isolation_lost=isolation_lost,
        rows=rows,
    )


def _table(rows: Sequence[tuple[str, str]]) -> list[str]:
    width = max((len(k) for k, _ in rows), default=0)
    return [f"  {k.ljust(width)}  {v}" for k, v in rows]


def format_summary(summary: GradeSummary, max_issues: int = 20) -> str:
    """Render a summary as a plain-text table (what the CLI prints).

    Args:
        summary: the summary.
        max_issues: input issues listed individually before "... and N more".

    Returns:
        Multi-line text, no trailing newline.
    """
    lines = ["Grading summary" + (f" ({summary.out})" if summary.out else "")]
    lines += _table(
        [
            ("tasks", str(summary.n_tasks)),
            ("samples", f"{summary.n_rows} ({summary.n_graded} graded now"
                        + (f", {summary.n_regraded} of them stale rows graded again" if summary.n_regraded else "")
                        + f", {summary.n_resumed} resumed)"),
            ("infrastructure failures", f"{summary.n_infra_failures} (excluded from pass@k)"),
            ("wall time", f"{summary.wall_s:.2f} s ({summary.startup_s:.2f} s of it starting sandboxes)"),
            ("programs/s", f"{summary.programs_per_s:.1f} grading ({summary.programs_per_s_overall:.1f} "
                           "with start-up)"),
            ("mean reward", "n/a" if summary.mean_reward is None else f"{summary.mean_reward:.4f}"),
        ]
    )
    lines.append("pass@k")
    if summary.pass_at_k:
        lines += _table([(f"pass@{k}", f"{v * 100:6.2f} %") for k, v in summary.pass_at_k.items()])
    else:
        lines.append("  (no task has a graded sample)")
    if summary.skipped_ks:
        lines.append(f"  not reported (too few samples per task): {', '.join(f'pass@{k}' for k in summary.skipped_ks)}")
    lines.append("status")
    lines += _table([(status, str(count)) for status, count in summary.status_counts.items()] or [("(none)", "")])
    if summary.isolation_lost:
        lines.append(f"isolation: weaker than designed: {summary.isolation_lost}")
    if summary.input_issues:
        lines.append(f"input issues: {len(summary.input_issues)} record(s) skipped")
        lines += [f"  {issue}" for issue in summary.input_issues[:max_issues]]
        if len(summary.input_issues) > max_issues:
            lines.append(f"  ... and {len(summary.input_issues) - max_issues} more")
    return "\n".join(lines)
