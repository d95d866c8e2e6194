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

import logging
import os
import shutil
import subprocess
import tempfile
import time
from importlib import resources

from ._agent_client import AgentSandbox
from ._errors import BackendUnavailableError, SandboxError, SandboxStartError
from ._protocol import FrameChannel
from ._seccomp import seccomp_bpf
from ._uids import UidLease, lease_uid

logger = logging.getLogger(__name__)

GUEST_AGENT_PATH = "/opt/vmpool/agent.py"


def bwrap_path() -> str:
    """Locate bubblewrap. Raises BackendUnavailableError when it is not installed."""
    path = shutil.which("bwrap")
    if not path:
        raise BackendUnavailableError("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
    return path


def agent_source_path() -> str:
    return str(resources.files("vmpool._guest").joinpath("agent.py"))


class NamespaceSandbox(AgentSandbox):
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
        super().__init__(transport_slack_s)
        self._proc: subprocess.Popen[bytes] | None = None
        self._lease: UidLease | None = lease_uid()
        self._stderr = tempfile.TemporaryFile()
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
        chan = FrameChannel(self._proc.stdout.fileno(), self._proc.stdin.fileno())
        self._attach(chan, (self._proc.stdin, self._proc.stdout))
        try:
            hello = chan.recv(time.monotonic() + start_timeout_s)
        except SandboxError as exc:
            raise SandboxStartError(f"sandbox did not become ready: {exc}; {self._diagnostics()}") from exc
        if not hello.get("ready"):
            raise SandboxStartError(f"unexpected first message from agent: {hello!r}")
        logger.debug("namespace sandbox ready: uid %d, python %s", self.uid, hello.get("python"))

    def _diagnostics(self) -> str:
        try:
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - 2000))
            text = self._stderr.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""
        return f"sandbox stderr: {text}" if text else ""

    def _process_alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            logger.warning("bwrap pid %d did not exit after SIGKILL", proc.pid)

    def _release(self) -> None:
        if self._lease is not None:
            # Backstop: anything that still runs under this sandbox's uid dies here.
            self._lease.release()
            self._lease = None
        self._stderr.close()
