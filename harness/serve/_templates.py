"""Where E2B sandboxes' sessions come from: warm sessions per template, set up ahead.

Each template config has a ``vmpool.SessionPool``; a thread per pool keeps ``warm_sessions``
of its sessions *prepared*: leased, with the E2B set-up cell (``_e2b_``, ``get_ipython``,
``display``) already run in their default context, so neither a create nor the first cell pays
for it. The default templates share ``ServeConfig.session``'s pool; each custom template gets one
of its own (one prepared session) on first use.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from vmpool import Session, SessionPool, VmpoolError

from ._config import ServeConfig
from ._jupyter import setup_code

__all__ = ["TemplatePools"]

logger = logging.getLogger(__name__)


class _Prepared:
    """One template config's pool and its prepared sessions."""

    def __init__(self, config: ServeConfig, key: str) -> None:
        self.warm = config.warm_sessions if not key else 1
        self.pool = SessionPool(config.sandbox_session(key or None), warm=self.warm)
        self.ready: queue.Queue[Session] = queue.Queue()
        self.wanted = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"harness-serve-prepare{'-' + key if key else ''}",
                                       daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            if self.ready.qsize() >= self.warm:
                self.wanted.wait(1.0)
                self.wanted.clear()
                continue
            if not self.ready.empty():  # some are ready: let the create that took one finish its first cell
                self.stop.wait(0.2)
            try:
                session = self.pool.lease()
                result = session.run_code(setup_code({}), context="default", timeout=60.0)
            except VmpoolError as exc:  # retried; a create meanwhile leases and sets up itself
                logger.warning("could not prepare a sandbox session: %s", exc)
                self.stop.wait(1.0)
                continue
            if result.error is not None:
                logger.warning("set-up cell failed in a fresh session: %s: %s", result.error.name, result.error.value)
                self.pool.release(session)
                self.stop.wait(1.0)
                continue
            if self.stop.is_set():
                self.pool.release(session)
                return
            self.ready.put(session)

    def lease(self) -> tuple[Session, bool]:
        self.wanted.set()
        while True:
            try:
                session = self.ready.get_nowait()
            except queue.Empty:
                return self.pool.lease(), False
            if not session.closed:
                return session, True

    def close(self) -> None:
        self.stop.set()
        self.wanted.set()
        self.thread.join(30)
        self.pool.close()  # its leased sessions too: the prepared ones among them


class TemplatePools:
    """Sessions for E2B sandboxes, by template (see the module docstring)."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self._by_key: dict[str, _Prepared] = {}
        self._lock = threading.Lock()
        self._closed = False

    def lease(self, template: str) -> tuple[Any, bool]:
        """A fresh session for a sandbox of ``template``, and whether it is prepared.

        Raises:
            vmpool.VmpoolError: no session could be started (infrastructure).
        """
        key = template if template in self.config.custom_templates else ""
        with self._lock:
            if self._closed:
                raise VmpoolError("the service is stopping")
            prepared = self._by_key.get(key)
            if prepared is None:
                prepared = self._by_key[key] = _Prepared(self.config, key)
        return prepared.lease()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pools, self._by_key = list(self._by_key.values()), {}
        for prepared in pools:
            prepared.close()
