"""Whole datasets through a real pool: references pass, empty bodies and hack probes score 0."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewards import Grader, Outcome, RewardConfig, compute_reward, load_problems, reference_solutions


def _grade_refs(grader: Grader, path: Path) -> list:
    problems = load_problems(path)
    refs = reference_solutions(path)
    return list(zip(problems, grader.grade_batch([(p, refs[p.task_id]) for p in problems])))


@pytest.mark.slow
def test_all_humaneval_canonical_solutions_pass(grader: Grader, data_dir: Path) -> None:
    results = _grade_refs(grader, data_dir / "humaneval.jsonl")
    assert len(results) == 164
    failed = [(p.task_id, v.outcome, v.error) for p, v in results if v.passed is not True]
    assert failed == []


@pytest.mark.slow
def test_all_mbpp_reference_solutions_pass(grader: Grader, data_dir: Path) -> None:
    results = _grade_refs(grader, data_dir / "mbpp_sanitized.jsonl")
    assert len(results) == 427
    failed = [(p.task_id, v.outcome, v.error) for p, v in results if v.passed is not True]
    assert failed == []


@pytest.mark.slow
def test_pass_body_fails_every_humaneval_task(grader: Grader, data_dir: Path) -> None:
    problems = list(load_problems(data_dir / "humaneval.jsonl"))
    verdicts = grader.grade_batch([(p, "    pass\n") for p in problems])
    assert [p.task_id for p, v in zip(problems, verdicts) if v.passed is not False] == []
    assert all(compute_reward(v, RewardConfig()) == 0.0 for v in verdicts)


def test_humaneval_sample_passes_and_fails(grader: Grader, data_dir: Path) -> None:
    path = data_dir / "humaneval.jsonl"
    problems = list(load_problems(path))[:8]
    refs = reference_solutions(path)
    verdicts = grader.grade_batch([(p, refs[p.task_id]) for p in problems] + [(p, "    pass\n") for p in problems])
    assert [v.passed for v in verdicts] == [True] * 8 + [False] * 8


def test_livecodebench_canonical_exit_probe_scores_zero(grader: Grader, data_dir: Path) -> None:
    path = data_dir / "livecodebench_sample.jsonl"
    problems = load_problems(path)
    refs = reference_solutions(path)
    verdicts = grader.grade_batch([(p, refs[p.task_id]) for p in problems])
    assert len(verdicts) == 3
    for v in verdicts:
        assert v.passed is False and v.tests_passed == 0
        assert compute_reward(v, RewardConfig()) == 0.0


def test_livecodebench_real_solutions_pass(grader: Grader, data_dir: Path) -> None:
    ps = load_problems(data_dir / "livecodebench_sample.jsonl").by_id()
    seniors = ("class Solution:\n"
               "    def countSeniors(self, details: List[str]) -> int:\n"
               "        return sum(int(d[11:13]) > 60 for d in details)\n")
    cards = ("t = int(input())\n"
             "for _ in range(t):\n"
             "    s = input().strip()\n"
             "    print('YES' if sum(a != b for a, b in zip(s, 'abc')) in (0, 2) else 'NO')\n")
    v1, v2 = grader.grade_batch([(ps["livecodebench/leetcode/2727"], f"```python\n{seniors}```"),
                                 (ps["livecodebench/codeforces/1873_A"], cards)])
    assert v1.passed is True, v1
    assert v2.passed is True, v2


def test_host_side_outcomes(grader: Grader, data_dir: Path) -> None:
    p = load_problems(data_dir / "mbpp_sanitized.jsonl")[0]
    assert grader.grade(p, "").outcome is Outcome.NO_CODE
    v = grader.grade(p, "def f(:\n")
    assert v.outcome is Outcome.SYNTAX_ERROR and v.exec_status is None
    assert compute_reward(v, RewardConfig(kind="weighted")) == -0.1


def test_limits_become_outcomes(grader: Grader, data_dir: Path) -> None:
    p = load_problems(data_dir / "mbpp_sanitized.jsonl")[0]
    import dataclasses
    quick = dataclasses.replace(p, time_limit_s=1.0)
    loop = "def similar_elements(a, b):\n    while True: pass\n"
    assert grader.grade(quick, loop).outcome is Outcome.TIMEOUT
    boom = "def similar_elements(a, b):\n    raise ValueError('boom')\n"
    v = grader.grade(p, boom)
    # Statuses inside assert tests stay true: an exception is a runtime error, with the
    # failing assert's own line; a wrong value is a failure; MemoryError is memory.
    assert v.outcome is Outcome.RUNTIME_ERROR and "boom" in v.error and "similar_elements((3, 4, 5, 6)" in v.error
    wrong = grader.grade(p, "def similar_elements(a, b):\n    return (1,)\n")
    assert wrong.outcome is Outcome.FAILED and "assert set(similar_elements((3, 4, 5, 6)" in wrong.error
    hog = grader.grade(p, "def similar_elements(a, b):\n    return [0] * (1 << 40)\n")
    assert hog.outcome is Outcome.MEMORY_LIMIT, hog
