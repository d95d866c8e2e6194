"""What grading says of a sample: its :class:`Verdict`, the :class:`Outcome` that names why, and
per-test :class:`CaseResult` details."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from vmpool import Status

from ._excerpt import excerpt

__all__ = ["STATUS_OUTCOME", "CaseResult", "Outcome", "Verdict", "cut"]

_ERROR_CHARS = 500


class Outcome(str, enum.Enum):
    """Why a sample got its verdict."""

    PASSED = "passed"
    FAILED = "failed"
    NO_CODE = "no_code"
    SYNTAX_ERROR = "syntax_error"
    COMPILE_ERROR = "compile_error"
    RUNTIME_ERROR = "runtime_error"
    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"
    SANDBOX_KILLED = "sandbox_killed"
    SANDBOX_ERROR = "sandbox_error"


STATUS_OUTCOME = {
    Status.RUNTIME_ERROR: Outcome.RUNTIME_ERROR,
    Status.TIMEOUT: Outcome.TIMEOUT,
    Status.MEMORY_LIMIT: Outcome.MEMORY_LIMIT,
    Status.OUTPUT_LIMIT: Outcome.OUTPUT_LIMIT,
    Status.SANDBOX_KILLED: Outcome.SANDBOX_KILLED,
    Status.SANDBOX_ERROR: Outcome.SANDBOX_ERROR,
}


@dataclass(frozen=True)
class CaseResult:
    """How one test (a stdio case, an assert, a call) went, for a verdict's details.

    Attributes:
        index: the test's position.
        passed: whether it passed.
        status: ``passed``, ``failed``, ``error``, ``timeout``... or ``not_run`` (skipped by
            the stop rule, or the run ended before it).
        input: the case's stdin or the call's arguments (cut short).
        expected / actual: the expected and the produced output or value (cut short).
        error: what went wrong (the stderr tail, the exception line).
    """

    index: int
    passed: bool
    status: str
    input: str = ""
    expected: str = ""
    actual: str = ""
    error: str = ""


@dataclass(frozen=True)
class Verdict:
    """The grade of one (problem, completion) sample.

    Attributes:
        passed: True/False, or ``None`` for an infrastructure failure (never a 0 reward).
        outcome: why (see :class:`Outcome`).
        tests_passed: tests that passed (partial results count where the run was cut short).
        tests_total: tests of the problem.
        error: short excerpt (<= 500 chars) explaining a failure.
        wall_s: sandbox wall time spent on this sample.
        exec_status: sandbox status of the deciding run (``None`` when nothing ran).
        cases: per-test details, when the grader was asked for them (``Grader(details=True)``).
        credit: with a checker, the tests' credits summed (1 per accepted case, a partial
            case its points); ``None`` otherwise.
    """

    passed: bool | None
    outcome: Outcome
    tests_passed: int
    tests_total: int
    error: str = ""
    wall_s: float = 0.0
    exec_status: Status | None = None
    cases: tuple[CaseResult, ...] = ()
    credit: float | None = None



def cut(text: str) -> str:
    return excerpt(text, _ERROR_CHARS)
