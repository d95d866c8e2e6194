"""Process and scratch inspection helpers of the reliability suite (leak probes).

Re-exported by :mod:`bench.reliability_cases`.
"""

from __future__ import annotations

import glob
import os

# ----------------------------------------------------------------------------- processes


def descendants(root: int) -> set[int]:
    """Pids of every live (non-zombie) process below ``root``, from /proc parent links."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                parents[int(entry)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def parent_pid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def allowed_process(pid: int) -> bool:
    """A pool's own process: a bubblewrap (outer or its init), an agent whose parent is a
    bubblewrap, the agent's program zygote or persistent tester (children of that agent), or a
    QEMU. A program (a child of the program zygote) is not."""
    cmd = cmdline(pid)
    if not cmd:  # gone meanwhile
        return True
    if "bwrap" in cmd.split(" ", 1)[0] or "qemu-system" in cmd:
        return True

    def is_agent(p: int) -> bool:
        return "agent.py" in cmdline(p) and "bwrap" in cmdline(parent_pid(p)).split(" ", 1)[0]

    return "agent.py" in cmd and (is_agent(pid) or is_agent(parent_pid(pid)))


def stray_processes(root: int | None = None) -> list[tuple[int, str]]:
    """Processes below ``root`` (default: this process) that are not a pool's own: programs
    or their children still alive between batches, i.e. leaks."""
    root = os.getpid() if root is None else root
    return [(pid, cmdline(pid)) for pid in sorted(descendants(root)) if not allowed_process(pid)]


def scratch_entries() -> set[str]:
    """Host paths a run could leave behind: /tmp/vmpool-* dirs and sockets, /dev/shm files."""
    found = set(glob.glob("/tmp/vmpool-*"))
    try:
        found |= {os.path.join("/dev/shm", name) for name in os.listdir("/dev/shm")}
    except OSError:
        pass
    return found


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
