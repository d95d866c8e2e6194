"""The namespace backend: a bubblewrap sandbox with a warm zygote inside.

What is isolated (and tested in tests/vmpool): new user, pid, network, mount, ipc,
uts and cgroup namespaces; no network interface but a down loopback; a read-only
``/usr`` from the host and nothing else of the host's filesystem (no ``/etc``,
``/root``, ``/home``, no project checkout); a size-capped private tmpfs for work
dirs; an empty environment; all capabilities dropped; a seccomp filter
(:mod:`vmpool._seccomp`); a host uid of its own per sandbox (:mod:`vmpool._uids`);
rlimits per program set by the agent.

What is not: the kernel is shared with the host (a kernel exploit escapes, which
is what the microvm backend is for); CPU time is bounded per program but not
shared fairly between sandboxes (no cgroup v2 controller on cgroup-v1 hosts).
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from importlib import resources
from typing import Any

from ._errors import BackendUnavailableError, SandboxError, SandboxStartError
from ._protocol import FrameChannel
from ._seccomp import seccomp_bpf
from ._types import ExecRequest, ExecResult, Status
from ._uids import UidLease, lease_uid

logger = logging.getLogger(__name__)

GUEST_AGENT_PATH = "/opt/vmpool/agent.py"
_STATUS_BY_NAME = {s.value: s for s in Status}


def bwrap_path() -> str:
    """Locate bubblewrap. Raises BackendUnavailableError when it is not installed."""
    path = shutil.which("bwrap")
    if not path:
        raise BackendUnavailableError("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
    return path


def agent_source_path() -> str:
    return str(resources.files("vmpool._guest").joinpath("agent.py"))


class NamespaceSandbox:
    """One bubblewrap sandbox running the zygote agent; runs one program at a time.

    Args:
        python: interpreter inside the sandbox (from the host's read-only /usr).
        tmpfs_mb: size of the sandbox's /tmp, where work dirs live.
        start_timeout_s: how long to wait for the agent's ready message.
        transport_slack_s: extra time over a program's wall limit before the host
            declares the sandbox unresponsive and kills it.

    Raises:
        BackendUnavailableError: bwrap or seccomp support is missing.
        SandboxStartError: the sandbox did not become ready in time.
    """

    backend = "namespace"

    def __init__(self, python: str = "/usr/bin/python3", tmpfs_mb: int = 64,
                 start_timeout_s: float = 30.0, transport_slack_s: float = 5.0) -> None:
        self.transport_slack_s = transport_slack_s
        self._close_lock = threading.Lock()
        self.programs_run = 0
        self.broken = ""  # non-empty once the sandbox must not be reused, with the reason
        self._proc: subprocess.Popen[bytes] | None = None
        self._lease: UidLease | None = lease_uid()
        self._stderr = tempfile.TemporaryFile()
        self._busy = False
        self._streams: tuple = ()
        self._next_id = 0
        try:
            self._start(python, tmpfs_mb, start_timeout_s)
        except BaseException:
            self.close()
            raise

    @property
    def uid(self) -> int:
        assert self._lease is not None
        return self._lease.uid

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _command(self, python: str, tmpfs_mb: int, seccomp_fd: int) -> list[str]:
        return [
            bwrap_path(),
            "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
            "--uid", "1000", "--gid", "1000", "--hostname", "sandbox",
            "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
            "--proc", "/proc", "--dev", "/dev",
            "--size", str(tmpfs_mb << 20), "--tmpfs", "/tmp",
            "--size", str(8 << 20), "--tmpfs", "/dev/shm",
            "--ro-bind", agent_source_path(), GUEST_AGENT_PATH,
            "--remount-ro", "/",  # the root tmpfs bwrap builds: nothing may persist there
            "--chdir", "/tmp",
            "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp",
            "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
            "--seccomp", str(seccomp_fd),
            "--", python, "-I", "-B", GUEST_AGENT_PATH,
        ]

    def _start(self, python: str, tmpfs_mb: int, start_timeout_s: float) -> None:
        bpf = seccomp_bpf()
        rfd, wfd = os.pipe()
        # The filter is small (well under a pipe buffer), so writing it before the
        # reader starts cannot block.
        os.write(wfd, bpf)
        os.close(wfd)
        is_root = os.geteuid() == 0
        try:
            self._proc = subprocess.Popen(
                self._command(python, tmpfs_mb, rfd),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                pass_fds=(rfd,), env={"PATH": "/usr/bin:/bin"}, close_fds=True,
                # Root: drop to the leased uid so the sandbox owns nothing on the host.
                user=self.uid if is_root else None, group=self.uid if is_root else None,
                extra_groups=[] if is_root else None,
            )
        except OSError as exc:
            raise SandboxStartError(f"cannot start bwrap: {exc}") from exc
        finally:
            os.close(rfd)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._streams = (self._proc.stdin, self._proc.stdout)
        self._chan = FrameChannel(self._proc.stdout.fileno(), self._proc.stdin.fileno())
        try:
            hello = self._chan.recv(time.monotonic() + start_timeout_s)
        except SandboxError as exc:
            raise SandboxStartError(f"sandbox did not become ready: {exc}; {self._stderr_tail()}") from exc
        if not hello.get("ready"):
            raise SandboxStartError(f"unexpected first message from agent: {hello!r}")
        logger.debug("namespace sandbox ready: uid %d, python %s", self.uid, hello.get("python"))

    def _stderr_tail(self) -> str:
        try:
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - 2000))
            text = self._stderr.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""
        return f"sandbox stderr: {text}" if text else ""

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None and not self.broken

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
                if self._proc is None:  # closed while we were running: the pipes are ours to close
                    self._close_streams()

    def _execute(self, request: ExecRequest) -> ExecResult:
        self._next_id += 1
        message: dict[str, Any] = {
            "id": self._next_id,
            "code": request.code,
            "stdin": request.stdin,
            "files": {name: _encode_file(data) for name, data in request.files.items()},
            "limits": request.limits.to_wire(),
            "argv": list(request.argv),
            "cache_code": request.cache_code,
        }
        deadline = time.monotonic() + request.limits.wall_s + self.transport_slack_s
        try:
            self._chan.send(message)
            reply = self._chan.recv(deadline)
        except SandboxError as exc:
            self.broken = str(exc)
            raise SandboxError(f"{exc}; {self._stderr_tail()}".rstrip("; ")) from exc
        if reply.get("id") != self._next_id:
            self.broken = "protocol desynchronised"
            raise SandboxError(f"agent answered request {reply.get('id')!r}, expected {self._next_id}")
        self.programs_run += 1
        if reply.get("anomaly"):
            # The program ran, but left the sandbox in a state we will not reuse.
            self.broken = f"anomaly: {reply['anomaly']}"
            logger.info("sandbox uid %d retired: %s", self.uid, reply["anomaly"])
        return _result_from_reply(reply)

    def close(self) -> None:
        """Kill the sandbox and everything in it. Idempotent and thread-safe (the
        pool's close() may race a worker thread retiring the same sandbox)."""
        with self._close_lock:
            self._close_locked()

    def _close_streams(self) -> None:
        streams, self._streams = self._streams, ()
        for stream in streams:
            try:
                stream.close()
            except OSError:
                pass

    def _close_locked(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                logger.warning("bwrap pid %d did not exit after SIGKILL", proc.pid)
        if not self._busy:
            # A thread inside execute() still reads these pipes: it sees EOF from the
            # dead process and closes them itself; closing here could hand it a reused fd.
            self._close_streams()
        if self._lease is not None:
            # Backstop: anything that still runs under this sandbox's uid dies here.
            self._lease.release()
            self._lease = None
        self._stderr.close()
        self.broken = self.broken or "closed"

    def __enter__(self) -> "NamespaceSandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _encode_file(data: str | bytes) -> dict[str, str]:
    if isinstance(data, bytes):
        return {"b64": base64.b64encode(data).decode()}
    return {"text": data}


def _result_from_reply(reply: dict[str, Any]) -> ExecResult:
    status = _STATUS_BY_NAME.get(str(reply.get("status")), Status.SANDBOX_ERROR)
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
    )
