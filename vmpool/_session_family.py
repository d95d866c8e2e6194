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

from ._agent_client import AgentSandbox
from ._errors import SandboxError, SandboxStartError, VmpoolError
from ._microvm import Checkpoint as VMCheckpoint
from ._microvm import MicroVMSandbox, MicroVMTemplate
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
    """One session sandbox and its demultiplexed channel; made by :meth:`namespace` or
    :meth:`microvm` (the supervisor is running and has said hello).
    """

    @classmethod
    def namespace(cls, **sandbox_args: Any) -> Family:
        """A namespace sandbox running the supervisor (``sandbox_args``: :class:`NamespaceSandbox`'s).

        Raises:
            BackendUnavailableError / SandboxStartError: the sandbox could not start.
        """
        return cls(NamespaceSandbox(entry=SESSION_ENTRY, session=True, **sandbox_args))

    @classmethod
    def microvm(cls, template: MicroVMTemplate, entry_args: tuple[str, ...], *,
                checkpoint: VMCheckpoint | None = None, start_timeout_s: float = 60.0,
                transport_slack_s: float = 10.0) -> Family:
        """A microVM whose guest agent hands its channel to the supervisor; from ``checkpoint``,
        a clone of a session VM (its supervisor already runs, with every branch it had).

        Raises:
            SandboxStartError: the VM did not start, or its supervisor did not say hello.
        """
        vm = MicroVMSandbox(template, checkpoint=checkpoint, start_timeout_s=start_timeout_s,
                            transport_slack_s=transport_slack_s)
        if checkpoint is None:
            try:
                assert vm._chan is not None
                vm._chan.send({"op": "session", "args": list(entry_args)})
                hello = vm._chan.recv(time.monotonic() + start_timeout_s)
                if not hello.get("ready") or not hello.get("supervisor"):
                    raise SandboxStartError(f"the guest's session supervisor did not start: {hello}")
            except BaseException:
                vm.close()
                raise
        return cls(vm)

    def __init__(self, sandbox: AgentSandbox) -> None:
        self.sandbox = sandbox
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
        return str(getattr(self.sandbox, "isolation_lost", ""))

    @property
    def members(self) -> int:
        with self._lock:
            return self._members

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


class _Reaper:
    """Closes sessions past their idle timeout or lifetime (one daemon thread, started lazily)."""

    def __init__(self) -> None:
        self._sessions: set[Any] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, session: Any) -> None:
        with self._lock:
            self._sessions.add(session)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="vmpool-session-reaper", daemon=True)
                self._thread.start()

    def forget(self, session: Any) -> None:
        with self._lock:
            self._sessions.discard(session)

    def _loop(self) -> None:
        while True:
            time.sleep(0.5)
            now = time.monotonic()
            with self._lock:
                sessions = list(self._sessions)
            for s in sessions:
                cfg = s.config
                if now - s.started > cfg.max_lifetime_s:
                    why = f"it reached its maximum lifetime of {cfg.max_lifetime_s:g} s (SessionConfig.max_lifetime_s)"
                elif not s._lock.locked() and not s.paused and now - s.last_used > cfg.idle_timeout_s:
                    why = f"it was idle for more than {cfg.idle_timeout_s:g} s (SessionConfig.idle_timeout_s)"
                else:
                    continue
                logger.info("closing a session: %s", why)
                s._shut(why)


REAPER = _Reaper()  # every session of this process
