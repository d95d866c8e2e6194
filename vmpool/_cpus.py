"""CPUs leased to sandboxes: each namespace sandbox runs pinned to one CPU, spread across the host.

Why pin: a graded program is a chain of processes that wake one another many times
(agent, program zygote, program, tester; one round trip per proxied call). Left free,
the scheduler spreads the chain over CPUs, and every cross-CPU wake-up is an
inter-processor interrupt and a cold cache; under nested virtualisation each one costs
a VM exit. Kept on one CPU the chain hands over locally, and sandboxes on other CPUs run
in parallel (``python -m harness bench`` measures both). A pinned agent also switches
itself (and so everything it forks) to ``SCHED_BATCH``: a woken process then waits for
the running one to block instead of preempting it, so a hand-over (a request written,
then the writer blocks on the reply) costs two context switches, not four.

Why a lease: several pools (Ray actors, test processes) may share a host. A CPU is
chosen from the caller's own affinity set, taking the lowest "slot" free on any CPU,
so the first sandboxes of every pool on the host land on distinct CPUs and only then
do two share one. Leases are ``flock`` s on files in a lock directory: the kernel drops
them when their owner dies.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile

logger = logging.getLogger(__name__)

MAX_SLOTS = 64  # sandboxes per CPU before pinning gives up (the sandbox then runs unpinned)


def _lock_dir() -> str:
    for base in ("/run", tempfile.gettempdir()):
        path = os.path.join(base, "vmpool-cpus" if os.geteuid() == 0 else f"vmpool-cpus-{os.geteuid()}")
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
            if os.access(path, os.W_OK):
                return path
        except OSError:
            continue
    return ""


class CpuLease:
    """A held CPU slot; release with :meth:`release` (or let the process end)."""

    def __init__(self, cpu: int, slot: int, fd: int) -> None:
        self.cpu = cpu
        self.slot = slot
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def lease_cpu(cpus: set[int] | None = None) -> CpuLease | None:
    """Lease the least shared CPU of ``cpus`` (default: this process's affinity set).

    Returns:
        The lease, or None when no lock directory is writable or every CPU already
        holds ``MAX_SLOTS`` sandboxes (the caller then does not pin).
    """
    allowed = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
    directory = _lock_dir()
    if not allowed or not directory:
        return None
    # Start the scan at a per-process offset: two pools starting at once then try
    # different CPUs first instead of racing for the same lock files.
    offset = os.getpid() % len(allowed)
    for slot in range(MAX_SLOTS):
        for i in range(len(allowed)):
            cpu = allowed[(offset + i) % len(allowed)]
            path = os.path.join(directory, f"cpu{cpu}.{slot}")
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                logger.debug("cannot open cpu lease %s: %s", path, exc)
                return None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return CpuLease(cpu, slot, fd)
    return None
