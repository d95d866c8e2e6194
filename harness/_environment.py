"""Multi-turn RL on code with TRL: :class:`CodeEnvironment` for ``GRPOTrainer(environment_factory=...)``.

TRL's contract (``trl.GRPOTrainer``, ``environment_factory``), as this module follows it:

* the factory is called with no argument, once per concurrent rollout (instances are pooled and
  reused across batches: "construct once, reset often"); constructing one starts nothing;
* ``reset(**row)`` is called with the dataset row before generation; a returned string is appended
  to the last message of the row's (conversational) prompt. Here it leases a session (a
  :class:`vmpool.Session`, one per rollout), writes the row's files, runs its setup code and returns
  the task text;
* every public method other than ``reset`` / ``get_reward`` is a tool, described to the model by its
  signature and Google-style docstring: :meth:`~CodeEnvironment.python`,
  :meth:`~CodeEnvironment.bash`, :meth:`~CodeEnvironment.submit`. Their outputs are capped, with a
  visible ``[... N characters truncated ...]`` marker;
* ``get_reward()`` is called once per finished rollout. Here it releases the session, then grades the
  last submission (never submitted: the entry point as the model's own cells define it) against the
  problem's hidden tests in a *fresh grading sandbox*, through the same grading path as
  :class:`harness.CodeReward`. Nothing of the session is trusted: no file, value or output is read
  back from it; only the code the model sent. ``None`` = infrastructure failure (or an unusable
  row), never 0.0; TRL then leaves the rollout out.

``get_reward`` cannot reach TRL's ``log_metric``; pass :class:`CodeEnvironmentGrader` in
``reward_funcs`` as well to grade the whole batch in one pass over the grading pool and log the
``code/*`` and ``env/*`` metrics (it returns ``None`` for every rollout: it is no reward source of
its own, the environments' ``get_reward`` then returns its verdicts without grading again).

Rows: the problem comes from the same columns as :class:`harness.CodeReward` reads (``problem``
native JSON, ``tests``, HumanEval's ``test`` + ``entry_point``, MBPP's ``test_list``), always graded
in ``program`` mode (a submission is the whole program). Optional columns: ``task`` (the task text;
default the problem's prompt), ``files`` (``{path: text}``, or its JSON, written under the session's
home) and ``setup`` (Python run in the session before the model's first call; its names are there
for the model). Neither files nor setup reach the grading sandbox.

All environments of one :class:`EnvironmentConfig` in a process share one session pool and one
grading pool, each started on first use and closed by :func:`close_environments` (or at exit); see
``_env_sessions`` (config, shared pools) and ``_env_code`` (output caps, the fallback program).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import logging
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from rewards import problem_to_dict
from vmpool import CodeResult, CommandResult, Session, SessionError, VmpoolError

from ._env_code import _cap, _defines, _entry_point, _stream, program_from_cells
from ._env_sessions import (
    FROM_CELLS,
    FROM_NOTHING,
    FROM_SUBMISSION,
    NO_SESSION,
    NOT_STARTED,
    SETUP_FAILED,
    UNUSABLE_ROW,
    EnvironmentConfig,
    EpisodeResult,
    RowSetup,
    SetupFailed,
    _release_session,
    _row_setup,
    _Shared,
    _shared_for,
    close_environments,
    environment_stats,
)
from ._errors import NoTestsError

_R = TypeVar("_R", CodeResult, CommandResult)

__all__ = ["CodeEnvironment", "CodeEnvironmentGrader", "EnvironmentConfig", "EpisodeResult", "close_environments",
           "environment_stats"]

logger = logging.getLogger(__name__)

# Columns of a row that are TRL's, not the problem's.
_NOT_COLUMNS = ("prompt", "completion", "completion_ids", "environment")


# --------------------------------------------------------------------------- the environment


class CodeEnvironment:
    """One rollout's computer for ``GRPOTrainer(environment_factory=CodeEnvironment)``.

    Tools (every public method but ``reset`` and ``get_reward``, as TRL's contract says):
    :meth:`python` (a persistent interpreter), :meth:`bash` (a shell whose working directory
    persists) and :meth:`submit` (the solution to grade). :meth:`get_reward` grades the last
    submission in a fresh grading sandbox.

    Args:
        config: sessions, tool caps and grading (default :class:`EnvironmentConfig()`); with a
            non-default config pass ``functools.partial(CodeEnvironment, config)`` as the factory.

    Picklable (a copy holds no session; its next ``reset`` leases one). The session is released
    when the episode's reward is computed, at the next ``reset``, or when the environment is
    garbage-collected; :func:`close_environments` closes everything.
    """

    def __init__(self, config: EnvironmentConfig | None = None) -> None:
        self._config = config or EnvironmentConfig()
        if not isinstance(self._config, EnvironmentConfig):
            raise TypeError(f"config must be an EnvironmentConfig, got {type(self._config).__name__}")
        self._init_episode()

    def _init_episode(self) -> None:
        self._session: Session | None = None
        self._finalizer: weakref.finalize | None = None
        self._setup = RowSetup()
        self._problem_json: str | None = None
        self._entry: str | None = None
        self._broken: tuple[str, str] | None = (NOT_STARTED, "reset was not called")
        self._cells: list[str] = []
        self._submission: str | None = None
        self._calls: Counter[str] = Counter()
        self._starts = 0
        self._result: EpisodeResult | None = None

    # ------------------------------------------------------------------ read-only views (not tools)
    @property
    def config(self) -> EnvironmentConfig:
        """This environment's :class:`EnvironmentConfig`."""
        return self._config

    @property
    def submission(self) -> str | None:
        """The episode's last submission (``None`` before the first :meth:`submit`)."""
        return self._submission

    @property
    def cells(self) -> tuple[str, ...]:
        """The code of every :meth:`python` call of the episode, in order, as the model sent it."""
        return tuple(self._cells)

    @property
    def result(self) -> EpisodeResult | None:
        """How the episode was graded (``None`` until :meth:`get_reward`)."""
        return self._result

    @property
    def has_session(self) -> bool:
        """Whether the environment holds a session now."""
        return self._session is not None

    @property
    def _shared(self) -> _Shared:
        return _shared_for(self._config)

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_session=None, _finalizer=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(session={'yes' if self._session is not None else 'no'}, "
                f"calls={dict(self._calls)}, submitted={self._submission is not None})")

    # ------------------------------------------------------------------ the episode
    def reset(self, **row: Any) -> str:
        """Start an episode on a dataset row: lease a session, install the row's files and setup.

        Args:
            **row: the dataset row (TRL passes every column, ``prompt`` included).

        Returns:
            The task text, which TRL appends to the last message of the row's prompt ("" when
            that message already holds it).

        Raises:
            NoTestsError: the row has no column to take tests from (a wiring mistake).
        """
        self._end_session()
        self._init_episode()
        self._broken = None
        cfg = self._config
        shared = self._shared
        columns = {k: v for k, v in row.items() if k not in _NOT_COLUMNS}
        task = columns.get(cfg.task_column)
        task_text = task if isinstance(task, str) else ""
        try:
            problem = shared.grader._row_problem(columns, task_text or None, 0)
            problem = dataclasses.replace(problem, completion_mode="program")
            self._problem_json = json.dumps(problem_to_dict(problem))
            self._entry = _entry_point(problem)
            self._setup = _row_setup(columns, cfg)
        except NoTestsError:
            raise
        except (LookupError, ValueError, TypeError) as exc:  # ProblemFormatError, bad JSON: the data's fault
            logger.warning("CodeEnvironment: unusable row (%s); its reward is None", exc)
            self._broken = (UNUSABLE_ROW, str(exc))
            return self._observation(row.get("prompt"), task_text)
        if not task_text:
            task_text = problem.prompt or ""
        if cfg.mention_entry_point and self._entry and f"`{self._entry}`" not in task_text:
            task_text = f"{task_text}\n\nYour solution must define `{self._entry}`.".lstrip()
        self._start_session()
        return self._observation(row.get("prompt"), task_text)

    @staticmethod
    def _observation(prompt: Any, task_text: str) -> str:
        last = prompt[-1].get("content") if isinstance(prompt, list) and prompt and isinstance(prompt[-1], dict) \
            else None
        if not isinstance(last, str) or not last:
            return task_text
        if task_text in last:
            return ""
        return ("" if last.endswith(("\n", " ")) else "\n\n") + task_text

    def _start_session(self) -> bool:
        """Start this episode's session (at reset, or after the model's code killed the last one)."""
        shared = self._shared
        self._starts += 1
        try:
            session = shared.start_session(self._setup)
        except SetupFailed as exc:
            logger.warning("CodeEnvironment: the row's setup failed (%s); its reward is None", exc)
            self._broken = (SETUP_FAILED, str(exc))
            return False
        except VmpoolError as exc:
            logger.error("CodeEnvironment: no session could start (%s); the episode's reward is None", exc)
            self._broken = (NO_SESSION, str(exc))
            return False
        self._session = session
        self._finalizer = weakref.finalize(self, _release_session, shared, session)
        return True

    def _end_session(self) -> None:
        session, self._session = self._session, None
        finalizer, self._finalizer = self._finalizer, None
        if finalizer is not None:
            finalizer.detach()
        if session is not None:
            self._shared.release(session)

    def _live_session(self) -> Session | str:
        """The session to run a call in, or the error text to answer with."""
        if self._broken is not None:
            return f"Error: no sandbox is available for this task ({self._broken[1]})."
        if self._session is None or self._session.closed:
            if self._session is not None:
                self._end_session()
            if self._starts >= self._config.max_session_starts:
                return "Error: the session stopped and no new one can be started for this task."
            if not self._start_session():
                return "Error: the session stopped and could not be restarted."
        assert self._session is not None
        return self._session

    def _count(self, tool: str) -> str | None:
        """Count a python/bash call; the error text when the episode's cap is reached."""
        if self._calls["python"] + self._calls["bash"] >= self._config.max_tool_calls:
            return (f"Error: this task's limit of {self._config.max_tool_calls} python/bash calls is reached; "
                    "submit your solution.")
        self._calls[tool] += 1
        return None

    def _died(self, exc: SessionError) -> str:
        self._end_session()
        return f"Error: the session stopped: {exc}. The next call starts a fresh session."

    # ------------------------------------------------------------------ tools
    def _tool(self, kind: str, arg: object, run: Callable[[Session], _R]) -> _R | str:
        """What python and bash share: the argument's type, the call cap, a live session, the call
        and its count; the call's result, or the text the model gets instead."""
        if not isinstance(arg, str):
            what = "code" if kind == "python" else "command"
            return f"Error: {what} must be a string, got {type(arg).__name__}."
        refused = self._count(kind)
        if refused:
            return refused
        if kind == "python":
            self._cells.append(arg)
        session = self._live_session()
        if isinstance(session, str):
            return session
        try:
            result = run(session)
        except SessionError as exc:
            return self._died(exc)
        self._shared.count(f"{kind}_calls")
        return result

    def python(self, code: str) -> str:
        """Run Python code in a persistent interpreter, like a notebook cell.

        Variables, imports and functions persist from call to call.

        Args:
            code: The Python code to run.

        Returns:
            The code's printed output, the value of its last expression, and any error.
        """
        result = self._tool("python", code, lambda s: s.run_code(code, timeout=self._config.tool_timeout_s))
        if isinstance(result, str):
            return result
        parts = _outputs(result)
        if result.timed_out:
            parts.append(f"TimeoutError: the code ran past {self._config.tool_timeout_s:g} s and was interrupted.")
        elif result.error is not None:
            parts.append(result.error.traceback.strip() or f"{result.error.name}: {result.error.value}")
        if result.text is not None and result.error is None:
            parts.append(result.text)
        text = "\n".join(p.rstrip("\n") for p in parts)
        return _cap(text, self._config.max_output_chars) if text.strip() else "(no output)"

    def bash(self, command: str) -> str:
        """Run a shell command with bash; the working directory persists from call to call.

        Args:
            command: The command line to run.

        Returns:
            The command's output and its exit code.
        """
        result = self._tool("bash", command, lambda s: s.run(command, timeout=self._config.tool_timeout_s))
        if isinstance(result, str):
            return result
        parts = _outputs(result)
        if result.timed_out:
            parts.append(f"[timed out after {self._config.tool_timeout_s:g} s; the command was killed]")
        else:
            parts.append(f"[exit code {result.exit_code}]")
        return _cap("\n".join(p.rstrip("\n") for p in parts), self._config.max_output_chars)

    def submit(self, code: str) -> str:
        """Submit your solution: the complete program, graded against hidden tests when the task ends.

        Only the last submission counts; it is not run now.

        Args:
            code: The complete Python source of the solution.

        Returns:
            A confirmation, with a warning when the code does not parse or lacks the required function.
        """
        if not isinstance(code, str):
            return f"Error: code must be a string, got {type(code).__name__}."
        self._calls["submit"] += 1
        self._submission = code
        notes = []
        try:
            tree = ast.parse(code)
        except (SyntaxError, ValueError) as exc:
            notes.append(f"warning: it does not parse ({type(exc).__name__}: {exc})")
        except (RecursionError, MemoryError):
            notes.append("warning: it does not parse")
        else:
            if self._entry and not any(_defines(node, self._entry) for node in tree.body):
                notes.append(f"warning: it does not define `{self._entry}`")
        lines = code.count("\n") + (0 if code.endswith("\n") or not code else 1)
        return "; ".join([f"Submitted ({lines} lines). It is graded when the task ends"] + notes) + "."

    # ------------------------------------------------------------------ reward
    def get_reward(self) -> float | None:
        """Release the session and grade the episode in a fresh grading sandbox (once per episode).

        Returns:
            The reward of the last submission (never submitted: of the entry point as the
            model's cells define it; nothing usable: of empty code); ``None`` on an
            infrastructure failure or an unusable row, never 0.0 for those.
        """
        self._end_session()
        if self._result is None:
            _grade([self])
        assert self._result is not None
        return self._result.reward

    def _program(self) -> tuple[str, str]:
        """The code to grade and where it came from (never anything read back from the session)."""
        if self._submission is not None:
            return self._submission, FROM_SUBMISSION
        program = program_from_cells(self._cells, self._entry)
        if program is not None:
            return program, FROM_CELLS
        return "", FROM_NOTHING


# --------------------------------------------------------------------------- grading


def _outputs(result: CodeResult | CommandResult) -> list[str]:
    """A call's stdout, then its stderr (after ``[stderr]``), each with the sandbox's own cut marked."""
    parts = []
    if result.stdout or result.stdout_truncated:
        parts.append(_stream(result.stdout, result.stdout_truncated))
    if result.stderr or result.stderr_truncated:
        parts.append("[stderr]\n" + _stream(result.stderr, result.stderr_truncated))
    return parts


def _grade(envs: Sequence[CodeEnvironment]) -> dict[str, float]:
    """Grade the episodes of ``envs`` not graded yet, one ``score`` call per config; set their
    ``result``. Returns the batch's metrics (``code/*`` from :meth:`CodeReward.score`, ``env/*``)."""
    metrics: dict[str, float] = {}
    groups: dict[EnvironmentConfig, list[CodeEnvironment]] = {}
    for env in envs:
        if env._result is None:
            groups.setdefault(env._config, []).append(env)
    for config, group in groups.items():
        shared = _shared_for(config)
        todo = []
        for env in group:
            env._end_session()
            if env._broken is not None or env._problem_json is None:  # nothing to grade against: None
                status, detail = env._broken or (NOT_STARTED, "")
                env._result = EpisodeResult(None, status, None, FROM_NOTHING, dict(env._calls), env._starts, detail)
            else:
                todo.append(env)
        if todo:
            programs = [env._program() for env in todo]
            batch = shared.grader.score(None, [code for code, _ in programs],
                                        **{config.problem_column: [env._problem_json for env in todo]})
            for env, (_, source), reward, status, passed in zip(todo, programs, batch.rewards, batch.statuses,
                                                                batch.tests_passed):
                env._result = EpisodeResult(reward, status, passed, source, dict(env._calls), env._starts)
            for key, value in batch.metrics.items():  # one config per batch is the rule; else the last wins
                metrics[key] = value
        shared.count("episodes_graded", len(group))
    results = [env._result for env in envs if env._result is not None]
    if results:
        n = len(results)
        metrics.update({
            "env/tool_calls": sum(sum(r.calls.values()) for r in results) / n,
            "env/python_calls": sum(r.calls.get("python", 0) for r in results) / n,
            "env/bash_calls": sum(r.calls.get("bash", 0) for r in results) / n,
            "env/submitted": sum(1 for r in results if r.graded_from == FROM_SUBMISSION) / n,
            "env/graded_from_cells": sum(1 for r in results if r.graded_from == FROM_CELLS) / n,
            "env/session_restarts": float(sum(max(r.session_starts - 1, 0) for r in results)),
            "env/unusable": float(sum(1 for r in results if r.reward is None and r.tests_passed is None)),
        })
    return metrics


class CodeEnvironmentGrader:
    """A ``reward_funcs`` entry to pass next to ``environment_factory=CodeEnvironment``.

    Grades every rollout of the batch in one pass over the grading pool (the environments'
    ``get_reward`` then return those verdicts without grading again) and logs what
    :class:`harness.CodeReward` logs, through TRL's ``log_metric`` / ``log_extra``: ``code/*``
    (pass rate, timeouts, infrastructure failures, latencies), ``env/*`` (tool calls, submissions,
    episodes graded from cells) and the completion-table columns ``code_status``, ``tests_passed``,
    ``graded_from``. It returns ``None`` for every rollout: it is no reward source of its own (the
    reward is the environment's, logged as ``rewards/CodeEnvironment/mean``; TRL logs this one's
    mean as NaN).

    Args:
        name: the ``__name__`` TRL reports it under.
    """

    def __init__(self, name: str = "code_env_grading") -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        self.__name__ = name

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (),
                 completion_ids: Any = None, **kwargs: Any) -> list[float | None]:
        """``(prompts, completions, completion_ids, environments=..., **columns) -> [None, ...]``."""
        environments = kwargs.get("environments") or []
        n = len(completions)
        if len(environments) != n:
            raise ValueError(f"{self.__name__} needs TRL's `environments` (one per completion: pass "
                             f"environment_factory=CodeEnvironment); got {len(environments)} for {n} completions")
        ours = [env for env in environments if isinstance(env, CodeEnvironment)]
        metrics = _grade(ours)
        log_extra, log_metric = kwargs.get("log_extra"), kwargs.get("log_metric")
        if log_extra is not None:
            results = [env.result if isinstance(env, CodeEnvironment) else None for env in environments]
            log_extra("code_status", [r.status if r else None for r in results])
            log_extra("tests_passed", [r.tests_passed if r else None for r in results])
            log_extra("graded_from", [r.graded_from if r else None for r in results])
        if log_metric is not None:
            for key, value in metrics.items():
                log_metric(key, value)
        return [None] * n
