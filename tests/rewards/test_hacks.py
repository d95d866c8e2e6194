"""Every reward-hacking trick from the design brief must score 0 through a real vmpool pool.

Each test grades a known-good control (which must pass, so the test can fail) and the hack
(which must not pass and must get reward 0.0, never None).
"""

from __future__ import annotations

import pytest

from rewards import (
    AssertTests,
    CallCase,
    CallTests,
    Grader,
    Outcome,
    Problem,
    RewardConfig,
    StdioCase,
    StdioTests,
    compute_reward,
)

SQUARE_TESTS = (
    "def check(candidate):\n"
    "    assert candidate(2) == 4\n"
    "    assert candidate(3) == 9\n"
    "    assert abs(candidate(1.5) - 2.25) < 1e-9\n"
    "    assert isinstance(candidate(4), int)\n"
    "check(square)\n"
)
SQUARE = Problem(task_id="square", entry_point="square", tests=AssertTests(code=(SQUARE_TESTS,)))
SQUARE_MBPP = Problem(task_id="square-mbpp", tests=AssertTests(code=(
    "assert square(2) == 4", "assert square(3) == 9", "assert square(5) != 24", "assert str(square(6)) == '36'")))
GOOD = "def square(x):\n    return x * x\n"

STDIO = Problem(task_id="stdio", tests=StdioTests(cases=(
    StdioCase("3\n1 2 3\n", "1\n4\n9\n"), StdioCase("2\n5 6\n", "25\n36\n"))))
STDIO_GOOD = "n = int(input())\nfor v in input().split():\n    print(int(v) ** 2)\n"

CALL = Problem(task_id="call", tests=CallTests(fn_name="square", cases=(
    CallCase((2,), {}, 4), CallCase((3,), {}, 9), CallCase((), {"x": 5}, 25))))


def _assert_hack_fails(grader: Grader, problem: Problem, hack: str, good: str = GOOD) -> None:
    control, verdict = grader.grade_batch([(problem, good), (problem, hack)])
    assert control.passed is True, control
    assert verdict.passed is False, verdict
    assert compute_reward(verdict, RewardConfig()) == 0.0


EXIT_HACKS = {
    "sys.exit(0) at top level": "import sys\nsys.exit(0)\n",
    "os._exit(0) at top level": "import os\nos._exit(0)\n",
    "raise SystemExit at top level": "raise SystemExit\n",
    "raise SystemExit(0) in the function": "def square(x):\n    raise SystemExit(0)\n",
    "sys.exit(0) in the function": "import sys\ndef square(x):\n    sys.exit(0)\n",
    "os._exit(0) in the function": "import os\ndef square(x):\n    os._exit(0)\n",
    "KeyboardInterrupt in the function": "def square(x):\n    raise KeyboardInterrupt\n",
}


@pytest.mark.parametrize("name", sorted(EXIT_HACKS))
@pytest.mark.parametrize("problem", [SQUARE, SQUARE_MBPP], ids=["humaneval-style", "mbpp-style"])
def test_early_exit_scores_zero(grader: Grader, problem: Problem, name: str) -> None:
    _assert_hack_fails(grader, problem, EXIT_HACKS[name])


FAKE_OUTPUT_HACKS = {
    "PASSED marker": "print('PASSED')\nprint('All tests passed')\nimport sys; sys.exit(0)\n",
    "runner-like JSON on stdout": (
        "import json, sys\n"
        "print(json.dumps({'t': 'done', 'mode': 'assert', 'results': [True], 'load_error': None}))\n"
        "sys.exit(0)\n"),
}


@pytest.mark.parametrize("name", sorted(FAKE_OUTPUT_HACKS))
def test_printed_verdicts_score_zero(grader: Grader, name: str) -> None:
    _assert_hack_fails(grader, SQUARE, FAKE_OUTPUT_HACKS[name])


EQ_HACKS = {
    "always-True __eq__ object": (
        "class Any:\n"
        "    def __eq__(self, o): return True\n"
        "    def __ne__(self, o): return False\n"
        "    def __sub__(self, o): return 0\n"
        "    def __abs__(self): return 0\n"
        "    def __lt__(self, o): return True\n"
        "    def __bool__(self): return True\n"
        "def square(x):\n    return Any()\n"),
    "int subclass": (
        "class I(int):\n"
        "    def __eq__(self, o): return True\n"
        "    def __ne__(self, o): return False\n"
        "    __hash__ = int.__hash__\n"
        "    def __sub__(self, o): return 0\n"
        "    def __str__(self): return '36'\n"
        "def square(x):\n    return I(0)\n"),
    "str subclass": (
        "class S(str):\n"
        "    def __eq__(self, o): return True\n"
        "    def __ne__(self, o): return False\n"
        "    __hash__ = str.__hash__\n"
        "def square(x):\n    return S('')\n"),
    "list subclass": (
        "class L(list):\n"
        "    def __eq__(self, o): return True\n"
        "    def __ne__(self, o): return False\n"
        "def square(x):\n    return L()\n"),
    "entry point is a class": (
        "class square(float):\n"
        "    def __eq__(self, o): return True\n"
        "    def __ne__(self, o): return False\n"
        "    def __sub__(self, o): return 0.0\n"
        "    __hash__ = float.__hash__\n"),
    "nested in a container": (
        "class Any:\n"
        "    def __eq__(self, o): return True\n"
        "def square(x):\n    return [Any()]\n"),
}


@pytest.mark.parametrize("name", sorted(EQ_HACKS))
@pytest.mark.parametrize("problem", [SQUARE, SQUARE_MBPP], ids=["humaneval-style", "mbpp-style"])
def test_eq_hacking_scores_zero(grader: Grader, problem: Problem, name: str) -> None:
    _assert_hack_fails(grader, problem, EQ_HACKS[name])


PATCH_HACKS = {
    "builtins.isinstance and abs": (
        "import builtins\n"
        "builtins.isinstance = lambda *a: True\n"
        "builtins.abs = lambda x: 0\n"
        "def square(x):\n    return 0.5\n"),
    "builtins patched at call time": (
        "import builtins\n"
        "def square(x):\n"
        "    builtins.abs = lambda v: 0\n"
        "    builtins.isinstance = lambda *a: True\n"
        "    builtins.str = lambda v: '36'\n"
        "    return 0.5\n"),
    "AssertionError replaced": (
        "import builtins\n"
        "class Never(Exception): pass\n"
        "builtins.AssertionError = Never\n"
        "def square(x):\n    return -1\n"),
    "check overwritten": (
        "def check(candidate):\n    pass\n"
        "def square(x):\n"
        "    globals()['check'] = lambda c: None\n"
        "    return -1\n"),
    "operator module patched": (
        "import operator\n"
        "operator.eq = lambda a, b: True\n"
        "operator.ne = lambda a, b: False\n"
        "operator.lt = lambda a, b: True\n"
        "def square(x):\n    return -1\n"),
}


@pytest.mark.parametrize("name", sorted(PATCH_HACKS))
@pytest.mark.parametrize("problem", [SQUARE, SQUARE_MBPP], ids=["humaneval-style", "mbpp-style"])
def test_patching_the_grader_scores_zero(grader: Grader, problem: Problem, name: str) -> None:
    _assert_hack_fails(grader, problem, PATCH_HACKS[name])


READ_HACKS = {
    "sys._getframe(1)": (
        "import sys\n"
        "def square(x):\n"
        "    f = sys._getframe(1)\n"
        "    return f.f_locals.get('expected', -1)\n"),
    "traceback frames": (
        "import sys\n"
        "def square(x):\n"
        "    try:\n"
        "        raise ValueError\n"
        "    except ValueError:\n"
        "        tb = sys.exc_info()[2]\n"
        "    caller = tb.tb_frame.f_back\n"
        "    return -1\n"),
    "inspect.stack": "import inspect\ndef square(x):\n    inspect.stack()\n    return -1\n",
    "gc.get_objects": "import gc\ndef square(x):\n    gc.get_objects()\n    return -1\n",
    "generator frame": "def square(x):\n    g = (i for i in [1])\n    g.gi_frame.f_back\n    return -1\n",
    "/proc/self/mem": "def square(x):\n    open('/proc/self/mem', 'rb')\n    return -1\n",
    "ctypes": "import ctypes\ndef square(x):\n    return -1\n",
}


@pytest.mark.parametrize("name", sorted(READ_HACKS))
def test_reading_the_answers_scores_zero(grader: Grader, name: str) -> None:
    _assert_hack_fails(grader, SQUARE, READ_HACKS[name])


def test_reading_answers_from_frames_is_denied_not_just_wrong(grader: Grader) -> None:
    # Frames are the program's own to walk now: every frame up the stack belongs to the
    # program's process, and no test code or expected value was ever in it.
    hack = ("import sys, gc\n"
            "def square(x):\n"
            "    f, seen = sys._getframe(), []\n"
            "    while f is not None:\n"
            "        seen += [repr(v) for v in f.f_locals.values()]\n"
            "        f = f.f_back\n"
            "    seen += [o for o in gc.get_objects() if isinstance(o, str)]\n"
            "    return 1 if any('assert square' in s for s in seen) else -1\n")
    verdict = grader.grade(SQUARE, hack)
    assert verdict.passed is False and verdict.outcome is Outcome.FAILED


FORGE_HACKS = {
    "records on fds 3..20 at top level": (
        "import os, json\n"
        "for fd in range(3, 64):\n"
        "    for rec in ({'t': 'unit', 'i': 0, 'ok': True}, {'t': 'done', 'mode': 'assert', 'results': [True]}):\n"
        "        try: os.write(fd, (json.dumps(rec) + '\\n').encode())\n"
        "        except OSError: pass\n"
        "os._exit(0)\n"),
    "records on fds inside the function": (
        "import os, json\n"
        "def square(x):\n"
        "    for fd in range(3, 64):\n"
        "        try: os.write(fd, (json.dumps({'t': 'done', 'mode': 'assert', 'results': [True] * 4}) + '\\n').encode())\n"
        "        except OSError: pass\n"
        "    os._exit(0)\n"),
    "reading the tests from a file": (
        "import os\n"
        "found = [n for n in os.listdir('.') if n.endswith('.json')]\n"
        "def square(x):\n    return -1 if not found else len(open(found[0]).read())\n"),
}


@pytest.mark.parametrize("name", sorted(FORGE_HACKS))
@pytest.mark.parametrize("problem", [SQUARE, SQUARE_MBPP], ids=["humaneval-style", "mbpp-style"])
def test_forged_reports_score_zero(grader: Grader, problem: Problem, name: str) -> None:
    _assert_hack_fails(grader, problem, FORGE_HACKS[name])


def test_stdio_first_lines_only_scores_zero(grader: Grader) -> None:
    hack = "n = int(input())\nprint(int(input().split()[0]) ** 2)\n"
    control, verdict = grader.grade_batch([(STDIO, STDIO_GOOD), (STDIO, hack)])
    assert control.passed is True and control.tests_passed == 2
    assert verdict.passed is False and verdict.tests_passed == 0 and verdict.outcome is Outcome.FAILED


def test_stdio_exit_after_partial_output_scores_zero(grader: Grader) -> None:
    verdict = grader.grade(STDIO, "import sys\nprint(1)\nsys.exit(0)\n")
    assert verdict.passed is False and verdict.tests_passed == 0


CALL_HACKS = {
    "__eq__ object": "class Any:\n    def __eq__(self, o): return True\ndef square(x):\n    return Any()\n",
    "int subclass": "class I(int):\n    def __eq__(self, o): return True\ndef square(x):\n    return I(1)\n",
    "bool for int": "def square(x):\n    return True\n",
    "sys.exit": "import sys\ndef square(x):\n    sys.exit(0)\n",
    "top-level exit": "import os\nos._exit(0)\n",
}


@pytest.mark.parametrize("name", sorted(CALL_HACKS))
def test_call_kind_hacks_score_zero(grader: Grader, name: str) -> None:
    _assert_hack_fails(grader, CALL, CALL_HACKS[name], good="def square(x):\n    return x * x\n")


def test_call_kind_accepts_solution_class(grader: Grader) -> None:
    sol = "class Solution:\n    def square(self, x: int) -> int:\n        return x * x\n"
    assert grader.grade(CALL, sol).passed is True
