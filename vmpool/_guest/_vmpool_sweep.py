"""The agent's sweeps and measurements: killing what a run left, emptying the scratch
mounts, a run's CPU time and resident memory (part of the guest agent, see agent.py;
stdlib only, standalone).
"""

import os
import signal
import stat
import time

from _vmpool_procs import _PRIV, _TESTERS, SCRATCH_DIRS, TESTER_UID

CLK_TCK = os.sysconf("SC_CLK_TCK")
PF_KTHREAD = 0x00200000
PAGE = os.sysconf("SC_PAGE_SIZE")


def _is_kernel_thread(pid: int) -> bool:
    """True for a kernel thread (visible only where this agent runs in the initial pid
    namespace, i.e. as a microVM guest's pid 1): SIGKILL does not end those."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return bool(int(fields[6]) & PF_KTHREAD)
    except (OSError, IndexError, ValueError):
        return False


def _other_pids(keep=()) -> list:
    """Every process in this pid namespace except init (1), this agent, the program
    zygote, ``keep`` and kernel threads."""
    me = os.getpid()
    spared = {1, me, _PRIV["zygote"], *(t.pid for t in _TESTERS.values()), *keep}
    pids = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc"))) if pid not in spared]
    if me == 1:
        pids = [pid for pid in pids if not _is_kernel_thread(pid)]
    return pids


def _run_usage(main: int) -> tuple:
    """(CPU seconds of the run's live processes but ``main``, with what they reaped; resident
    bytes of all of them) for every process of the run: all but init, the agent, its zygote and
    the testers (one program runs in a sandbox at a time, and what it started is its own,
    wherever it moved to). ``main``'s CPU is :func:`_proc_cpu`'s; a process ``main`` reaped is
    counted there, so nothing is counted twice. A compiler's own children (g++'s cc1plus)
    count against the limit while they run, not only once reaped; a companion's (an
    interactor, as the tester uid) never do, where the sandbox has uids of its own."""
    cpu, rss = 0.0, 0
    for pid in _other_pids():
        try:
            if _PRIV["on"] and os.stat(f"/proc/{pid}").st_uid == TESTER_UID:
                continue  # what a companion started (an interactor) is not the program's
            if pid != main:
                with open(f"/proc/{pid}/stat", "rb") as fh:
                    fields = fh.read().rsplit(b")", 1)[1].split()
                cpu += sum(int(f) for f in fields[11:15]) / CLK_TCK
            with open(f"/proc/{pid}/statm", "rb") as fh:
                rss += int(fh.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):  # gone meanwhile
            pass
    return cpu, rss


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _sweep(keep=()) -> bool:
    """SIGKILL every process left in the sandbox but init, the agent and its zygote. True if clean.

    Processes that called setsid() left the program's session; this catches them. A
    fork bomb can race the sweep, so repeat; RLIMIT_NPROC bounds how many there are.
    Orphans are reparented to pid 1 (bubblewrap's init), which reaps them, so a
    killed process may linger briefly as a zombie: wait for it to vanish. In a
    microVM guest the agent itself is pid 1, so it reaps them here (by pid, never
    ``keep``, which the caller waits for).
    """
    reaper = os.getpid() == 1
    for attempt in range(400):
        pids = _other_pids(keep)
        if not pids:
            return True
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if reaper:
            for pid in pids:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:  # not (yet) our child: its parent reaps it or dies
                    pass
        time.sleep(0.0002 if attempt < 20 else 0.005)
    return not _other_pids(keep)


def _empty_dir(root: str) -> None:
    """Remove everything under ``root`` without recursion and without long paths.

    Subdirectories are renamed up into ``root`` before they are emptied, so the depth
    of a tree (a program can build one far deeper than PATH_MAX or the recursion
    limit) never matters: every operation works on a name relative to an open
    directory one level down. Raises OSError when something cannot be removed.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    rfd = os.open(root, flags)
    try:
        pending = os.listdir(rfd)
        moved = 0
        while pending:
            name = pending.pop()
            if not stat.S_ISDIR(os.lstat(name, dir_fd=rfd).st_mode):
                os.unlink(name, dir_fd=rfd)
                continue
            dfd = os.open(name, flags, dir_fd=rfd)
            try:
                try:
                    os.fchmod(dfd, 0o700)  # a program's mode-000 directory (the agent may not be root)
                except OSError:
                    pass
                for entry in os.listdir(dfd):
                    if stat.S_ISDIR(os.lstat(entry, dir_fd=dfd).st_mode):
                        moved += 1
                        new = f".wipe-{moved}"
                        os.rename(entry, new, src_dir_fd=dfd, dst_dir_fd=rfd)
                        pending.append(new)
                    else:
                        os.unlink(entry, dir_fd=dfd)
            finally:
                os.close(dfd)
            os.rmdir(name, dir_fd=rfd)
    finally:
        os.close(rfd)


def _wipe_scratch(roots=SCRATCH_DIRS) -> str:
    """Empty every writable place so no program sees files of an earlier one.

    Returns an anomaly description if something could not be removed.
    """
    for root in roots:
        if not os.path.isdir(root):
            continue
        try:
            _empty_dir(root)
        except Exception as exc:  # RecursionError, MemoryError... included: never let cleanup raise
            return f"cannot empty {root}: {exc!r}"
    return ""


def _proc_cpu(pid: int) -> float:
    """CPU seconds of a live process and its reaped children (0 when it is gone).

    /proc/<pid>/stat counts in clock ticks (10 ms); its reaped children's time is only
    there, so it is the sum of that and the nanosecond-exact runtime of the process itself
    (/proc/<pid>/schedstat) where the kernel has it.
    """
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as fh:
            own = int(fh.read().split()[0]) / 1e9
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return own + (int(fields[13]) + int(fields[14])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return sum(int(f) for f in fields[11:15]) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0
