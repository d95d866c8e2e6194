"""Verdicts must not depend on host load: every reference still passes on an oversubscribed machine.

Four busy loops per core run throughout, each in its own session (Linux autogroups would
otherwise hide them from the sandboxes' scheduling), while the bundled HumanEval and MBPP
references are graded with the default limits. The time limit is judged on CPU time, so a
program that waits for a core is not a timeout; the wall clock is only a backstop.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rewards import Grader, load_problems, reference_solutions

BUSY = "while True:\n    pass\n"


@pytest.fixture
def oversubscribed() -> Iterator[int]:
    n = 4 * (os.cpu_count() or 2)
    loops = [subprocess.Popen([sys.executable, "-c", BUSY], start_new_session=True) for _ in range(n)]
    try:
        yield n
    finally:
        for proc in loops:
            proc.kill()
        for proc in loops:
            proc.wait()


@pytest.mark.slow
def test_every_reference_passes_on_an_oversubscribed_machine(grader: Grader, data_dir: Path,
                                                             oversubscribed: int) -> None:
    items = []
    for name in ("humaneval.jsonl", "mbpp_sanitized.jsonl"):
        problems = load_problems(data_dir / name)
        refs = reference_solutions(data_dir / name)
        items += [(p, refs[p.task_id]) for p in problems]
    verdicts = grader.grade_batch(items)
    failed = [(p.task_id, v.outcome.value, v.error[:200]) for (p, _), v in zip(items, verdicts) if v.passed is not True]
    assert len(items) == 164 + 427
    assert failed == [], f"{len(failed)} references failed with {oversubscribed} busy loops running: {failed[:5]}"
