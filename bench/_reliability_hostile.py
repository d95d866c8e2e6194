"""Hostile programs of the reliability suite: escape and limit-defeat attempts and their checks.

Re-exported by :mod:`bench.reliability_cases`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from vmpool import ExecRequest, ExecResult, Limits, Status

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
