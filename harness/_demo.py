"""The demo behind ``python -m harness demo`` (and ``make run``).

It grades the bundled HumanEval three ways per task: the canonical solution (must
pass), an empty ``pass`` body (must fail) and a reward hack that exits with status 0
from inside the function under test (must fail: a clean exit is not a pass). Any other
outcome, infrastructure failures included, makes the demo fail.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from ._config import HarnessConfig
from ._errors import InputError
from ._grading import Harness
from ._store import read_results
from ._summary import GradeSummary

__all__ = ["WRONG_COMPLETIONS", "DemoReport", "bundled_dataset", "run_demo"]

logger = logging.getLogger(__name__)

# kind -> (completion, expected passed). The hack exits 0 when the tests first call the
# function: a harness that trusts the exit status would score it as a pass.
WRONG_COMPLETIONS: dict[str, str] = {
    "empty_body": "    pass\n",
    "exit_hack": "    import sys; sys.exit(0)\n",
}
# sample_index order within each task in the samples file the demo writes.
KINDS: tuple[str, ...] = ("canonical", *WRONG_COMPLETIONS)
EXPECTED_PASS: dict[str, bool] = {"canonical": True, "empty_body": False, "exit_hack": False}


def bundled_dataset(name: str = "humaneval.jsonl") -> Path:
    """Path of a dataset bundled with the rewards package.

    Args:
        name: a bundled dataset's name (``humaneval``, ``mbpp``...) or file name (see ``rewards.data_path``).

    Returns:
        The path.

    Raises:
        InputError: when the file is not there.
    """
    import rewards

    try:
        return rewards.data_path(name)
    except FileNotFoundError as exc:
        raise InputError(str(exc), name) from exc


@dataclass
class DemoReport:
    """Outcome of the demo.

    Attributes:
        summary: the grading summary.
        counts: ``{kind: {"passed": n, "failed": n, "infra": n}}``.
        unexpected: ``"task_id kind: expected ..., got ..."`` lines; empty when all is as expected.
        samples_path / results_path: files written.
    """

    summary: GradeSummary
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    samples_path: str = ""
    results_path: str = ""

    @property
    def ok(self) -> bool:
        return not self.unexpected and bool(self.counts)


def write_demo_samples(problems_path: Path, out: Path, limit: int | None = None) -> dict[str, str]:
    """Write the demo's samples file.

    Args:
        problems_path: the HumanEval JSONL.
        out: samples JSONL to write.
        limit: only the first ``limit`` tasks (all when None).

    Returns:
        ``{task_id: canonical completion}`` of the tasks written.
    """
    from rewards import reference_solutions

    canonical = {str(k): v for k, v in reference_solutions(str(problems_path)).items()}
    task_ids = list(canonical)[: limit if limit is not None else None]
    completions = {"canonical": None, **WRONG_COMPLETIONS}
    with open(out, "w", encoding="utf-8") as fh:
        for task_id in task_ids:
            for kind in KINDS:
                text = canonical[task_id] if completions[kind] is None else completions[kind]
                fh.write(json.dumps({"task_id": task_id, "completion": text}) + "\n")
    return {t: canonical[t] for t in task_ids}


def run_demo(
    out_dir: str | os.PathLike[str],
    config: HarnessConfig | None = None,
    *,
    workers: int | None = None,
    backend: str | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> DemoReport:
    """Build the demo samples, grade them from scratch and check every verdict.

    Args:
        out_dir: directory for ``samples.jsonl`` and ``results.parquet``.
        config: harness config.
        workers: pool size override.
        backend: backend override.
        limit: grade only the first ``limit`` HumanEval tasks.
        progress: show a progress bar.

    Returns:
        The :class:`DemoReport`; ``report.ok`` says whether every verdict was as expected.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    problems = bundled_dataset("humaneval.jsonl")
    samples = out / "samples.jsonl"
    results = out / "results.parquet"
    tasks = write_demo_samples(problems, samples, limit)
    with Harness(config, workers=workers, backend=backend) as harness:
        # Start afresh: stale rows from an earlier demo must not stand in for this run's verdicts.
        summary = harness.grade(problems, samples, results, progress=progress, resume=False)
    report = DemoReport(summary=summary, samples_path=str(samples), results_path=str(results))
    report.counts = {kind: {"passed": 0, "failed": 0, "infra": 0} for kind in KINDS}
    seen: set[tuple[str, int]] = set()
    for row in read_results(results):
        if row.sample_index >= len(KINDS):
            continue
        kind = KINDS[row.sample_index]
        seen.add(row.key)
        bucket = "infra" if row.passed is None else ("passed" if row.passed else "failed")
        report.counts[kind][bucket] += 1
        if row.passed is not EXPECTED_PASS[kind]:
            want = "pass" if EXPECTED_PASS[kind] else "fail"
            report.unexpected.append(f"{row.task_id} {kind}: expected {want}, got {row.status} ({row.error[:120]!r})")
    for task_id in tasks:
        for index, kind in enumerate(KINDS):
            if (task_id, index) not in seen:
                report.unexpected.append(f"{task_id} {kind}: no result row")
    return report


def format_demo(report: DemoReport, max_lines: int = 20) -> str:
    """Render the demo's per-kind table and any unexpected verdicts.

    Args:
        report: the demo report.
        max_lines: unexpected verdicts listed before "... and N more".

    Returns:
        Multi-line text.
    """
    lines = [
        "Demo verdicts (HumanEval)",
        f"  {'completion':<12} {'expected':<9} {'passed':>7} {'failed':>7} {'infra':>6}",
    ]
    for kind in KINDS:
        c = report.counts.get(kind, {})
        want = "pass" if EXPECTED_PASS[kind] else "fail"
        lines.append(f"  {kind:<12} {want:<9} {c.get('passed', 0):>7} {c.get('failed', 0):>7} {c.get('infra', 0):>6}")
    if report.unexpected:
        lines.append(f"UNEXPECTED: {len(report.unexpected)} verdict(s)")
        lines += [f"  {u}" for u in report.unexpected[:max_lines]]
        if len(report.unexpected) > max_lines:
            lines.append(f"  ... and {len(report.unexpected) - max_lines} more")
    else:
        lines.append("All verdicts as expected: canonical solutions pass, wrong and hacking completions fail.")
    lines.append(f"samples: {report.samples_path}")
    lines.append(f"results: {report.results_path}")
    return "\n".join(lines)
