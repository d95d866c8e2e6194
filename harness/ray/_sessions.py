"""Sessions over Ray: one session-owning actor per node, and session handles any driver can use.

:class:`SessionActorImpl` runs in a named actor per eligible node (``harness-sessions-<node id>``
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
import os
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from vmpool import (
    CodeResult,
    CommandResult,
    FileInfo,
    Session,
    SessionCheckpoint,
    SessionConfig,
    SessionError,
    SessionPool,
)

from .._errors import HarnessError
from ._actor import ensure_ray
from ._support import _short

__all__ = ["ACTOR_PREFIX", "RaySession", "RaySessionCheckpoint", "SessionActorImpl", "SessionLostError", "actor_name", "lost_errors", "ray_get",
           "session_actor_class"]

logger = logging.getLogger(__name__)

ACTOR_PREFIX = "harness-sessions-"
_CLOSED_KEPT = 10_000  # ids of closed sessions remembered per actor, for the error message


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


@dataclass(eq=False)
class _Lease:
    session: Session
    last_used: float
    inflight: int = 0


class SessionActorImpl:
    """Owns one node's sessions: a warm ``vmpool.SessionPool`` and the leased sessions by id.
    Runs inside a Ray actor (threaded: calls on different sessions run at once).

    Args:
        config: the sessions' ``vmpool.SessionConfig``.
        warm: sessions kept started and idle.
        idle_timeout_s: a leased session no call used for this long is closed (``None``: never).
    """

    def __init__(self, config: SessionConfig | None = None, warm: int = 2,
                 idle_timeout_s: float | None = 600.0) -> None:
        self.config = config or SessionConfig()
        self.idle_timeout_s = idle_timeout_s
        self.epoch = uuid.uuid4().hex
        self.pool = SessionPool(self.config, warm=warm)
        self._leases: dict[str, _Lease] = {}
        self._checkpoints: dict[str, SessionCheckpoint] = {}
        self._closed: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.counts = {"leased": 0, "closed": 0, "expired": 0}
        if idle_timeout_s is not None:
            threading.Thread(target=self._reap, name="harness-session-reaper", daemon=True).start()

    # -------------------------------------------------------------- bookkeeping
    def _register(self, session: Session) -> str:
        sid = uuid.uuid4().hex
        with self._lock:
            self._leases[sid] = _Lease(session, time.monotonic())
            self.counts["leased"] += 1
        return sid

    def _forget(self, sid: str, why: str) -> _Lease | None:
        """Drop a lease (caller holds ``_lock``) and remember why it ended."""
        lease = self._leases.pop(sid, None)
        if lease is not None:
            self._closed[sid] = why
            while len(self._closed) > _CLOSED_KEPT:
                self._closed.popitem(last=False)
        return lease

    def _reap(self) -> None:
        assert self.idle_timeout_s is not None
        limit = self.idle_timeout_s
        while not self._stop.wait(min(5.0, max(0.1, limit / 4))):
            now = time.monotonic()
            with self._lock:
                # A paused session (vmpool's pause) is idle on purpose; its own max_lifetime_s bounds it.
                idle = [sid for sid, lease in self._leases.items()
                        if lease.inflight == 0 and now - lease.last_used > limit
                        and not getattr(lease.session, "paused", False)]
                expired = [lease for sid in idle if (lease := self._forget(
                    sid, f"it was idle for more than {limit:g} s (the session actor's idle_timeout_s)")) is not None]
                self.counts["expired"] += len(expired)
            for lease in expired:
                logger.info("closing a session idle for more than %g s", limit)
                self.pool.release(lease.session)

    def _export(self, value: Any) -> Any:
        """Sessions a call returned stay here, leased; the caller gets their ids."""
        if isinstance(value, Session):
            return _NewSession(self._register(value))
        if isinstance(value, SessionCheckpoint):
            cid = uuid.uuid4().hex
            with self._lock:
                self._checkpoints[cid] = value
            return _NewCheckpoint(cid)
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, Session) for v in value):
            return type(value)(_NewSession(self._register(v)) for v in value)
        return value

    # ------------------------------------------------------------------ remote API
    def ready(self) -> dict[str, Any]:
        """Where this actor runs, its epoch (changes when it is started anew) and settings."""
        import ray

        return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "epoch": self.epoch,
                "config": self.config, "idle_timeout_s": self.idle_timeout_s, "warm": self.pool.warm}

    def load(self) -> int:
        """Sessions leased here now."""
        with self._lock:
            return len(self._leases)

    def lease(self) -> tuple[str, str]:
        """Lease a fresh session; returns ``(session id, epoch)``."""
        return self._register(self.pool.lease()), self.epoch

    def call(self, sid: str, epoch: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``session.method(*args, **kwargs)`` on a leased session.

        Raises:
            SessionLostError: the handle is from another incarnation of this actor.
            vmpool.SessionError: the session is closed or unknown, or the method is no session method.
        """
        if epoch != self.epoch:
            raise SessionLostError(f"session {sid[:12]} is lost: its session actor was started anew "
                                   "(crashed and restarted, or its node came back) and does not hold it")
        if method.startswith("_") or method == "close":
            raise SessionError(f"{method!r} is not a session method to call remotely")
        with self._lock:
            lease = self._leases.get(sid)
            if lease is None:
                raise SessionError(self._closed_message(sid))
            lease.inflight += 1
            lease.last_used = time.monotonic()
        try:
            fn = getattr(lease.session, method, None)
            if not callable(fn):
                raise SessionError(f"vmpool.Session has no method {method!r}")
            return self._export(fn(*args, **kwargs))
        finally:
            with self._lock:
                lease.inflight -= 1
                lease.last_used = time.monotonic()

    def fork_checkpoint(self, cid: str, epoch: str, n: int) -> Any:
        """``n`` sessions forked from a checkpoint held here (leased here, like a ``fork``'s).

        Raises:
            SessionLostError: the handle is from another incarnation of this actor.
            vmpool.SessionError: the checkpoint is closed or unknown, or the fork failed.
        """
        if epoch != self.epoch:
            raise SessionLostError(f"checkpoint {cid[:12]} is lost: its session actor was started anew")
        with self._lock:
            cp = self._checkpoints.get(cid)
        if cp is None:
            raise SessionError(f"the checkpoint is closed (no checkpoint {cid[:12]} is held on this node)")
        return self._export(cp.fork(n))

    def close_checkpoint(self, cid: str) -> bool:
        """Free a checkpoint held here (idempotent; its forks live on)."""
        with self._lock:
            cp = self._checkpoints.pop(cid, None)
        if cp is not None:
            cp.close()
        return cp is not None

    def _closed_message(self, sid: str) -> str:
        why = self._closed.get(sid)
        return (f"the session is closed: {why}" if why else
                f"the session is closed (no session {sid[:12]} is leased on this node)")

    def is_open(self, sid: str) -> bool:
        with self._lock:
            lease = self._leases.get(sid)
        return lease is not None and not lease.session.closed

    def close_session(self, sid: str) -> bool:
        """Close a leased session (idempotent); True when it was open."""
        with self._lock:
            lease = self._forget(sid, "closed by its owner")
            if lease is not None:
                self.counts["closed"] += 1
        if lease is None:
            return False
        self.pool.release(lease.session)
        return True

    def sessions(self) -> list[dict[str, Any]]:
        """The leased sessions: id, seconds since last use, calls in flight."""
        now = time.monotonic()
        with self._lock:
            return [{"session_id": sid, "idle_s": now - lease.last_used, "inflight": lease.inflight}
                    for sid, lease in self._leases.items()]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {**self.counts, "open": len(self._leases), "epoch": self.epoch, "pid": os.getpid()}

    def shutdown(self) -> None:
        """Close every session, leased and warm. Idempotent."""
        self._stop.set()
        with self._lock:
            leases = [lease for sid in list(self._leases) if (lease := self._forget(sid, "its actor shut down"))]
        with self._lock:
            checkpoints, self._checkpoints = list(self._checkpoints.values()), {}
        for cp in checkpoints:
            cp.close()
        for lease in leases:
            lease.session.close()
        self.pool.close()

    def __del__(self) -> None:  # the actor process is going away: no session may outlive it
        try:
            self.shutdown()
        except Exception:  # pragma: no cover - best effort at interpreter exit
            pass


_ACTOR_CLASS: Any = None


def session_actor_class() -> Any:
    """The ``@ray.remote`` version of :class:`SessionActorImpl` (built once, lazily)."""
    global _ACTOR_CLASS
    if _ACTOR_CLASS is None:
        import ray

        _ACTOR_CLASS = ray.remote(max_concurrency=64)(SessionActorImpl)  # type: ignore[call-overload]
    return _ACTOR_CLASS


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
