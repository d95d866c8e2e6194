"""Reward hacks beyond tests/rewards/test_hacks.py: stdio, call and MBPP variations.

Each grades a correct control (must pass) and the hack (must not pass; reward 0.0, never None).
The cases live in bench/reliability_cases.py, shared with the reliability bench.
"""

from __future__ import annotations

import pytest

from bench.reliability_cases import HACKS, MBPP, HackCase
from rewards import AssertTests, Problem, RewardConfig, compute_reward


@pytest.mark.parametrize("case", HACKS, ids=[h.name for h in HACKS])
def test_hack_scores_zero(grader, case: HackCase) -> None:
    control, verdict = grader.grade_batch([(case.problem, case.good), (case.problem, case.hack)])
    assert control.passed is True, control
    assert verdict.passed is False, verdict
    assert compute_reward(verdict, RewardConfig()) == 0.0


def test_patched_math_does_not_inflate_partial_credit(grader) -> None:
    # The tests run in the tester process, with its own math: patching math.isclose in the
    # program's interpreter cannot make those asserts pass one by one.
    hack = "import math\nmath.isclose = lambda *a, **k: True\ndef root(x):\n    return 0.0\n"
    honest = "def root(x):\n    return 0.0\n"
    v_hack, v_honest = grader.grade_batch([(MBPP, hack), (MBPP, honest)])
    assert v_hack.tests_passed == v_honest.tests_passed, (v_hack, v_honest)


RE_PROBLEM = Problem(task_id="rel-re", setup_code="import re", tests=AssertTests(code=(
    "assert re.match(r'^[0-9]+$', digits(3))", "assert re.match(r'^[0-9]+$', digits(5))",
    "assert len(digits(4)) == 4")))  # fmt: skip
COUNTER_PROBLEM = Problem(task_id="rel-counter", setup_code="import collections", tests=AssertTests(code=(
    "assert tally('aab') == collections.Counter({'a': 2, 'b': 1})",
    "assert tally('xyz') == collections.Counter('zyx')", "assert tally('') == {}")))  # fmt: skip
ISCLOSE_PROBLEM = Problem(task_id="rel-isclose", setup_code="from math import isclose", tests=AssertTests(code=(
    "assert isclose(root(16.0), 4.0)", "assert isclose(root(2.25), 1.5)", "assert root(0.0) == 0.0")))  # fmt: skip

# (problem, correct program, wrong program, the wrong program plus a patch of what the tests use)
PARTIAL_CREDIT_HACKS = {
    "math.isclose patched at call time": (
        MBPP, "import math\ndef root(x):\n    return float(math.sqrt(x))\n",
        "def root(x):\n    return 0.0\n",
        "import math\ndef root(x):\n    math.isclose = lambda *a, **k: True\n    return 0.0\n"),
    "re.match patched": (
        RE_PROBLEM, "def digits(n):\n    return '7' * n\n", "def digits(n):\n    return 'x' * n\n",
        "import re\nre.match = lambda *a, **k: True\ndef digits(n):\n    return 'x' * n\n"),
    "sys.modules['re'] replaced": (
        RE_PROBLEM, "def digits(n):\n    return '7' * n\n", "def digits(n):\n    return 'x' * n\n",
        "import sys, types\nfake = types.ModuleType('re')\nfake.match = lambda *a, **k: True\n"
        "sys.modules['re'] = fake\ndef digits(n):\n    return 'x' * n\n"),
    "collections.Counter.__eq__ patched": (
        COUNTER_PROBLEM, "import collections\ndef tally(s):\n    return collections.Counter(s)\n",
        "import collections\ndef tally(s):\n    return collections.Counter()\n",
        "import collections, functools\ncollections.Counter.__eq__ = functools.partial(lambda a, b: True)\n"
        "def tally(s):\n    return collections.Counter()\n"),
    "setup-imported name rebound": (
        ISCLOSE_PROBLEM, "def root(x):\n    return x ** 0.5\n", "def root(x):\n    return 0.0\n",
        "isclose = lambda *a, **k: True\ndef root(x):\n    return 0.0\n"),
    "setup-imported module rebound": (
        MBPP, "import math\ndef root(x):\n    return float(math.sqrt(x))\n", "def root(x):\n    return 0.0\n",
        "import types\nmath = types.SimpleNamespace(isclose=lambda *a, **k: True)\ndef root(x):\n    return 0.0\n"),
}


@pytest.mark.parametrize("name", sorted(PARTIAL_CREDIT_HACKS))
def test_patched_stdlib_does_not_inflate_partial_credit(grader, name: str) -> None:
    problem, good, wrong, hack = PARTIAL_CREDIT_HACKS[name]
    v_good, v_wrong, v_hack = grader.grade_batch([(problem, good), (problem, wrong), (problem, hack)])
    assert v_good.passed is True, v_good
    assert v_hack.passed is False, v_hack
    assert v_hack.tests_passed <= v_wrong.tests_passed, (v_hack, v_wrong)


def test_program_may_still_patch_stdlib_for_itself(grader) -> None:
    # Restoring is for the tests' view only: the program's own code keeps working.
    prog = ("import math\n_sqrt = math.sqrt\nmath.my_root = lambda x: float(_sqrt(x))\n"
            "def root(x):\n    return math.my_root(x) if hasattr(math, 'my_root') else float(_sqrt(x))\n")
    (verdict,) = grader.grade_batch([(MBPP, prog)])
    assert verdict.passed is True, verdict
