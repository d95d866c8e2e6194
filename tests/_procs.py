"""Find host processes that sandboxes left behind."""

from __future__ import annotations

import os

from bench.reliability_cases import descendants  # noqa: F401  (re-exported for the tests)
from vmpool._uids import UID_BASE, UID_COUNT


def sandbox_processes() -> list[tuple[int, int, str]]:
    """(pid, uid, cmdline) of every live host process running under a sandbox uid."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
            if fields.get("State", "").strip().startswith("Z"):
                continue
            uid = int(fields["Uid"].split()[0])
            if UID_BASE <= uid < UID_BASE + UID_COUNT:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
                found.append((int(entry), uid, cmd))
        except (OSError, KeyError, ValueError):
            continue
    return found


def uid_processes(uid: int) -> list[int]:
    return [pid for pid, u, _ in sandbox_processes() if u == uid]


def pool_extra_processes(pool) -> dict[int, list[str]]:
    """Processes beyond each live sandbox's own four (outer bwrap, its init, the agent,
    the program zygote), all under the sandbox's first uid.

    Anything else under a sandbox uid (its tester and program uids above all) is a
    program's leftover: the pool must have killed it by the time a result comes back.
    """
    extra = {}
    with pool._lock:
        leases = [sb.uids for sb in pool._live if hasattr(sb, "uids")]
    procs_now = sandbox_processes()
    for uids in leases:
        own = [cmd for _, u, cmd in procs_now if u == uids[0]]
        rest = [cmd for _, u, cmd in procs_now if u in uids[1:]]
        rest += [cmd for cmd in own if "bwrap" not in cmd and "agent.py" not in cmd]
        if rest or len(own) > 4:
            extra[uids[0]] = own + rest
    return extra

