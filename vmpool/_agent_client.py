"""What every backend's sandbox shares: talking to the guest agent (the zygote).

A backend subclass starts its isolation boundary (a bubblewrap process, a QEMU
microVM), hands this class a :class:`FrameChannel` to the agent, and implements
how to tell whether the boundary is alive and how to tear it down. Requests,
replies, deadlines, the busy/close race and result decoding live here, once.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import threading
import time
from typing import Any

from ._errors import SandboxError, SandboxSetupError
from ._protocol import FrameChannel
from ._types import CompanionResult, ExecRequest, ExecResult, Status

logger = logging.getLogger(__name__)

_STATUS_BY_NAME = {s.value: s for s in Status}


class AgentSandbox:
    """Base class: one isolated slot with a zygote agent inside; one program at a time.

    Args:
        transport_slack_s: extra seconds past a program's wall limit before the host
            declares the sandbox unresponsive (the transport deadline).
    """

    backend = "abstract"
    # Statuses after which the sandbox is replaced rather than reused (a cheap clone
    # for microVMs: a VM whose program hit a limit is never trusted again).
    retire_on: frozenset[Status] = frozenset()

    def __init__(self, transport_slack_s: float) -> None:
        self.transport_slack_s = transport_slack_s
        self.programs_run = 0
        self.broken = ""  # non-empty once the sandbox must not be reused, with the reason
        self._close_lock = threading.Lock()
        self._busy = False
        self._closed = False
        self._chan: FrameChannel | None = None
        self._streams: tuple[Any, ...] = ()
        self._next_id = 0
        self._sources_sent: set[str] = set()  # digests of cached code this agent holds

    # ---------------------------------------------------------------- subclass hooks
    def _process_alive(self) -> bool:
        raise NotImplementedError

    def _kill(self) -> None:
        """Kill the isolation boundary and everything in it; wait for it to be gone."""
        raise NotImplementedError

    def _release(self) -> None:
        """Free host resources (leases, files) after :meth:`_kill`."""

    def _diagnostics(self) -> str:
        """A short text (e.g. the tail of the backend's stderr) for error messages."""
        return ""

    # ---------------------------------------------------------------- agent protocol
    def _attach(self, chan: FrameChannel, streams: tuple[Any, ...]) -> None:
        self._chan = chan
        self._streams = streams

    def _request(self, message: dict[str, Any], deadline: float) -> dict[str, Any]:
        """Send one message with a fresh id and return the agent's matching reply.

        Raises:
            SandboxError: EOF, deadline, or a reply for another id; the sandbox is
                marked broken.
        """
        assert self._chan is not None
        self._next_id += 1
        message = {**message, "id": self._next_id}
        try:
            self._chan.send(message)
            reply = self._chan.recv(deadline)
        except SandboxError as exc:
            self.broken = str(exc)
            detail = self._diagnostics()
            raise SandboxError(f"{exc}; {detail}" if detail else str(exc)) from exc
        if reply.get("id") != self._next_id:
            self.broken = "protocol desynchronised"
            raise SandboxError(f"agent answered request {reply.get('id')!r}, expected {self._next_id}")
        return reply

    def alive(self) -> bool:
        return not self._closed and not self.broken and self._process_alive()

    def execute(self, request: ExecRequest) -> ExecResult:
        """Run one program. A program's failure comes back as data.

        Raises:
            SandboxError: the sandbox died or stopped answering; it is marked broken
                and must be closed (the pool replaces it).
        """
        with self._close_lock:
            if not self.alive():
                raise SandboxError(f"sandbox is not usable: {self.broken or 'process exited'}")
            self._busy = True
        try:
            return self._execute(request)
        finally:
            with self._close_lock:
                self._busy = False
                if self._closed:  # closed while we were running: the channel is ours to close
                    self._close_streams()

    def _code_field(self, code: str, cached: bool) -> dict[str, str]:
        """Harness-authored (cached) code travels once per sandbox, then by its digest."""
        if not cached:
            return {"code": code}
        ref = _digest(code)
        if ref in self._sources_sent:
            return {"code_ref": ref}
        self._sources_sent.add(ref)
        return {"code": code, "code_ref": ref}

    def _execute(self, request: ExecRequest) -> ExecResult:
        message: dict[str, Any] = {
            **self._code_field(request.code, request.cache_code),
            "stdin": request.stdin,
            "files": {name: encode_file(data) for name, data in request.files.items()},
            "limits": request.limits.to_wire(),
            "argv": list(request.argv),
            "cache_code": request.cache_code,
            "entry": request.entry,
            **({"fetch_files": list(request.fetch_files)} if request.fetch_files else {}),
            **({"command": list(request.command)} if request.command else {}),
            **({"env": dict(request.env)} if request.env else {}),
            **({"executable": list(request.executable)} if request.executable else {}),
            **({"interactive": True} if request.interactive else {}),
        }
        comp = request.companion
        if comp is not None:
            message["companion"] = {
                **self._code_field(comp.code, comp.cache_code), "stdin": comp.stdin, "argv": list(comp.argv), "cache_code": comp.cache_code,
                "entry": comp.entry,
                "limits": (comp.limits or request.limits).to_wire(),
            }
        wall = max(request.limits.wall_s, comp.limits.wall_s if comp is not None and comp.limits else 0.0)
        deadline = time.monotonic() + wall + self.transport_slack_s
        reply = self._request(message, deadline)
        self.programs_run += 1
        if reply.get("infra"):
            # Nothing of the program ran: the sandbox itself could not prepare the run.
            self.broken = f"setup failed: {reply.get('error')}"
            raise SandboxSetupError(str(reply.get("error") or "the sandbox could not prepare the run"))
        status = _STATUS_BY_NAME.get(str(reply.get("status")))
        anomaly = reply.get("anomaly") or ("" if status is not None and status is not Status.SANDBOX_ERROR
                                           else f"agent answered status {reply.get('status')!r}")
        if anomaly:
            # The program ran and left the sandbox in a state we will not reuse (or the
            # agent failed under it): the program's doing, never an infrastructure result.
            self.broken = f"anomaly: {anomaly}"
            logger.info("%s sandbox retired: %s", self.backend, str(anomaly)[-500:])
            raise SandboxError(f"sandbox left unusable by the program: {str(anomaly)[-500:]}")
        try:
            result = result_from_reply(reply)
        except SandboxError as exc:
            self.broken = str(exc)
            raise
        if result.status in self.retire_on and not self.broken:
            self.broken = f"retired after a program ended with {result.status.value}"
        return result

    # ---------------------------------------------------------------- teardown
    def _close_streams(self) -> None:
        streams, self._streams = self._streams, ()
        for stream in streams:
            try:
                stream.close()
            except OSError:
                pass

    def close(self) -> None:
        """Kill the sandbox and everything in it. Idempotent and thread-safe (the
        pool's close() may race a worker thread retiring the same sandbox)."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._kill()
            finally:
                if not self._busy:
                    # A thread inside execute() still reads the channel: it sees EOF from
                    # the dead sandbox and closes it itself; closing it here could hand
                    # that thread a reused file descriptor.
                    self._close_streams()
                self._release()
                self.broken = self.broken or "closed"

    def __enter__(self) -> AgentSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@functools.lru_cache(maxsize=64)
def _digest(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()


def encode_file(data: str | bytes) -> dict[str, str]:
    if isinstance(data, bytes):
        return {"b64": base64.b64encode(data).decode()}
    return {"text": data}


def result_from_reply(reply: dict[str, Any]) -> ExecResult:
    """Decode an agent's result message (its status already checked by the caller).

    Raises:
        SandboxError: a field has the wrong type (a corrupted reply).
    """
    status = _STATUS_BY_NAME[str(reply.get("status"))]
    comp = reply.get("companion")
    try:
        companion = None if not isinstance(comp, dict) else CompanionResult(
            exit_code=comp.get("exit_code"), signal=comp.get("signal"), stdout=str(comp.get("stdout", "")),
            stderr=str(comp.get("stderr", "")), cpu_s=float(comp.get("cpu_s", 0.0)))
        return _result(reply, status, companion)
    except (TypeError, ValueError, KeyError) as exc:
        raise SandboxError(f"corrupted reply from the agent: {exc}") from exc


def _result(reply: dict[str, Any], status: Status, companion: CompanionResult | None) -> ExecResult:
    return ExecResult(
        status=status,
        exit_code=reply.get("exit_code"),
        signal=reply.get("signal"),
        stdout=reply.get("stdout", ""),
        stderr=reply.get("stderr", ""),
        stdout_truncated=bool(reply.get("stdout_truncated")),
        stderr_truncated=bool(reply.get("stderr_truncated")),
        report=base64.b64decode(reply.get("report", "")),
        wall_s=float(reply.get("wall_s", 0.0)),
        cpu_s=float(reply.get("cpu_s", 0.0)),
        error=str(reply.get("error", "")),
        timeout_by=str(reply.get("timeout_by", "")),
        companion=companion,
        files=_fetched(reply.get("files")),
    )


def _fetched(files: Any) -> dict[str, bytes]:
    if not isinstance(files, dict):
        return {}
    return {str(name): base64.b64decode(str(b64)) for name, b64 in files.items()}
