"""``python -m harness bench --suite microvm``: snapshot clones against cold boots, side by side.

Measured in one run, on one accelerator (reported; TCG where KVM does not work):

* cold boot: a fresh QEMU booting the same image to a ready agent (``boot_probe``);
* clone: a fresh QEMU restoring the template snapshot copy-on-write, to an agent that
  answered the resume handshake (what the pool does for every sandbox);
* the ratio of their medians (the issue's target: at least 20x);
* per-clone memory: QEMU's RSS, template pages still shared, pages copied on write,
  right after restore and after one program;
* clones per second sustained: start + close back to back for a fixed count;
* HumanEval canonical programs per second through the Grader on a microvm pool,
  next to the namespace backend on the same programs.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MicroVMBench", "format_microvm_bench", "run_microvm_bench"]


@dataclass
class MicroVMBench:
    accel: str
    accel_reason: str
    cold_boot_s: list[float] = field(default_factory=list)
    clone_s: list[float] = field(default_factory=list)
    memory_after_restore: dict[str, int] = field(default_factory=dict)
    memory_after_program: dict[str, int] = field(default_factory=dict)
    clones_per_s: float = 0.0
    programs: int = 0
    microvm_programs_per_s: float = 0.0
    namespace_programs_per_s: float = 0.0
    verdicts_match: bool = False

    @property
    def clone_speedup(self) -> float:
        if not self.clone_s or not self.cold_boot_s:
            return 0.0
        return statistics.median(self.cold_boot_s) / statistics.median(self.clone_s)

    @property
    def ok(self) -> bool:
        """Both backends gave the same verdicts, all passes (the numbers then mean something)."""
        return self.verdicts_match

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "clone_speedup": self.clone_speedup}


def run_microvm_bench(cold_boots: int = 2, clones: int = 10, sustained: int = 10, programs: int = 40,
                      workers: int = 2) -> MicroVMBench:  # fmt: skip
    """Run every measurement above; see the module docstring."""
    from harness import bundled_dataset
    from rewards import Grader, load_problems, reference_solutions
    from vmpool import (
        ExecRequest,
        ImageConfig,
        Limits,
        MicroVMSandbox,
        MicroVMTemplate,
        Pool,
        PoolConfig,
        boot_probe,
        build_image,
        choose_accel,
    )

    image = build_image(ImageConfig())
    accel, reason = choose_accel(image, "auto")
    template = MicroVMTemplate.ensure(accel=accel, image=image)
    bench = MicroVMBench(accel=accel, accel_reason=reason)
    for _ in range(cold_boots):
        bench.cold_boot_s.append(boot_probe(image, accel=accel, timeout_s=300).boot_to_ready_s)
    for i in range(clones):
        start = time.monotonic()
        sandbox = MicroVMSandbox(template, start_timeout_s=120)
        bench.clone_s.append(time.monotonic() - start)
        if i == 0:
            bench.memory_after_restore = sandbox.memory_stats()
            sandbox.execute(ExecRequest(code="import json, re, collections; print(sum(range(1000)))",
                                        limits=Limits(wall_s=60)))  # fmt: skip
            bench.memory_after_program = sandbox.memory_stats()
        sandbox.close()
    start = time.monotonic()
    for _ in range(sustained):
        MicroVMSandbox(template, start_timeout_s=120).close()
    bench.clones_per_s = sustained / (time.monotonic() - start)

    path = bundled_dataset()
    problems = list(load_problems(path))[:programs]
    solutions = reference_solutions(path)
    items = [(p, solutions[p.task_id]) for p in problems]
    limits = Limits(wall_s=120.0)
    bench.programs = len(items)
    verdicts = {}
    for backend in ("microvm", "namespace"):
        with Pool(PoolConfig(backend=backend, size=workers, accel=accel, start_timeout_s=120)) as pool:
            grader = Grader(pool, default_limits=limits)
            grader.grade_batch(items[:workers])  # warm every sandbox once, untimed
            start = time.monotonic()
            verdicts[backend] = [v.passed for v in grader.grade_batch(items)]
            rate = len(items) / (time.monotonic() - start)
        setattr(bench, f"{backend}_programs_per_s", rate)
    bench.verdicts_match = verdicts["microvm"] == verdicts["namespace"] == [True] * len(items)
    return bench


def format_microvm_bench(b: MicroVMBench) -> str:
    med = statistics.median
    m0, m1 = b.memory_after_restore, b.memory_after_program
    lines = [
        f"microvm benchmark, accelerator {b.accel} ({b.accel_reason})",
        f"  cold boot to ready agent   median {med(b.cold_boot_s):7.3f} s  ({len(b.cold_boot_s)} boots)",
        f"  snapshot clone to ready    median {med(b.clone_s):7.3f} s  ({len(b.clone_s)} clones, "
        f"min {min(b.clone_s):.3f}, max {max(b.clone_s):.3f})",
        f"  clone vs cold boot         {b.clone_speedup:7.1f}x faster",
        f"  clones sustained           {b.clones_per_s:7.2f} clones/s (start + close, back to back)",
        f"  per-clone memory           QEMU RSS {m0.get('rss_kb', 0) / 1024:.1f} MiB after restore, "
        f"{m1.get('rss_kb', 0) / 1024:.1f} MiB after one program",
        f"  template RAM pages         shared {m0.get('ram_shared_kb', 0) / 1024:.1f} MiB, copied on write "
        f"{m0.get('ram_copied_pages', 0)} pages after restore, {m1.get('ram_copied_pages', 0)} after one program",
        f"  HumanEval canonical        {b.programs} programs: microvm {b.microvm_programs_per_s:.2f} programs/s, "
        f"namespace {b.namespace_programs_per_s:.2f} programs/s (same run), verdicts "
        f"{'identical, all pass' if b.verdicts_match else 'DIFFER'}",
    ]
    return "\n".join(lines)


def write_json(bench: MicroVMBench, path: str | Path) -> None:
    Path(path).write_text(json.dumps(bench.to_dict(), indent=2))
