"""Sessions over Ray: one session-owning actor per node, and session handles any driver can use.

:class:`~harness.ray._session_actor.SessionActorImpl` runs in a named actor per eligible node (``harness-sessions-<node id>``
in a namespace, ``lifetime="detached"`` by default), pinned to its node with a hard
``NodeAffinitySchedulingStrategy``. It keeps a ``vmpool.SessionPool`` warm and a dict of the
sessions it leased, by id; every session method reaches it through one generic
``call(session_id, epoch, method, args, kwargs)``, so a method ``vmpool.Session`` gains is one
thin method on :class:`RaySession` away. A result that is a ``vmpool.Session`` (or a list of
them, e.g. from ``fork``) stays on the actor, leased there, and comes back as handles.

:class:`RaySessions` (driver side) starts or finds those actors and leases a session on a
chosen node or the least loaded one. :class:`RaySession` is the handle: actor name, namespace,
session id and the actor's epoch, nothing live, so it pickles into any process connected to
the cluster (it connects to the cluster it came from when the process has no Ray yet).

Failures: a session whose actor or node is gone (``ActorDiedError``, ``ActorUnavailableError``,
a node removed, a restarted actor that does not hold it) or that does not answer within the
call's own timeout plus ``transport_slack_s`` raises :class:`SessionLostError`; it never hangs.
An unknown or closed session id on a live actor is a plain ``vmpool.SessionError`` ("the session
is closed..."). Sessions no call used for ``idle_timeout_s`` are closed by the actor, so the
sessions of a driver that died do not leak. ``ray`` is imported only when this is used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from vmpool import (
    CodeResult,
    CommandResult,
    FileInfo,
    SessionError,
)

from .._errors import HarnessError
from ._actor import ensure_ray
from ._support import _short

__all__ = ["ACTOR_PREFIX", "RaySession", "RaySessionCheckpoint", "SessionLostError", "actor_name", "lost_errors",
           "ray_get"]

logger = logging.getLogger(__name__)

ACTOR_PREFIX = "harness-sessions-"


class SessionLostError(SessionError, HarnessError):
    """The session is gone with its Ray actor or node (died, removed, killed, restarted without
    it), or the actor did not answer within the call's timeout plus the transport slack. Its state
    is lost; the handle raises this again on every later call. A ``vmpool.SessionError``."""


@dataclass(frozen=True)
class _NewSession:
    """A session the actor leased as the result of a call (``fork``): the driver makes a handle."""

    session_id: str


@dataclass(frozen=True)
class _NewCheckpoint:
    """A checkpoint a call made (``checkpoint``): it stays on the actor, the driver gets a handle."""

    checkpoint_id: str


def actor_name(node_id: str) -> str:
    return f"{ACTOR_PREFIX}{node_id}"


def lost_errors() -> tuple[type[BaseException], ...]:
    import ray.exceptions as rex

    return (rex.RayActorError, rex.ActorUnschedulableError, rex.NodeDiedError, rex.ObjectLostError,
            rex.WorkerCrashedError, rex.LocalRayletDiedError)


def ray_get(ref: Any, deadline_s: float, what: str) -> Any:
    """``ray.get`` within ``deadline_s``; the actor's own exceptions are re-raised as themselves.

    Raises:
        SessionLostError: the actor or its node is gone, or no answer came in time.
    """
    import ray

    try:
        return ray.get(ref, timeout=deadline_s)
    except ray.exceptions.GetTimeoutError:
        try:
            ray.cancel(ref)
        except Exception:  # pragma: no cover - best effort
            pass
        raise SessionLostError(f"{what}: no answer within {deadline_s:g} s (the call's timeout plus the transport "
                               "slack); its session actor or node is unresponsive, the session counts as lost")
    except lost_errors() as exc:
        raise SessionLostError(f"{what}: its session actor or node is gone ({_short(exc)}); its state is lost") from exc
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, BaseException):
            raise exc.cause from None
        raise


class RaySession:
    """A handle on a session leased on a node's session actor: same methods and results as
    ``vmpool.Session``. Picklable (names only); usable from any process connected to the cluster.

    Raises (every method):
        SessionLostError: the session's actor or node is gone, or it did not answer in time.
        vmpool.SessionError: the session is closed (closed, expired) or died on its own.
    """

    def __init__(self, actor_name: str, namespace: str, session_id: str, epoch: str, node_id: str = "", *,
                 address: str | None = None, transport_slack_s: float = 30.0) -> None:
        self.actor_name = actor_name
        self.namespace = namespace
        self.session_id = session_id
        self.epoch = epoch
        self.node_id = node_id
        self.address = address
        self.transport_slack_s = transport_slack_s
        self._lost = ""
        self._actor: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_actor"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._actor = None

    def __repr__(self) -> str:
        return f"RaySession({self.session_id[:12]} on node {self.node_id[:8]}{', lost' if self._lost else ''})"

    def _handle(self) -> Any:
        import ray

        if self._actor is None:
            if not ray.is_initialized():
                ensure_ray(self.address)
            try:
                self._actor = ray.get_actor(self.actor_name, namespace=self.namespace)
            except ValueError as exc:
                raise self._lose(f"its session actor {self.actor_name} is gone ({exc}); its state is lost")
        return self._actor

    def _lose(self, why: str) -> SessionLostError:
        self._lost = self._lost or f"session {self.session_id[:12]} is lost: {why}"
        return SessionLostError(self._lost)

    def _call(self, method: str, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None,
              timeout: float = 30.0) -> Any:
        """``method(*args, **kwargs)`` on the session; waits at most ``timeout`` + the transport slack."""
        if self._lost:
            raise SessionLostError(self._lost)
        ref = self._handle().call.remote(self.session_id, self.epoch, method, tuple(args), dict(kwargs or {}))
        try:
            value = ray_get(ref, timeout + self.transport_slack_s, f"session {self.session_id[:12]}.{method}")
        except SessionLostError as exc:
            self._lost = self._lost or str(exc)
            self._close_quietly()
            raise
        return self._import(value)

    def _import(self, value: Any) -> Any:
        def wrap(v: Any) -> Any:
            return RaySession(self.actor_name, self.namespace, v.session_id, self.epoch, self.node_id,
                              address=self.address, transport_slack_s=self.transport_slack_s)

        if isinstance(value, _NewSession):
            return wrap(value)
        if isinstance(value, _NewCheckpoint):
            return RaySessionCheckpoint(self, value.checkpoint_id)
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, _NewSession) for v in value):
            return type(value)(wrap(v) for v in value)
        return value

    def _close_quietly(self) -> None:
        """After a lost answer: ask the actor (if any) to drop the session; never waits."""
        try:
            if self._actor is not None:
                self._actor.close_session.remote(self.session_id)
        except Exception:  # pragma: no cover - the actor is gone
            pass

    # ------------------------------------------------------- vmpool.Session's methods
    def run_code(self, code: str, *, timeout: float = 30.0, context: str = "default") -> CodeResult:
        """:meth:`vmpool.Session.run_code` on the session's node."""
        result: CodeResult = self._call("run_code", (code,), {"timeout": timeout, "context": context}, timeout)
        return result

    def run(self, command: str, *, timeout: float = 30.0) -> CommandResult:
        """:meth:`vmpool.Session.run` on the session's node."""
        result: CommandResult = self._call("run", (command,), {"timeout": timeout}, timeout)
        return result

    def restart_context(self, context: str = "default") -> None:
        """:meth:`vmpool.Session.restart_context`."""
        self._call("restart_context", (context,), {}, 10.0)

    def write_file(self, path: str, data: str | bytes) -> None:
        """:meth:`vmpool.Session.write_file`."""
        self._call("write_file", (path, data), {}, 30.0)

    def read_file(self, path: str) -> bytes:
        """:meth:`vmpool.Session.read_file`."""
        data: bytes = self._call("read_file", (path,), {}, 30.0)
        return data

    def list_dir(self, path: str = ".") -> list[FileInfo]:
        """:meth:`vmpool.Session.list_dir`."""
        entries: list[FileInfo] = self._call("list_dir", (path,), {}, 30.0)
        return entries

    def checkpoint(self) -> RaySessionCheckpoint:
        """:meth:`vmpool.Session.checkpoint`: the checkpoint stays on the session's node."""
        cp: RaySessionCheckpoint = self._call("checkpoint", (), {}, 90.0)
        return cp

    def fork(self, n: int = 1) -> list[RaySession]:
        """:meth:`vmpool.Session.fork`: ``n`` sessions on the same node."""
        forks: list[RaySession] = self._call("fork", (n,), {}, 90.0 + 5.0 * n)
        return forks

    def pause(self) -> None:
        """:meth:`vmpool.Session.pause`."""
        self._call("pause", (), {}, 30.0)

    def resume(self) -> None:
        """:meth:`vmpool.Session.resume`."""
        self._call("resume", (), {}, 30.0)

    @property
    def closed(self) -> bool:
        """True once closed, expired, died or lost (asks the actor: one round trip)."""
        if self._lost:
            return True
        try:
            return not ray_get(self._handle().is_open.remote(self.session_id), self.transport_slack_s, "is_open")
        except SessionLostError as exc:
            self._lost = self._lost or str(exc)
            return True

    def close(self) -> None:
        """Close the session on its node. Idempotent; a lost session is already gone (no error)."""
        if self._lost:
            return
        try:
            ray_get(self._handle().close_session.remote(self.session_id), self.transport_slack_s, "close")
        except SessionLostError as exc:
            self._lost = self._lost or str(exc)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class RaySessionCheckpoint:
    """A handle on a :class:`vmpool.SessionCheckpoint` held by a node's session actor (picklable:
    names only). :meth:`fork` gives :class:`RaySession` handles on the same node.

    Raises (every method):
        SessionLostError: the checkpoint's actor or node is gone.
        vmpool.SessionError: the checkpoint is closed.
    """

    def __init__(self, session: RaySession, checkpoint_id: str) -> None:
        self._anchor = RaySession(session.actor_name, session.namespace, "", session.epoch, session.node_id,
                                  address=session.address, transport_slack_s=session.transport_slack_s)
        self.checkpoint_id = checkpoint_id

    def __repr__(self) -> str:
        return f"RaySessionCheckpoint({self.checkpoint_id[:12]} on node {self._anchor.node_id[:8]})"

    def fork(self, n: int = 1) -> list[RaySession]:
        """``n`` sessions (1..64) with the checkpoint's state, on its node."""
        ref = self._anchor._handle().fork_checkpoint.remote(self.checkpoint_id, self._anchor.epoch, n)
        forks: list[RaySession] = self._anchor._import(ray_get(
            ref, 90.0 + 5.0 * n + self._anchor.transport_slack_s, f"checkpoint {self.checkpoint_id[:12]}.fork"))
        return forks

    def close(self) -> None:
        """Free the checkpoint on its node (idempotent; a lost one is already gone)."""
        try:
            ray_get(self._anchor._handle().close_checkpoint.remote(self.checkpoint_id),
                    self._anchor.transport_slack_s, "close checkpoint")
        except SessionLostError:
            pass

    def __enter__(self) -> RaySessionCheckpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
