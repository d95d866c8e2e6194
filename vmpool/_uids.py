"""Host uids leased to sandboxes, a block of three per sandbox, exclusive across processes.

Why uids of its own per sandbox: processes of different sandboxes can then never
signal or ptrace one another, RLIMIT_NPROC counts only that sandbox's programs, and a
leftover process can be found and killed by uid. Why three: inside a sandbox the
agent, the trusted tester and the program each run as a uid of their own (mapped to
``uid``, ``uid + 1`` and ``uid + 2`` on the host), so a program cannot signal, ptrace or
read the memory of the processes that judge it. Leases are ``flock``s on files in a
lock directory, so they are released by the kernel if the owner dies, and two pools
(or two Ray actors) on one host never share a uid.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal

from ._errors import SandboxError

logger = logging.getLogger(__name__)

UID_BASE = 200_000
UID_COUNT = 60_000
UIDS_PER_LEASE = 3  # agent, tester, program
LOCK_DIR = "/run/vmpool-uids" if os.path.isdir("/run") else "/tmp/vmpool-uids"


class UidLease:
    """An exclusive lease on the host uids ``uid .. uid + UIDS_PER_LEASE - 1``; release with :meth:`release`."""

    def __init__(self, uid: int, fd: int) -> None:
        self.uid = uid
        self._fd = fd

    @property
    def uids(self) -> tuple[int, ...]:
        return tuple(range(self.uid, self.uid + UIDS_PER_LEASE))

    def release(self) -> None:
        if self._fd >= 0:
            for uid in self.uids:
                kill_uid_processes(uid)
            os.close(self._fd)
            self._fd = -1


def lease_uid() -> UidLease:
    """Lease a free block of uids. Raises SandboxError when the range is exhausted."""
    os.makedirs(LOCK_DIR, mode=0o700, exist_ok=True)
    slots = UID_COUNT // UIDS_PER_LEASE
    start = (os.getpid() * 7919) % slots  # spread processes apart: fewer collisions to skip
    for i in range(slots):
        uid = UID_BASE + ((start + i) % slots) * UIDS_PER_LEASE
        fd = os.open(os.path.join(LOCK_DIR, str(uid)), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        # A previous owner that crashed may have left processes behind under these uids.
        for u in range(uid, uid + UIDS_PER_LEASE):
            kill_uid_processes(u)
        return UidLease(uid, fd)
    raise SandboxError("no free sandbox uid left")


def uid_processes(uid: int) -> list[int]:
    """Pids of host processes whose real uid is ``uid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", "rb") as fh:
                for line in fh:
                    if line.startswith(b"State:") and b"Z" in line.split()[1]:
                        break  # a zombie holds nothing; its parent will reap it
                    if line.startswith(b"Uid:"):
                        if int(line.split()[1]) == uid:
                            pids.append(int(entry))
                        break
        except (OSError, ValueError, IndexError):
            continue
    return pids


def kill_uid_processes(uid: int) -> int:
    """SIGKILL every process running as ``uid`` (a leased sandbox uid only). Returns the count."""
    if uid < UID_BASE:
        raise ValueError(f"refusing to kill processes of uid {uid}: not a sandbox uid")
    killed = 0
    for _ in range(50):
        pids = uid_processes(uid)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except (ProcessLookupError, PermissionError):
                pass
    if killed:
        logger.debug("killed %d leftover process(es) of sandbox uid %d", killed, uid)
    return killed
