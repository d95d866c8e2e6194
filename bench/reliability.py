"""``python -m harness bench --suite reliability``: the guarantees of README "Guarantees", measured.

One run, namespace backend, reports:

* programs run and results lost (a soak of the mixed program set through one pool, plus every
  fault-injection batch): every submitted program must come back with exactly one result;
* faults injected (zygote killed, sandbox killed, agent stopped, tmpfs filled, pool exhausted)
  and how the affected programs ended (a successful retry, or ``sandbox_error``);
* leaked processes (programs or children alive between batches, anything after ``close()``),
  fds and RSS of this process at the start and end of the soak, leftover scratch paths;
* hostile programs contained / tried and reward hacks defeated / tried, from the same cases
  the tests use (:mod:`bench.reliability_cases`).

Exit status non-zero when anything was lost, leaked or escaped, or a hack scored.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from vmpool import ExecRequest, Limits, Pool, PoolConfig, Status

from .reliability_cases import (
    HACKS,
    HOSTILE,
    LOOK_FOR_SECRET,
    PLANT_SECRET,
    check_soak_result,
    descendants,
    fd_count,
    hostile_request,
    parent_pid,
    rss_bytes,
    scratch_entries,
    soak_requests,
    stray_processes,
)

__all__ = ["ReliabilityReport", "SoakReport", "format_reliability", "inject_fault", "run_reliability_bench",
           "run_soak"]  # fmt: skip


@dataclass
class SoakReport:
    programs: int = 0
    results: int = 0
    implausible: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    fds: list[int] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    strays: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def lost(self) -> int:
        return self.programs - self.results

    @property
    def fd_growth(self) -> int:
        return max(self.fds[1:], default=0) - self.fds[1] if len(self.fds) > 1 else 0

    @property
    def rss_growth(self) -> int:
        return max(self.rss[1:], default=0) - self.rss[1] if len(self.rss) > 1 else 0


def run_soak(pool: Pool, n: int, chunk: int = 200, progress: bool = False) -> SoakReport:
    """Run ``n`` programs of the soak mix through ``pool`` in chunks; after every chunk sample
    this process's fd count and RSS and look for stray processes (programs must be gone)."""
    report = SoakReport(programs=n)
    statuses: Counter[str] = Counter()
    start = time.monotonic()
    report.fds.append(fd_count())
    report.rss.append(rss_bytes())
    for lo in range(0, n, chunk):
        items = soak_requests(lo, min(n, lo + chunk))
        results = pool.map([item.request for item in items])
        for item, result in zip(items, results, strict=False):
            report.results += 1
            statuses[result.status.value] += 1
            why = check_soak_result(item, result)
            if why and len(report.implausible) < 20:
                report.implausible.append(why)
            elif why:
                report.implausible.append("...")
        report.results -= max(0, len(items) - len(results))
        report.fds.append(fd_count())
        report.rss.append(rss_bytes())
        report.strays += [f"{pid} {cmd}" for pid, cmd in stray_processes()]
        if progress:
            print(f"  soak {lo + len(items)}/{n}: fds {report.fds[-1]} rss {report.rss[-1] >> 20} MiB", flush=True)
    report.statuses = dict(statuses)
    report.wall_s = time.monotonic() - start
    return report


# ----------------------------------------------------------------------------- faults


def _pool_pids(pool: Pool) -> list[tuple[int, list[int]]]:
    """(outer sandbox pid, pids below it) of every live sandbox of ``pool``."""
    outer = [pid for sb in pool.sandboxes() if (pid := getattr(sb, "pid", None))]
    return [(pid, sorted(descendants(pid))) for pid in outer]


def _cmd(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def _is_agent(cmd: bytes) -> bool:
    # bwrap's own command line names agent.py too: the agent is the python running it.
    return b"agent.py" in cmd and b"bwrap" not in cmd.split(b"\0")[0]


def agent_pids(pool: Pool) -> list[int]:
    """The zygote agents of ``pool``'s sandboxes (an agent whose parent is a bubblewrap; the
    programs it forks carry the same command line but have the agent as parent)."""
    found = []
    for _outer, below in _pool_pids(pool):
        found += [p for p in below
                  if _is_agent(_cmd(p)) and b"bwrap" in _cmd(parent_pid(p)).split(b"\0")[0]][:1]
    return found


FAULTS = ("kill zygote", "kill sandbox", "stop agent", "fill tmpfs", "exhaust pool")


def inject_fault(pool: Pool, fault: str) -> int:
    """Inject one fault into a live sandbox of ``pool``; returns how many processes were hit."""
    if fault == "kill zygote":
        targets = agent_pids(pool)[:1]
        sig = signal.SIGKILL
    elif fault == "kill sandbox":
        targets = [outer for outer, _ in _pool_pids(pool)][:1]
        sig = signal.SIGKILL
    elif fault == "stop agent":
        targets = agent_pids(pool)[:1]
        sig = signal.SIGSTOP
    else:
        raise ValueError(f"unknown fault {fault!r}")
    for pid in targets:
        assert b"agent.py" in _cmd(pid) or b"bwrap" in _cmd(pid) or b"qemu" in _cmd(pid), "not a sandbox process"
        os.kill(pid, sig)
    return len(targets)


def fault_batch(n: int = 24, sleep_s: float = 0.1) -> list[ExecRequest]:
    return [ExecRequest(code=f"import time; time.sleep({sleep_s}); print({i})", limits=Limits(wall_s=1.5))
            for i in range(n)]  # fmt: skip


def check_fault_batch(results: list[Any], n: int) -> list[str]:
    """Every program has a result: its correct output (first try or retry) or sandbox_error."""
    bad = []
    if len(results) != n:
        bad.append(f"{n - len(results)} results lost")
    for i, r in enumerate(results):
        if r.status is Status.OK and r.stdout == f"{i}\n":
            continue
        if r.status is Status.SANDBOX_ERROR:
            continue
        bad.append(f"program {i}: {r.status.value} {r.stdout!r} {r.error[:100]}")
    return bad


def run_fault(fault: str, delay_s: float = 0.3) -> tuple[int, int, list[str], dict[str, int]]:
    """One fault-injection batch in a fresh pool. Returns (programs, injected, problems, stats)."""
    problems: list[str] = []
    with Pool(PoolConfig(size=2, transport_slack_s=1.0)) as pool:
        if fault == "fill tmpfs":
            filler = ("import os\nst = os.statvfs('.')\nassert st.f_blocks * st.f_frsize <= 1 << 30\n"
                      "with open('fill', 'wb') as f:\n    while True: f.write(b'z' * (1 << 20))\n")
            reqs = fault_batch(20, 0.05)
            reqs.insert(5, ExecRequest(code=filler, limits=Limits(wall_s=5.0, file_size_bytes=1 << 30)))
            results = pool.map(reqs)
            fill = results.pop(5)
            if fill.status is not Status.RUNTIME_ERROR or "No space left" not in fill.stderr:
                problems.append(f"filler: {fill.status.value} {fill.stderr[-200:]!r}")
            problems += check_fault_batch(results, 20)
            return 21, 1, problems, dict(pool.stats)
        if fault == "exhaust pool":
            out: dict[int, list[Any]] = {}

            def submit(k: int) -> None:
                out[k] = pool.map(fault_batch(30, 0.01))

            threads = [threading.Thread(target=submit, args=(k,)) for k in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            for k in range(6):
                problems += check_fault_batch(out.get(k, []), 30)
                problems += [f"thread {k}: sandbox_error under load" for r in out.get(k, [])
                             if r.status is Status.SANDBOX_ERROR]  # fmt: skip
            return 180, 1, problems, dict(pool.stats)
        injected = [0]

        def inject() -> None:
            try:
                injected[0] = inject_fault(pool, fault)
            except Exception as exc:  # reported as a problem below (no target found)
                problems.append(f"{fault}: injection failed: {exc}")

        timer = threading.Timer(delay_s, inject)
        timer.start()
        results = pool.map(fault_batch(24))
        timer.join()
        problems += check_fault_batch(results, 24)
        stats = dict(pool.stats)
        if injected[0] and stats["sandboxes_started"] <= 2 and not stats["retries"]:
            problems.append(f"{fault}: fault injected but nothing was replaced or retried")
        if not injected[0]:
            problems.append(f"{fault}: no target found")
        return 24, injected[0], problems, stats


# ----------------------------------------------------------------------------- report


@dataclass
class ReliabilityReport:
    programs: int = 0
    results: int = 0
    faults_injected: int = 0
    fault_problems: list[str] = field(default_factory=list)
    leaked_processes: int = 0
    leaked_paths: list[str] = field(default_factory=list)
    hostile_tried: int = 0
    hostile_contained: int = 0
    hostile_escaped: list[str] = field(default_factory=list)
    hacks_tried: int = 0
    hacks_defeated: int = 0
    hacks_scored: list[str] = field(default_factory=list)
    fds_start_end: tuple[int, int] = (0, 0)
    rss_mib_start_end: tuple[float, float] = (0.0, 0.0)
    soak: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def lost(self) -> int:
        return self.programs - self.results

    @property
    def ok(self) -> bool:
        return (self.lost == 0 and self.leaked_processes == 0 and not self.leaked_paths
                and not self.fault_problems and not self.hostile_escaped and not self.hacks_scored
                and self.hostile_contained == self.hostile_tried and self.hacks_defeated == self.hacks_tried)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lost": self.lost, "ok": self.ok}


def run_reliability_bench(soak_n: int = 2000, workers: int = 2, progress: bool = True) -> ReliabilityReport:
    from rewards import Grader, RewardConfig, compute_reward

    rep = ReliabilityReport()
    start = time.monotonic()
    before_paths = scratch_entries()
    before_procs = descendants(os.getpid())
    with Pool(PoolConfig(size=workers)) as pool:
        soak = run_soak(pool, soak_n, progress=progress)
        rep.programs += soak.programs
        rep.results += soak.results
        rep.leaked_processes += len(soak.strays)
        rep.fds_start_end = (soak.fds[0], soak.fds[-1])
        rep.rss_mib_start_end = (round(soak.rss[0] / 2**20, 1), round(soak.rss[-1] / 2**20, 1))
        rep.soak = {"statuses": soak.statuses, "implausible": soak.implausible[:20], "wall_s": round(soak.wall_s, 1),
                    "fd_growth": soak.fd_growth, "rss_growth_mib": round(soak.rss_growth / 2**20, 1)}  # fmt: skip

        # Hostile programs (the host-pid case also gets a concurrent program's pid).
        for case in HOSTILE:
            rep.hostile_tried += 1
            rep.programs += 1
            result = pool.run(hostile_request(case, [os.getpid(), os.getppid()]))
            rep.results += 1
            why = case.check(result)
            strays = stray_processes()
            if why or strays:
                rep.hostile_escaped.append(f"{case.name}: {why or strays}")
            else:
                rep.hostile_contained += 1
        rep.hostile_tried += 1
        rep.programs += 2
        plant, look = pool.map([ExecRequest(code=PLANT_SECRET, limits=Limits(wall_s=5)),
                                ExecRequest(code=LOOK_FOR_SECRET, limits=Limits(wall_s=5))])  # fmt: skip
        rep.results += 2
        if look.status is Status.OK and look.stdout.startswith("found []") and plant.status is Status.OK:
            rep.hostile_contained += 1
        else:
            rep.hostile_escaped.append(f"read a concurrent program's files: {look.stdout[:200]!r}")

        grader = Grader(pool)
        verdicts = grader.grade_batch([(h.problem, c) for h in HACKS for c in (h.good, h.hack)])
        rep.programs += 2 * len(HACKS)
        rep.results += len(verdicts)
        for i, hack in enumerate(HACKS):
            control, verdict = verdicts[2 * i], verdicts[2 * i + 1]
            rep.hacks_tried += 1
            if control.passed is True and verdict.passed is False and compute_reward(verdict, RewardConfig()) == 0.0:
                rep.hacks_defeated += 1
            else:
                rep.hacks_scored.append(f"{hack.name}: control {control.passed}, hack {verdict.passed}")

    for fault in FAULTS:
        n, injected, problems, _stats = run_fault(fault)
        rep.programs += n
        rep.results += n - sum("lost" in p for p in problems)
        rep.faults_injected += injected
        rep.fault_problems += [f"{fault}: {p}" for p in problems]
        if progress:
            print(f"  fault {fault}: {'ok' if not problems else problems[:3]}", flush=True)

    deadline = time.monotonic() + 5
    while True:
        left = descendants(os.getpid()) - before_procs
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    rep.leaked_processes += len(left)
    rep.leaked_paths = sorted(scratch_entries() - before_paths)
    rep.wall_s = time.monotonic() - start
    return rep


def format_reliability(rep: ReliabilityReport) -> str:
    rows = [
        ("programs run", f"{rep.programs:,}"),
        ("results lost", f"{rep.lost}"),
        ("faults injected", f"{rep.faults_injected} ({', '.join(FAULTS)})"),
        ("fault batches with a wrong result", f"{len(rep.fault_problems)}"),
        ("leaked processes (between batches + after close)", f"{rep.leaked_processes}"),
        ("leftover /tmp/vmpool-*, /dev/shm paths", f"{len(rep.leaked_paths)}"),
        ("harness fds, soak start -> end", f"{rep.fds_start_end[0]} -> {rep.fds_start_end[1]}"),
        ("harness RSS MiB, soak start -> end", f"{rep.rss_mib_start_end[0]} -> {rep.rss_mib_start_end[1]}"),
        ("hostile programs contained / tried", f"{rep.hostile_contained} / {rep.hostile_tried}"),
        ("reward hacks defeated / tried", f"{rep.hacks_defeated} / {rep.hacks_tried}"),
        ("wall time", f"{rep.wall_s:.1f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"| {'check'.ljust(width)} | result |", f"|{'-' * (width + 2)}|--------|"]
    lines += [f"| {k.ljust(width)} | {v} |" for k, v in rows]
    details = rep.fault_problems + rep.hostile_escaped + rep.hacks_scored + rep.leaked_paths + rep.soak.get(
        "implausible", [])
    if details:
        lines.append("")
        lines += [f"  ! {d}" for d in details[:40]]
    lines.append("")
    lines.append("OK" if rep.ok else "FAILED: something was lost, leaked or escaped")
    return "\n".join(lines)


def write_json(rep: ReliabilityReport, path: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(rep.to_dict(), fh, indent=2)
