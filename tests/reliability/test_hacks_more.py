"""Reward hacks beyond tests/rewards/test_hacks.py: stdio, call and MBPP variations.

Each grades a correct control (must pass) and the hack (must not pass; reward 0.0, never None).
The cases live in harness/_reliability_cases.py, shared with the reliability bench.
"""

from __future__ import annotations

import pytest

from harness._reliability_cases import HACKS, MBPP, HackCase
from rewards import RewardConfig, compute_reward


@pytest.mark.parametrize("case", HACKS, ids=[h.name for h in HACKS])
def test_hack_scores_zero(grader, case: HackCase) -> None:
    control, verdict = grader.grade_batch([(case.problem, case.good), (case.problem, case.hack)])
    assert control.passed is True, control
    assert verdict.passed is False, verdict
    assert compute_reward(verdict, RewardConfig()) == 0.0


@pytest.mark.xfail(strict=True, reason="known gap: stdlib modules imported by setup_code (math) are shared with "
                   "the program, so patching math.isclose makes those asserts pass one by one; the sample still "
                   "fails, but a 'fraction' reward gives it 0.75 instead of 0.25")
def test_patched_math_does_not_inflate_partial_credit(grader) -> None:
    hack = "import math\nmath.isclose = lambda *a, **k: True\ndef root(x):\n    return 0.0\n"
    honest = "def root(x):\n    return 0.0\n"
    v_hack, v_honest = grader.grade_batch([(MBPP, hack), (MBPP, honest)])
    assert v_hack.tests_passed == v_honest.tests_passed, (v_hack, v_honest)
