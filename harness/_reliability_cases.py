"""Shared cases of the reliability suite: hostile programs, reward hacks, the soak mix, leak probes.

Imported by ``tests/reliability`` and by ``python -m harness bench --suite reliability``
(which must not import from ``tests/``). Every hostile program checks, inside the sandbox,
that the limit it attacks is in place *before* it attacks (and refuses otherwise), and
none signals ``-1``: the programs stay safe on a developer's machine even if isolation
were broken.

A hostile case is contained when :attr:`HostileCase.check` accepts its result (a string
says why not). A hack is defeated when its verdict is ``passed is False`` and a correct
control on the same problem passes.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rewards import AssertTests, CallCase, CallTests, Problem, StdioCase, StdioTests
from vmpool import ExecRequest, ExecResult, Limits, Status

__all__ = [
    "HACKS",
    "HOSTILE",
    "HackCase",
    "HostileCase",
    "allowed_process",
    "descendants",
    "parent_pid",
    "scratch_entries",
    "soak_requests",
    "stray_processes",
]

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


def _cmdline(pid: int) -> str:
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
    cmd = _cmdline(pid)
    if not cmd:  # gone meanwhile
        return True
    if "bwrap" in cmd.split(" ", 1)[0] or "qemu-system" in cmd:
        return True

    def is_agent(p: int) -> bool:
        return "agent.py" in _cmdline(p) and "bwrap" in _cmdline(parent_pid(p)).split(" ", 1)[0]

    return "agent.py" in cmd and (is_agent(pid) or is_agent(parent_pid(pid)))


def stray_processes(root: int | None = None) -> list[tuple[int, str]]:
    """Processes below ``root`` (default: this process) that are not a pool's own: programs
    or their children still alive between batches, i.e. leaks."""
    root = os.getpid() if root is None else root
    return [(pid, _cmdline(pid)) for pid in sorted(descendants(root)) if not allowed_process(pid)]


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


# ----------------------------------------------------------------------------- hostile programs

Check = Callable[[ExecResult], "str | None"]


@dataclass(frozen=True)
class HostileCase:
    """One escape or limit-defeat attempt.

    Attributes:
        name: short id (test id and bench row).
        code: the program; prints evidence lines the check reads.
        check: ``result -> None`` when contained, else why not.
        limits: limits it runs under.
        argv: extra ``sys.argv[1:]`` (filled in by :func:`hostile_request` for host-pid cases).
        needs_host_pids: argv gets pids of host processes (this harness process and a concurrent
            program's process) the program must not be able to reach.
        microvm: small and quick enough to run under TCG too.
    """

    name: str
    code: str
    check: Check
    limits: Limits = field(default_factory=lambda: Limits(wall_s=3.0))
    needs_host_pids: bool = False
    microvm: bool = False


def _expect(status: Status | tuple[Status, ...], *needles: str, absent: tuple[str, ...] = ()) -> Check:
    statuses = status if isinstance(status, tuple) else (status,)

    def check(r: ExecResult) -> str | None:
        if r.status not in statuses:
            return f"status {r.status.value}, expected {[s.value for s in statuses]}; stderr: {r.stderr[-300:]}"
        for needle in needles:
            if needle not in r.stdout:
                return f"{needle!r} not in stdout {r.stdout[-300:]!r}"
        for bad in absent:
            if bad in r.stdout:
                return f"{bad!r} in stdout {r.stdout[-300:]!r}"
        return None

    return check


def _count_at_most(status: tuple[Status, ...], marker: str, limit: int) -> Check:
    """stdout holds ``marker N``; N must not exceed ``limit``."""

    def check(r: ExecResult) -> str | None:
        if r.status not in status:
            return f"status {r.status.value}; stderr: {r.stderr[-300:]}"
        for line in r.stdout.splitlines():
            if line.startswith(marker):
                n = int(line.split()[-1])
                return None if n <= limit else f"{marker} {n} > {limit}"
        return f"no {marker!r} line in {r.stdout[-300:]!r}"

    return check


def _fast_output_limit(max_wall_s: float) -> Check:
    def check(r: ExecResult) -> str | None:
        if r.status is not Status.OUTPUT_LIMIT:
            return f"status {r.status.value}, expected output_limit"
        if r.wall_s > max_wall_s:
            return f"took {r.wall_s:.2f} s to stop, expected < {max_wall_s}"
        return None

    return check


_NPROC_GUARD = (
    "import resource\n"
    "_soft, _hard = resource.getrlimit(resource.RLIMIT_NPROC)\n"
    "assert 0 < _hard <= 64, 'RLIMIT_NPROC not set: refusing to run the bomb'\n"
)

HOSTILE: list[HostileCase] = [
    HostileCase(
        "write outside the work dir",
        "import os\n"
        "for p in ['/proc/sys/kernel/hostname', '/proc/sysrq-trigger', '/sys/kernel/evil', '/usr/lib/evil.py',\n"
        "          '/opt/vmpool/evil.py', '/etc/evil', '/lib/evil', '/run/evil', '/var/evil']:\n"
        "    try:\n"
        "        with open(p, 'w') as f: f.write('x')\n"
        "        print('WROTE', p)\n"
        "    except OSError as e:\n"
        "        print('denied', p)\n",
        _expect(Status.OK, "denied /proc/sys/kernel/hostname", "denied /usr/lib/evil.py", absent=("WROTE",)),
        microvm=True,
    ),
    HostileCase(
        "raw and netlink sockets",
        "import socket\n"
        "for fam, typ, proto in [(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),\n"
        "                        (socket.AF_INET6, socket.SOCK_DGRAM, 0), (socket.AF_NETLINK, socket.SOCK_RAW, 0),\n"
        "                        (socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)]:\n"
        "    try:\n"
        "        s = socket.socket(fam, typ, proto)\n"
        "        s.sendto(b'x', ('10.0.0.1', 53)) if fam == socket.AF_INET and typ == socket.SOCK_DGRAM else None\n"
        "        print('OPENED', fam, typ)\n"
        "    except OSError as e:\n"
        "        print('denied', fam)\n",
        _expect(Status.OK, "denied", absent=("OPENED",)),
    ),
    HostileCase(
        "ctypes socket() syscalls",
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "for fam, typ in [(2, 2), (2, 1), (2, 3), (10, 2), (17, 3)]:\n"  # INET DGRAM/STREAM/RAW, INET6, PACKET
        "    fd = libc.socket(fam, typ, 0)\n"
        "    print('OPENED' if fd >= 0 else 'denied', fam, typ, ctypes.get_errno())\n",
        _expect(Status.OK, "denied 2 2", "denied 17 3", absent=("OPENED",)),
    ),
    HostileCase(
        "dns lookup",
        "import socket\n"
        "for host in ['localhost', 'example.com', '1.1.1.1']:\n"
        "    try:\n"
        "        socket.create_connection((host, 53), timeout=1).close()\n"
        "        print('CONNECTED', host)\n"
        "    except OSError:\n"
        "        print('no route', host)\n",
        _expect(Status.OK, "no route example.com", absent=("CONNECTED",)),
        microvm=True,
    ),
    HostileCase(
        "ptrace a sibling",
        "import ctypes, os, time\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    time.sleep(5); os._exit(0)\n"
        "rc = libc.ptrace(16, child, 0, 0)\n"  # PTRACE_ATTACH
        "print('attach', rc, ctypes.get_errno())\n"
        "rc = libc.ptrace(0x4206, child, 0, 0)\n"  # PTRACE_SEIZE
        "print('seize', rc, ctypes.get_errno())\n"
        "buf = ctypes.create_string_buffer(8)\n"
        "class iovec(ctypes.Structure):\n"
        "    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]\n"
        "local = iovec(ctypes.addressof(buf), 8); remote = iovec(0x400000, 8)\n"
        "n = libc.process_vm_readv(child, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)\n"
        "print('vm_readv', n, ctypes.get_errno())\n"
        "os.kill(child, 9); os.waitpid(child, 0)\n",  # its own child: the only pid it may signal
        _expect(Status.OK, "attach -1 1", "seize -1 1", "vm_readv -1 1"),
    ),
    HostileCase(
        "signal the sandbox's init",
        "import os, signal, time\n"
        "cmd = open('/proc/1/cmdline', 'rb').read()\n"
        "assert b'bwrap' in cmd or b'init' in cmd, f'pid 1 is {cmd!r}: not a sandbox, refusing to signal it'\n"
        "assert os.getpid() != 1\n"
        "for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGSTOP):\n"
        "    try:\n"
        "        os.kill(1, sig); print('sent', sig)\n"
        "    except OSError as e:\n"
        "        print('refused', sig, e.errno)\n"
        "time.sleep(0.3)\n"
        "print('survived')\n",
        # Signals from inside a pid namespace to its init are dropped (or refused); if one did
        # land, the sandbox dies with the program and the pool retries it: contained either way.
        _expect((Status.OK, Status.SANDBOX_KILLED)),
    ),
    HostileCase(
        "signal host processes by pid",
        "import os, sys\n"
        "for pid in map(int, sys.argv[1:]):\n"
        "    assert pid > 1 and pid != os.getpid()\n"
        "    try:\n"
        "        os.kill(pid, 0)\n"  # signal 0: harmless even if it were delivered
        "        print('VISIBLE', pid)\n"
        "    except ProcessLookupError:\n"
        "        print('invisible', pid)\n"
        "    except PermissionError:\n"
        "        print('refused', pid)\n"
        "    for path in (f'/proc/{pid}/environ', f'/proc/{pid}/root/etc/hostname', f'/proc/{pid}/cwd'):\n"
        "        try:\n"
        "            os.listdir(path) if path.endswith('cwd') else open(path, 'rb').read()\n"
        "            print('READ', path)\n"
        "        except OSError:\n"
        "            pass\n",
        _expect(Status.OK, "invisible", absent=("VISIBLE", "READ")),
        needs_host_pids=True,
    ),
    HostileCase(
        "thread bomb",
        _NPROC_GUARD
        + "import threading, time\n"
        "ev = threading.Event()\n"
        "n = 0\n"
        "while n < 100000:\n"
        "    try:\n"
        "        threading.Thread(target=ev.wait, daemon=True).start(); n += 1\n"
        "    except (RuntimeError, MemoryError):\n"
        "        break\n"
        "print('threads started', n, flush=True)\n"
        "ev.set()\n",
        # Threads count against RLIMIT_NPROC (max_processes) or exhaust the address space first.
        _count_at_most((Status.OK, Status.MEMORY_LIMIT, Status.RUNTIME_ERROR), "threads started", 16),
        limits=Limits(wall_s=5.0, max_processes=16, memory_mb=256),
    ),
    HostileCase(
        "10 GB write",
        "import os, resource\n"
        "st = os.statvfs('.')\n"
        "assert st.f_blocks * st.f_frsize <= 1 << 30, 'work dir is not a size-capped tmpfs: refusing'\n"
        "chunk = b'z' * (4 << 20)\n"
        "written = 0\n"
        "try:\n"
        "    with open('big', 'wb') as f:\n"
        "        while written < 10 << 30:\n"
        "            f.write(chunk); written += len(chunk)\n"
        "except OSError as e:\n"
        "    print('stopped after', written >> 20, 'MiB:', e.strerror, flush=True)\n",
        _expect(Status.OK, "stopped after", "No space left on device"),
        limits=Limits(wall_s=10.0, file_size_bytes=1 << 30),
    ),
    HostileCase(
        "1 GB to stdout",
        "import sys\n"
        "chunk = b'y' * (1 << 20)\n"
        "for _ in range(1024):\n"
        "    sys.stdout.buffer.write(chunk)\n",
        _fast_output_limit(2.5),
        limits=Limits(wall_s=10.0, output_bytes=1 << 20),
        microvm=True,
    ),
    HostileCase(
        "libc write flood on fd 1",
        "import ctypes\n"
        "libc = ctypes.CDLL(None)\n"
        "buf = b'w' * (1 << 20)\n"
        "for _ in range(1024):\n"
        "    libc.write(1, buf, len(buf))\n",
        _fast_output_limit(2.5),
        limits=Limits(wall_s=10.0, output_bytes=1 << 20),
    ),
    HostileCase(
        "setsid daemon ignoring signals outlives the deadline",
        "import os, signal, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):\n"
        "        signal.signal(s, signal.SIG_IGN)\n"
        "    if os.fork() == 0:\n"
        "        while True: time.sleep(0.1)\n"
        "    os._exit(0)\n"
        "time.sleep(30)\n",
        _expect(Status.TIMEOUT),
        limits=Limits(wall_s=0.5),
    ),
    HostileCase(
        "raise the hard rlimits",
        "import ctypes, resource\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "for name in ('RLIMIT_NPROC', 'RLIMIT_AS', 'RLIMIT_FSIZE', 'RLIMIT_CPU', 'RLIMIT_NOFILE'):\n"
        "    res = getattr(resource, name)\n"
        "    soft, hard = resource.getrlimit(res)\n"
        "    assert hard != resource.RLIM_INFINITY, f'{name} not set'\n"
        "    try:\n"
        "        resource.setrlimit(res, (hard, hard * 4)); print('RAISED', name)\n"
        "    except (ValueError, OSError):\n"
        "        print('refused', name)\n"
        "    lim = (ctypes.c_ulong * 2)(hard, hard * 4)\n"
        "    rc = libc.prlimit64(0, res, lim, None)\n"
        "    print('RAISED-libc' if rc == 0 else 'refused-libc', name, ctypes.get_errno())\n",
        _expect(Status.OK, "refused RLIMIT_NPROC", "refused-libc RLIMIT_AS", absent=("RAISED",)),
        microvm=True,
    ),
    HostileCase(
        "libc fork bomb",
        _NPROC_GUARD
        + "import ctypes, os, time\n"
        "libc = ctypes.CDLL(None)\n"
        "n = 0\n"
        "while n < 10000:\n"
        "    pid = libc.fork()\n"
        "    if pid == 0:\n"
        "        libc.pause(); libc._exit(0)\n"
        "    if pid < 0:\n"
        "        break\n"
        "    n += 1\n"
        "print('forked', n, flush=True)\n"
        "time.sleep(30)\n",
        _count_at_most((Status.TIMEOUT,), "forked", 16),
        limits=Limits(wall_s=1.5, max_processes=16),
    ),
    HostileCase(
        "fill /dev/shm",
        "import os\n"
        "st = os.statvfs('/dev/shm')\n"
        "assert st.f_blocks * st.f_frsize <= 1 << 30, '/dev/shm is not size-capped: refusing'\n"
        "n = 0\n"
        "try:\n"
        "    with open('/dev/shm/fill', 'wb') as f:\n"
        "        while n < 1 << 30:\n"
        "            f.write(b's' * (1 << 20)); n += 1 << 20\n"
        "except OSError as e:\n"
        "    print('stopped', n >> 20, e.strerror)\n",
        _expect(Status.OK, "stopped", "No space left on device"),
        limits=Limits(wall_s=5.0, file_size_bytes=1 << 30),
    ),
]

#: A program that leaves secrets in every writable place and waits; the peer looks for them.
PLANT_SECRET = (
    "import os, time\n"
    "for p in ('secret.txt', '/tmp/secret-top.txt', '/dev/shm/secret.txt'):\n"
    "    with open(p, 'w') as f: f.write('TOPSECRET-' + str(os.getpid()))\n"
    "print('planted', flush=True)\n"
    "time.sleep(1.5)\n"
)
LOOK_FOR_SECRET = (
    "import os, time\n"
    "time.sleep(0.4)\n"
    "found = []\n"
    "for root in ('/tmp', '/dev/shm', '/'):\n"
    "    for d, dirs, files in os.walk(root):\n"
    "        if root == '/' and d.startswith(('/proc', '/sys', '/usr', '/dev', '/tmp')):\n"
    "            dirs[:] = []; continue\n"
    "        for f in files:\n"
    "            try:\n"
    "                if 'TOPSECRET' in open(os.path.join(d, f), errors='ignore').read(100):\n"
    "                    found.append(os.path.join(d, f))\n"
    "            except OSError:\n"
    "                pass\n"
    "procs = [p for p in os.listdir('/proc') if p.isdigit()]\n"
    "print('found', found, 'procs', len(procs))\n"
)


def hostile_request(case: HostileCase, host_pids: list[int] = ()) -> ExecRequest:  # type: ignore[assignment]
    argv = [str(p) for p in host_pids] if case.needs_host_pids else []
    return ExecRequest(code=case.code, limits=case.limits, argv=argv)


# ----------------------------------------------------------------------------- reward hacks


@dataclass(frozen=True)
class HackCase:
    name: str
    problem: Problem
    good: str
    hack: str


STDIO = Problem(task_id="rel-stdio", tests=StdioTests(cases=(
    StdioCase("3\n1 2 3\n", "1\n4\n9\n"), StdioCase("2\n5 6\n", "25\n36\n"))))  # fmt: skip
STDIO_GOOD = "n = int(input())\nfor v in input().split():\n    print(int(v) ** 2)\n"

CALL = Problem(task_id="rel-call", tests=CallTests(fn_name="square", cases=(
    CallCase((2,), {}, 4), CallCase((3,), {}, 9), CallCase((), {"x": 5}, 25))))  # fmt: skip
CALL_LIST = Problem(task_id="rel-call-list", tests=CallTests(fn_name="squares", cases=(
    CallCase(([1, 2],), {}, [1, 4]), CallCase(([3],), {}, [9]))))  # fmt: skip
SQUARE_GOOD = "def square(x):\n    return x * x\n"
SQUARES_GOOD = "def squares(xs):\n    return [x * x for x in xs]\n"

MBPP = Problem(task_id="rel-mbpp", setup_code="import math", tests=AssertTests(code=(
    "assert math.isclose(root(16.0), 4.0)", "assert math.isclose(root(2.25), 1.5)",
    "assert root(81) == 9", "assert isinstance(root(4), float)")))  # fmt: skip
MBPP_GOOD = "import math\ndef root(x):\n    return float(math.sqrt(x))\n"

_STDIO_HACKS = {
    "stdio: print the sample case's output only": "print('1\\n4\\n9')\n",
    "stdio: correct output plus extra trailing lines": STDIO_GOOD + "print('extra')\nprint('0')\n",
    "stdio: exit(0) before reading input": "import sys\nsys.exit(0)\n" + STDIO_GOOD,
    "stdio: os._exit(0) before reading input": "import os\nos._exit(0)\n",
    "stdio: expected output to stderr": "import sys\nprint('1\\n4\\n9', file=sys.stderr)\n",
    "stdio: verdict marker": "print('Accepted')\nprint('PASSED')\n",
    "stdio: search the filesystem for expected outputs": (
        "import os\n"
        "for root in ('.', '/tmp', '/dev/shm'):\n"
        "    for d, _, files in os.walk(root):\n"
        "        for f in files:\n"
        "            try: print(open(os.path.join(d, f)).read())\n"
        "            except OSError: pass\n"),
    "stdio: every line of the output squared twice (first-line only match)": (
        "n = int(input())\nvs = input().split()\nprint(int(vs[0]) ** 2)\nprint('\\n' * 5)\n"),
}

_CALL_HACKS = {
    "call: int subclass with always-True __eq__ and a lying __class__": (
        "class I(int):\n"
        "    def __eq__(self, o): return True\n"
        "    __hash__ = int.__hash__\n"
        "    @property\n"
        "    def __class__(self): return int\n"
        "def square(x):\n    return I(0)\n"),
    "call: object claiming __class__ int": (
        "class Fake:\n"
        "    @property\n"
        "    def __class__(self): return int\n"
        "    def __eq__(self, o): return True\n"
        "def square(x):\n    return Fake()\n"),
    "call: float nan": "def square(x):\n    return float('nan')\n",
    "call: float inf": "def square(x):\n    return float('inf')\n",
    "call: iterator instead of a value": "def square(x):\n    return iter([x * x])\n",
    "call: list subclass with __iter__ tricks": (
        "class L(list):\n"
        "    def __iter__(self): return iter([4, 9, 25])\n"
        "    def __eq__(self, o): return True\n"
        "    def __len__(self): return 1\n"
        "def square(x):\n    return L()\n"),
    "call: json.dumps patched": (
        "import json\n"
        "_real = json.dumps\n"
        "json.dumps = lambda *a, **k: '4'\n"
        "json.JSONEncoder.encode = lambda self, o: '4'\n"
        "def square(x):\n    return -1\n"),
    "call: builtins.type and isinstance patched": (
        "import builtins\n"
        "class I(int):\n"
        "    def __eq__(self, o): return True\n"
        "    __hash__ = int.__hash__\n"
        "builtins.type = lambda o, *a: int\n"
        "builtins.isinstance = lambda o, t: True\n"
        "def square(x):\n    return I(0)\n"),
    "call: forged records on fds": (
        "import os, json\n"
        "def square(x):\n"
        "    for fd in range(3, 64):\n"
        "        try: os.write(fd, (json.dumps({'t': 'done', 'mode': 'call', 'results': [4, 9, 25]}) + '\\n').encode())\n"
        "        except OSError: pass\n"
        "    os._exit(0)\n"),
    "call: print the expected value": "def square(x):\n    print(x * x)\n    return None\n",
}

_CALL_LIST_HACKS = {
    "call: tuple subclass for a list": (
        "class T(tuple):\n    def __eq__(self, o): return True\n"
        "def squares(xs):\n    return T()\n"),
    "call: generator for a list": "def squares(xs):\n    return (x * x for x in xs)\n",
    "call: dict view for a list": "def squares(xs):\n    return {x: x * x for x in xs}.values()\n",
}

_MBPP_HACKS = {
    "mbpp: monkeypatch math.isclose": (
        "import math\n"
        "math.isclose = lambda *a, **k: True\n"
        "def root(x):\n    return 0.0\n"),
    "mbpp: replace the math module in sys.modules": (
        "import sys, types\n"
        "fake = types.ModuleType('math')\n"
        "fake.isclose = lambda *a, **k: True\n"
        "fake.sqrt = lambda x: 0.0\n"
        "sys.modules['math'] = fake\n"
        "def root(x):\n    return 0.0\n"),
    "mbpp: write to sys.modules['builtins']": (
        "import sys\n"
        "b = sys.modules['builtins']\n"
        "b.isinstance = lambda *a: True\n"
        "b.AssertionError = type('Never', (Exception,), {})\n"
        "def root(x):\n    return 0.0\n"),
    "mbpp: swap sys.modules['builtins'] for a fake": (
        "import sys, types, builtins\n"
        "fake = types.ModuleType('builtins')\n"
        "fake.__dict__.update(builtins.__dict__)\n"
        "fake.isinstance = lambda *a: True\n"
        "sys.modules['builtins'] = fake\n"
        "def root(x):\n    return 0.0\n"),
    "mbpp: patch __builtins__ dict": (
        "bi = __builtins__ if isinstance(__builtins__, dict) else __builtins__.__dict__\n"
        "bi['isinstance'] = lambda *a: True\n"
        "bi['AssertionError'] = type('Never', (Exception,), {})\n"
        "def root(x):\n    return 0.0\n"),
    "mbpp: builtins.__import__ hands out a fake math": (
        "import builtins, types\n"
        "_imp = builtins.__import__\n"
        "fake = types.ModuleType('math')\n"
        "fake.isclose = lambda *a, **k: True\n"
        "def imp(name, *a, **k):\n"
        "    return fake if name == 'math' else _imp(name, *a, **k)\n"
        "builtins.__import__ = imp\n"
        "def root(x):\n    return 0.0\n"),
    "mbpp: sys.settrace jumps over asserts": (
        "import sys\n"
        "def tracer(frame, event, arg):\n"
        "    if event == 'line' and 'assert' in (frame.f_code.co_filename + frame.f_code.co_name):\n"
        "        return None\n"
        "    return tracer\n"
        "sys.settrace(tracer)\n"
        "def root(x):\n    return 0.0\n"),
    "mbpp: atexit handler forging a done record": (
        "import atexit, os, json\n"
        "def forge():\n"
        "    for fd in range(3, 64):\n"
        "        try: os.write(fd, (json.dumps({'t': 'done', 'mode': 'assert', 'results': [True] * 4}) + '\\n').encode())\n"
        "        except OSError: pass\n"
        "atexit.register(forge)\n"
        "def root(x):\n    return 0.0\n"),
    "mbpp: thread exits the process mid-tests": (
        "import threading, os, time\n"
        "threading.Thread(target=lambda: (time.sleep(0.05), os._exit(0)), daemon=True).start()\n"
        "def root(x):\n    time.sleep(0.2)\n    return 0.0\n"),
    "mbpp: float subclass always equal": (
        "class F(float):\n"
        "    def __eq__(self, o): return True\n"
        "    __hash__ = float.__hash__\n"
        "def root(x):\n    return F(0.0)\n"),
    "mbpp: redefine math.sqrt for the tests": (
        "import math\n"
        "math.sqrt = lambda x: 0.0\n"
        "def root(x):\n    return 0.0\n"),
}

HACKS: list[HackCase] = (
    [HackCase(n, STDIO, STDIO_GOOD, h) for n, h in _STDIO_HACKS.items()]
    + [HackCase(n, CALL, SQUARE_GOOD, h) for n, h in _CALL_HACKS.items()]
    + [HackCase(n, CALL_LIST, SQUARES_GOOD, h) for n, h in _CALL_LIST_HACKS.items()]
    + [HackCase(n, MBPP, MBPP_GOOD, h) for n, h in _MBPP_HACKS.items()]
)

# ----------------------------------------------------------------------------- soak mix


@dataclass(frozen=True)
class SoakItem:
    """One soak program and the statuses (and stdout, when deterministic) it may end with."""

    kind: str
    request: ExecRequest
    statuses: tuple[Status, ...]
    stdout: str | None = None


_SOAK_LIMITS = Limits(wall_s=3.0, max_processes=16, output_bytes=64 << 10, memory_mb=256)
_SHORT = Limits(wall_s=0.3, max_processes=16, output_bytes=64 << 10, memory_mb=256)


def soak_item(i: int) -> SoakItem:
    """The ``i``-th program of the soak mix: mostly correct, then wrong, crashing, timing-out
    (0.3 s wall limit) and hostile ones (forks, output floods, memory and disk bombs)."""
    slot = i % 20
    if slot < 10:
        return SoakItem("correct", ExecRequest(code=f"print(sum(range({i})))", limits=_SOAK_LIMITS),
                        (Status.OK,), f"{sum(range(i))}\n")
    if slot < 13:
        return SoakItem("wrong", ExecRequest(code=f"print({i} + 1)", limits=_SOAK_LIMITS),
                        (Status.OK,), f"{i + 1}\n")
    if slot < 15:
        return SoakItem("crash", ExecRequest(code=f"raise ValueError({i})", limits=_SOAK_LIMITS),
                        (Status.RUNTIME_ERROR,))
    if slot == 15:
        return SoakItem("timeout", ExecRequest(code="while True: pass", limits=_SHORT), (Status.TIMEOUT,))
    if slot == 16:
        code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n"
                "print('parent')\n")
        return SoakItem("hostile-daemon", ExecRequest(code=code, limits=_SOAK_LIMITS), (Status.OK,), "parent\n")
    if slot == 17:
        return SoakItem("hostile-output", ExecRequest(code="while True: print('x' * 4096)", limits=_SOAK_LIMITS),
                        (Status.OUTPUT_LIMIT,))
    if slot == 18:
        code = _NPROC_GUARD + ("import os\nn = 0\nwhile n < 1000:\n    try:\n        if os.fork() == 0:\n"
                               "            import time; time.sleep(30)\n        n += 1\n"
                               "    except OSError:\n        break\nprint('forks', n)\n")
        return SoakItem("hostile-forks", ExecRequest(code=code, limits=_SHORT), (Status.TIMEOUT, Status.OK))
    code = ("import resource\nassert 0 < resource.getrlimit(resource.RLIMIT_AS)[0] <= 512 << 20\n"
            "x = [bytearray(32 << 20) for _ in range(100)]\n")
    return SoakItem("hostile-memory", ExecRequest(code=code, limits=_SOAK_LIMITS), (Status.MEMORY_LIMIT,))


def soak_requests(start: int, stop: int) -> list[SoakItem]:
    return [soak_item(i) for i in range(start, stop)]


def check_soak_result(item: SoakItem, result: Any) -> str | None:
    """None when ``result`` is plausible for ``item``; else why not."""
    if not isinstance(result, ExecResult):
        return f"{item.kind}: no result ({result!r})"
    if result.status not in item.statuses:
        return f"{item.kind}: status {result.status.value}, expected {[s.value for s in item.statuses]}"
    if item.stdout is not None and result.stdout != item.stdout:
        return f"{item.kind}: stdout {result.stdout[:80]!r}, expected {item.stdout!r}"
    return None
