"""Find host processes that sandboxes left behind."""

from __future__ import annotations

import os

from bench.reliability_cases import cmdline, descendants
from vmpool._uids import uid_plan


def _uid_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            fields = dict(line.split(":", 1) for line in fh if ":" in line)
        if fields.get("State", "").strip().startswith("Z"):
            return None
        return int(fields["Uid"].split()[0])
    except (OSError, KeyError, ValueError):
        return None


def sandbox_processes() -> list[tuple[int, int, str]]:
    """(pid, uid, cmdline) of every live host process running under a leased sandbox uid
    (root: every sandbox uid; an ordinary user with subordinate uids: tester and program uids)."""
    plan = uid_plan()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        uid = _uid_of(int(entry))
        if uid is not None and plan.owns(uid):
            found.append((int(entry), uid, cmdline(int(entry))))
    return found


def uid_processes(uid: int) -> list[int]:
    return [pid for pid, u, _ in sandbox_processes() if u == uid]


def pool_extra_processes(pool) -> dict[int, list[str]]:
    """Processes beyond each live sandbox's own four (outer bwrap, its init, the agent,
    the program zygote), which run under the sandbox's first uid.

    Anything else in a sandbox's process tree, or under its tester and program uids
    anywhere on the host, is a program's leftover: the pool must have killed it by the
    time a result comes back.
    """
    extra = {}
    sandboxes = [sb for sb in pool.sandboxes() if hasattr(sb, "uids") and sb.pid]
    leased = sandbox_processes()
    for sb in sandboxes:
        tree = {sb.pid} | descendants(sb.pid)
        own = [cmdline(pid) for pid in tree if _uid_of(pid) == sb.uids[0]]
        rest = [cmdline(pid) for pid in tree if _uid_of(pid) in sb.uids[1:]]
        rest += [cmd for pid, u, cmd in leased if u in sb.uids[1:] and pid not in tree]
        rest += [cmd for cmd in own if "bwrap" not in cmd and "agent.py" not in cmd]
        if rest or len(own) > 4:
            extra[sb.uids[0]] = own + rest
    return extra
