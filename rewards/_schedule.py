"""Early stop for stdio samples: which cases count, and cancelling the ones that no longer can.

A stdio sample is one run per test case. When the reward cannot use the remaining cases
(a binary reward after the first failed case), or when its failing cases have used up a
time budget (``failing_time_budget`` time limits in total), the rest are not run: they count
as failed. So a completion that loops costs about one time limit, not one per case.

The rule (:func:`stdio_cutoff`) reads the cases *in order*, up to the first one whose
result is missing, so it is a function of the case results alone: the verdict never
depends on which runs happened to finish first. :class:`CaseWatch` applies the same rule
to results as they arrive and cancels a sample's queued runs once its cutoff is known;
a run already started finishes and is ignored.
"""

from __future__ import annotations

import functools
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from vmpool import ExecRequest, ExecResult, Status

from ._compare import stdout_matches
from ._problems import StdioTests

__all__ = ["CaseWatch", "Cutoff", "StopRule", "case_passed", "stdio_cutoff"]


@dataclass(frozen=True)
class StopRule:
    """When a stdio sample's remaining cases are skipped.

    Attributes:
        first_failure: stop at the first failed case (for rewards that only use pass/fail).
        failing_time_budget: stop once the failing cases have used this many time limits
            in total (a timeout costs one; another failure its CPU time); ``None``: never.
    """

    first_failure: bool = False
    failing_time_budget: float | None = None

    def __post_init__(self) -> None:
        if self.failing_time_budget is not None and not self.failing_time_budget > 0:
            raise ValueError(f"failing_time_budget must be > 0 or None, got {self.failing_time_budget!r}")


@dataclass(frozen=True)
class Cutoff:
    """Where the rule stopped reading a sample's cases.

    Attributes:
        last: index of the last case that counts (``len(cases) - 1`` when all count).
        reason: ``""`` when every case counts, else why the rest were skipped.
    """

    last: int
    reason: str = ""


def case_passed(tests: StdioTests, index: int, res: ExecResult) -> bool:
    """Whether case ``index`` passed: a clean exit with all of stdout, matching the expected output."""
    return res.status is Status.OK and not res.stdout_truncated and stdout_matches(
        res.stdout, tests.cases[index].stdout, float_tol=tests.float_tol, whitespace=tests.whitespace)


def stdio_cutoff(tests: StdioTests, runs: Sequence[ExecResult | None], limit_s: float, rule: StopRule,
                 passed: Callable[[int, ExecResult], bool] | None = None) -> Cutoff:
    """The cases of a stdio sample that count under ``rule``, read in order.

    Args:
        tests: the sample's cases.
        runs: one result per case, ``None`` for a case that was not run (only ever after
            the cutoff of these same results).
        limit_s: the sample's time limit (one timeout costs this much of the budget).
        rule: the stop rule.
        passed: whether case ``i`` passed (default :func:`case_passed`; a checker's verdicts).

    Returns:
        The :class:`Cutoff`; with a result missing before any stop, the cases up to it.
    """
    passed = passed or functools.partial(case_passed, tests)
    spent = 0.0
    last = len(runs) - 1
    for i, res in enumerate(runs):
        if res is None:
            return Cutoff(i - 1, "not run")
        if passed(i, res):
            continue
        if i == last:
            break
        if rule.first_failure or res.status is Status.SANDBOX_ERROR:
            return Cutoff(i, f"stopped at the first failed case ({last - i} of {len(runs)} cases not run)")
        spent += limit_s if res.status is Status.TIMEOUT else res.cpu_s
        if rule.failing_time_budget is not None and spent > rule.failing_time_budget * limit_s:
            return Cutoff(i, f"stopped after the failing cases used {spent:.2f} s, over the budget of "
                             f"{rule.failing_time_budget:g} time limits ({last - i} of {len(runs)} cases not run)")
    return Cutoff(last)


@dataclass
class _Sample:
    tests: StdioTests
    request_ids: list[int]
    limit_s: float
    results: list[ExecResult | None] = field(default_factory=list)
    cutoff: Cutoff | None = None


class CaseWatch:
    """Submits a batch's requests to a pool and cancels stdio cases past their sample's cutoff.

    Args:
        submit: the pool's ``submit(request) -> Future[ExecResult]``.
        rule: the stop rule.

    Thread-safe: results arrive on the pool's threads.
    """

    def __init__(self, submit: Callable[[ExecRequest], Future[ExecResult]], rule: StopRule) -> None:
        self._submit = submit
        self._rule = rule
        # Re-entrant: Future.cancel() runs the cancelled future's callbacks at once, here.
        self._lock = threading.RLock()
        self._futures: list[Future[ExecResult]] = []
        self._requests: Sequence[ExecRequest] = ()  # the batch's list, which grows as it is planned
        self._users: dict[int, list[tuple[_Sample, int]]] = defaultdict(list)

    @property
    def futures(self) -> list[Future[ExecResult]]:
        """One future per submitted request, in request order."""
        return self._futures

    def submit(self, requests: Sequence[ExecRequest]) -> None:
        """Submit the requests of ``requests`` not submitted yet (the batch's list grows as it is planned)."""
        self._requests = requests
        for request in requests[len(self._futures):]:
            rid = len(self._futures)
            future = self._submit(request)
            with self._lock:
                self._futures.append(future)
            future.add_done_callback(functools.partial(self._done, rid))

    def watch(self, tests: StdioTests, request_ids: list[int], limit_s: float) -> None:
        """Apply the rule to a stdio sample whose case requests are ``request_ids`` (already submitted)."""
        if not (self._rule.first_failure or self._rule.failing_time_budget is not None):
            return
        sample = _Sample(tests, list(request_ids), limit_s, [None] * len(request_ids))
        with self._lock:
            for pos, rid in enumerate(request_ids):
                self._users[rid].append((sample, pos))
                future = self._futures[rid]
                if future.cancelled():  # cancelled for an earlier sample that shares it: run it again
                    future = self._submit(self._requests[rid])
                    self._futures[rid] = future
                    future.add_done_callback(functools.partial(self._done, rid))
                elif future.done() and future.exception() is None:
                    sample.results[pos] = future.result()
            self._advance(sample)

    def _done(self, rid: int, future: Future[ExecResult]) -> None:
        if future.cancelled() or future.exception() is not None:
            return  # a cancelled case never counts; a failed run is judged later
        result = future.result()
        with self._lock:
            for sample, pos in self._users.get(rid, ()):
                sample.results[pos] = result
                self._advance(sample)

    def _advance(self, sample: _Sample) -> None:
        if sample.cutoff is not None:
            return
        cut = stdio_cutoff(sample.tests, sample.results, sample.limit_s, self._rule)
        if cut.reason in ("", "not run"):
            return  # all cases count, or the prefix is still arriving
        sample.cutoff = cut
        for rid in sample.request_ids[cut.last + 1:]:
            users = self._users[rid]
            if all(s.cutoff is not None and p > s.cutoff.last for s, p in users):
                self._futures[rid].cancel()  # False once it has started: it then finishes, unread
