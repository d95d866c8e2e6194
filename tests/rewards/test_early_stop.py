"""Early stop of stdio samples, on a real pool: a looping completion costs about one time limit.

Counts runs (``pool.stats["programs"]``), never wall time: verdicts and these counts do not
depend on how loaded the host is. The verdicts with early stop are compared with the same
grading through ``pool.map`` (every case run), where the stop rule is applied when judging.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rewards import Grader, Outcome, load_problems
from rewards._problems import Problem, StdioCase, StdioTests
from vmpool import Limits

DATA = Path(__file__).resolve().parents[2] / "rewards" / "data"
LOOP = "while True:\n    pass\n"
LIMITS = Limits(wall_s=1.0, cpu_s=0.5, memory_mb=256)


def _doubling(n: int) -> Problem:
    """n cases: print twice the number read."""
    cases = tuple(StdioCase(stdin=f"{i}\n", stdout=f"{2 * i}\n") for i in range(n))
    return Problem(task_id="double", tests=StdioTests(cases=cases), time_limit_s=0.5)


class MapOnly:
    """The same pool seen through ``map`` only: every case runs, the rule applies when judging."""

    def __init__(self, pool: object) -> None:
        self.pool = pool

    def map(self, requests):  # type: ignore[no-untyped-def]
        return self.pool.map(requests)  # type: ignore[attr-defined]


def _runs(pool, grader: Grader, problem: Problem, completion: str):  # type: ignore[no-untyped-def]
    before = pool.stats["programs"]
    verdict = grader.grade(problem, completion)
    return verdict, pool.stats["programs"] - before


def test_a_looping_completion_stops_at_its_first_failed_case(pool) -> None:  # type: ignore[no-untyped-def]
    problem = next(p for p in load_problems(DATA / "code_contests_sample.jsonl") if p.tests.count >= 100)
    grader = Grader(pool, LIMITS, stop_at_first_failure=True)
    verdict, runs = _runs(pool, grader, problem, LOOP)
    assert verdict.passed is False and verdict.outcome is Outcome.TIMEOUT and verdict.tests_passed == 0
    assert "stopped at the first failed case" in verdict.error
    # The cases already running when case 0 timed out finish; the queued ones never start.
    assert runs <= 2 * len(pool.sandboxes()) + 2, runs
    assert runs < problem.tests.count // 4


def test_the_failing_time_budget_bounds_a_looping_completion(pool) -> None:  # type: ignore[no-untyped-def]
    problem = _doubling(40)
    grader = Grader(pool, LIMITS, failing_time_budget=2.0)
    verdict, runs = _runs(pool, grader, problem, LOOP)
    assert verdict.passed is False and verdict.outcome is Outcome.TIMEOUT
    assert "over the budget of 2 time limits" in verdict.error
    assert runs <= 3 + 2 * len(pool.sandboxes()), runs


def test_a_correct_program_runs_every_case_under_both_rules(pool) -> None:  # type: ignore[no-untyped-def]
    problem = _doubling(12)
    for grader in (Grader(pool, LIMITS, stop_at_first_failure=True), Grader(pool, LIMITS, failing_time_budget=1.0)):
        verdict, runs = _runs(pool, grader, problem, "print(2 * int(input()))\n")
        assert verdict.passed is True and verdict.tests_passed == 12 and runs == 12


@pytest.mark.parametrize("rule", [{"stop_at_first_failure": True}, {"failing_time_budget": 2.0}, {}],
                         ids=["first-failure", "budget", "no-rule"])
def test_verdicts_equal_those_of_running_every_case(pool, rule) -> None:  # type: ignore[no-untyped-def]
    # Right on cases 0-4, loops from case 5 on: the counted prefix is fixed by the results alone.
    problem = _doubling(20)
    code = "n = int(input())\nwhile n >= 5:\n    pass\nprint(2 * n)\n"
    early = Grader(pool, LIMITS, **rule).grade(problem, code)
    full = Grader(MapOnly(pool), LIMITS, **rule).grade(problem, code)
    assert (early.passed, early.outcome, early.tests_passed, early.error) == \
        (full.passed, full.outcome, full.tests_passed, full.error)
    assert early.tests_passed == 5 and early.outcome is Outcome.TIMEOUT


def test_a_stopped_sample_does_not_cancel_a_case_another_sample_shares(pool) -> None:  # type: ignore[no-untyped-def]
    # Same program and stdin, different expected output: the run is deduplicated; the first
    # sample stops on it, the second needs it (and every case after it).
    wrong = _doubling(6)
    right = Problem(task_id="echo", tests=StdioTests(cases=tuple(StdioCase(stdin=c.stdin, stdout=c.stdin)
                                                                  for c in wrong.tests.cases)))
    verdicts = Grader(pool, LIMITS, stop_at_first_failure=True).grade_batch(
        [(wrong, "print(input())\n"), (right, "print(input())\n")])
    assert [v.passed for v in verdicts] == [False, True]
    assert verdicts[1].tests_passed == 6


def test_details_name_every_case_and_the_ones_not_run(pool) -> None:  # type: ignore[no-untyped-def]
    problem = _doubling(6)
    code = "n = int(input())\nprint(2 * n if n < 2 else n)\n"
    verdict = Grader(pool, LIMITS, stop_at_first_failure=True, details=True).grade(problem, code)
    statuses = [c.status for c in verdict.cases]
    assert statuses[:3] == ["passed", "passed", "failed"] and set(statuses[3:]) == {"not_run"}
    third = verdict.cases[2]
    assert (third.input.strip(), third.expected.strip(), third.actual.strip()) == ("2", "4", "2") and not third.passed
    assert Grader(pool, LIMITS).grade(problem, code).cases == ()  # only when asked
