"""Booting a guest image: the QEMU command line, :func:`boot_probe` and :func:`probe_kvm`."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import SandboxStartError, VmpoolError
from ._protocol import FrameChannel
from .image._build import ImagePaths, min_memory_mb
from .image._config import AGENT_PORT

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BootReport:
    """What one boot of an image did."""

    accel: str
    boot_to_ready_s: float  # QEMU start to the agent's ready frame
    run_s: float  # send of the test program to its result
    ready: dict[str, Any]  # the agent's ready message
    result: dict[str, Any]  # the agent's answer to the test program
    qemu_argv: list[str]
    log_tail: str  # the guest console (kernel, init, agent stderr)
    more_results: tuple[dict[str, Any], ...] = ()  # answers to ``more`` requests, in order


@functools.lru_cache(maxsize=1)
def host_tsc_khz() -> int | None:
    """The host's TSC frequency in kHz, or None if it cannot be found.

    Under TCG the guest's TSC is the host's. The guest kernel calibrates it against
    the emulated PIT, which fails when the host is loaded (then, having no HPET or
    PM timer on microvm, the boot hangs after "tsc: Unable to calibrate against
    PIT"). Passing ``tsc_early_khz`` skips that calibration. Measured with RDTSC
    against the monotonic clock; /proc/cpuinfo's "cpu MHz" is preferred when it
    agrees within 0.5% (on VMs it is the kernel's own calibrated TSC value).
    """
    measured = None
    try:
        import ctypes
        import mmap

        code = bytes([0x0F, 0x31, 0x48, 0xC1, 0xE2, 0x20, 0x48, 0x09, 0xD0, 0xC3])  # rdtsc; rdx<<32|rax; ret
        buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        buf.write(code)
        rdtsc = ctypes.CFUNCTYPE(ctypes.c_uint64)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))
        samples = []
        for _ in range(5):
            t0, c0 = time.perf_counter_ns(), rdtsc()
            time.sleep(0.02)
            t1, c1 = time.perf_counter_ns(), rdtsc()
            samples.append((c1 - c0) * 1e6 / (t1 - t0))
        measured = sorted(samples)[len(samples) // 2]
    except Exception as exc:  # no x86, no executable mappings, ...
        logger.debug("cannot measure the host TSC: %s", exc)
    cpuinfo = None
    try:
        m = re.search(r"^cpu MHz\s*:\s*([0-9.]+)", Path("/proc/cpuinfo").read_text(), re.M)
        cpuinfo = float(m.group(1)) * 1000 if m else None
    except OSError:
        pass
    if measured and cpuinfo and abs(cpuinfo - measured) / measured < 0.005:
        return int(cpuinfo)
    return int(measured) if measured else None


def qemu_command(paths: ImagePaths, sock: str, log: str, accel: str = "tcg", memory_mb: int = 256,
                 extra_append: str = "") -> list[str]:  # fmt: skip
    """The QEMU command line that boots ``paths`` with the agent on unix socket ``sock``.

    The guest console (ttyS0: kernel messages, /init, the agent's stderr) goes to the
    file ``log``. The agent channel is a virtserialport named ``vmpool.agent`` on a
    unix-socket chardev (QEMU is the server; connect after it starts).
    """
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        raise VmpoolError("qemu-system-x86_64 not found: apt-get install qemu-system-x86")
    append = "console=ttyS0 quiet panic=-1 reboot=t i8042.noaux i8042.nokbd"
    if accel == "tcg" and host_tsc_khz():
        # The guest's TSC is the host's: give its frequency (PIT calibration fails on a
        # loaded host and the boot hangs) and trust it (else the clocksource watchdog,
        # comparing against jiffies that lose ticks under TCG, falls back to jiffies:
        # 4 ms resolution and a guest clock that runs slow, i.e. wrong wall limits).
        append += f" tsc_early_khz={host_tsc_khz()} tsc=reliable"
    return [
        qemu,
        "-M", "microvm,x-option-roms=off,rtc=on,isa-serial=on",
        "-accel", accel,
        "-cpu", "host" if accel == "kvm" else "max",
        "-m", str(memory_mb),
        "-smp", "1",
        "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
        "-serial", f"file:{log}",
        "-kernel", str(paths.vmlinux),
        "-initrd", str(paths.initramfs),
        "-append", f"{append} {extra_append}".strip(),
        "-device", "virtio-serial-device",
        "-chardev", f"socket,id=agent,path={sock},server=on,wait=off",
        "-device", f"virtserialport,chardev=agent,name={AGENT_PORT}",
    ]  # fmt: skip


PROBE_REQUEST = {
    "id": 1, "code": "print(1+1)", "stdin": "", "files": {}, "argv": [],
    "limits": {"wall_s": 30, "cpu_s": 31, "memory_mb": 128, "max_processes": 32, "max_open_files": 64,
               "output_bytes": 65536, "file_size_bytes": 1048576},
}  # fmt: skip


def _tail(path: str, n: int = 3000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - n))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def boot_probe(paths: ImagePaths, accel: str = "tcg", timeout_s: float = 60.0, memory_mb: int | None = None,
               request: Mapping[str, Any] | None = None,
               more: Sequence[Mapping[str, Any]] = ()) -> BootReport:  # fmt: skip
    """Boot the image once, wait for the agent's ready frame, run one program, stop.

    Args:
        paths: a built image.
        accel: ``tcg`` or ``kvm``.
        timeout_s: the deadline for boot plus the program.
        memory_mb: guest RAM; default the image config's ``memory_mb`` (from the manifest).
        request: the program to run (default ``print(1+1)``, checked to print ``2``).
        more: further requests sent one after another in the same VM; their answers
            are returned unchecked in ``more_results``.

    Raises:
        SandboxStartError: QEMU failed, the guest never got ready or answered wrongly;
            the message carries the tail of the guest console.
    """
    if memory_mb is None:
        try:
            memory_mb = int(json.loads(paths.manifest.read_text())["boot"]["memory_mb"])
        except (OSError, ValueError, KeyError, TypeError):
            memory_mb = 256
    need = min_memory_mb(paths.initramfs)
    if memory_mb < need:
        raise SandboxStartError(f"image {paths.dir.name} needs at least {need} MiB of guest RAM to unpack its "
                                f"initramfs, got memory_mb={memory_mb}: raise memory_mb in the image config")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="vmpool-boot-") as tmp:
        sock, log = os.path.join(tmp, "agent.sock"), os.path.join(tmp, "console.log")
        argv = qemu_command(paths, sock, log, accel=accel, memory_mb=memory_mb)
        start = time.monotonic()
        deadline = start + timeout_s
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        conn: socket.socket | None = None

        def failure(what: str) -> SandboxStartError:
            out = ""
            if proc.poll() is not None and proc.stdout:
                out = proc.stdout.read().decode("utf-8", "replace")[-1500:]
            detail = f"\n--- qemu output ---\n{out}" if out.strip() else ""
            return SandboxStartError(f"{accel} boot of {paths.dir.name}: {what}{detail}\n"
                                     f"--- guest console (tail) ---\n{_tail(log)}")  # fmt: skip

        try:
            while conn is None:
                if proc.poll() is not None:
                    raise failure(f"qemu exited with status {proc.returncode} before its socket was up")
                if time.monotonic() > deadline:
                    raise failure("qemu did not create the agent socket")
                if os.path.exists(sock):
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    try:
                        s.connect(sock)
                        conn = s
                        break
                    except OSError:
                        s.close()
                time.sleep(0.005)
            chan = FrameChannel(conn.fileno(), conn.fileno())
            try:
                ready = chan.recv(deadline)
            except VmpoolError as exc:
                if proc.poll() is not None:
                    raise failure(f"the VM stopped (qemu status {proc.returncode}) before the agent was ready") from exc
                raise failure(f"no ready frame within {timeout_s:g} s ({exc})") from exc
            boot_s = time.monotonic() - start
            if not ready.get("ready"):
                raise failure(f"first frame is not a ready message: {ready}")
            req = dict(request or PROBE_REQUEST)
            t = time.monotonic()
            chan.send(req)
            try:
                result = chan.recv(deadline)
            except VmpoolError as exc:
                raise failure(f"no answer to the test program ({exc})") from exc
            run_s = time.monotonic() - t
            if request is None and (result.get("status") != "ok" or result.get("stdout") != "2\n"):
                raise failure(f"test program print(1+1) answered {result}")
            more_results = []
            for extra in more:
                chan.send(dict(extra))
                try:
                    more_results.append(chan.recv(deadline))
                except VmpoolError as exc:
                    raise failure(f"no answer to request {extra.get('id')!r} ({exc})") from exc
            return BootReport(accel, boot_s, run_s, ready, result, argv, _tail(log), tuple(more_results))
        finally:
            if conn is not None:
                conn.close()
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout:
                proc.stdout.close()


def probe_kvm(paths: ImagePaths, timeout_s: float = 10.0) -> tuple[bool, str]:
    """Whether this host can boot the image under KVM, found by booting it (never by /dev/kvm alone).

    Returns:
        ``(True, "...")`` when the guest agent ran a program under ``-accel kvm``
        within ``timeout_s``; otherwise ``(False, reason)``.
    """
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm does not exist (no KVM on this host)"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is not readable and writable by this user"
    try:
        report = boot_probe(paths, accel="kvm", timeout_s=timeout_s)
    except VmpoolError as exc:
        lines = str(exc).splitlines()
        reason = f"KVM present but the guest did not run under it: {lines[0]}"
        if "--- qemu output ---" in lines:  # QEMU's own complaint, e.g. a failed MSR write
            said = [ln for ln in lines[lines.index("--- qemu output ---") + 1:] if ln.strip() and not ln.startswith("---")]
            if said:
                reason += f" ({said[0].strip()})"
        return False, reason
    return True, f"kvm guest ready in {report.boot_to_ready_s:.2f} s"
