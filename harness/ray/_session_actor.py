"""The per-node session actor: it owns its node's sessions (a warm pool and the leased ones by
id), runs their calls and hands sessions and checkpoints a call made back as ids (see
:mod:`harness.ray._sessions` for the handles and the errors)."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from vmpool import Session, SessionCheckpoint, SessionConfig, SessionError, SessionPool

from ._actor import remote_class
from ._sessions import SessionLostError, _NewCheckpoint, _NewSession

__all__ = ["SessionActorImpl", "session_actor_class"]

logger = logging.getLogger(__name__)

_CLOSED_KEPT = 10_000  # ids of closed sessions remembered per actor, for the error message


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


def session_actor_class() -> Any:
    """The ``@ray.remote`` version of :class:`SessionActorImpl` (built once, lazily)."""
    return remote_class(SessionActorImpl, 64)
