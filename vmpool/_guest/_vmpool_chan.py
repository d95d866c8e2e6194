"""The guest side of the host-guest wire: length-prefixed JSON frames (part of the guest
agent and the session kernel, stdlib only; the host's copy is :mod:`vmpool._protocol`)."""

import json
import os
import struct

HEADER = struct.Struct(">I")
MAX_FRAME = 256 << 20


class Channel:
    """Length-prefixed JSON frames over a pair of file descriptors."""

    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd = rfd
        self.wfd = wfd

    def _read_exact(self, n: int):
        chunks = []
        while n:
            chunk = os.read(self.rfd, min(n, 1 << 20))
            if not chunk:
                return None
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def recv(self):
        head = self._read_exact(HEADER.size)
        if head is None:
            return None
        (size,) = HEADER.unpack(head)
        if size > MAX_FRAME:
            raise ValueError(f"frame of {size} bytes exceeds {MAX_FRAME}")
        body = self._read_exact(size)
        if body is None:
            return None
        return json.loads(body)

    def send(self, message: dict) -> None:
        body = json.dumps(message, separators=(",", ":")).encode()
        data = HEADER.pack(len(body)) + body
        view = memoryview(data)
        while view:
            n = os.write(self.wfd, view)
            view = view[n:]
