"""Host uids leased to sandboxes, a block per sandbox, exclusive across processes.

Why uids of its own per sandbox: processes of different sandboxes can then never
signal or ptrace one another, RLIMIT_NPROC counts only that sandbox's programs, and a
leftover process can be found and killed by uid. Inside a sandbox the agent, the trusted
tester and the program each run as a uid of their own, so a program cannot signal,
ptrace or read the memory of the processes that judge it.

Where the uids come from (:func:`uid_plan`):

* ``root``: blocks of three (agent, tester, program) from ``UID_BASE``; the host writes
  the sandbox's uid map itself.
* ``subuid``: an ordinary user with a subordinate uid range (``/etc/subuid`` and
  ``/etc/subgid``, as ``useradd`` creates) and ``newuidmap``/``newgidmap`` (Debian package
  ``uidmap``): blocks of two (tester, program) from that range; the agent runs as the
  user's own uid. The setuid helpers write the map, checking it against the ranges.
* ``single``: neither: the sandbox maps one uid, and programs share it with their tester
  (still isolated from the host and from other sandboxes). :attr:`UidPlan.lost` says so.

Leases are ``flock`` s on files in a lock directory of the user's own (``/run/vmpool-uids``
for root, else ``$XDG_RUNTIME_DIR/vmpool-uids`` or ``$TMPDIR/vmpool-uids-<uid>``), so the
kernel releases them if the owner dies, and two pools (or two Ray actors) of one user
never share a uid.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import pwd
import shutil
import signal
import tempfile
from dataclasses import dataclass

from ._errors import SandboxError

logger = logging.getLogger(__name__)

UID_BASE = 200_000
UID_COUNT = 60_000
UIDS_PER_LEASE = 3  # root: agent, tester, program


@dataclass(frozen=True)
class UidPlan:
    """How this process gives sandboxes uids of their own.

    Attributes:
        mode: ``root``, ``subuid`` or ``single`` (see the module docstring).
        uid_base / gid_base / count: the host range leases come from (empty for ``single``).
        block: uids per lease (3 as root: agent, tester, program; 2 with subuids).
        lock_dir: where the lease files live ("" for ``single``).
        lost: for ``single``: the isolation property this mode lacks and how to get it.
    """

    mode: str
    uid_base: int = 0
    gid_base: int = 0
    count: int = 0
    block: int = 0
    lock_dir: str = ""
    lost: str = ""

    def owns(self, uid: int) -> bool:
        """Whether ``uid`` is one this plan leases (and so may be swept)."""
        return self.count > 0 and self.uid_base <= uid < self.uid_base + self.count


def _subordinate(path: str, name: str, uid: int) -> tuple[int, int] | None:
    """The first ``start:count`` range of ``name`` (or its uid) in /etc/subuid or /etc/subgid."""
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] in (name, str(uid)):
                    return int(parts[1]), int(parts[2])
    except (OSError, ValueError):
        return None
    return None


def _user_lock_dir() -> str:
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    candidates = [os.path.join(runtime, "vmpool-uids")] if runtime else []
    candidates.append(os.path.join(tempfile.gettempdir(), f"vmpool-uids-{os.geteuid()}"))
    for path in candidates:
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
            st = os.stat(path)
            if st.st_uid == os.geteuid() and os.access(path, os.W_OK):
                return path  # ours: another user's directory of that name is never trusted
        except OSError:
            continue
    return ""


@functools.lru_cache(maxsize=1)
def uid_plan() -> UidPlan:
    """The :class:`UidPlan` of this process (decided once)."""
    if os.geteuid() == 0:
        lock_dir = "/run/vmpool-uids" if os.path.isdir("/run") else "/tmp/vmpool-uids"
        return UidPlan("root", UID_BASE, UID_BASE, UID_COUNT, UIDS_PER_LEASE, lock_dir)
    uid = os.getuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    subuid = _subordinate("/etc/subuid", name, uid)
    subgid = _subordinate("/etc/subgid", name, uid)
    tools = all(shutil.which(t) for t in ("newuidmap", "newgidmap"))
    lock_dir = _user_lock_dir()
    if subuid and subgid and tools and lock_dir and min(subuid[1], subgid[1]) >= 2:
        return UidPlan("subuid", subuid[0], subgid[0], min(subuid[1], subgid[1], UID_COUNT), 2, lock_dir)
    why = ("newuidmap/newgidmap are missing (apt-get install uidmap)" if not tools
           else f"user {name} has no subordinate uid and gid range in /etc/subuid and /etc/subgid" if not (
               subuid and subgid) else "no lock directory of its own is writable")
    return UidPlan("single", lost=(
        f"not root and {why}: namespace sandboxes map one uid, so programs share it with their tester "
        "(isolated from the host and from other sandboxes, not from the process that tests them)"))


class UidLease:
    """An exclusive lease on host uids ``uid .. uid + block - 1`` (and the gids beside them).

    Attributes:
        uid / gid: the first host uid and gid of the block.
        plan: the :class:`UidPlan` it came from.
    """

    def __init__(self, uid: int, gid: int, fd: int, plan: UidPlan) -> None:
        self.uid = uid
        self.gid = gid
        self.plan = plan
        self._fd = fd

    @property
    def uids(self) -> tuple[int, ...]:
        """The leased host uids (root: agent, tester, program; subuid: tester, program)."""
        return tuple(range(self.uid, self.uid + self.plan.block))

    @property
    def gids(self) -> tuple[int, ...]:
        return tuple(range(self.gid, self.gid + self.plan.block))

    def release(self) -> None:
        if self._fd >= 0:
            for uid in self.uids:
                kill_uid_processes(uid)
            os.close(self._fd)
            self._fd = -1


def lease_uid() -> UidLease | None:
    """Lease a free block of uids; ``None`` in ``single`` mode (there is nothing to lease).

    Raises:
        SandboxError: the range is exhausted, or the lock directory cannot be used.
    """
    plan = uid_plan()
    if plan.mode == "single":
        return None
    try:
        os.makedirs(plan.lock_dir, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise SandboxError(f"cannot create the uid lease directory {plan.lock_dir}: {exc.strerror or exc}") from exc
    slots = plan.count // plan.block
    start = (os.getpid() * 7919) % slots  # spread processes apart: fewer collisions to skip
    for i in range(slots):
        offset = ((start + i) % slots) * plan.block
        uid = plan.uid_base + offset
        try:
            fd = os.open(os.path.join(plan.lock_dir, str(uid)), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise SandboxError(f"cannot open a uid lease in {plan.lock_dir}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        lease = UidLease(uid, plan.gid_base + offset, fd, plan)
        # A previous owner that crashed may have left processes behind under these uids.
        for u in lease.uids:
            kill_uid_processes(u)
        return lease
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
    if not uid_plan().owns(uid):
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
