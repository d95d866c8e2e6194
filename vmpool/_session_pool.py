"""Warm sessions: a lease is a queue pop instead of a sandbox start."""

from __future__ import annotations

import logging
import threading

from ._errors import VmpoolError
from ._session import Session, SessionConfig, SessionError

__all__ = ["SessionPool"]

logger = logging.getLogger(__name__)


class SessionPool:
    """Sessions kept warm, so leasing one costs a queue pop instead of a sandbox start.

    Each session is used by one lessee only and closed when it is given back (its state
    is the lessee's, never handed to another); background threads start replacements, two at
    a time (a start waits on the kernel for much of its time).
    A context manager; :meth:`close` closes the warm and the leased sessions alike.

    Args:
        config: the sessions' :class:`SessionConfig`.
        warm: sessions kept started and idle (>= 1).

    Raises:
        BackendUnavailableError / SandboxStartError: the first session could not start.
    """

    def __init__(self, config: SessionConfig | None = None, warm: int = 2) -> None:
        import queue

        if isinstance(warm, bool) or not isinstance(warm, int) or warm < 1:
            raise ValueError(f"warm must be an integer >= 1, got {warm!r}")
        self.config = config or SessionConfig()
        self.warm = warm
        self._idle: queue.Queue[Session] = queue.Queue()
        self._leased: set[Session] = set()
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._closed = False
        self._starting = 0
        self._idle.put(Session(self.config))  # the first start fails loudly, here
        self._refillers = [threading.Thread(target=self._refill, name=f"vmpool-session-refill-{i}", daemon=True)
                           for i in range(min(2, warm))]
        for thread in self._refillers:
            thread.start()
        self._wanted.set()

    def _refill(self) -> None:
        while True:
            self._wanted.wait(0.5)  # woken by a lease; the timeout covers a wake-up the other thread took
            self._wanted.clear()
            while True:
                with self._lock:
                    if self._closed:
                        return
                    if self._idle.qsize() + self._starting >= self.warm:
                        break
                    self._starting += 1
                try:
                    session = Session(self.config)
                except VmpoolError as exc:  # retried on the next lease; the lease starts one itself
                    logger.warning("could not start a warm session: %s", exc)
                    with self._lock:
                        self._starting -= 1
                    break
                with self._lock:
                    self._starting -= 1
                    if self._closed:
                        session.close()
                        return
                    self._idle.put(session)

    def lease(self) -> Session:
        """A fresh session of this pool's config (warm when one is ready, else started now).

        Raises:
            SessionError: the pool is closed.
        """
        import queue

        with self._lock:
            if self._closed:
                raise SessionError("the session pool is closed")
        try:
            session = self._idle.get_nowait()
        except queue.Empty:
            session = Session(self.config)
        self._wanted.set()
        if session.closed:  # died while idle: start another
            session = Session(self.config)
        with self._lock:
            self._leased.add(session)
        return session

    def release(self, session: Session) -> None:
        """Give a leased session back: it is closed (its state never reaches another lessee)."""
        with self._lock:
            self._leased.discard(session)
        session.close()

    def close(self) -> None:
        """Close every session of the pool, idle and leased. Idempotent."""
        import queue

        with self._lock:
            self._closed = True
            leased, self._leased = list(self._leased), set()
        self._wanted.set()
        for thread in self._refillers:
            thread.join(timeout=60)
        for session in leased:
            session.close()
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                break

    def __enter__(self) -> SessionPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
