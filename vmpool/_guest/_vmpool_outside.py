"""What the session supervisor sees of its branches from outside: /proc, and signals.

Everything here reads the sandbox's own ``/proc`` (the supervisor's pid namespace is the
ancestor of every branch's), so nothing a branch says about itself is taken on trust.
"""

import os
import signal
import time


def close(fd):
    try:
        os.close(fd)
    except OSError:
        pass


def ns(pid, kind):
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                out[key] = value.strip()
    except OSError:
        pass
    return out


def members(pidns):
    """pid -> pid-inside-the-namespace of every live process whose pid namespace is ``pidns``."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and ns(entry, "pid") == pidns:
            st = status(entry)
            if st.get("State", "Z").startswith("Z"):
                continue
            try:
                out[int(entry)] = int(st["NSpid"].split()[-1])
            except (KeyError, ValueError, IndexError):
                continue
    return out


def signal_all(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def freeze(pidns, spare=()):
    """SIGSTOP every process of a pid namespace but ``spare`` until none is left running (a
    stopped process cannot fork, so the set converges). Returns pid -> inner pid."""
    stopped = {}
    for _ in range(200):
        found = {p: i for p, i in members(pidns).items() if i != 1 and p not in spare}
        fresh = {p for p in found if p not in stopped}
        if not fresh:
            return found
        signal_all(fresh, signal.SIGSTOP)
        stopped.update({p: found[p] for p in fresh})
    raise OSError("the session's processes kept multiplying while being stopped")


def kill_and_wait(pids, deadline):
    signal_all(pids, signal.SIGKILL)
    while time.monotonic() < deadline:
        alive = [p for p in pids if os.path.exists(f"/proc/{p}") and not status(p).get("State", "Z").startswith("Z")]
        if not alive:
            return
        time.sleep(0.002)
    raise OSError("the session's processes did not end")


def mount_dev(pid, point):
    """``major:minor`` of the filesystem mounted at ``point`` in ``pid``'s mount namespace."""
    try:
        with open(f"/proc/{pid}/mountinfo") as fh:
            found = None
            for line in fh:
                parts = line.split()
                if len(parts) > 4 and parts[4] == point:
                    found = parts[2]  # the last one listed is the one on top
            return found
    except OSError:
        return None


def start_time(pid):
    """The process's start time in clock ticks (with its pid, the identity of one process)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def inits_of(parent):
    """Live processes that are pid 1 of their pid namespace and children of ``parent``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = status(entry)
        if st.get("State", "Z").startswith("Z") or st.get("PPid") != str(parent):
            continue
        if st.get("NSpid", "").split()[-1:] == ["1"] and len(st.get("NSpid", "").split()) > 1:
            found.append(int(entry))
    return found
