"""The host side of one session family: the sandbox its supervisor runs in, and the wire.

A *family* is one namespace sandbox holding a session, every checkpoint taken of it and
every session forked from those (see ``_guest/session.py``): they share the sandbox's
supervisor and its channel, never a namespace. Requests carry ids; a reader thread hands
each answer to the caller waiting for it, so calls on different sessions of a family run
at once. The sandbox is closed when its last session and checkpoint are.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ._errors import SandboxError, VmpoolError
from ._namespace import NamespaceSandbox

logger = logging.getLogger(__name__)

SESSION_ENTRY = "/opt/vmpool/session.py"
CONTROL_TIMEOUT_S = 90.0  # a control step (start, checkpoint, fork) inside the supervisor


class SessionError(VmpoolError):
    """The session died, stopped answering or refused a request; it cannot be used any more
    when :attr:`Session.closed` is true."""


class Lost(SessionError):
    """The branch (or the whole family) is gone: the session is closed."""


class Family:
    """One session sandbox and its demultiplexed channel.

    Args:
        sandbox_args: keyword arguments of :class:`NamespaceSandbox` (``entry`` and
            ``session`` are set here).

    Raises:
        BackendUnavailableError / SandboxStartError: the sandbox could not start.
    """

    def __init__(self, **sandbox_args: Any) -> None:
        self.sandbox = NamespaceSandbox(entry=SESSION_ENTRY, session=True, **sandbox_args)
        self._chan = self.sandbox._chan
        assert self._chan is not None
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._waiting: dict[int, list[Any]] = {}  # id -> [Event, reply]
        self._next_id = 0
        self._members = 0
        self.dead = ""  # why the family is gone ("" while it lives)
        self._reader = threading.Thread(target=self._read, name="vmpool-session-reader", daemon=True)
        self._reader.start()

    @property
    def isolation_lost(self) -> str:
        return self.sandbox.isolation_lost

    def _read(self) -> None:
        assert self._chan is not None
        while True:
            try:
                reply = self._chan.recv(time.monotonic() + 10 * 365 * 86400)
            except SandboxError as exc:
                self._die(f"the session sandbox died ({exc})")
                return
            streamed = "stream" in reply
            with self._lock:
                rid = reply.get("id")
                slot = self._waiting.get(rid) if streamed else self._waiting.pop(rid, None)  # type: ignore[arg-type]
            if slot is None:
                continue
            if streamed:
                if slot[2] is not None:
                    try:
                        slot[2](str(reply["stream"]), str(reply.get("text", "")))
                    except Exception:  # a caller's callback must not stop the family's reader
                        logger.exception("a session's output callback raised")
                continue
            slot[1] = reply
            slot[0].set()

    def _die(self, why: str) -> None:
        with self._lock:
            if not self.dead:
                self.dead = why
            waiting, self._waiting = self._waiting, {}
        for slot in waiting.values():
            slot[1] = {"lost": why}
            slot[0].set()

    def call(self, message: dict[str, Any], deadline_s: float,
             on_stream: Callable[[str, str], None] | None = None) -> dict[str, Any]:
        """Send one request and wait for its answer; ``on_stream(name, text)`` gets the call's
        output as it comes (from the reader thread), when given.

        Raises:
            Lost: the family is gone, or the request's branch is (``{"lost": ...}``).
            SessionError: no answer within ``deadline_s`` (the caller decides what dies).
        """
        event = threading.Event()
        with self._lock:
            if self.dead:
                raise Lost(self.dead)
            self._next_id += 1
            rid = self._next_id
            slot: list[Any] = [event, None, on_stream]
            self._waiting[rid] = slot
        try:
            with self._send_lock:
                self._chan.send({**message, "id": rid, **({"stream": True} if on_stream else {})})  # type: ignore[union-attr]
        except SandboxError as exc:
            self._die(f"the session sandbox died ({exc})")
        if not event.wait(deadline_s):
            with self._lock:
                self._waiting.pop(rid, None)
            raise SessionError(f"no answer within {deadline_s:.0f} s")
        reply: dict[str, Any] = slot[1]
        if "lost" in reply:
            raise Lost(str(reply["lost"]))
        return reply

    def control(self, message: dict[str, Any]) -> dict[str, Any]:
        """A supervisor request; its refusal (``{"error": ...}``) is a SessionError."""
        try:
            reply = self.call(message, CONTROL_TIMEOUT_S)
        except Lost:
            raise
        except SessionError as exc:
            self.close()
            raise Lost(f"the session sandbox stopped answering ({exc}); it was closed") from exc
        if reply.get("error"):
            detail = self.sandbox._diagnostics() if "stderr" in str(reply["error"]) else ""
            raise SessionError(f"{reply['error']}{'; ' + detail if detail else ''}")
        return reply

    def join(self) -> None:
        with self._lock:
            self._members += 1

    def leave(self) -> None:
        """One session or checkpoint fewer; the last one out closes the sandbox."""
        with self._lock:
            self._members -= 1
            last = self._members <= 0
        if last:
            self.close()

    def close(self) -> None:
        self.sandbox.close()
        self._die("the session sandbox was closed")
