"""The microvm backend: QEMU ``microvm`` guests cloned copy-on-write from a snapshot.

A :class:`MicroVMTemplate` is the guest image booted once to a ready agent (zygote)
and captured: guest RAM lives in a file (``memory-backend-file,share=on``) and the
device state is saved with the migration capability ``x-ignore-shared``, so the
state stream is tens of KB and RAM stays in the file. Every :class:`MicroVMSandbox`
is a new QEMU restoring that state with the same RAM file mapped privately
(``share=off``): clones share the template's pages until they write them, and the
template file is never modified. The VM that wrote the template is never resumed.

After a restore the agent is told to set the guest clock and reseed the kernel RNG
(every clone starts with the template's). A running sandbox can be captured with
:meth:`MicroVMSandbox.checkpoint` (a full migration stream: its RAM is private) and
started again n times with :meth:`Checkpoint.fork`, for tree search or agents that
branch. Inside the guest the same agent as the namespace backend runs programs
(fork per program, limits, statuses); programs run as ``nobody``.

What is isolated: a separate kernel per sandbox; no network device; the host sees
the guest only through one virtio-serial port carrying the agent protocol. What is
not: the QEMU process itself runs on the host as the harness's user (a QEMU escape
is a host compromise), and under TCG (no usable KVM) guests are ~17x slower.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ._agent_client import AgentSandbox
from ._errors import BackendUnavailableError, SandboxError, SandboxStartError
from ._protocol import FrameChannel
from ._qemu import probe_kvm, qemu_command
from ._qmp import QMPClient, QMPError
from ._types import Status
from .image import ImageConfig, ImagePaths, find_image

logger = logging.getLogger(__name__)

TEMPLATE_FORMAT = 1  # bump when the snapshot recipe changes: old snapshots are then ignored
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child before exec
    # QEMU dies with the harness thread that started it (the pool spawns from
    # long-lived threads), so a killed harness never leaves VMs behind.
    import ctypes

    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def qemu_version() -> str:
    out = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


_ACCEL_CACHE: dict[str, tuple[str, str]] = {}
_ACCEL_LOCK = threading.Lock()


def choose_accel(image: ImagePaths, requested: str = "auto") -> tuple[str, str]:
    """Pick ``kvm`` or ``tcg``: KVM only if a probe boot of ``image`` under KVM worked.

    Returns:
        ``(accel, reason)``; probed once per process and image.
    """
    if requested in ("kvm", "tcg"):
        return requested, "requested"
    with _ACCEL_LOCK:
        if image.dir.name not in _ACCEL_CACHE:
            ok, reason = probe_kvm(image, timeout_s=20)
            _ACCEL_CACHE[image.dir.name] = ("kvm", reason) if ok else ("tcg", f"KVM probe failed: {reason}")
            logger.info("microvm accelerator: %s (%s)", *_ACCEL_CACHE[image.dir.name])
        return _ACCEL_CACHE[image.dir.name]


@dataclass(frozen=True)
class MicroVMTemplate:
    """A guest booted once to a ready agent and captured (RAM file + device state).

    Attributes:
        image: the guest image it was booted from.
        dir: where ``ram``, ``state`` and ``manifest.json`` live.
        accel: ``kvm`` or ``tcg``.
        memory_mb: guest RAM.
        cold_boot_s: QEMU start to a ready agent when the template was made.
    """

    image: ImagePaths
    dir: Path
    accel: str
    memory_mb: int
    cold_boot_s: float

    @property
    def ram(self) -> Path:
        return self.dir / "ram"

    @property
    def state(self) -> Path:
        return self.dir / "state"

    def argv(self, run_dir: str, *, ram_share: bool, incoming: bool) -> list[str]:
        """The QEMU command line of a VM of this template; device topology is identical
        for the template and every clone (a requirement of restoring a snapshot)."""
        argv = qemu_command(self.image, os.path.join(run_dir, "agent.sock"), os.path.join(run_dir, "console.log"),
                            accel=self.accel, memory_mb=self.memory_mb)
        argv += [
            "-object", f"memory-backend-file,id=mem,size={self.memory_mb}M,mem-path={self.ram},"
                       f"share={'on' if ram_share else 'off'}",
            "-machine", "memory-backend=mem",
            "-qmp", f"unix:{os.path.join(run_dir, 'qmp.sock')},server=on,wait=off",
        ]  # fmt: skip
        if incoming:
            argv += ["-incoming", "defer", "-S"]
        return argv

    @classmethod
    def ensure(cls, image_config: ImageConfig | None = None, accel: str = "auto",
               boot_timeout_s: float = 180.0, *, image: ImagePaths | None = None) -> MicroVMTemplate:  # fmt: skip
        """The snapshot of a built guest image, made (one cold boot) if it is not cached yet.

        Builds no image and runs no apt tool: the image is ``image``, or the one
        :func:`vmpool.build_image` built for ``image_config`` (``python -m harness image
        build``). Snapshots are cached next to the image, keyed by everything that must
        match at restore (QEMU version, accelerator, memory, recipe version); a file lock
        makes concurrent pools (or Ray actors) wait for one boot instead of racing.

        Args:
            image_config: which image (and its guest memory); default ``ImageConfig()``.
            accel: ``auto`` (KVM if a probe boot works, else TCG), ``kvm`` or ``tcg``.
            boot_timeout_s: deadline of the template's cold boot.
            image: a built image to use instead of looking one up for ``image_config``.

        Raises:
            BackendUnavailableError: no image is built for ``image_config`` (the message
                gives the command that builds it).
            SandboxStartError: the template guest did not boot or could not be saved.
        """
        config = image_config or ImageConfig()
        if image is None:
            image = find_image(config)
        if image is None:
            raise BackendUnavailableError(
                f"no microvm guest image is built for this image config ({config.kernel_package}, extra packages: "
                f"{', '.join(config.extra_packages) or 'none'}, cache {config.cache_dir}); build it once with "
                "`python -m harness image build [--config IMAGE.yaml]` or vmpool.build_image(config)")
        accel, reason = choose_accel(image, accel)
        memory_mb = config.memory_mb
        key = hashlib.sha256(json.dumps([TEMPLATE_FORMAT, qemu_version(), accel, memory_mb]).encode()).hexdigest()[:16]
        directory = image.dir / f"snapshot-{key}"
        with open(image.dir / ".snapshot.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            manifest = directory / "manifest.json"
            if not manifest.exists():
                _make_snapshot(image, directory, accel, memory_mb, boot_timeout_s)
            meta = json.loads(manifest.read_text())
        logger.info("microvm template %s (%s, %s)", directory, accel, reason)
        return cls(image=image, dir=directory, accel=accel, memory_mb=memory_mb, cold_boot_s=meta["cold_boot_s"])


def _x_ignore_shared(qmp: QMPClient, on: bool) -> None:
    qmp.execute("migrate-set-capabilities", {"capabilities": [{"capability": "x-ignore-shared", "state": on}]})


def _make_snapshot(image: ImagePaths, directory: Path, accel: str, memory_mb: int, timeout_s: float) -> None:
    """Cold-boot the image with RAM in a shared file, wait for the agent, save, quit."""
    work = Path(tempfile.mkdtemp(prefix=".snapshot-", dir=image.dir))
    template = MicroVMTemplate(image, work, accel, memory_mb, 0.0)
    run_dir = tempfile.mkdtemp(prefix="vmpool-template-")
    proc = None
    try:
        start = time.monotonic()
        deadline = start + timeout_s
        proc = subprocess.Popen(template.argv(run_dir, ram_share=True, incoming=False),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent)  # fmt: skip
        conn = _connect(os.path.join(run_dir, "agent.sock"), deadline, proc)
        try:
            hello = FrameChannel(conn.fileno(), conn.fileno()).recv(deadline)
            if not hello.get("ready"):
                raise SandboxStartError(f"template guest sent {hello!r} instead of ready")
            cold_boot_s = time.monotonic() - start
            # Save while the agent still idles in read() on a connected port.
            qmp = QMPClient(os.path.join(run_dir, "qmp.sock"))
            qmp.execute("stop")
            _x_ignore_shared(qmp, True)
            qmp.execute("migrate", {"uri": f"exec:cat > {template.state}"})
            info = qmp.wait_migration(timeout_s=60)
            qmp.execute("quit")  # never resume the VM that wrote the template
            qmp.close()
            proc.wait(timeout=10)
        finally:
            conn.close()
        (work / "manifest.json").write_text(json.dumps({
            "cold_boot_s": cold_boot_s, "accel": accel, "memory_mb": memory_mb, "qemu": qemu_version(),
            "state_bytes": template.state.stat().st_size, "save_ms": info.get("total-time"),
            "created": time.time(),
        }, indent=1))  # fmt: skip
        os.rename(work, directory)
        logger.info("microvm template saved: cold boot %.2f s, state %d bytes", cold_boot_s,
                    (directory / "state").stat().st_size)
    except (OSError, SandboxError, subprocess.TimeoutExpired) as exc:
        console = _tail(os.path.join(run_dir, "console.log"))
        raise SandboxStartError(f"cannot make the microvm template: {exc}\n--- guest console ---\n{console}") from exc
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def _connect(path: str, deadline: float, proc: subprocess.Popen[bytes]) -> socket.socket:
    while True:
        if proc.poll() is not None:
            raise SandboxStartError(f"qemu exited with status {proc.returncode}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise SandboxStartError(f"agent socket {path} did not come up")
            time.sleep(0.002)


def _tail(path: str, n: int = 2000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - n))
            return fh.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


class MicroVMSandbox(AgentSandbox):
    """One microVM restored from a template (or a checkpoint); one program at a time.

    Args:
        template: the snapshot to restore.
        checkpoint: restore this checkpoint's full state instead of the template's.
        start_timeout_s: deadline for restore + agent handshake.
        transport_slack_s: extra seconds past a program's wall limit before the host
            declares the VM unresponsive and kills it.
        persistent: keep files in the guest's ``/state`` from one program to the next
            (an agent's workspace; carried into checkpoints and forks). Off for
            grading pools: there every writable place is wiped after each program.

    Raises:
        SandboxStartError: QEMU failed, the restore failed, or the agent did not answer.
    """

    backend = "microvm"
    retire_on = frozenset({Status.TIMEOUT, Status.MEMORY_LIMIT, Status.OUTPUT_LIMIT})

    def memory_stats(self) -> dict[str, int]:
        """How much of this clone is its own: QEMU's RSS, and of the template RAM
        mapping, the KiB still shared with the template file vs copied on write.

        Returns:
            ``{"rss_kb", "ram_shared_kb", "ram_copied_kb", "ram_copied_pages"}``.
        """
        stats = {"rss_kb": 0, "ram_shared_kb": 0, "ram_copied_kb": 0, "ram_copied_pages": 0}
        if self._proc is None:
            return stats
        ram = str(self.template.ram)
        in_ram = False
        with open(f"/proc/{self._proc.pid}/smaps") as fh:
            for line in fh:
                head = line.split()
                if not head:
                    continue
                if "-" in head[0] and len(head) >= 5:  # a mapping header
                    in_ram = len(head) >= 6 and head[5] == ram
                    continue
                if head[0] == "Rss:":
                    stats["rss_kb"] += int(head[1])
                if in_ram and head[0] in ("Shared_Clean:", "Private_Clean:"):
                    stats["ram_shared_kb"] += int(head[1])
                if in_ram and head[0] == "Anonymous:":  # private copies of file pages
                    stats["ram_copied_kb"] += int(head[1])
        stats["ram_copied_pages"] = stats["ram_copied_kb"] // 4
        return stats

    def __init__(self, template: MicroVMTemplate, checkpoint: Checkpoint | None = None,
                 start_timeout_s: float = 30.0, transport_slack_s: float = 5.0,
                 persistent: bool = False) -> None:  # fmt: skip
        super().__init__(transport_slack_s)
        self.persistent = persistent
        self.template = template
        self._run_dir = tempfile.mkdtemp(prefix="vmpool-vm-")
        self._proc: subprocess.Popen[bytes] | None = None
        self._qmp: QMPClient | None = None
        self.restore_s = 0.0
        try:
            self._start(checkpoint, start_timeout_s)
        except BaseException:
            self.close()
            raise

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _start(self, checkpoint: Checkpoint | None, timeout_s: float) -> None:
        start = time.monotonic()
        deadline = start + timeout_s
        argv = self.template.argv(self._run_dir, ram_share=False, incoming=True)
        with open(os.path.join(self._run_dir, "qemu.log"), "wb") as log:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          preexec_fn=_die_with_parent)  # fmt: skip
        try:
            self._qmp = QMPClient(os.path.join(self._run_dir, "qmp.sock"), timeout_s=timeout_s)
            state = checkpoint.path if checkpoint else self.template.state
            # Template state leaves RAM in the shared file; a checkpoint carries all of it.
            _x_ignore_shared(self._qmp, checkpoint is None)
            self._qmp.execute("migrate-incoming", {"uri": f"exec:cat {state}"})
            self._qmp.wait_migration(timeout_s=max(0.1, deadline - time.monotonic()))
            self._qmp.execute("cont")
            conn = _connect(os.path.join(self._run_dir, "agent.sock"), deadline, self._proc)
        except (QMPError, SandboxStartError) as exc:
            raise SandboxStartError(f"microvm restore failed: {exc}; {self._diagnostics()}") from exc
        self._attach(FrameChannel(conn.fileno(), conn.fileno()), (conn,))
        try:
            reply = self._request({"op": "resume", "time": time.time(), "seed": secrets.token_hex(32)}, deadline)
        except SandboxError as exc:
            raise SandboxStartError(f"restored microvm did not answer: {exc}") from exc
        if self.persistent:
            self._request({"op": "persist", "on": True}, deadline)
        self.restore_s = time.monotonic() - start
        logger.debug("microvm restored in %.3f s (resume: %s)", self.restore_s, reply.get("resumed"))

    # ------------------------------------------------------------------ checkpoint / fork
    def checkpoint(self) -> Checkpoint:
        """Capture this running sandbox (RAM and devices) into a file.

        The sandbox keeps running afterwards. Use the result's :meth:`Checkpoint.fork`
        to start clones that continue from exactly this state.

        Raises:
            SandboxError: the sandbox is busy, dead, or the save failed.
        """
        with self._close_lock:
            if self._busy or not self.alive() or self._qmp is None:
                raise SandboxError("cannot checkpoint a sandbox that is busy, closed or dead")
            self._busy = True
        fd, path = tempfile.mkstemp(prefix="vmpool-checkpoint-")
        os.close(fd)
        try:
            self._qmp.execute("stop")
            _x_ignore_shared(self._qmp, False)  # its RAM is private: the stream must carry it
            self._qmp.execute("migrate", {"uri": f"exec:cat > {path}"})
            self._qmp.wait_migration(timeout_s=120)
            self._qmp.execute("cont")
        except QMPError as exc:
            os.unlink(path)
            self.broken = f"checkpoint failed: {exc}"
            raise SandboxError(f"checkpoint failed: {exc}") from exc
        finally:
            with self._close_lock:
                self._busy = False
        return Checkpoint(Path(path), self.template)

    def fork(self, n: int = 1, start_timeout_s: float = 60.0) -> list[MicroVMSandbox]:
        """Checkpoint this sandbox and start ``n`` clones from that state."""
        with self.checkpoint() as checkpoint:
            return checkpoint.fork(n, start_timeout_s=start_timeout_s)

    # ------------------------------------------------------------------ AgentSandbox hooks
    def _process_alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _kill(self) -> None:
        if self._qmp is not None:
            self._qmp.close()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                logger.warning("qemu pid %d did not exit after SIGKILL", proc.pid)

    def _release(self) -> None:
        shutil.rmtree(self._run_dir, ignore_errors=True)

    def _diagnostics(self) -> str:
        parts = [("qemu", _tail(os.path.join(self._run_dir, "qemu.log"), 800)),
                 ("guest console", _tail(os.path.join(self._run_dir, "console.log"), 1200))]  # fmt: skip
        return "; ".join(f"{name}: {text}" for name, text in parts if text)


class Checkpoint:
    """A captured running microVM; :meth:`fork` starts clones from it. Deletes its
    file on :meth:`close` (clones already started keep running)."""

    def __init__(self, path: Path, template: MicroVMTemplate) -> None:
        self.path = path
        self.template = template

    def fork(self, n: int = 1, start_timeout_s: float = 60.0) -> list[MicroVMSandbox]:
        """Start ``n`` independent sandboxes from this state (each its own QEMU)."""
        if not self.path.exists():
            raise SandboxError("checkpoint was closed")
        clones: list[MicroVMSandbox] = []
        try:
            for _ in range(n):
                # The agent's session settings (persistence) travel inside the checkpoint.
                clones.append(MicroVMSandbox(self.template, checkpoint=self, start_timeout_s=start_timeout_s))
        except BaseException:
            for clone in clones:
                clone.close()
            raise
        return clones

    def close(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
