"""Offline grading: problems + samples -> one result row per sample, and a summary.

:class:`Harness` holds a sandbox pool open across calls (a context manager);
:func:`grade` is the one-shot form. Grading goes chunk by chunk through
``rewards.Grader.grade_batch`` (parallel over the pool), and every chunk's rows are
flushed to the output before the next chunk starts, so an interrupted run loses at most
one chunk and a re-run picks up where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, Self

from rewards import Grader, Problem, RewardConfig, Verdict, compute_reward, excerpt, extract_code
from vmpool import Pool

from ._config import HarnessConfig
from ._errors import InputError
from ._inputs import (
    check_output_is_not_an_input,
    check_output_writable,
    load_problem_index,
    resolve_task_ids,
)
from ._io import (
    ResultRow,
    Sample,
    SampleSet,
    output_format,
    read_samples,
    samples_from_records,
)
from ._resume import completion_digest, plan_resume, problem_digest, settings_digest
from ._store import ResultStore
from ._summary import GradeSummary, summarize

__all__ = ["GraderLike", "Harness", "grade", "verdict_row"]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


class GraderLike(Protocol):
    """What :class:`Harness` grades with: ``rewards.Grader`` (a local pool) and
    :class:`~harness.RayGrader` (pool actors on a Ray cluster) both are one."""

    def grade_batch(self, items: Sequence[tuple[Problem, Any]]) -> Sequence[Verdict]:
        """One verdict per ``(problem, completion)``, in order."""
        ...


def verdict_row(sample: Sample, verdict: Verdict, reward_config: RewardConfig, error_chars: int, *,
                problem_sha: str = "", settings_sha: str = "", code: str = "") -> ResultRow:
    """The output row of ``sample`` graded to ``verdict``: the one place a verdict becomes a row.

    Args:
        sample: the graded sample.
        verdict: its ``rewards.Verdict``.
        reward_config: how the verdict becomes the row's reward.
        error_chars: the most characters of error text the row keeps (see ``rewards.excerpt``).
        problem_sha / settings_sha: digests of the problem and of the settings it was
            graded under, stored so a resumed run can tell whether the row still holds.
        code: the extracted program, kept in the row (details mode); the verdict's per-test
            ``cases`` become the row's ``details`` JSON.

    Returns:
        The :class:`ResultRow`; reward is None exactly when ``passed`` is None.
    """
    passed = verdict.passed
    reward = compute_reward(verdict, reward_config)
    return ResultRow(
        task_id=sample.task_id,
        sample_index=sample.sample_index,
        passed=None if passed is None else bool(passed),
        reward=None if passed is None or reward is None else float(reward),
        status=str(getattr(verdict.outcome, "value", verdict.outcome)),
        tests_passed=verdict.tests_passed,
        tests_total=verdict.tests_total,
        wall_s=float(verdict.wall_s or 0.0),
        error=excerpt(verdict.error, error_chars),
        problem_id=sample.problem_id if sample.problem_id != sample.task_id else "",
        completion_sha=completion_digest(sample.completion),
        problem_sha=problem_sha,
        settings_sha=settings_sha,
        code=code,
        details=json.dumps([dataclasses.asdict(c) for c in verdict.cases], ensure_ascii=False) if verdict.cases else "",
    )


class _Bar(Protocol):
    def update(self, n: int) -> Any: ...

    def close(self) -> None: ...


class Harness:
    """Grades samples against problems in sandboxes; holds the pool open across calls.

    Args:
        config: the harness config (defaults when None).
        workers: pool size, overriding ``config.pool.size``.
        backend: sandbox backend, overriding ``config.pool.backend``.
        pool: an already open ``vmpool.Pool`` to use instead of starting one (the caller
            keeps ownership: :meth:`close` does not close it).
        grader: what grades instead of a ``rewards.Grader`` on the pool, e.g. a
            :class:`~harness.RayGrader` (the caller keeps ownership; the harness then has
            no pool of its own).

    Raises:
        ConfigError: when an override is invalid.

    Example::

        with Harness(load_config("configs/default.yaml")) as h:
            summary = h.grade("problems.jsonl", "samples.jsonl", "out.parquet")
    """

    def __init__(
        self,
        config: HarnessConfig | None = None,
        *,
        workers: int | None = None,
        backend: str | None = None,
        pool: Pool | None = None,
        grader: GraderLike | None = None,
    ) -> None:
        if pool is not None and grader is not None:
            raise TypeError("pass a pool or a grader, not both")
        self.config = (config or HarnessConfig()).with_overrides(workers=workers, backend=backend)
        self.reward_config: RewardConfig = self.config.reward
        self.settings_sha = settings_digest(self.config)  # the config is frozen: once, not per row
        self._pool = pool
        self._owns_pool = pool is None
        self._given_grader = grader
        self._grader: Grader | None = None  # the local one, made on first use
        self.startup_s = 0.0  # seconds spent starting the pool so far (left out of programs/s)

    @property
    def pool(self) -> Pool:
        """The sandbox pool, started on first use.

        Raises:
            vmpool.VmpoolError: when the pool cannot start (e.g. bubblewrap missing).
            AttributeError: the harness grades with a grader it was given (no pool of its own).
        """
        if self._given_grader is not None:
            raise AttributeError(f"this Harness grades with {type(self._given_grader).__name__}; it has no pool")
        if self._pool is None:
            pool_config = self.config.pool
            logger.info("starting sandbox pool: %s", pool_config)
            started = time.perf_counter()
            self._pool = Pool(pool_config)
            self.startup_s += time.perf_counter() - started
        return self._pool

    @property
    def grader(self) -> GraderLike:
        """What grades: the grader given, else a ``rewards.Grader`` bound to this harness's
        pool, limits and reward config."""
        if self._given_grader is not None:
            return self._given_grader
        if self._grader is None:
            self._grader = Grader(self.pool, default_limits=self.config.limits, **self.config.grader_options())
        return self._grader

    def close(self) -> None:
        """Shut the pool down if this harness started it. Safe to call twice."""
        pool, self._pool, self._grader = self._pool, None, None
        if pool is not None and self._owns_pool:
            pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def verdicts(self, pairs: Sequence[tuple[Problem, Any]]) -> list[Verdict]:
        """Grade ``(Problem, completion)`` pairs in parallel over the pool.

        Args:
            pairs: problems and completions (text or chat messages; the Grader extracts the code).

        Returns:
            One ``rewards.Verdict`` per pair, in order.

        Raises:
            RuntimeError: when the grader does not answer one verdict per pair.
        """
        verdicts = list(self.grader.grade_batch(list(pairs)))
        if len(verdicts) != len(pairs):
            raise RuntimeError(f"grader returned {len(verdicts)} verdicts for {len(pairs)} programs")
        return verdicts

    def to_row(self, sample: Sample, verdict: Verdict, problem_sha: str = "", code: str = "") -> ResultRow:
        """:func:`verdict_row` under this harness's reward config, error length and settings digest."""
        return verdict_row(sample, verdict, self.reward_config, self.config.grading.error_chars,
                           problem_sha=problem_sha, settings_sha=self.settings_sha, code=code)

    def _code(self, sample: Sample, index: Mapping[str, Problem]) -> str:
        """The program the row keeps (details mode only)."""
        if not self.config.grading.details:
            return ""
        return extract_code(sample.completion, index[sample.problem_id].entry_point or "") or ""

    def grade(
        self,
        problems: PathLike | Iterable[Problem],
        samples: PathLike | SampleSet | Iterable[Mapping[str, Any]],
        out: PathLike | None = None,
        *,
        progress: bool = True,
        resume: bool = True,
        problem_format: str = "auto",
    ) -> GradeSummary:
        """Grade every sample not yet in ``out`` and summarise the whole output (its rows in ``.rows``).

        Resuming keeps a stored row only while the sample's completion, its problem and the
        grading settings are the ones it was graded with (each row stores their digests);
        the others are graded again and the summary says how many.

        Args:
            problems: problems file or iterable of ``rewards.Problem``.
            samples: samples JSONL file, a :class:`SampleSet`, or sample records
                (``{"task_id", "completion"}`` mappings).
            out: results file; ``.parquet``/``.pq`` or ``.jsonl``/``.ndjson``; ``None``: nothing
                is written, the rows are only in the summary's ``rows``.
            progress: show a tqdm progress bar.
            resume: keep rows already in ``out`` and skip their samples (False: start over).
            problem_format: format for ``rewards.load_problems`` when ``problems`` is a path.

        Returns:
            The :class:`GradeSummary` over every row in ``out``; ``.rows`` holds them.

        Raises:
            InputError: unreadable problems/samples/output, ``out`` naming an input file, an
                ``out`` holding rows of another run (with ``resume``), or no usable problems.
            vmpool.VmpoolError: when the sandbox pool cannot start (rows flushed so far are kept).
        """
        if out is not None:
            output_format(out)  # a bad output name fails before any work is done
            check_output_is_not_an_input(out, problems=problems, samples=samples)
        index, issues = load_problem_index(problems, problem_format)
        if isinstance(samples, SampleSet):
            sample_set = samples
        elif isinstance(samples, (str, os.PathLike)):
            sample_set = read_samples(samples)
        else:
            sample_set = samples_from_records(samples)
        issues.extend(sample_set.issues)
        if not sample_set.samples:
            skipped = f" ({len(sample_set.issues)} malformed: {sample_set.issues[0]})" if sample_set.issues else ""
            raise InputError(f"no samples to grade{skipped}: expected one "
                             '{"task_id": ..., "completion": ...} object per line', sample_set.path or "<samples>")
        if out is not None:
            check_output_writable(out)
        known, unknown = resolve_task_ids(sample_set.samples, index, sample_set.path or "<samples>")
        issues.extend(unknown)
        issues.sort(key=lambda i: (i.path, i.line))

        store = ResultStore(out, resume=resume)
        problem_shas = {pid: problem_digest(index[pid]) for pid in {s.problem_id for s in known}}
        plan = plan_resume(store, known, problem_shas, self.settings_sha)
        todo = plan.todo
        logger.info("%d samples to grade, %d already in %s", len(todo), plan.kept, out)
        batch = self.config.grading.batch_size
        started, startup_before = time.perf_counter(), self.startup_s
        bar = _progress_bar(len(todo), progress)
        try:
            for start in range(0, len(todo), batch):
                chunk = todo[start : start + batch]
                verdicts = self.verdicts([(index[s.problem_id], s.completion) for s in chunk])
                store.append([self.to_row(s, v, problem_shas[s.problem_id], self._code(s, index))
                              for s, v in zip(chunk, verdicts, strict=True)])
                bar.update(len(chunk))
        finally:
            bar.close()
            store.finalize()
        return summarize(
            store.rows,
            self.config.grading.ks,
            n_graded=len(todo),
            n_resumed=plan.kept,
            n_regraded=plan.n_stale,
            wall_s=time.perf_counter() - started,
            startup_s=self.startup_s - startup_before,
            input_issues=issues,
            out="" if out is None else str(out),
            isolation_lost=self._pool.isolation_lost if self._pool is not None else "",
        )


class _NoBar:
    """Stands in for tqdm when the progress bar is off."""

    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, enabled: bool) -> _Bar:
    """A tqdm bar over programs, or a do-nothing stand-in when disabled."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="prog", desc="grading", dynamic_ncols=True)


def grade(
    problems: PathLike | Iterable[Problem],
    samples: PathLike | SampleSet | Iterable[Mapping[str, Any]],
    out: PathLike | None = None,
    config: HarnessConfig | None = None,
    workers: int | None = None,
    backend: str | None = None,
    progress: bool = True,
    *,
    resume: bool = True,
    problem_format: str = "auto",
) -> GradeSummary:
    """Grade a samples file against problems in a fresh sandbox pool (one-shot :class:`Harness`).

    Args:
        problems: problems file or iterable of ``rewards.Problem``.
        samples: samples JSONL file, :class:`SampleSet`, or sample records.
        out: results file (``.parquet``/``.pq`` or ``.jsonl``/``.ndjson``); resumable. ``None``:
            nothing is written; the rows are in the summary's ``rows``.
        config: harness config (defaults when None).
        workers: pool size override.
        backend: backend override (``namespace`` or ``auto``).
        progress: show a progress bar.
        resume: keep and skip rows already in ``out``.
        problem_format: format for ``rewards.load_problems``.

    Returns:
        The :class:`GradeSummary`.

    Raises:
        ConfigError: invalid overrides.
        InputError: unusable inputs.
        vmpool.VmpoolError: the sandbox pool cannot start.
    """
    with Harness(config, workers=workers, backend=backend) as harness:
        return harness.grade(problems, samples, out, progress=progress, resume=resume, problem_format=problem_format)
