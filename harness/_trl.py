"""Reward functions for TRL's ``GRPOTrainer``: completions graded in sandboxes.

TRL calls a reward function as ``func(prompts=..., completions=..., completion_ids=..., **kwargs)``
where ``kwargs`` holds every dataset column (one value per completion, repeated over the group),
plus ``trainer_state``, ``log_extra`` and ``log_metric``. It wants one ``float`` or ``None`` per
completion back (``None`` becomes NaN and is ignored), and names the function after its
``__name__`` (metric ``rewards/<name>/mean``). An instance whose ``__call__`` is ``async`` is run
on TRL's event loop, concurrently with the other async reward functions.

Where a row's problem comes from (first match wins):

* ``problem`` column (name configurable): the native schema as a JSON string or a dict, e.g.
  ``json.dumps(rewards.problem_to_dict(p))``;
* ``tests`` column: a native ``tests`` object (dict or JSON), with the optional native columns
  ``completion_mode``, ``setup_code``, ``entry_point``, ``time_limit_s``, ``memory_mb``; the
  prompt is the row's prompt;
* ``test`` + ``entry_point`` columns (HumanEval): ``continue`` mode on a text prompt (program =
  prompt + completion), ``program`` mode on a conversational prompt (the completion must hold the
  whole function);
* ``test_list`` column (MBPP, with optional ``test_setup_code`` / ``test_imports``).

The rows of one call are graded with ONE ``Grader.grade_batch`` call, so identical (program,
tests) pairs, frequent within a GRPO group, run once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import statistics
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rewards import Grader, Outcome, Problem, RewardConfig, Verdict, compute_reward, problem_from_dict, problem_from_row
from vmpool import Limits, Pool, PoolConfig, VmpoolError

from ._config import GradingSettings, HarnessConfig
from ._errors import NoTestsError

__all__ = ["AsyncCodeReward", "CodeReward", "RewardBatch"]

logger = logging.getLogger(__name__)

#: ``log_extra`` status of a row whose problem could not be built from its columns.
BAD_PROBLEM = "bad_problem"

# Keyword arguments TRL adds next to the dataset columns.
_TRL_KWARGS = ("trainer_state", "log_extra", "log_metric", "environments")
_NATIVE_OPTIONAL = ("completion_mode", "setup_code", "entry_point", "time_limit_s", "memory_mb", "source")
_CACHE_MAX = 4096


@dataclass(frozen=True)
class RewardBatch:
    """The outcome of one reward call, before it is handed to TRL.

    Attributes:
        rewards: one reward per completion; ``None`` = infrastructure failure or unusable row.
        statuses: per completion, the :class:`rewards.Outcome` value or ``"bad_problem"``.
        tests_passed: per completion, tests passed (``None`` where nothing was graded).
        metrics: the scalars sent to ``log_metric`` (``code/...``).
    """

    rewards: list[float | None]
    statuses: list[str]
    tests_passed: list[int | None]
    metrics: dict[str, float]


class _BrokenPool:
    """Stands in for a pool that could not start: every ``map`` fails as infrastructure.

    Going through ``Grader`` anyway keeps host-side verdicts (no code, syntax error) exact,
    while everything that needed a sandbox becomes ``sandbox_error`` -> ``None``.
    """

    def __init__(self, error: VmpoolError) -> None:
        self.error = error

    def map(self, requests: Sequence[Any]) -> list[Any]:
        raise self.error


def _text_prompt(prompt: Any) -> str | None:
    """The prompt as text, or ``None`` when it is conversational (a list of messages)."""
    return prompt if isinstance(prompt, str) else None


def _as_obj(value: Any) -> Any:
    """A column value that may hold JSON text: decoded; anything else unchanged."""
    if isinstance(value, (str, bytes)):
        return json.loads(value)
    return value


class _CodeRewardBase:
    """Shared machinery of :class:`CodeReward` and :class:`AsyncCodeReward`."""

    __name__: str

    def __init__(
        self,
        reward_config: RewardConfig | None = None,
        limits: Limits | None = None,
        pool_config: PoolConfig | None = None,
        *,
        name: str = "code_reward",
        problem_column: str = "problem",
        pool: Any = None,
        grader_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        self.__name__ = name
        self.reward_config = reward_config or RewardConfig()
        self.limits = limits or Limits()
        self.pool_config = pool_config or PoolConfig()
        self.problem_column = problem_column
        # A binary reward cannot use a stdio sample's cases after its first failure.
        self.grader_options = {"stop_at_first_failure": self.reward_config.kind == "binary",
                               "failing_time_budget": GradingSettings.failing_time_budget,
                               **dict(grader_options or {})}
        self._pool = pool
        self._owns_pool = pool is None
        self._finalizer: weakref.finalize | None = None
        self._lock = threading.Lock()
        self._cache: dict[Any, Problem] = {}

    @classmethod
    def from_config(cls, config: HarnessConfig, **kwargs: Any) -> Any:
        """Build from a :class:`harness.HarnessConfig` (pool, limits and reward sections)."""
        return cls(config.reward, config.limits, config.pool, **{"grader_options": config.grader_options(), **kwargs})

    # ------------------------------------------------------------------ lifecycle
    @property
    def pool(self) -> Any:
        """The sandbox pool, started on first use (not pickled; a copy starts its own).

        Raises:
            vmpool.VmpoolError: the pool cannot start.
        """
        with self._lock:
            if self._pool is None:
                logger.info("%s: starting sandbox pool %s", self.__name__, self.pool_config)
                pool = Pool(self.pool_config)
                self._pool, self._owns_pool = pool, True
                self._finalizer = weakref.finalize(self, pool.close)
            return self._pool

    def close(self) -> None:
        """Shut down the pool if this reward function started it. Safe to call twice."""
        with self._lock:
            pool, self._pool = self._pool, None
            finalizer, self._finalizer = self._finalizer, None
            owned, self._owns_pool = self._owns_pool, True
        if finalizer is not None:
            finalizer.detach()
        if pool is not None and owned:
            pool.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_pool=None, _owns_pool=True, _finalizer=None, _lock=None, _cache={})
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.__name__!r}, reward={self.reward_config.kind!r}, "
                f"pool_size={self.pool_config.size}, started={self._pool is not None})")

    # ------------------------------------------------------------------ rows -> problems
    def _cached(self, key: Any, build: Callable[[], Problem]) -> Problem:
        problem = self._cache.get(key)
        if problem is None:
            problem = build()
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[key] = problem
        return problem

    def _row_problem(self, row: Mapping[str, Any], prompt: Any, index: int) -> Problem:
        """Build row ``index``'s problem from its columns (see the module docstring)."""
        task_id = str(row.get("task_id") or f"row-{index}")
        col = self.problem_column
        if row.get(col) is not None:
            raw = row[col]
            key = ("native", raw if isinstance(raw, str) else json.dumps(raw, sort_keys=True, default=str))
            return self._cached(key, lambda: problem_from_dict(_as_obj(raw), file=f"column {col!r}", line=index))
        if row.get("tests") is not None:
            obj: dict[str, Any] = {"task_id": task_id, "tests": _as_obj(row["tests"])}
            obj.update({k: row[k] for k in _NATIVE_OPTIONAL if row.get(k) is not None})
            if _text_prompt(prompt) is not None:
                obj["prompt"] = prompt
            key = ("tests", json.dumps(obj, sort_keys=True, default=str))
            return self._cached(key, lambda: problem_from_dict(obj, file="column 'tests'", line=index))
        if row.get("test") is not None and row.get("entry_point") is not None:
            text = _text_prompt(prompt)
            obj = {"task_id": task_id, "prompt": text if text is not None else "", "test": row["test"],
                   "entry_point": row["entry_point"]}
            key = ("humaneval", json.dumps(obj, sort_keys=True, default=str))

            def build_humaneval() -> Problem:
                problem = problem_from_row(obj, "humaneval", "column 'test'", index)
                return problem if text is not None else dataclasses.replace(problem, completion_mode="program")

            return self._cached(key, build_humaneval)
        if row.get("test_list") is not None:
            obj = {"task_id": row.get("task_id") or f"row-{index}", "text": _text_prompt(prompt) or "",
                   "test_list": list(_as_obj(row["test_list"]))}
            for k in ("test_setup_code", "test_imports"):
                if row.get(k) is not None:
                    obj[k] = _as_obj(row[k]) if k == "test_imports" else row[k]
            key = ("mbpp", json.dumps(obj, sort_keys=True, default=str))
            return self._cached(key, lambda: problem_from_row(obj, "mbpp", "column 'test_list'", index))
        raise NoTestsError(
            f"row {index} has no tests: expected a {col!r} column (native problem JSON), a 'tests' column, "
            f"HumanEval's 'test' + 'entry_point' or MBPP's 'test_list'; got columns {sorted(row)}"
        )

    # ------------------------------------------------------------------ grading
    def _grade(self, items: list[tuple[Problem, Any]]) -> list[Verdict]:
        """One ``grade_batch`` call for the whole batch; a pool that cannot start -> infra failures."""
        try:
            pool = self.pool
        except VmpoolError as exc:
            logger.error("%s: the sandbox pool cannot start (%s); rewards of this batch are None", self.__name__, exc)
            pool = _BrokenPool(exc)
        verdicts = Grader(pool, self.limits, **self.grader_options).grade_batch(items)
        ran = [v for v in verdicts if v.exec_status is not None]
        if ran and all(v.passed is None for v in ran) and pool is self._pool and self._owns_pool:
            # Nothing that needed a sandbox got one: start from a fresh pool next call.
            logger.error("%s: every sandboxed sample of this batch failed as infrastructure; recycling the pool",
                         self.__name__)
            self.close()
        return verdicts

    def score(self, prompts: Sequence[Any] | None, completions: Sequence[Any], **columns: Any) -> RewardBatch:
        """Grade a batch and return rewards, statuses and metrics, without logging anything.

        Args:
            prompts: one prompt per completion (text or chat messages), or ``None``.
            completions: one completion per row (text or chat messages).
            **columns: dataset columns, each a sequence with one value per completion; TRL's own
                keyword arguments (``trainer_state``, ``log_extra``...) are ignored.

        Raises:
            ValueError: a column's length differs from the number of completions.
            NoTestsError: no row could be matched to tests (no recognised column at all).
        """
        n = len(completions)
        columns = {k: v for k, v in columns.items() if k not in _TRL_KWARGS}
        for key, values in columns.items():
            if not isinstance(values, Sequence) or isinstance(values, (str, bytes)) or len(values) != n:
                raise ValueError(f"column {key!r} must hold one value per completion ({n}), got {values!r:.200}")
        prompt_list = list(prompts) if prompts is not None else [None] * n
        if len(prompt_list) != n:
            raise ValueError(f"got {len(prompt_list)} prompts for {n} completions")

        problems: list[Problem | None] = []
        unmatched: list[NoTestsError] = []
        bad: list[str] = []
        for i in range(n):
            row = {k: v[i] for k, v in columns.items()}
            try:
                problems.append(self._row_problem(row, prompt_list[i], i))
            except (LookupError, ValueError, TypeError) as exc:  # ProblemFormatError, bad JSON: the data's fault
                if isinstance(exc, NoTestsError):
                    unmatched.append(exc)
                bad.append(f"row {i}: {exc}")
                problems.append(None)
        if n and len(unmatched) == n:
            raise unmatched[0]  # no row has tests at all: a wiring mistake, not bad data
        if bad:  # one warning per batch, however many rows
            more = f"; and {len(bad) - 3} more" if len(bad) > 3 else ""
            logger.warning("%s: %d of %d rows have an unusable problem, their rewards are None: %s%s",
                           self.__name__, len(bad), n, "; ".join(bad[:3]), more)

        start = time.monotonic()
        items = [(p, c) for p, c in zip(problems, completions) if p is not None]
        verdicts = iter(self._grade(items) if items else [])
        elapsed = time.monotonic() - start

        rewards: list[float | None] = []
        statuses: list[str] = []
        passed_counts: list[int | None] = []
        graded: list[Verdict] = []
        for problem in problems:
            if problem is None:
                rewards.append(None)
                statuses.append(BAD_PROBLEM)
                passed_counts.append(None)
                continue
            verdict = next(verdicts)
            graded.append(verdict)
            rewards.append(compute_reward(verdict, self.reward_config))
            statuses.append(verdict.outcome.value)
            passed_counts.append(verdict.tests_passed)

        scored = [v for v in graded if v.passed is not None]
        sandboxed = [v.wall_s for v in graded if v.exec_status is not None and v.passed is not None]
        metrics: dict[str, float] = {
            "code/timeouts": float(sum(1 for v in graded if v.outcome is Outcome.TIMEOUT)),
            "code/infra_failures": float(sum(1 for v in graded if v.passed is None)),
            "code/grade_wall_s": elapsed,
        }
        if scored:
            metrics["code/pass_rate"] = sum(1 for v in scored if v.passed) / len(scored)
        if sandboxed:
            metrics["code/sandbox_latency_s"] = float(statistics.median(sandboxed))
        if len(graded) < n:
            metrics["code/bad_problems"] = float(n - len(graded))
        return RewardBatch(rewards, statuses, passed_counts, metrics)

    @staticmethod
    def _publish(batch: RewardBatch, log_extra: Any, log_metric: Any) -> list[float | None]:
        if log_extra is not None:
            log_extra("code_status", list(batch.statuses))
            log_extra("tests_passed", list(batch.tests_passed))
        if log_metric is not None:
            for name, value in batch.metrics.items():
                log_metric(name, value)
        return batch.rewards


class CodeReward(_CodeRewardBase):
    """A TRL reward function that runs completions against their row's tests in sandboxes.

    Picklable (the pool is not pickled: a copy starts its own on first call); the pool starts
    lazily on the first call and stops on :meth:`close` (or at interpreter exit).

    Args:
        reward_config: how verdicts become rewards (default: binary).
        limits: per-program sandbox limits (a problem's own limits override them).
        pool_config: the pool to start on first call (default: one sandbox per CPU).
        name: the ``__name__`` TRL reports it under (``rewards/<name>/mean``).
        problem_column: the column holding the native problem (JSON text or dict).
        pool: an existing pool (anything with ``map``) to use instead; not closed by
            :meth:`close`.
        grader_options: ``rewards.Grader`` keywords; by default a stdio problem's sample
            stops at its first failed case when the reward is binary, and once its failing
            cases used two time limits otherwise (``HarnessConfig.grader_options`` in
            :meth:`from_config`), so one looping completion does not stall the step.

    Example::

        reward = CodeReward(RewardConfig(kind="binary"), pool_config=PoolConfig(size=4))
        trainer = GRPOTrainer(model=..., reward_funcs=[reward], train_dataset=ds, args=...)
        trainer.train()
        reward.close()
    """

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (),
                 completion_ids: Any = None, **kwargs: Any) -> list[float | None]:
        """``(prompts, completions, completion_ids, **columns) -> list[float | None]`` (TRL's contract)."""
        log_extra, log_metric = kwargs.get("log_extra"), kwargs.get("log_metric")
        return self._publish(self.score(prompts, completions, **kwargs), log_extra, log_metric)


class AsyncCodeReward(_CodeRewardBase):
    """:class:`CodeReward` with an ``async`` ``__call__``: grading runs in a worker thread
    (``asyncio.to_thread``), so TRL overlaps it with its other async reward functions.
    Same arguments as :class:`CodeReward`."""

    async def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (),
                       completion_ids: Any = None, **kwargs: Any) -> list[float | None]:
        """``await (prompts, completions, completion_ids, **columns) -> list[float | None]``."""
        log_extra, log_metric = kwargs.get("log_extra"), kwargs.get("log_metric")
        batch = await asyncio.to_thread(self.score, prompts, completions, **kwargs)
        return self._publish(batch, log_extra, log_metric)
