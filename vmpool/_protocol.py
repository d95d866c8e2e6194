"""Host side of the agent protocol: 4-byte big-endian length + UTF-8 JSON frames.

The guest side lives in ``_guest/agent.py`` (standalone by necessity: it runs on the
sandbox's interpreter). Reads honour a deadline so a guest that stops answering
cannot hang the harness.
"""

from __future__ import annotations

import json
import os
import select
import struct
import time
from typing import Any

from ._errors import SandboxError

HEADER = struct.Struct(">I")
MAX_FRAME = 256 << 20

# What the guest agent says in its hello (its ``PROTOCOL``); a host refuses any other.
PROTOCOL_VERSION = 2

PRELOADED_MODULES: tuple[str, ...] = (
    "abc",
    "array",
    "bisect",
    "builtins",
    "calendar",
    "cmath",
    "collections",
    "collections.abc",
    "copy",
    "dataclasses",
    "datetime",
    "decimal",
    "enum",
    "fractions",
    "functools",
    "hashlib",
    "heapq",
    "io",
    "itertools",
    "json",
    "math",
    "numbers",
    "operator",
    "random",
    "re",
    "statistics",
    "string",
    "struct",
    "sys",
    "textwrap",
    "types",
    "typing",
    "unicodedata",
    "ast",
    "traceback",
    "tokenize",
    "inspect",
    "sysconfig",
    "warnings",
    "threading",
    "queue",
    "time",
    "resource",
    "signal",
    "contextlib",
    "base64",
    "socket",
    "selectors",
)
"""The modules every sandbox's zygote has imported before it forks a program (the guest
agent's ``PRELOAD``, kept equal by a test): a program importing them pays no import. The
benchmark's fork floor preloads the same, so the two start from the same state."""


def readable(fd: int, timeout_s: float) -> bool:
    """Whether ``fd`` has data (or EOF) within ``timeout_s``: ``poll``, not ``select``, so a
    process holding a thousand sessions' descriptors (numbers past FD_SETSIZE) can still wait."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(min(max(0.0, timeout_s), 86400.0) * 1000.0))  # a day at most: poll takes an int


class FrameChannel:
    """Framed JSON messages over a pair of pipe file descriptors."""

    def __init__(self, rfd: int, wfd: int) -> None:
        self._rfd = rfd
        self._wfd = wfd
        self._buf = bytearray()

    def send(self, message: dict[str, Any]) -> None:
        """Write one frame. Raises SandboxError if the guest end is gone."""
        body = json.dumps(message, separators=(",", ":")).encode()
        data = memoryview(HEADER.pack(len(body)) + body)
        try:
            while data:
                n = os.write(self._wfd, data)
                data = data[n:]
        except (BrokenPipeError, OSError) as exc:
            raise SandboxError(f"guest channel closed while sending: {exc}") from exc

    def _fill(self, need: int, deadline: float) -> None:
        while len(self._buf) < need:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SandboxError("guest did not answer before the transport deadline")
            try:
                if not readable(self._rfd, remaining):
                    continue
                chunk = os.read(self._rfd, max(need - len(self._buf), 1 << 16))
            except OSError as exc:
                raise SandboxError(f"guest channel failed: {exc}") from exc
            if not chunk:
                raise SandboxError("guest channel closed (sandbox died)")
            self._buf += chunk

    def recv(self, deadline: float) -> dict[str, Any]:
        """Read one frame before ``deadline`` (a time.monotonic() value).

        Raises:
            SandboxError: on EOF, a deadline miss, an oversized or undecodable frame.
        """
        self._fill(HEADER.size, deadline)
        (size,) = HEADER.unpack(self._buf[: HEADER.size])
        if size > MAX_FRAME:
            raise SandboxError(f"guest sent a frame of {size} bytes (limit {MAX_FRAME})")
        self._fill(HEADER.size + size, deadline)
        body = bytes(self._buf[HEADER.size : HEADER.size + size])
        del self._buf[: HEADER.size + size]
        try:
            message = json.loads(body)
        except ValueError as exc:
            raise SandboxError(f"guest sent an undecodable frame: {exc}") from exc
        if not isinstance(message, dict):
            raise SandboxError("guest sent a frame that is not a JSON object")
        return message
