"""``harness bench --suite sessions``: what a session costs, side by side with a plain pool.

Measured in one run on the namespace backend:

* lease from a warm :class:`vmpool.SessionPool` against a cold :class:`vmpool.Session`
  start (median and p99 of each, and their ratio);
* sessions started per second, back to back;
* memory of an idle session (the resident set of its processes, from ``/proc``) and how
  many idle sessions the machine's available memory would hold at that size;
* a 10-turn episode (alternating cells and shell commands) in one session, per call,
  against the same 10 programs each run with ``Pool.run`` (a fresh fork per call: no
  state kept), median per call.

* density: ``density`` idle sessions started side by side, the machine's available memory
  before and after (so shared pages count once), per session and extrapolated to the
  available memory;
* ``fork(1)`` and ``fork(8)`` of a session holding a 100 MB Python heap and 10 MB of files:
  latency per child, and each child's private memory (``Private_*`` of ``smaps_rollup``:
  what copy-on-write has not shared) against the heap it inherited;
* ``pause()`` + ``resume()`` round trip, median;
* the microVM backend (``SessionConfig(backend="microvm")``, TCG where KVM is unusable): cold
  start, ``fork(1)`` (a whole-VM checkpoint and a restore), pause (the VM to disk, its QEMU
  ended) + resume, and a 10-turn episode's median call.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["SessionBench", "format_session_bench", "run_session_bench"]


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _rss_bytes(pids: set[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def _private_bytes(pids: set[int]) -> int:
    """Memory of ``pids`` that no other process shares (copy-on-write pages still shared are not counted)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith(("Private_Clean:", "Private_Dirty:")):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def _tree(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parents[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = {root}, {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


@dataclass
class SessionBench:
    lease_s: list[float] = field(default_factory=list)
    cold_start_s: list[float] = field(default_factory=list)
    starts_per_s: float = 0.0
    idle_rss_bytes: int = 0
    available_bytes: int = 0
    episode_call_s: list[float] = field(default_factory=list)
    pool_run_s: list[float] = field(default_factory=list)
    density: int = 0
    density_bytes_per_session: int = 0
    fork1_s: list[float] = field(default_factory=list)
    fork8_s: list[float] = field(default_factory=list)
    fork_heap_bytes: int = 0
    fork_child_private_bytes: int = 0
    pause_resume_s: list[float] = field(default_factory=list)
    vm_accel: str = ""
    vm_start_s: list[float] = field(default_factory=list)
    vm_fork_s: list[float] = field(default_factory=list)
    vm_pause_resume_s: list[float] = field(default_factory=list)
    vm_call_s: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and bool(self.lease_s) and bool(self.episode_call_s)

    @property
    def idle_sessions_fit(self) -> int:
        per = self.density_bytes_per_session or self.idle_rss_bytes
        return self.available_bytes // per if per else 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "idle_sessions_fit": self.idle_sessions_fit}


def _available_bytes() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


EPISODE = [("code", "import json, re\nstate = {'turn': 0}"), ("shell", "mkdir -p work && cd work && ls"),
           ("code", "state['turn'] += 1\nstate"), ("shell", "echo 'print(2 + 2)' > a.py && python3 a.py"),
           ("code", "def f(x):\n    return x * 2\nf(21)"), ("shell", "pwd"),
           ("code", "sum(range(10_000))"), ("shell", "cat a.py"),
           ("code", "json.dumps(state)"), ("shell", "ls -la")]


def _fork_numbers(bench: SessionBench, forks: int) -> None:
    from vmpool import Session, SessionConfig

    with Session(SessionConfig(memory_mb=2048, disk_mb=512)) as parent:
        made = parent.run_code("import os\nheap = bytearray(b'x') * (100 << 20)\n"
                               "open('data.bin', 'wb').write(os.urandom(10 << 20))\nlen(heap)")
        if made.error is not None:
            bench.failures.append(f"fork set-up failed: {made.error.value}")
            return
        bench.fork_heap_bytes = 100 << 20
        for _ in range(forks):
            start = time.perf_counter()
            (child,) = parent.fork(1)
            bench.fork1_s.append(time.perf_counter() - start)
            if child.run_code("len(heap)").data != 100 << 20:
                bench.failures.append("a fork lost the heap")
            child.close()
        start = time.perf_counter()
        children = parent.fork(8)
        bench.fork8_s.append((time.perf_counter() - start) / 8)
        try:
            for c in children:
                c.run_code("heap[0] = 1")  # touch one page: the rest stays shared
            pids = _tree(getattr(parent._family.sandbox, "pid", None) or 0)
            bench.fork_child_private_bytes = _private_bytes(pids) // (len(children) + 2)
        finally:
            for c in children:
                c.close()
        for _ in range(10):
            start = time.perf_counter()
            parent.pause()
            parent.resume()
            bench.pause_resume_s.append(time.perf_counter() - start)


def _microvm_numbers(bench: SessionBench, rounds: int) -> None:
    from vmpool import BackendUnavailableError, Session, SessionConfig

    cfg = SessionConfig(backend="microvm", memory_mb=256, disk_mb=64)
    try:
        Session(cfg).close()  # the template's one cold boot is not a session start
    except BackendUnavailableError as exc:
        bench.failures.append(f"microvm sessions: {exc}")
        return
    for _ in range(rounds):
        start = time.perf_counter()
        with Session(cfg) as s:
            bench.vm_start_s.append(time.perf_counter() - start)
            bench.vm_accel = s._family.sandbox.template.accel  # type: ignore[attr-defined]
            for kind, text in EPISODE:
                t = time.perf_counter()
                bad = s.run_code(text).error is not None if kind == "code" else s.run(text).exit_code != 0
                bench.vm_call_s.append(time.perf_counter() - t)
                if bad:
                    bench.failures.append(f"microvm episode call failed: {text!r}")
            t = time.perf_counter()
            (child,) = s.fork(1)
            bench.vm_fork_s.append(time.perf_counter() - t)
            child.close()
            t = time.perf_counter()
            s.pause()
            s.resume()
            bench.vm_pause_resume_s.append(time.perf_counter() - t)


def _density(bench: SessionBench, n: int) -> None:
    from vmpool import Session

    before = _available_bytes()
    sessions = []
    try:
        for _ in range(n):
            sessions.append(Session())
        time.sleep(0.5)
        after = _available_bytes()
        bench.density = len(sessions)
        bench.density_bytes_per_session = max(1, (before - after) // len(sessions))
    finally:
        for s in sessions:
            s.close()


def run_session_bench(leases: int = 40, cold: int = 10, sustained: int = 10, rounds: int = 3,
                      density: int = 100, forks: int = 10, microvm: int = 3) -> SessionBench:
    """Run the measurements above (see the module docstring)."""
    from vmpool import ExecRequest, Pool, PoolConfig, Session, SessionPool, Status

    bench = SessionBench(available_bytes=_available_bytes())
    for _ in range(cold):
        start = time.perf_counter()
        with Session():
            bench.cold_start_s.append(time.perf_counter() - start)
    with SessionPool(warm=4) as pool:
        time.sleep(1.0)  # let the pool fill
        for _ in range(leases):
            start = time.perf_counter()
            session = pool.lease()
            bench.lease_s.append(time.perf_counter() - start)
            pool.release(session)
            time.sleep(0.05)  # the refill's pace, not the lease's, would be measured otherwise
    start = time.perf_counter()
    for _ in range(sustained):
        Session().close()
    bench.starts_per_s = sustained / (time.perf_counter() - start)
    with Session() as idle:
        pid = getattr(idle._family.sandbox, "pid", None)
        bench.idle_rss_bytes = _rss_bytes(_tree(pid)) if pid else 0
    programs = ["import json, re\nprint({'turn': 0})", "import os\nos.makedirs('work', exist_ok=True)",
                "print(1)", "print(2 + 2)", "def f(x):\n    return x * 2\nprint(f(21))", "import os\nprint(os.getcwd())",
                "print(sum(range(10_000)))", "print(open(__file__).read() if False else '')", "import json\nprint(1)",
                "import os\nprint(os.listdir('.'))"]
    with Session() as session, Pool(PoolConfig(size=1)) as plain:
        for _ in range(rounds):
            for kind, text in EPISODE:
                start = time.perf_counter()
                if kind == "code":
                    res = session.run_code(text)
                    bad = res.error is not None
                else:
                    bad = session.run(text).exit_code != 0
                bench.episode_call_s.append(time.perf_counter() - start)
                if bad:
                    bench.failures.append(f"episode call failed: {text!r}")
            for code in programs:
                start = time.perf_counter()
                if plain.run(ExecRequest(code=code)).status is not Status.OK:
                    bench.failures.append(f"pool.run failed: {code!r}")
                bench.pool_run_s.append(time.perf_counter() - start)
    if forks:
        _fork_numbers(bench, forks)
    if density:
        _density(bench, density)
    if microvm:
        _microvm_numbers(bench, microvm)
    return bench


def format_session_bench(b: SessionBench) -> str:
    ms = 1000.0
    lease, cold = statistics.median(b.lease_s or [0]), statistics.median(b.cold_start_s or [0])
    call, run = statistics.median(b.episode_call_s or [0]), statistics.median(b.pool_run_s or [0])
    lines = ["Sessions (namespace backend)",
             f"  lease from a warm pool   median {lease * ms:7.2f} ms   p99 {_p(b.lease_s, 0.99) * ms:7.2f} ms",
             f"  cold session start       median {cold * ms:7.2f} ms   p99 {_p(b.cold_start_s, 0.99) * ms:7.2f} ms"
             f"   (lease is {cold / lease if lease else 0:.0f}x faster)",
             f"  sessions started/s       {b.starts_per_s:7.1f}",
             f"  idle session memory      {b.idle_rss_bytes / 2**20:7.1f} MiB RSS (its processes); "
             f"{b.idle_sessions_fit} would fit in the {b.available_bytes / 2**30:.1f} GiB available",
             f"  10-turn episode          median {call * ms:7.2f} ms per call in one session vs "
             f"{run * ms:.2f} ms per Pool.run (no state kept): {call / run if run else 0:.2f}x"]
    if b.density:
        lines.append(f"  density                  {b.density} idle sessions side by side: "
                     f"{b.density_bytes_per_session / 2**20:.1f} MiB each of available memory; "
                     f"{b.idle_sessions_fit} would fit in {b.available_bytes / 2**30:.1f} GiB")
    if b.fork1_s:
        f1, f8 = statistics.median(b.fork1_s), statistics.median(b.fork8_s or [0])
        lines += [f"  fork(1), 100 MB heap + 10 MB files   median {f1 * ms:7.2f} ms   p99 {_p(b.fork1_s, 0.99) * ms:7.2f} ms",
                  f"  fork(8), same                        {f8 * ms:7.2f} ms per child",
                  f"  memory per fork          {b.fork_child_private_bytes / 2**20:7.1f} MiB private (copied) vs "
                  f"{b.fork_heap_bytes / 2**20:.0f} MiB heap shared copy-on-write (+10 MiB files copied)",
                  f"  pause + resume           median {statistics.median(b.pause_resume_s or [0]) * ms:7.2f} ms"]
    if b.vm_start_s:
        med = statistics.median
        lines += [f"Sessions (microvm backend, {b.vm_accel.upper()})",
                  f"  cold session start       median {med(b.vm_start_s) * ms:7.1f} ms",
                  f"  fork(1) (whole VM)       median {med(b.vm_fork_s) * ms:7.1f} ms",
                  f"  pause (VM to disk) + resume  median {med(b.vm_pause_resume_s) * ms:7.1f} ms",
                  f"  10-turn episode          median {med(b.vm_call_s) * ms:7.2f} ms per call"]
    lines += [f"  FAILED: {f}" for f in b.failures]
    return "\n".join(lines)
