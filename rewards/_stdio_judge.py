"""The verdict of a stdio sample from its cases' runs: compared outside the sandbox, or decided
by a judge program (a checker after each run, an interactor during it).

A judge's word on a case is a :class:`Judged`; a judge that could not judge (``passed`` is
``None``) makes the whole sample infrastructure (``None``), as a case that could not run does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vmpool import ExecResult, Status

from ._checker import CheckerVerdict
from ._excerpt import excerpt, run_why, wrong_output
from ._interactive import InteractiveOutcome, InteractiveResult
from ._problems import StdioTests
from ._schedule import StopRule, case_passed, stdio_cutoff
from ._verdict import STATUS_OUTCOME, CaseResult, Outcome, Verdict, cut

__all__ = ["Judged", "from_checker", "from_interactive", "judge_stdio"]


@dataclass(frozen=True)
class Judged:
    """A judge program's word on one case.

    Attributes:
        passed: True, False, or ``None`` when the judge itself failed (infrastructure).
        credit: the case's credit (1.0 accepted, a checker's points, else 0.0).
        outcome: for a failed case, how it failed.
        why: what the judge said.
    """

    passed: bool | None
    credit: float = 0.0
    outcome: Outcome = Outcome.FAILED
    why: str = ""


def from_checker(v: CheckerVerdict) -> Judged:
    if v.failed_checker:
        return Judged(None, why=f"the checker failed: {v.message}")
    return Judged(v.passed, v.credit, why=f"the checker said {v.kind.replace('_', ' ')}: {v.message}".rstrip(": "))


_INTERACTIVE_OUTCOME = {
    InteractiveOutcome.WRONG_ANSWER: Outcome.FAILED, InteractiveOutcome.PRESENTATION_ERROR: Outcome.FAILED,
    InteractiveOutcome.TIMEOUT: Outcome.TIMEOUT, InteractiveOutcome.MEMORY_LIMIT: Outcome.MEMORY_LIMIT,
    InteractiveOutcome.RUNTIME_ERROR: Outcome.RUNTIME_ERROR, InteractiveOutcome.OUTPUT_LIMIT: Outcome.OUTPUT_LIMIT,
    InteractiveOutcome.SANDBOX_KILLED: Outcome.SANDBOX_KILLED,
}


def from_interactive(r: InteractiveResult) -> Judged:
    if r.passed is None:
        return Judged(None, why=f"the interactor could not judge: {r.outcome.value}: {r.message}".rstrip(": "))
    said = f"the interactor said {r.outcome.value.replace('_', ' ')}" + (f": {r.message}" if r.message else "")
    return Judged(r.passed, 1.0 if r.passed else 0.0, _INTERACTIVE_OUTCOME.get(r.outcome, Outcome.FAILED), said)


def judge_stdio(tests: StdioTests, runs: list[ExecResult | None], limit_s: float, rule: StopRule,
                judged: dict[int, Judged] | None = None, details: int | None = None) -> Verdict:
    """The sample's verdict.

    Args:
        tests: its cases.
        runs: one result per case (``None``: not run, past a stop).
        limit_s: its time limit (the stop rule's budget counts in it).
        rule: the early stop rule.
        judged: with a checker or an interactor, the judge's word per case (a case without one
            failed on its own run); ``None``: the output is compared with the expected one.
        details: fill ``Verdict.cases``, each text cut to this many characters.
    """

    def passed_case(i: int, res: ExecResult) -> bool:
        if judged is None:
            return case_passed(tests, i, res)
        return i in judged and judged[i].passed is True

    stop = stdio_cutoff(tests, runs, limit_s, rule, passed_case)
    counted = [r for r in runs[: stop.last + 1] if r is not None]
    wall = sum(r.wall_s for r in runs if r is not None)
    total = len(tests.cases)
    broken = next((r for r in counted if r.status is Status.SANDBOX_ERROR), None)
    void = next((j for i, j in sorted((judged or {}).items()) if i <= stop.last and j.passed is None), None)
    if broken is not None or stop.reason == "not run" or void is not None:
        # Infrastructure: a case could not run (a missing result before any stop is a bug of ours), or
        # its judge could not judge it.
        why = broken.error if broken is not None else void.why if void is not None else "a test case was not run"
        return Verdict(None, Outcome.SANDBOX_ERROR, 0, total, cut(why or "sandbox error"), wall, Status.SANDBOX_ERROR)
    passed = sum(1 for i, r in enumerate(counted) if passed_case(i, r))
    credit = None if judged is None else sum(judged[i].credit for i in range(len(counted)) if i in judged)
    fail = next(((i, r) for i, r in enumerate(counted) if not passed_case(i, r)), None)
    cases = _cases(tests, counted, passed_case, details) if details is not None else ()
    if fail is None and stop.last == total - 1:
        return Verdict(True, Outcome.PASSED, passed, total, "", wall, Status.OK, cases, credit)
    if fail is None:  # cannot happen: a cutoff is always at a failed case
        return Verdict(None, Outcome.SANDBOX_ERROR, passed, total, "cases were skipped without a failure", wall,
                       Status.SANDBOX_ERROR)
    i, res = fail
    if judged is not None and i in judged:
        why, outcome = judged[i].why, judged[i].outcome
    elif res.status is not Status.OK:
        why, outcome = run_why(res), STATUS_OUTCOME.get(res.status, Outcome.RUNTIME_ERROR)
    else:
        why, outcome = wrong_output(res.stdout, tests.cases[i].stdout, tests.whitespace), Outcome.FAILED
    stopped = f"; {stop.reason}" if stop.reason else ""
    return Verdict(False, outcome, passed, total, cut(f"case {i}: {why}{stopped}"), wall, res.status, cases, credit)


def _cases(tests: StdioTests, counted: list[ExecResult], passed_case: Callable[[int, ExecResult], bool],
           n: int) -> tuple[CaseResult, ...]:
    out = []
    for i, case in enumerate(tests.cases):
        res = counted[i] if i < len(counted) else None
        ok = res is not None and passed_case(i, res)
        status = "not_run" if res is None else "passed" if ok else (
            "failed" if res.status is Status.OK else res.status.value)
        out.append(CaseResult(i, ok, status, excerpt(case.stdin, n), excerpt(case.stdout, n),
                              excerpt(res.stdout, n) if res else "",
                              excerpt(res.stderr.strip(), n) if res and not ok else ""))
    return tuple(out)
