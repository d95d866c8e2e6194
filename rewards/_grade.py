"""Grading: completions + problems -> sandbox requests -> verdicts.

A batch is planned on the host (code extraction, ``compile()`` syntax check, one request per
assert/call sample or per stdio case, identical requests deduplicated), submitted to the pool
as it is planned (or run with one ``pool.map`` call on a pool without ``submit``), then
evaluated. A stdio sample may stop early (:mod:`rewards._schedule`): after its first failed
case when the reward only uses pass/fail, or once its failing cases used their time budget;
the skipped cases count as failed, and which ones are skipped depends on the case results
alone, never on timing. A pass needs the tester's ``done`` record with every test
passed (assert/call kinds: the tester is a separate process the program cannot reach, see
:mod:`rewards._runner`) or every stdio case's output to match with a clean exit. Any
``SANDBOX_ERROR`` in a sample makes its verdict an infrastructure failure (``passed=None``);
no program can cause one.

The time limit (a problem's ``time_limit_s``, else the limits' ``cpu_s``, else their
``wall_s``) is judged on the program's CPU time, so verdicts do not depend on host load;
the wall clock is only a backstop at ``wall_factor * limit + wall_slack_s``.
"""

from __future__ import annotations

import dataclasses
import logging
import types
from collections.abc import Iterable, Sequence
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import Any

from vmpool import ExecRequest, ExecResult, Limits, Status, VmpoolError

from ._build import Build, Builder
from ._checker import checker_request, judge_checker
from ._compare import values_equal
from ._excerpt import excerpt, run_why
from ._extract import extract_program
from ._interactive import interactive_request, judge_interactive
from ._languages import find_language, language
from ._problems import AssertTests, CallTests, Problem, ProgramTests, StdioTests
from ._program_tests import assemble, judge_program_tests, program_tests_request
from ._runner import RunnerReport, build_request, compile_program, parse_report
from ._schedule import CaseWatch, StopRule
from ._shaping import RewardConfig, compute_reward
from ._stdio_judge import Judged, from_checker, from_interactive, judge_stdio
from ._verdict import STATUS_OUTCOME, CaseResult, Outcome, Verdict, cut

__all__ = ["Outcome", "Verdict", "Grader"]

logger = logging.getLogger(__name__)

@dataclass
class _Plan:
    """Requests of one sample (indices into the deduplicated request list) and how to judge them."""

    problem: Problem
    verdict: Verdict | None = None  # decided on the host (no code, syntax error)
    request_ids: list[int] = dataclasses.field(default_factory=list)
    limit_s: float = 0.0  # the time limit its runs were judged on
    nonce: str = ""  # program tests: what the test code's end reports
    checks: dict[int, Judged] = dataclasses.field(default_factory=dict)  # by case, with a checker


@dataclass
class _Batch:
    """Deduplicated requests of one grade_batch call: identical (program, tests) run once."""

    requests: list[ExecRequest] = dataclasses.field(default_factory=list)
    index: dict[Any, int] = dataclasses.field(default_factory=dict)
    builds: dict[str, Build] = dataclasses.field(default_factory=dict)  # by Builder.key, for this batch


def _compiled(program: str) -> tuple[types.CodeType | None, str | None]:
    """(code object, None) of a program that compiles, else (None, the error)."""
    try:
        return compile_program(program), None
    except SyntaxError as exc:
        return None, f"SyntaxError: {exc.msg} (line {exc.lineno})"
    except (ValueError, RecursionError, MemoryError, OverflowError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


class Grader:
    """Grades completions against problems in a vmpool ``Pool``.

    Args:
        pool: anything with ``map(list[ExecRequest]) -> list[ExecResult]`` (a ``vmpool.Pool``).
        default_limits: limits of every run; the time limit is its ``cpu_s`` (or, when that
            is ``None``, its ``wall_s``), judged on CPU time; a problem's ``time_limit_s`` /
            ``memory_mb`` override the time limit / ``memory_mb``.
        wall_factor / wall_slack_s: the wall-clock backstop of a run is
            ``wall_factor * time limit + wall_slack_s`` (it ends programs that sleep or
            block; a loaded host slows programs down, so it sits well above the limit).
        stop_at_first_failure: a stdio sample stops at its first failed case (the rest
            count as failed): right for a binary reward, which cannot use them.
        failing_time_budget: a stdio sample stops once its failing cases used this many
            time limits in total (a timeout costs one); ``None``: never. Correct programs
            never hit it: only failing cases spend it.
        details: fill each verdict's ``cases`` with per-test details (input, expected,
            actual, error, each cut to ``details_chars``).
        builder: builds programs in compiled languages, once per unique source (default: a
            :class:`~rewards._build.Builder` with its default compile limits and cache).

    Raises:
        ValueError: ``wall_factor`` < 1, ``wall_slack_s`` < 0 or ``failing_time_budget`` <= 0.
    """

    def __init__(self, pool: Any, default_limits: Limits | None = None, *, wall_factor: float = 3.0,
                 wall_slack_s: float = 2.0, stop_at_first_failure: bool = False,
                 failing_time_budget: float | None = None, details: bool = False,
                 details_chars: int = 200, builder: Builder | None = None) -> None:
        if not wall_factor >= 1.0:
            raise ValueError(f"wall_factor must be >= 1 (the backstop sits above the time limit), got {wall_factor!r}")
        if not wall_slack_s >= 0.0:
            raise ValueError(f"wall_slack_s must be >= 0, got {wall_slack_s!r}")
        self.pool = pool
        self.default_limits = default_limits or Limits()
        self.wall_factor = wall_factor
        self.wall_slack_s = wall_slack_s
        self.stop_rule = StopRule(stop_at_first_failure, failing_time_budget)
        self.details = details
        self.details_chars = details_chars
        self.builder = builder or Builder()

    # ------------------------------------------------------------------ public
    def grade(self, problem: Problem, completion: Any) -> Verdict:
        """Grade one completion (see :meth:`grade_batch`)."""
        return self.grade_batch([(problem, completion)])[0]

    def grade_batch(self, items: Iterable[tuple[Problem, Any]]) -> list[Verdict]:
        """Grade many samples in one pass over the pool.

        With a pool that has ``submit`` (a ``vmpool.Pool``), planning, running and judging
        overlap: each request goes to the pool as soon as its sample is planned, so the
        sandboxes never wait for the host to plan the whole batch first, and a stdio
        sample's queued cases are cancelled once its stop rule has decided. Otherwise one
        ``pool.map`` call (the same verdicts: the stop rule is applied when judging).

        Args:
            items: ``(problem, completion)`` pairs; a completion is a string, chat messages or
                a message dict (see :func:`rewards.extract_code`).

        Returns:
            One verdict per item, in order.

        Raises:
            TypeError: an item's problem is not a :class:`Problem`.
        """
        items = list(items)
        batch = _Batch(builds=self._build(items))
        submit = getattr(self.pool, "submit", None)
        if submit is None:
            plans = [self._plan(problem, completion, batch) for problem, completion in items]
            results_all = self._map(batch.requests)
            self._check(plans, results_all, batch)
            return [plan.verdict if plan.verdict is not None else self._judge(plan, results_all) for plan in plans]
        watch = CaseWatch(submit, self.stop_rule)
        plans = []
        failure: VmpoolError | None = None
        for problem, completion in items:
            plan = self._plan(problem, completion, batch)
            plans.append(plan)
            if failure is None:
                try:
                    watch.submit(batch.requests)
                except VmpoolError as exc:  # the pool closed under us: what is left is infrastructure
                    failure = exc
                    logger.error("the pool failed after %d of the batch's requests: %s", len(watch.futures), exc)
            if failure is None and isinstance(problem.tests, StdioTests) and plan.request_ids \
                    and problem.tests.checker is None and problem.tests.interactor is None:
                watch.watch(problem.tests, plan.request_ids, plan.limit_s)
        results: list[ExecResult | None] = []
        for future in watch.futures:
            try:
                results.append(future.result())
            except CancelledError:
                results.append(None)  # a case past its sample's cutoff: never read
            except VmpoolError as exc:
                results.append(ExecResult(status=Status.SANDBOX_ERROR, error=f"pool failed: {exc}"))
        broken = ExecResult(status=Status.SANDBOX_ERROR, error=f"pool failed: {failure}")
        results += [broken] * (len(batch.requests) - len(results))
        self._check(plans, results, batch)
        return [plan.verdict if plan.verdict is not None else self._judge(plan, results) for plan in plans]

    def _build(self, items: list[tuple[Problem, Any]]) -> dict[str, Build]:
        """Build the batch's programs in compiled languages, each unique source once (a
        build first: no test of a sample can run before its program is built)."""
        wanted = []
        for problem, completion in items:
            found = self._extract(problem, completion) if isinstance(problem, Problem) else None
            interactor = getattr(problem.tests, "interactor", None) if found is not None else None
            if found is not None and (found[1].name != "python" or interactor is not None):
                wanted.append(self._source(problem, found[1], problem.program_for(found[0])))
            for judge in (getattr(problem.tests, "checker", None), interactor):
                if judge is not None and found is not None:
                    wanted.append((language(judge.language), judge.source))
        return self.builder.build_all(self._map, wanted) if wanted else {}

    def _check(self, plans: list[_Plan], results: Sequence[ExecResult | None], batch: _Batch) -> None:
        """Run the checkers of the batch's checked stdio cases (those whose run ended cleanly
        with all of its output), each on the case's input, output and answer."""
        todo: list[tuple[_Plan, int]] = []
        requests: list[ExecRequest] = []
        for plan in plans:
            tests = plan.problem.tests
            if plan.verdict is not None or not isinstance(tests, StdioTests) or tests.checker is None:
                continue
            checker = batch.builds.get(self.builder.key(language(tests.checker.language), tests.checker.source))
            if checker is None or not checker.ok:
                why = checker.error if checker is not None else "it was not built"
                plan.verdict = Verdict(None, Outcome.SANDBOX_ERROR, 0, tests.count, cut(f"the checker failed: {why}"),
                                       0.0, Status.SANDBOX_ERROR)
                continue
            for i, rid in enumerate(plan.request_ids):
                res = results[rid]
                if res is not None and res.status is Status.OK and not res.stdout_truncated:
                    todo.append((plan, i))
                    requests.append(checker_request(checker, tests.cases[i].stdin, res.stdout, tests.cases[i].stdout))
        for (plan, i), res in zip(todo, self._map(requests)):
            plan.checks[i] = from_checker(judge_checker(res))

    @staticmethod
    def _source(problem: Problem, lang: Any, program: str) -> tuple[Any, str]:
        """What is built for a sample: its program, or with program tests the test program."""
        if isinstance(problem.tests, ProgramTests):
            return lang.for_tests(), assemble(lang, program, problem.tests.code)
        return lang, program

    @staticmethod
    def _extract(problem: Problem, completion: Any) -> tuple[str, Any] | None:
        found = extract_program(completion, problem.entry_point or "", problem.allowed_languages, problem.language)
        return None if found is None else (found[0], find_language(found[1]))

    def _map(self, requests: list[ExecRequest]) -> Sequence[ExecResult]:
        if not requests:
            return []
        try:
            results = self.pool.map(requests)
        except VmpoolError as exc:
            logger.error("pool.map failed for %d requests: %s", len(requests), exc)
            return [ExecResult(status=Status.SANDBOX_ERROR, error=f"pool.map failed: {exc}")] * len(requests)
        if len(results) != len(requests):
            raise RuntimeError(f"pool.map returned {len(results)} results for {len(requests)} requests")
        return results

    def rewards(self, items: Iterable[tuple[Problem, Any]],
                reward_config: RewardConfig | None = None) -> list[float | None]:
        """Grade many samples and shape each verdict with :func:`compute_reward`.

        Args:
            items: ``(problem, completion)`` pairs.
            reward_config: how verdicts become rewards (default ``RewardConfig()``: binary).

        Returns:
            One reward per item, in order; ``None`` exactly for an infrastructure failure.
        """
        return [compute_reward(v, reward_config) for v in self.grade_batch(items)]

    # ------------------------------------------------------------------ planning
    def _limits(self, problem: Problem) -> Limits:
        base = self.default_limits
        limit = problem.time_limit_s or base.cpu_s or base.wall_s
        changes: dict[str, Any] = {"cpu_s": limit, "wall_s": self.wall_factor * limit + self.wall_slack_s}
        if problem.memory_mb is not None:
            changes["memory_mb"] = problem.memory_mb
        return dataclasses.replace(base, **changes)

    def _plan(self, problem: Problem, completion: Any, batch: _Batch) -> _Plan:
        if not isinstance(problem, Problem):
            raise TypeError(f"grade items must be (Problem, completion) pairs, got a {type(problem).__name__}")
        plan = _Plan(problem=problem)
        total = problem.tests.count
        found = self._extract(problem, completion)
        if found is None:
            langs = problem.allowed_languages
            plan.verdict = Verdict(False, Outcome.NO_CODE, 0, total, "no code found in the completion" + (
                "" if langs == ("python",) else f" (in {', '.join(langs)})"))
            return plan
        program = problem.program_for(found[0])
        if found[1].name != "python":
            return self._plan_built(plan, program, found[1], batch)
        compiled, error = _compiled(program)
        if error is not None:
            plan.verdict = Verdict(False, Outcome.SYNTAX_ERROR, 0, total, cut(error))
            return plan
        if getattr(problem.tests, "interactor", None) is not None:
            return self._plan_built(plan, program, found[1], batch)
        limits = self._limits(problem)
        plan.limit_s = limits.effective_cpu_s

        requests, index = batch.requests, batch.index

        def add(key: Any, make: Any) -> int:
            if key not in index:
                index[key] = len(requests)
                requests.append(make())
            return index[key]

        tests = problem.tests
        if isinstance(tests, StdioTests):
            source = (problem.setup_code + "\n" + program) if problem.setup_code else program
            for case in tests.cases:
                plan.request_ids.append(add(("stdio", source, case.stdin, limits),
                                            lambda c=case: ExecRequest(code=source, stdin=c.stdin, limits=limits)))
            return plan
        if isinstance(tests, AssertTests):
            key: Any = ("assert", program, problem.setup_code, tests.code, problem.prompt, problem.entry_point,
                        limits)
        else:
            assert isinstance(tests, CallTests)  # program tests are never Python (Problem checks)
            key = ("call", program, problem.setup_code, tests.fn_name,
                   tuple(repr((c.args, c.kwargs)) for c in tests.cases), limits)
        plan.request_ids.append(add(key, lambda: build_request(problem, program, limits, compiled)))
        return plan

    def _plan_built(self, plan: _Plan, program: str, lang: Any, batch: _Batch) -> _Plan:
        """A sample in a built language (or any, with an interactor): one run of its build per
        stdio case, or one run of its test program."""
        problem, total = plan.problem, plan.problem.tests.count
        build = batch.builds.get(self.builder.key(*self._source(problem, lang, program)))
        if build is None or build.ok is None:
            why = build.error if build is not None else "the program was not built"
            plan.verdict = Verdict(None, Outcome.SANDBOX_ERROR, 0, total, cut(f"build: {why}"), 0.0,
                                   Status.SANDBOX_ERROR)
            return plan
        if not build.ok:
            plan.verdict = Verdict(False, Outcome.COMPILE_ERROR, 0, total, cut(build.error), build.wall_s)
            return plan
        limits = self._limits(problem)
        plan.limit_s = limits.effective_cpu_s
        requests, index = batch.requests, batch.index
        if isinstance(problem.tests, ProgramTests):  # one run, never shared: its nonce is its own
            req, plan.nonce = program_tests_request(build, limits)
            plan.request_ids.append(len(requests))
            requests.append(req)
            return plan
        assert isinstance(problem.tests, StdioTests)  # assert and call tests allow Python only (Problem checks)
        judge = problem.tests.interactor
        if judge is not None:  # one run per case with the interactor beside it, never shared
            interactor = batch.builds.get(self.builder.key(language(judge.language), judge.source))
            if interactor is None or not interactor.ok:
                why = interactor.error if interactor is not None else "it was not built"
                plan.verdict = Verdict(None, Outcome.SANDBOX_ERROR, 0, total, cut(f"the interactor failed: {why}"),
                                       0.0, Status.SANDBOX_ERROR)
                return plan
            for case in problem.tests.cases:
                plan.request_ids.append(len(requests))
                requests.append(interactive_request(interactor, build, case.stdin, limits))
            return plan
        for case in problem.tests.cases:
            key = ("built", lang.name, program, case.stdin, limits)
            if key not in index:
                index[key] = len(requests)
                requests.append(build.run_request(case.stdin, limits))
            plan.request_ids.append(index[key])
        return plan

    # ------------------------------------------------------------------ judging
    def _judge(self, plan: _Plan, results: Sequence[ExecResult | None]) -> Verdict:
        problem = plan.problem
        total = problem.tests.count
        runs = [results[i] for i in plan.request_ids]
        tests = problem.tests
        if isinstance(tests, StdioTests):
            judged = plan.checks if tests.checker is not None else None
            if tests.interactor is not None:
                judged = {i: from_interactive(judge_interactive(r)) for i, r in enumerate(runs) if r is not None}
            return judge_stdio(tests, runs, plan.limit_s, self.stop_rule, judged,
                               self.details_chars if self.details else None)
        run = runs[0]
        assert run is not None  # only stdio cases are ever cancelled
        if isinstance(tests, ProgramTests):
            return judge_program_tests(run, plan.nonce)
        if run.status is Status.SANDBOX_ERROR:
            return Verdict(None, Outcome.SANDBOX_ERROR, 0, total, cut(run.error or "sandbox error"), run.wall_s,
                           Status.SANDBOX_ERROR)
        return self._judge_runner(tests, run, run.wall_s)

    def _judge_runner(self, tests: AssertTests | CallTests, res: ExecResult, wall: float) -> Verdict:
        report = parse_report(res.report, tests.count)
        verdict = self._judge_report(tests, res, wall, report)
        if not self.details:
            return verdict
        n = self.details_chars
        cases = []
        for i in range(tests.count):
            done = report.done and i < len(report.results)
            ok = bool(report.results[i]) if done else bool(report.partial.get(i, False))
            seen = done or i in report.partial
            kind = (report.kind(i) or ("ok" if ok else "failed")) if seen else "not_run"
            call = tests.cases[i] if isinstance(tests, CallTests) else None
            if isinstance(tests, CallTests) and call is not None:
                ok = ok and i in report.values and values_equal(report.values[i], call.expected,
                                                                  float_tol=tests.float_tol)
            cases.append(CaseResult(
                i, ok, "passed" if ok else ("failed" if kind == "ok" else kind),
                excerpt(repr(list(call.args)), n) if call else "",
                excerpt(repr(call.expected), n) if call else "",
                excerpt(repr(report.values[i]), n) if call and i in report.values else "",
                excerpt(report.errors.get(i, ""), n)))
        return dataclasses.replace(verdict, cases=tuple(cases))

    def _judge_report(self, tests: AssertTests | CallTests, res: ExecResult, wall: float,
                      report: RunnerReport) -> Verdict:
        total = tests.count
        if isinstance(tests, CallTests):
            flags = [report.partial.get(i, False) and i in report.values and
                     values_equal(report.values[i], case.expected, float_tol=tests.float_tol)
                     for i, case in enumerate(tests.cases)]
            if report.done:
                flags = [f and r for f, r in zip(flags, report.results)]
        else:
            flags = report.results if report.done else [report.partial.get(i, False) for i in range(total)]
        passed = sum(1 for f in flags if f)
        if res.status is not Status.OK:
            # The program (or the run) ended by a limit or a crash: that is the outcome.
            outcome = STATUS_OUTCOME.get(res.status, Outcome.RUNTIME_ERROR)
            why = run_why(res, report.load_error)
            return Verdict(False, outcome, passed, total, cut(why), wall, res.status)
        if not report.done:
            # No final record: the tester did not finish (it crashed, or the program ended the run).
            comp = res.companion
            why = report.load_error or (comp.stderr.strip()[-300:] if comp and comp.stderr.strip() else "") \
                or "the tests did not finish"
            return Verdict(False, Outcome.RUNTIME_ERROR, passed, total, cut(why), wall, res.status)
        if report.load_error:
            outcome = Outcome.MEMORY_LIMIT if report.load_error.startswith("MemoryError") else Outcome.RUNTIME_ERROR
            return Verdict(False, outcome, 0, total, cut(report.load_error), wall, res.status)
        if passed == total:
            return Verdict(True, Outcome.PASSED, passed, total, "", wall, res.status)
        first = next(i for i, f in enumerate(flags) if not f)
        kind = report.kind(first)
        outcome = {"memory": Outcome.MEMORY_LIMIT, "error": Outcome.RUNTIME_ERROR,
                   "died": Outcome.RUNTIME_ERROR}.get(kind, Outcome.FAILED)
        why = report.errors.get(first) or ("wrong return value" if isinstance(tests, CallTests) else "failed")
        return Verdict(False, outcome, passed, total, cut(f"test {first}: {why}"), wall, res.status)
