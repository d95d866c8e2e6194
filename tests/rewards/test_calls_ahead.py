"""Calls sent ahead: which tests get a call plan, and that a plan changes no verdict (real sandboxes)."""

from __future__ import annotations

import pytest

from rewards import AssertTests, CallCase, CallTests, Grader, Outcome, Problem
from rewards._runner import call_plan

ONE = ("f",)


# --------------------------------------------------------------------------- the planner
@pytest.mark.parametrize("unit, calls", [
    ("assert f(1) == 2", [["f", ["t", 1], ["d"]]]),
    ("assert f([1, 2], k='x') == (3,)", [["f", ["t", ["l", 1, 2]], ["d", "k", "x"]]]),
    ("assert abs(f(-1.5) - 2) < 1e-6\nassert f(2) == 3", [["f", ["t", -1.5], ["d"]], ["f", ["t", 2], ["d"]]]),
    ("import math\nX = 3\nassert f(-3) == 1, 'message'", [["f", ["t", -3], ["d"]]]),
])
def test_straight_line_literal_calls_are_planned_in_order(unit: str, calls: list) -> None:
    assert call_plan(unit, ONE) == tuple(calls)


def test_humaneval_checker_is_planned_under_the_entry_points_name() -> None:
    unit = "M = {'a': 1}\n\ndef check(candidate):\n    assert candidate(1) == 2\n    assert candidate('x')\n\ncheck(f)\n"
    assert call_plan(unit, ONE) == (["f", ["t", 1], ["d"]], ["f", ["t", "x"], ["d"]])


@pytest.mark.parametrize("unit", [
    "for i in range(3):\n    assert f(i) == i",  # a loop
    "if True:\n    assert f(1)",  # a branch
    "assert f(1) or f(2)",  # short-circuit: the second may not run
    "assert f(1) == f(2)",  # two calls in one statement
    "assert [f(i) for i in (1, 2)]",  # a comprehension
    "x = 1\nassert f(x) == 1",  # a non-literal argument (the test may change x in place)
    "assert f(*[1])",  # a starred argument
    "g = f\nassert g(1)",  # the function passed on
    "assert f(1), f(2)",  # a call in the message runs only when the assert fails
    "def h():\n    return f(1)\nassert h()",  # a call hidden in a helper
    "try:\n    f(1)\nexcept ValueError:\n    pass",  # control flow
    "def check(c):\n    assert c(1)\ncheck(g)",  # a checker called with a non-proxy
    "def check(c, d=1):\n    assert c(1)\ncheck(f)",  # a checker with another signature
    "def check(c):\n    for i in range(2):\n        assert c(i)\ncheck(f)",  # a loop in the checker
    "def check(c):\n    assert c(1)\nf(0)\ncheck(f)",  # a module-level call besides the checker
    "assert f(",  # not Python
])
def test_anything_else_is_left_live(unit: str) -> None:
    assert call_plan(unit, ONE) is None


# --------------------------------------------------------------------------- semantics
COUNTER = "n = 0\ndef f(x):\n    global n\n    n += 1\n    return n\n"


def _problem(*units: str) -> Problem:
    return Problem(task_id="ahead", tests=AssertTests(code=tuple(units)))


def test_a_stateful_program_sees_the_calls_in_the_tests_order(grader: Grader) -> None:
    verdict = grader.grade(_problem("assert f(0) == 1", "assert f(0) == 2", "assert f(0) == 3"), COUNTER)
    assert verdict.passed is True, verdict
    checker = "def check(candidate):\n    assert candidate(0) == 1\n    assert candidate(0) == 2\n\ncheck(f)\n"
    problem = Problem(task_id="ahead-check", tests=AssertTests(code=(checker,)), entry_point="f")
    assert grader.grade(problem, COUNTER).passed is True


def test_a_failed_unit_does_not_shift_the_replies_of_the_next(grader: Grader) -> None:
    verdict = grader.grade(_problem("assert f(0) == 5", "assert f(0) == 2", "assert f(0) == 7"), COUNTER)
    assert verdict.passed is False and verdict.tests_passed == 1, verdict


def test_a_multi_call_unit_before_others_stays_live(grader: Grader) -> None:
    # The first unit fails at its first assert; live, the program never sees its second
    # call, so the next unit's call is the program's second.
    units = ("assert f(0) == 9\nassert f(0) == 2", "assert f(0) == 2")
    verdict = grader.grade(_problem(*units), COUNTER)
    assert verdict.tests_passed == 1 and verdict.outcome is Outcome.FAILED, verdict


def test_a_call_that_never_returns_keeps_the_replies_before_it(grader: Grader) -> None:
    program = "def f(x):\n    while x == 2:\n        pass\n    return x\n"
    verdict = grader.grade(_problem("assert f(1) == 1", "assert f(3) == 3", "assert f(2) == 2"), program)
    assert verdict.passed is False and verdict.tests_passed == 2, verdict


def test_a_program_that_cannot_answer_fails_every_call_it_got(grader: Grader) -> None:
    program = "import os\ndef f(x):\n    os._exit(0)\n"
    verdict = grader.grade(_problem("assert f(1) == 1", "assert f(2) == 2"), program)
    assert verdict.passed is False and verdict.tests_passed == 0 and verdict.outcome is not Outcome.SANDBOX_ERROR


def test_call_cases_go_ahead_and_each_is_judged(grader: Grader) -> None:
    tests = CallTests(fn_name="f", cases=tuple(CallCase(args=(i,), kwargs={}, expected=i + 1) for i in range(20)))
    problem = Problem(task_id="ahead-call", tests=tests)
    assert grader.grade(problem, COUNTER).passed is True  # the calls reach it in case order
    verdict = grader.grade(problem, "def f(x):\n    return x + 1 if x % 2 else 0\n")
    assert verdict.tests_passed == 10, verdict


def test_the_tester_gets_the_plan_and_a_multi_call_unit_only_last() -> None:
    import json

    from rewards._runner import build_request
    from vmpool import Limits

    def plan_of(*units: str) -> list:
        return json.loads(build_request(_problem(*units), COUNTER, Limits()).companion.stdin)["plan"]

    assert plan_of("assert f(0) == 1", "assert f(1) == 2") == [[["f", ["t", 0], ["d"]]], [["f", ["t", 1], ["d"]]]]
    first, last = plan_of("assert f(0) == 9\nassert f(0) == 2", "assert f(0) == 2\nassert f(1) == 3")
    assert first is None and last is not None and len(last) == 2
