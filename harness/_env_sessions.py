"""Configuration of :class:`harness.CodeEnvironment` and what its instances share in a process.

:class:`EnvironmentConfig` (sessions, tool caps, grading), :class:`EpisodeResult` (how an episode was
graded), :class:`RowSetup` (what a session holds before the model's first call) and the process-wide
session pool and grader every environment of one config shares (started on first use, closed by
:func:`close_environments` or at exit). ``_Shared.start_session`` is the one place a rollout's session
comes from.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rewards import RewardConfig
from vmpool import Limits, PoolConfig, Session, SessionCheckpoint, SessionConfig, SessionError, SessionPool

from ._errors import ConfigError
from ._trl import CodeReward

__all__ = ["EnvironmentConfig", "EpisodeResult", "RowSetup", "SetupFailed", "close_environments",
           "environment_stats"]

logger = logging.getLogger(__name__)

#: What :meth:`CodeEnvironment.get_reward` graded (``EpisodeResult.graded_from``).
FROM_SUBMISSION, FROM_CELLS, FROM_NOTHING = "submission", "cells", "nothing"
#: ``EpisodeResult.status`` of an episode that could not be graded at all (reward ``None``).
UNUSABLE_ROW, NO_SESSION, SETUP_FAILED, NOT_STARTED = "bad_problem", "no_session", "setup_failed", "not_started"


def _help(text: str, **kwargs: Any) -> Any:
    return field(metadata={"help": text}, **kwargs)


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(message, key=key)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class EnvironmentConfig:
    """How :class:`CodeEnvironment` runs sessions, caps tools and grades; every field's help is in its metadata.

    Raises:
        ConfigError: a value is out of range (``key`` names the field).
    """

    session: SessionConfig = _help("each rollout's session (vmpool.SessionConfig)", default_factory=SessionConfig)
    warm_sessions: int = _help("sessions kept started and idle, so a reset is a queue pop; >= 1", default=2)
    pool: PoolConfig = _help("the grading sandboxes (vmpool.PoolConfig); fresh ones, never the sessions",
                             default_factory=PoolConfig)
    limits: Limits = _help("per-program limits when grading (vmpool.Limits)", default_factory=Limits)
    reward: RewardConfig = _help("how verdicts become rewards (rewards.RewardConfig)", default_factory=RewardConfig)
    tool_timeout_s: float = _help("wall-clock limit of one python or bash call, seconds; > 0", default=30.0)
    setup_timeout_s: float = _help("wall-clock limit of a row's setup code, seconds; > 0", default=60.0)
    max_output_chars: int = _help(
        "longest tool output handed back to the model, characters (head and tail kept, a marker in between); >= 64",
        default=4000)
    max_tool_calls: int = _help(
        "python + bash calls one episode may run; past it they answer with an error and run nothing; >= 1",
        default=64)
    max_session_starts: int = _help(
        "sessions one episode may start (a session the model's code killed is replaced, its state lost); >= 1",
        default=3)
    problem_column: str = _help("the column holding the native problem (JSON text or dict)", default="problem")
    task_column: str = _help("the column holding the task text (default: the problem's prompt)", default="task")
    files_column: str = _help("the column holding {path: text} written into the session (or its JSON)",
                              default="files")
    setup_column: str = _help("the column holding Python code run in the session before the first call",
                              default="setup")
    mention_entry_point: bool = _help(
        "append 'Your solution must define `NAME`.' to the task text when it does not name the entry point",
        default=True)
    fork_groups: bool = _help(
        "rollouts of one row (a GRPO group) start from one checkpoint of its prepared session: its files and "
        "setup run once per row, each rollout gets a fork; rows with neither take a warm session", default=True)
    prepared_rows: int = _help("checkpoints of prepared rows kept for forking (least recently used dropped); >= 1",
                               default=32)

    def __post_init__(self) -> None:
        for name, kind in (("session", SessionConfig), ("pool", PoolConfig), ("limits", Limits),
                           ("reward", RewardConfig)):
            _require(isinstance(getattr(self, name), kind), name,
                     f"must be a {kind.__module__.split('.')[0]}.{kind.__name__}, got {getattr(self, name)!r}")
        for name, least in (("warm_sessions", 1), ("max_output_chars", 64), ("max_tool_calls", 1),
                            ("max_session_starts", 1), ("prepared_rows", 1)):
            value = getattr(self, name)
            _require(_is_int(value) and value >= least, name, f"must be an integer >= {least}, got {value!r}")
        for name in ("tool_timeout_s", "setup_timeout_s"):
            value = getattr(self, name)
            _require(isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0, name,
                     f"must be a number > 0, got {value!r}")
        for name in ("problem_column", "task_column", "files_column", "setup_column"):
            value = getattr(self, name)
            _require(isinstance(value, str) and bool(value), name, f"must be a non-empty string, got {value!r}")
        for name in ("mention_entry_point", "fork_groups"):
            _require(isinstance(getattr(self, name), bool), name, f"must be true or false, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class EpisodeResult:
    """How one episode was graded.

    Attributes:
        reward: the reward; ``None`` = infrastructure failure or an unusable row, never a 0.0.
        status: the :class:`rewards.Outcome` value, or ``bad_problem`` / ``no_session`` /
            ``setup_failed`` / ``not_started`` when there was nothing to grade against.
        tests_passed: tests passed (``None`` where nothing was graded).
        graded_from: ``submission`` (the last ``submit``), ``cells`` (never submitted: the entry
            point as the model's cells define it) or ``nothing`` (graded as empty code).
        calls: tool calls of the episode by tool name (``python``, ``bash``, ``submit``).
        session_starts: sessions the episode started (more than one: the model's code killed one).
        detail: why there was nothing to grade against, when so.
    """

    reward: float | None
    status: str
    tests_passed: int | None
    graded_from: str
    calls: Mapping[str, int]
    session_starts: int
    detail: str = ""


# --------------------------------------------------------------------------- row set-up


@dataclass(frozen=True)
class RowSetup:
    """What a session holds before the model's first call: the row's files and setup code.

    Hashable: the key of a row's prepared checkpoint, which the rollouts of its group fork.
    """

    files: tuple[tuple[str, bytes], ...] = ()
    code: str = ""


class SetupFailed(Exception):
    """The row's setup did not run (its code raised, or a file could not be written)."""


def _row_setup(row: Mapping[str, Any], config: EnvironmentConfig) -> RowSetup:
    """The row's :class:`RowSetup`; a malformed ``files`` / ``setup`` column raises ``ValueError``."""
    raw_files = row.get(config.files_column)
    files: list[tuple[str, bytes]] = []
    if raw_files is not None:
        if isinstance(raw_files, (str, bytes)):
            try:
                raw_files = json.loads(raw_files)
            except ValueError as exc:
                raise ValueError(f"column {config.files_column!r} is not JSON: {exc}") from None
        if not isinstance(raw_files, Mapping):
            raise ValueError(f"column {config.files_column!r} must map paths to contents, got "
                             f"{type(raw_files).__name__}")
        for path, data in raw_files.items():
            if not isinstance(path, str) or not path or not isinstance(data, (str, bytes)):
                raise ValueError(f"column {config.files_column!r}: {path!r} must be a path mapped to text or bytes")
            files.append((path, data.encode() if isinstance(data, str) else bytes(data)))
    code = row.get(config.setup_column)
    if code is not None and not isinstance(code, str):
        raise ValueError(f"column {config.setup_column!r} must be Python code (a string), got {type(code).__name__}")
    return RowSetup(tuple(sorted(files)), code or "")


# --------------------------------------------------------------------------- shared resources


class _Shared:
    """What every environment of one config shares in a process: the session pool and the grader.

    Both start on first use. ``leased`` holds the sessions environments hold now (released at
    ``get_reward``, at the next ``reset`` or when the environment is garbage-collected).
    """

    def __init__(self, config: EnvironmentConfig) -> None:
        self.config = config
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self._sessions: SessionPool | None = None
        self.grader = CodeReward(config.reward, config.limits, config.pool, name="code_env",
                                 problem_column=config.problem_column)
        self.leased: set[Session] = set()
        self.stats: Counter[str] = Counter()  # tool calls run, sessions started, episodes graded
        # Prepared rows, oldest first: the checkpoint of a session that ran the row's set-up.
        self.prepared: OrderedDict[RowSetup, SessionCheckpoint] = OrderedDict()
        self.preparing: dict[RowSetup, threading.Lock] = {}

    def count(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.stats[key] += n

    def session_pool(self) -> SessionPool:
        with self.lock:
            if self._sessions is None:
                self._sessions = SessionPool(self.config.session, warm=self.config.warm_sessions)
            return self._sessions

    def start_session(self, setup: RowSetup) -> Session:
        """A session of its own for one rollout, prepared with the row's files and setup code.

        The one place a rollout's session comes from. With ``fork_groups``, a row's set-up runs
        once: its session is checkpointed, and every rollout of the row gets a fork of it.

        Raises:
            VmpoolError: no session could be started (infrastructure).
            SetupFailed: the row's setup failed (the row's fault); the session is released.
        """
        if self.config.fork_groups and (setup.files or setup.code):
            forked = self._fork_prepared(setup)
            if forked is not None:
                return forked
        return self._prepare(setup)

    def _track(self, session: Session) -> Session:
        with self.lock:
            self.leased.add(session)
        return session

    def _fork_prepared(self, setup: RowSetup) -> Session | None:
        """A fork of the row's prepared checkpoint (made now if it is the row's first rollout);
        ``None`` when the state cannot be checkpointed (a setup that leaves threads running)."""
        with self.lock:
            gate = self.preparing.setdefault(setup, threading.Lock())
        with gate:  # the group's other rollouts wait for the first one's set-up, then fork
            with self.lock:
                cp = self.prepared.get(setup)
                if cp is not None:
                    self.prepared.move_to_end(setup)
            if cp is not None and not cp.closed:
                try:
                    (session,) = cp.fork(1)
                except SessionError as exc:  # the checkpoint's sandbox is gone: prepare the row again
                    logger.info("forking a prepared row failed (%s); preparing it again", exc)
                else:
                    self.count("sessions_forked")
                    return self._track(session)
            first = self._prepare(setup)
            try:
                cp = first.checkpoint()
            except SessionError as exc:
                if first.closed:
                    self.release(first)
                    raise
                logger.info("a prepared row cannot be checkpointed (%s): its rollouts prepare their own", exc)
                return first
            with self.lock:
                old = self.prepared.pop(setup, None)
                self.prepared[setup] = cp
                evicted = [self.prepared.popitem(last=False) for _ in range(len(self.prepared) -
                                                                            self.config.prepared_rows)]
                for key, _ in evicted:
                    self.preparing.pop(key, None)
            for stale in [old, *(cp for _, cp in evicted)]:
                if stale is not None:
                    stale.close()
            return first

    def _prepare(self, setup: RowSetup) -> Session:
        session = self.session_pool().lease()
        with self.lock:
            self.leased.add(session)
            self.stats["sessions_started"] += 1
        try:
            for path, data in setup.files:
                session.write_file(path, data)
            if setup.code:
                result = session.run_code(setup.code, timeout=self.config.setup_timeout_s)
                if result.error is not None:
                    raise SetupFailed(f"the setup code raised {result.error.name}: {result.error.value}")
        except SessionError as exc:
            died = session.closed  # else the session refused: a file too large, a bad path (the row's fault)
            self.release(session)
            if died:
                raise
            raise SetupFailed(str(exc)) from exc
        except BaseException:
            self.release(session)
            raise
        return session

    def release(self, session: Session) -> None:
        with self.lock:
            self.leased.discard(session)
            pool = self._sessions
        if pool is not None:
            pool.release(session)
        else:
            session.close()

    def close(self) -> None:
        with self.lock:
            pool, self._sessions = self._sessions, None
            leased, self.leased = list(self.leased), set()
            prepared, self.prepared = list(self.prepared.values()), OrderedDict()
        for cp in prepared:
            cp.close()
        for session in leased:
            session.close()
        if pool is not None:
            pool.close()
        self.grader.close()


_SHARED: dict[EnvironmentConfig, _Shared] = {}
_SHARED_LOCK = threading.Lock()


def _shared_for(config: EnvironmentConfig) -> _Shared:
    with _SHARED_LOCK:
        shared = _SHARED.get(config)
        if shared is None or shared.pid != os.getpid():  # a forked child starts its own (the parent's are its)
            shared = _SHARED[config] = _Shared(config)
        return shared


def environment_stats() -> dict[str, int]:
    """Counters of this process's environments since their pools started (all configs together).

    Keys: ``python_calls`` / ``bash_calls`` (calls that ran in a session), ``sessions_started`` (set up
    from a warm session), ``sessions_forked`` (forks of a row's prepared checkpoint),
    ``episodes_graded`` and ``sessions_leased`` (sessions environments hold now: 0 once every
    episode's reward is computed).
    """
    with _SHARED_LOCK:
        shared_all = [s for s in _SHARED.values() if s.pid == os.getpid()]
    total: Counter[str] = Counter({"python_calls": 0, "bash_calls": 0, "sessions_started": 0, "sessions_forked": 0,
                                   "episodes_graded": 0})
    leased = 0
    for shared in shared_all:
        with shared.lock:
            total.update(shared.stats)
            leased += len(shared.leased)
    return {**total, "sessions_leased": leased}


def close_environments() -> None:
    """Close every session and grading pool the environments of this process started. Idempotent.

    Environments still in use start new ones on their next ``reset``. Also run at exit.
    """
    with _SHARED_LOCK:
        shared_all = list(_SHARED.values())
        _SHARED.clear()
    for shared in shared_all:
        shared.close()


atexit.register(close_environments)


def _release_session(shared: _Shared, session: Session) -> None:
    """Finalizer of an environment discarded while it holds a session (holds no reference to it)."""
    shared.release(session)
