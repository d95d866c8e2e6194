"""What the session supervisor sees of its branches from outside: /proc, and signals.

Everything here reads the sandbox's own ``/proc`` (the supervisor's pid namespace is the
ancestor of every branch's), so nothing a branch says about itself is taken on trust.
"""

import os
import signal
import time

from _vmpool_branch import shared_in


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


def descendants(pidns, root):
    """The live processes of ``pidns`` below ``root`` (its children, theirs, ...)."""
    parents = {}
    for pid in members(pidns):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                parents[pid] = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier and pid not in found}
        found |= frontier
    return found


_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def usage(pidns, interpreter):
    """CPU seconds and resident bytes of a branch's processes (its pid 1 left out; the
    interpreter's reaped children counted), and their pids."""
    cpu, rss, pids = 0.0, 0, set()
    for pid, inner in members(pidns).items():
        if inner == 1:
            continue
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/statm") as fh:
                resident = int(fh.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
        if pid == interpreter:
            ticks += int(fields[13]) + int(fields[14])  # cutime, cstime: what it already reaped
        cpu += ticks / _TICK
        rss += resident * _PAGE
        pids.add(pid)
    return cpu, rss, pids


class CallWatch:
    """One call's CPU seconds and resident memory, measured from outside its branch; past a
    limit, what the call started is killed and a cell is interrupted (SIGALRM, its timeout's
    way; a cell that defeats that meets the host's deadline)."""

    def __init__(self, pidns, interpreter, op, cpu_s, memory_mb):
        self.pidns, self.interpreter, self.op = pidns, interpreter, op
        self.cpu_s = float(cpu_s or 0)
        self.memory = int(memory_mb or 0) << 20
        self.cpu0, self.rss0, self.before = usage(pidns, interpreter)
        self.hit = ""

    def check(self):
        if self.hit:
            return
        cpu, rss, pids = usage(self.pidns, self.interpreter)
        if self.cpu_s and cpu - self.cpu0 > self.cpu_s:
            self.hit = "cpu"
        elif self.memory and rss - self.rss0 > self.memory:
            self.hit = "memory"
        else:
            return
        signal_all(pids - self.before, signal.SIGKILL)  # what the call started
        if self.op == "exec":
            signal_all([self.interpreter], signal.SIGALRM)

    def mark(self, reply):
        """The answer of a call this stopped: which limit, said in its error."""
        if not self.hit:
            return
        what = f"{self.cpu_s:g} s of CPU time" if self.hit == "cpu" else f"{self.memory >> 20} MiB of memory"
        reply["limit"] = self.hit
        if self.op == "exec":
            reply["timed_out"] = False
            name = "CPUTimeLimitExceeded" if self.hit == "cpu" else "MemoryLimitExceeded"
            reply["error"] = {"name": name, "value": f"the cell used more than {what} and was stopped",
                              "traceback": ""}
        else:
            reply["stderr"] = (reply.get("stderr") or "") + f"[the command used more than {what} and was killed]\n"


def verify(node, others, own_devs):
    """What is wrong with a new branch's isolation, seen from outside ("" when nothing is):
    ``others`` are the other branches and checkpoints, ``own_devs`` the supervisor's /tmp and /dev/shm."""
    g, i = node.g_pid, node.i_pid
    st = status(g)
    for key in ("CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh"):
        if int(st.get(key, "1"), 16) != 0:
            return f"its interpreter holds capabilities ({key} {st.get(key)})"
    if st.get("NoNewPrivs") != "1" or st.get("Threads") != "1":
        return "its interpreter lacks no_new_privs or runs extra threads"
    for kind in ("user", "mnt", "net", "ipc", "uts", "pid"):
        mine = ns(g, kind)
        if mine is None or mine == ns("self", kind) or any(mine == ns(n.g_pid, kind) for n in others):
            return f"its {kind} namespace is not its own"
    if ns(i, "user") in (ns(g, "user"), ns("self", "user")):
        return "its pid 1 did not leave the branch's user namespace"
    taken = set(own_devs)
    for n in others:
        taken |= n.devs
    if None in node.devs or node.devs & taken:
        return "its /tmp or /dev/shm is not a filesystem of its own"
    null = os.stat("/dev/null").st_dev
    allowed = node.devs | {f"{os.major(null)}:{os.minor(null)}"}
    try:
        with open(f"/proc/{g}/maps") as fh:
            shared = shared_in(fh)
        if shared:
            return f"it holds a shared memory mapping ({shared[0]})"
        sockets = 0
        for fd in os.listdir(f"/proc/{g}/fd"):
            target = os.readlink(f"/proc/{g}/fd/{fd}")
            if target.startswith("socket:"):
                sockets += 1
            elif target.startswith(("pipe:", "anon_inode:")):
                return f"it holds a descriptor shared with another process ({target})"
            else:
                dev = os.stat(f"/proc/{g}/fd/{fd}").st_dev
                if f"{os.major(dev)}:{os.minor(dev)}" not in allowed:
                    return f"it holds a file open that is not its own ({target})"
        if sockets != 1:
            return f"it holds {sockets} sockets, not just its channel"
    except OSError as exc:
        return f"cannot inspect it: {exc}"
    return ""
