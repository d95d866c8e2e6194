"""The guest side of the host-guest wire: length-prefixed JSON frames (part of the guest
agent and the session kernel, stdlib only; the host's copy is :mod:`vmpool._protocol`)."""

import json
import os
import select
import socket
import struct
import sys
import time

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


class Conn:
    """A non-blocking framed connection to one interpreter (a socket; may carry fds)."""

    def __init__(self, sock):
        self.sock = sock
        sock.setblocking(False)
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.fds = []
        self.eof = False

    def fileno(self):
        return self.sock.fileno()

    def fill(self):
        try:
            data, anc, _, _ = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(64 * 4))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, anc = b"", []
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % 4
                self.fds.extend(int.from_bytes(payload[i:i + 4], sys.byteorder) for i in range(0, usable, 4))
        if not data:
            self.eof = True
        self.inbuf += data

    def frame(self):
        if len(self.inbuf) < HEADER.size:
            return None
        (size,) = HEADER.unpack(self.inbuf[:HEADER.size])
        if size > MAX_FRAME:
            self.eof = True  # a corrupted stream: the branch is lost
            return None
        if len(self.inbuf) < HEADER.size + size:
            return None
        body = bytes(self.inbuf[HEADER.size:HEADER.size + size])
        del self.inbuf[:HEADER.size + size]
        try:
            msg = json.loads(body)
        except ValueError:
            return {}
        return msg if isinstance(msg, dict) else {}

    def take_fds(self):
        fds, self.fds = self.fds, []
        return fds

    def queue(self, msg):
        body = json.dumps(msg, separators=(",", ":")).encode()
        self.outbuf += HEADER.pack(len(body)) + body
        self.flush()

    def flush(self):
        while self.outbuf:
            try:
                n = self.sock.send(self.outbuf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.eof = True
                self.outbuf.clear()
                return
            del self.outbuf[:n]

    def wait_frame(self, deadline):
        """Block (up to ``deadline``) for the next frame: control steps wait on one branch."""
        while True:
            msg = self.frame()
            if msg is not None:
                return msg
            if self.eof:
                raise ConnectionError("the interpreter exited")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the interpreter did not answer in time")
            readable, writable, _ = select.select([self], [self] if self.outbuf else [], [], left)
            if writable:
                self.flush()
            if readable:
                self.fill()

    def close(self):
        for fd in self.take_fds():
            try:
                os.close(fd)
            except OSError:
                pass
        self.sock.close()
