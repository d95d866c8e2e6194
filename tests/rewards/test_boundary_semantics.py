"""What crosses the tester/program boundary, seen from test code: real sandboxes, real Grader."""

from __future__ import annotations

import dataclasses

import pytest

from rewards import AssertTests, CallCase, CallTests, Grader, Outcome, Problem


def _problem(*units: str, setup: str = "", entry: str | None = None) -> Problem:
    return Problem(task_id="b", tests=AssertTests(code=tuple(units)), setup_code=setup, entry_point=entry)


@pytest.mark.parametrize("units, program", [
    # in-place changes of list, dict and set arguments are copied back
    (("a = [3, 1, 2]\nf(a)\nassert a == [1, 2, 3]",), "def f(x):\n    x.sort()\n"),
    (("d = {}\nf(d)\nassert d == {'k': 1}",), "def f(x):\n    x['k'] = 1\n"),
    (("s = {1}\nf(s)\nassert s == {1, 2}",), "def f(x):\n    x.add(2)\n"),
    # a generator reaches the test as an iterator over its items
    (("g = f(3)\nassert next(g) == 0 and list(g) == [1, 2]",), "def f(n):\n    yield from range(n)\n"),
    # builtin exceptions keep their type and message
    (("try:\n    f(-1)\nexcept ValueError as e:\n    assert 'negative' in str(e)\nelse:\n    assert False",),
     "def f(n):\n    if n < 0:\n        raise ValueError('negative')\n"),
    # exact types survive: tuple vs list, int vs float, bytes, big ints, nested containers
    (("assert f() == ((1, 2.5), [b'x'], {frozenset({1}): {None}}, 10**30)",
      "assert type(f()[0]) is tuple and type(f()[0][1]) is float"),
     "def f():\n    return ((1, 2.5), [b'x'], {frozenset({1}): {None}}, 10**30)\n"),
    # a large value crosses intact
    (("assert f(100000) == list(range(100000))",), "def f(n):\n    return list(range(n))\n"),
    # keyword arguments
    (("assert f(1, b=2) == 3",), "def f(a, b=0):\n    return a + b\n"),
])
def test_plain_data_semantics_hold_for_correct_programs(grader: Grader, units: tuple[str, ...], program: str) -> None:
    verdict = grader.grade(_problem(*units), program)
    assert verdict.passed is True, verdict


def test_an_argument_changed_in_place_never_reaches_the_next_sample(grader: Grader) -> None:
    # The tester keeps what it can across the samples of a problem (parsed payloads,
    # compiled tests): the copy-back of an in-place change must not land in any of it.
    calls = Problem(task_id="m", tests=CallTests(fn_name="f", cases=(CallCase(args=([3, 1, 2],), kwargs={},
                                                                               expected=[3, 1, 2]),)))
    asserts = _problem("a = [3, 1, 2]\nassert f(a) == [3, 1, 2]", "assert f([3, 1, 2]) == [3, 1, 2]")
    sorts, echoes = "def f(x):\n    x.sort()\n    return [3, 1, 2]\n", "def f(x):\n    return x\n"
    for problem in (calls, asserts):
        # Distinct texts (identical samples would run once), alternating in every sandbox.
        samples = [(sorts if i % 2 == 0 else echoes) + f"# {i}\n" for i in range(16)]
        verdicts = grader.grade_batch([(problem, sample) for sample in samples])
        assert all(v.passed is True for v in verdicts), verdicts


def test_program_defined_exceptions_are_not_caught_by_except_exception(grader: Grader) -> None:
    units = ("try:\n    f()\nexcept Exception:\n    pass\n",)
    verdict = grader.grade(_problem(*units), "class E(ValueError):\n    pass\ndef f():\n    raise E('x')\n")
    assert verdict.passed is False and verdict.outcome is Outcome.FAILED and "raised" in verdict.error


def test_non_plain_values_fail_the_call_and_say_why(grader: Grader) -> None:
    verdict = grader.grade(_problem("assert f() == 1"), "class A:\n    pass\ndef f():\n    return A()\n")
    assert verdict.passed is False and verdict.outcome is Outcome.FAILED
    assert "returned a __solution__.A object (not plain data)" in verdict.error and "assert f() == 1" in verdict.error


def test_timeouts_say_cpu_or_wall(grader: Grader) -> None:
    quick = dataclasses.replace(_problem("assert f() == 1"), time_limit_s=0.5)
    spin = grader.grade(quick, "def f():\n    while True:\n        pass\n")
    assert spin.outcome is Outcome.TIMEOUT and "CPU" in spin.error
    fast = Grader(grader.pool, default_limits=grader.default_limits, wall_factor=1.0, wall_slack_s=1.0)
    nap = fast.grade(quick, "import time\ndef f():\n    time.sleep(30)\n")
    assert nap.outcome is Outcome.TIMEOUT and "wall-clock" in nap.error and nap.wall_s < 10


def test_the_tester_uses_setup_names_the_program_cannot_replace(grader: Grader) -> None:
    units = ("assert isclose(f(), 0.5)",)
    program = "def isclose(a, b):\n    return True\ndef f():\n    return 0.1\n"
    verdict = grader.grade(_problem(*units, setup="from math import isclose\n"), program)
    assert verdict.passed is False
    assert grader.grade(_problem(*units, setup="from math import isclose\n"), "def f():\n    return 0.5\n").passed


def test_statuses_at_load_stay_true(grader: Grader) -> None:
    hog = grader.grade(_problem("assert f() == 1"), "x = [0] * (1 << 40)\ndef f():\n    return 1\n")
    assert hog.outcome is Outcome.MEMORY_LIMIT and "MemoryError" in hog.error
    broken = grader.grade(_problem("assert f() == 1"), "import no_such_module\ndef f():\n    return 1\n")
    assert broken.outcome is Outcome.RUNTIME_ERROR and "no_such_module" in broken.error


def test_stdio_errors_show_expected_and_actual_excerpts(grader: Grader) -> None:
    from rewards import StdioCase, StdioTests

    problem = Problem(task_id="s", tests=StdioTests(cases=(StdioCase(stdin="2 3\n", stdout="5\n6\n"),)))
    verdict = grader.grade(problem, "a, b = map(int, input().split())\nprint(a + b)\nprint(a * b + 1)\n")
    assert verdict.outcome is Outcome.FAILED
    assert "line 2" in verdict.error and "expected '6'" in verdict.error and "got '7'" in verdict.error
