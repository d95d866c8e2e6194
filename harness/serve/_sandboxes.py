"""E2B sandboxes as sessions: who owns which, how long each lives, the limits on how many.

A :class:`Box` is one E2B sandbox: a session (``vmpool.Session``, or a ``RaySession`` on a
cluster) with E2B's bookkeeping around it: its owner (a digest of the API key that made it), the
access token its envd and interpreter requests must carry, its end time, its contexts. The
:class:`Sandboxes` registry hands boxes only to their owner (another key's id is a 404, as if it
did not exist), counts them against the per-key and service limits, and ends each at its
timeout (killed, or paused where the create asked ``autoPause``).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from vmpool import SessionError

from ._config import ServeConfig
from ._errors import Conflict, Gone, LimitExceeded, NotFound
from ._jupyter import Context

if TYPE_CHECKING:
    from ._templates import TemplatePools

__all__ = ["Box", "Sandboxes", "owner_of"]

logger = logging.getLogger(__name__)

ENVD_VERSION = "0.5.7"  # what the E2B SDK 2.x needs for every call this service answers (see PROTOCOLS)


def owner_of(token: str) -> str:
    """The owner id of an API key (what is kept: never the key itself)."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Box:
    """One E2B sandbox."""

    id: str
    owner: str
    template: str
    session: Any
    access_token: str
    started_at: float
    end_at: float
    metadata: dict[str, str]
    env_vars: dict[str, str]
    auto_pause: bool
    state: str = "running"  # or "paused"
    contexts: dict[str, Context] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)  # one call at a time, as a kernel runs cells
    closed: bool = False
    next_pid: int = 1000  # the pids its commands are given (E2B clients only echo them)

    def created_json(self) -> dict[str, Any]:
        return {"templateID": self.template, "sandboxID": self.id, "clientID": "harness", "alias": self.template,
                "envdVersion": ENVD_VERSION, "envdAccessToken": self.access_token,
                # The SDK sends the envd token to envd and /execute, the traffic token to /contexts.
                "trafficAccessToken": self.access_token, "domain": None}

    def detail_json(self, config: ServeConfig) -> dict[str, Any]:
        return {**self.created_json(), "startedAt": _iso(self.started_at), "endAt": _iso(self.end_at),
                "cpuCount": 1, "memoryMB": config.session.memory_mb, "diskSizeMB": config.session.disk_mb,
                "metadata": self.metadata, "state": self.state}

    def context(self, context_id: str | None) -> Context:
        key = context_id or "default"
        if key not in self.contexts:
            if context_id is not None and context_id != "default":
                raise NotFound(f"context {context_id!r} not found in sandbox {self.id}")
            self.contexts[key] = Context(key)
        return self.contexts[key]


class Sandboxes:
    """The live E2B sandboxes of the service, by id.

    Args:
        config: the service's limits and timeouts.
        source: where sessions come from (``lease(template)``, ``close()``).
        clock: seconds since the epoch (tests move it).
        id_prefix: what every sandbox id here starts with (on Ray: the node's tag, by which the
            gateway routes a request to the node that holds the sandbox).
    """

    def __init__(self, config: ServeConfig, source: TemplatePools, clock: Callable[[], float] = time.time,
                 id_prefix: str = "") -> None:
        self.config, self.source, self.clock, self.id_prefix = config, source, clock, id_prefix
        self._boxes: dict[str, Box] = {}
        self._reserved: dict[str, int] = {}  # owner -> creates under way (counted against the limits)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closer = ThreadPoolExecutor(max_workers=32, thread_name_prefix="harness-serve-close")
        self._reaper = threading.Thread(target=self._reap_loop, name="harness-serve-reaper", daemon=True)
        self._reaper.start()

    # ------------------------------------------------------------------ lookups
    def get(self, owner: str, sandbox_id: str) -> Box:
        """The caller's sandbox ``sandbox_id``.

        Raises:
            NotFound: no such sandbox, or it is another key's.
        """
        with self._lock:
            box = self._boxes.get(sandbox_id)
        if box is None or box.owner != owner or box.closed:
            raise NotFound(f"sandbox {sandbox_id!r} not found")
        return box

    def by_access(self, sandbox_id: str, access_token: str) -> Box:
        """The sandbox an envd or interpreter request names, checked against its access token.

        Raises:
            NotFound: no such sandbox, or the token is not its own (the same answer: an id alone
                tells nothing).
        """
        with self._lock:
            box = self._boxes.get(sandbox_id)
        if box is None or box.closed or not secrets.compare_digest(box.access_token, access_token or ""):
            raise NotFound(f"sandbox {sandbox_id!r} not found (or the access token is not its own)")
        return box

    def list(self, owner: str) -> list[Box]:
        with self._lock:
            return [b for b in self._boxes.values() if b.owner == owner and not b.closed]

    def count(self, owner: str | None = None) -> int:
        with self._lock:
            return sum(1 for b in self._boxes.values() if owner is None or b.owner == owner)

    # ------------------------------------------------------------------ life cycle
    def create(self, owner: str, template: str, timeout_s: float | None, metadata: dict[str, str],
               env_vars: dict[str, str], auto_pause: bool) -> Box:
        """Lease a session and register it as a new sandbox of ``owner``.

        Raises:
            LimitExceeded: the key or the service holds its most sandboxes.
            SessionError: no session could be started (infrastructure).
        """
        life = self._life(timeout_s)
        with self._lock:
            mine = sum(1 for b in self._boxes.values() if b.owner == owner) + self._reserved.get(owner, 0)
            total = len(self._boxes) + sum(self._reserved.values())
            if mine >= self.config.max_sandboxes_per_token:
                raise LimitExceeded(f"this API key holds {mine} sandboxes, its most "
                                    f"(max_sandboxes_per_token={self.config.max_sandboxes_per_token}): kill some")
            if total >= self.config.max_sandboxes:
                raise LimitExceeded(f"the service holds {total} sandboxes, its most "
                                    f"(max_sandboxes={self.config.max_sandboxes}): try again later")
            self._reserved[owner] = self._reserved.get(owner, 0) + 1
        try:
            session, prepared = self.source.lease(template)
        finally:
            with self._lock:
                self._reserved[owner] -= 1
                if not self._reserved[owner]:
                    del self._reserved[owner]
        now = self.clock()
        box = Box(id=self.id_prefix + secrets.token_hex(10 - len(self.id_prefix) // 2), owner=owner,
                  template=template, session=session, access_token=secrets.token_urlsafe(24), started_at=now,
                  end_at=now + life, metadata=dict(metadata), env_vars=dict(env_vars), auto_pause=auto_pause)
        # A prepared session has the E2B set-up in its default context already (envVars still to set).
        box.contexts["default"] = Context("default", ready=prepared and not env_vars)
        with self._lock:
            self._boxes[box.id] = box
        logger.info("sandbox %s created (template %s, %.0f s)", box.id, template, life)
        return box

    def _life(self, timeout_s: float | None) -> float:
        if timeout_s is None:
            return self.config.default_timeout_s
        if not isinstance(timeout_s, int | float) or isinstance(timeout_s, bool) or not 0 < timeout_s:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout_s!r}")
        if timeout_s > self.config.max_timeout_s:
            raise ValueError(f"timeout {timeout_s} s is over this service's max_timeout_s ({self.config.max_timeout_s})")
        return float(timeout_s)

    def kill(self, owner: str, sandbox_id: str) -> None:
        """End a sandbox and everything in it.

        Raises:
            NotFound: no such sandbox of the caller's.
        """
        self._end(self.get(owner, sandbox_id), "killed by its owner")

    def _end(self, box: Box, why: str) -> None:
        with self._lock:
            if box.closed:
                return
            box.closed = True
            self._boxes.pop(box.id, None)
        # Gone from the registry already (no request reaches it); its processes end off the
        # request's path, so a kill answers at once.
        self._closer.submit(self._close_session, box, why)

    def _close_session(self, box: Box, why: str) -> None:
        # A moment first: the reply that ended it goes out before this thread competes for the
        # interpreter (closing a session is work, none of it urgent).
        self._stop.wait(0.05)
        try:
            box.session.close()
        except SessionError as exc:
            logger.debug("closing sandbox %s: %s", box.id, exc)
        logger.info("sandbox %s ended: %s", box.id, why)

    def pause(self, owner: str, sandbox_id: str) -> None:
        """Pause a running sandbox (its processes stop; state kept).

        Raises:
            NotFound / Conflict: no such sandbox; it is paused already.
        """
        box = self.get(owner, sandbox_id)
        with box.lock:
            if box.state == "paused":
                raise Conflict(f"sandbox {sandbox_id} is already paused")
            self._session_op(box, box.session.pause)
            box.state = "paused"

    def resume(self, owner: str, sandbox_id: str, timeout_s: float | None) -> Box:
        """Resume a paused sandbox (a running one just gets its new timeout), as E2B's connect does.

        Raises:
            NotFound: no such sandbox of the caller's.
        """
        box = self.get(owner, sandbox_id)
        with box.lock:
            if box.state == "paused":
                self._session_op(box, box.session.resume)
                box.state = "running"
            if timeout_s is not None:
                box.end_at = max(box.end_at, self.clock() + self._life(timeout_s))
        return box

    def set_timeout(self, owner: str, sandbox_id: str, timeout_s: float) -> None:
        """A new end: ``timeout_s`` from now (E2B: shorter or longer than before)."""
        box = self.get(owner, sandbox_id)
        box.end_at = self.clock() + self._life(timeout_s)

    def _session_op(self, box: Box, op: Callable[[], None]) -> None:
        try:
            op()
        except SessionError as exc:
            if getattr(box.session, "closed", False):
                self._end(box, f"its session is gone: {exc}")
                raise Gone(f"sandbox {box.id} is gone: {exc}") from exc
            raise Conflict(f"sandbox {box.id}: {exc}") from exc

    def lost(self, box: Box, why: str) -> None:
        """A sandbox whose session died under a call: forgotten (later requests get a 404)."""
        self._end(box, why)

    # ------------------------------------------------------------------ timeouts
    def reap(self) -> int:
        """End (or auto-pause) the sandboxes past their end time; returns how many."""
        now = self.clock()
        with self._lock:
            due = [b for b in self._boxes.values() if b.end_at <= now and not b.closed]
        done = 0
        for box in due:
            if box.auto_pause and box.state == "running":
                try:
                    with box.lock:
                        box.session.pause()
                        box.state = "paused"
                    box.end_at = now + self.config.max_timeout_s  # kept until resumed or killed
                    done += 1
                    continue
                except SessionError as exc:
                    logger.info("auto-pausing sandbox %s failed (%s): ending it", box.id, exc)
            elif box.auto_pause:
                continue
            self._end(box, "its timeout passed")
            done += 1
        return done

    def _reap_loop(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.reap()
            except Exception:  # the reaper must outlive any one sandbox's failure
                logger.exception("sandbox reaper")

    def close(self) -> None:
        """End every sandbox and the session source. Idempotent."""
        self._stop.set()
        with self._lock:
            boxes = list(self._boxes.values())
        for box in boxes:
            self._end(box, "the service stopped")
        self._closer.shutdown(wait=True)
        self.source.close()
