"""A minimal QMP (QEMU Machine Protocol) client over a unix socket.

Only what the microvm backend needs: the capabilities handshake, synchronous
commands with a deadline, and waiting for a migration to finish. Asynchronous
events that arrive while waiting for a command's answer are skipped.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from ._errors import SandboxError

__all__ = ["QMPClient", "QMPError"]


class QMPError(SandboxError):
    """QEMU answered a command with an error, or the monitor went away."""


class QMPClient:
    """Connects to a QEMU monitor socket (``-qmp unix:PATH,server=on,wait=off``).

    Args:
        path: the monitor's unix socket.
        timeout_s: how long to keep trying to connect (QEMU creates the socket
            shortly after it starts).

    Raises:
        QMPError: the monitor could not be reached or refused the handshake.
    """

    def __init__(self, path: str, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        self._sock: socket.socket | None = None
        while time.monotonic() < deadline:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
                self._sock = sock
                break
            except OSError as exc:
                sock.close()
                last = exc
                time.sleep(0.002)
        if self._sock is None:
            raise QMPError(f"cannot connect to QEMU monitor {path}: {last}")
        self._buf = b""
        greeting = self._read(deadline)
        if "QMP" not in greeting:
            raise QMPError(f"unexpected QMP greeting: {greeting!r}")
        self.execute("qmp_capabilities", timeout_s=max(0.5, deadline - time.monotonic()))

    def _read(self, deadline: float) -> dict[str, Any]:
        assert self._sock is not None
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise QMPError("QEMU monitor did not answer in time")
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(65536)
            except (TimeoutError, OSError) as exc:
                raise QMPError(f"QEMU monitor read failed: {exc}") from exc
            if not chunk:
                raise QMPError("QEMU monitor closed (QEMU exited)")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            message: dict[str, Any] = json.loads(line)
            return message
        except ValueError as exc:
            raise QMPError(f"undecodable QMP message: {line[:200]!r}") from exc

    def execute(self, command: str, arguments: dict[str, Any] | None = None, timeout_s: float = 10.0) -> Any:
        """Run one command and return its ``return`` value.

        Raises:
            QMPError: QEMU reported an error or did not answer by the deadline.
        """
        assert self._sock is not None
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(message).encode() + b"\n")
        except OSError as exc:
            raise QMPError(f"QEMU monitor write failed: {exc}") from exc
        deadline = time.monotonic() + timeout_s
        while True:
            reply = self._read(deadline)
            if "event" in reply:
                continue
            if "error" in reply:
                err = reply["error"]
                raise QMPError(f"QEMU {command} failed: {err.get('class')}: {err.get('desc')}")
            if "return" in reply:
                return reply["return"]

    def wait_migration(self, timeout_s: float) -> dict[str, Any]:
        """Poll ``query-migrate`` until it completes. Raises QMPError on failure or timeout."""
        deadline = time.monotonic() + timeout_s
        delay = 0.001
        while True:
            info = self.execute("query-migrate", timeout_s=max(0.1, deadline - time.monotonic()))
            status = info.get("status")
            if status == "completed":
                return dict(info)
            if status in ("failed", "cancelled"):
                raise QMPError(f"migration {status}: {info.get('error-desc', '')}")
            if time.monotonic() > deadline:
                raise QMPError(f"migration still {status!r} after {timeout_s} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
