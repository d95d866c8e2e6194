"""``harness bench --suite serve``: the service's faces through the real clients, side by side
with the direct path they stand for, in one run.

* E2B: ``Sandbox.create()`` + first ``run_code`` + ``kill()`` through the unmodified SDK against
  ``harness serve``, median and p99, against the same work on ``vmpool`` directly (lease a warm
  session, one cell, close), one at a time with ``PAUSE_S`` between (the warm pools refilled);
* ``live`` E2B sandboxes held at once through the service (created with the async SDK), the
  seconds that took and the available memory they used, then one cell in each;
* verl's SandboxFusion client (``check_correctness``) on a bundled LiveCodeBench row through
  ``/run_code``, programs/s and p99 per case, against the same programs on ``vmpool.Pool``
  directly at the same concurrency (no SandboxFusion server can be started here to compare with).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import statistics
import sysconfig
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .sessions import _available_bytes, _p

__all__ = ["ServeBench", "format_serve_bench", "run_serve_bench", "verl_client"]

TOKEN = "bench-token-0123456789"
PAUSE_S = 0.3  # between timed creates: each one a client's latency with the warm pools refilled
CARDS = ("t = int(input())\n"
         "for _ in range(t):\n"
         "    s = input().strip()\n"
         "    print('YES' if sum(a != b for a, b in zip(s, 'abc')) in (0, 2) else 'NO')\n")


@dataclass
class ServeBench:
    e2b_s: list[float] = field(default_factory=list)
    direct_s: list[float] = field(default_factory=list)
    live: int = 0
    live_create_s: float = 0.0
    live_bytes: int = 0
    live_cells_ok: int = 0
    verl_cases: int = 0
    verl_s: float = 0.0
    verl_case_s: list[float] = field(default_factory=list)
    direct_cases_s: float = 0.0
    direct_case_s: list[float] = field(default_factory=list)
    verl_all_passed: bool = False

    @property
    def ok(self) -> bool:
        return bool(self.e2b_s) and self.verl_all_passed and self.live_cells_ok == self.live

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def verl_client() -> Any:
    """verl's SandboxFusion client module, loaded from the verl wheel the way verl loads it."""
    path = Path(sysconfig.get_paths()["purelib"]) / "verl/utils/reward_score/sandbox_fusion/utils.py"
    spec = importlib.util.spec_from_file_location("verl_sandbox_fusion_utils", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_serve_bench(rounds: int = 30, live: int = 1000, verl_repeat: int = 20) -> ServeBench:
    """Run the measurements above (see the module docstring)."""
    from e2b_code_interpreter import AsyncSandbox, Sandbox

    from harness.serve import ServeConfig, running
    from rewards import StdioTests, data_path, load_problems
    from vmpool import ExecRequest, Limits, Pool, SessionPool

    bench = ServeBench()
    with SessionPool(warm=8) as pool:
        for _ in range(rounds + 2):
            start = time.perf_counter()
            session = pool.lease()
            session.run_code("1 + 1")
            bench.direct_s.append(time.perf_counter() - start)  # closing it is off the path, as the service's is
            pool.release(session)
            time.sleep(PAUSE_S)
    bench.direct_s = bench.direct_s[2:]
    tests = load_problems(data_path("livecodebench")).by_id()["livecodebench/codeforces/1873_A"].tests
    assert isinstance(tests, StdioTests)
    io = {"inputs": [c.stdin for c in tests.cases] * verl_repeat,
          "outputs": [c.stdout for c in tests.cases] * verl_repeat}
    bench.verl_cases = len(io["inputs"])
    config = ServeConfig(tokens=(TOKEN,), warm_sessions=8, max_sandboxes=live + 50,
                         max_sandboxes_per_token=live + 50)
    with running(config) as url:
        os.environ.update(E2B_API_URL=url, E2B_SANDBOX_URL=url, E2B_API_KEY=TOKEN)
        for i in range(rounds + 2):
            start = time.perf_counter()
            sbx = Sandbox.create()
            sbx.run_code("1 + 1")
            sbx.kill()
            if i >= 2:
                bench.e2b_s.append(time.perf_counter() - start)
            time.sleep(PAUSE_S)
        verl = verl_client()
        endpoint = f"{url}/run_code?token={TOKEN}"
        start = time.perf_counter()
        results, meta = verl.check_correctness(endpoint, io, CARDS)
        bench.verl_s = time.perf_counter() - start
        bench.verl_all_passed = all(r is True for r in results)
        bench.verl_case_s = [float(m.get("duration") or 0.0) for m in meta]
        bench.live = live
        before = _available_bytes()
        bench.live_create_s, bench.live_cells_ok, after = asyncio.run(_live(AsyncSandbox, live))
        bench.live_bytes = max(0, before - after)
    with Pool() as direct, ThreadPoolExecutor(max(32, (os.cpu_count() or 1) * 5)) as threads:
        limits = Limits(cpu_s=10, wall_s=32, memory_mb=1024)

        def one(stdin: str) -> float:
            return direct.run(ExecRequest(code=CARDS, stdin=stdin, limits=limits)).wall_s

        start = time.perf_counter()
        bench.direct_case_s = list(threads.map(one, io["inputs"]))
        bench.direct_cases_s = time.perf_counter() - start
    return bench


async def _live(sandbox_cls: Any, n: int) -> tuple[float, int, int]:
    """Create ``n`` sandboxes (32 at a time), note the available memory with all of them live, run a
    cell in each, kill all. Returns (seconds to create, cells answered, available bytes)."""
    gate = asyncio.Semaphore(32)

    async def create() -> Any:
        async with gate:
            return await sandbox_cls.create(timeout=3600)

    start = time.perf_counter()
    boxes = await asyncio.gather(*(create() for _ in range(n)))
    took = time.perf_counter() - start
    available = _available_bytes()

    async def cell(box: Any, i: int) -> bool:
        async with gate:
            ex = await box.run_code(f"{i} * 2")
            return bool(ex.text == str(i * 2))

    ok = sum(await asyncio.gather(*(cell(b, i) for i, b in enumerate(boxes))))

    async def kill(box: Any) -> None:
        async with gate:
            await box.kill()

    await asyncio.gather(*(kill(b) for b in boxes))
    return took, ok, available


def format_serve_bench(b: ServeBench) -> str:
    ms = 1000.0
    e2b, direct = statistics.median(b.e2b_s or [0]), statistics.median(b.direct_s or [0])
    verl_rate = b.verl_cases / b.verl_s if b.verl_s else 0.0
    direct_rate = b.verl_cases / b.direct_cases_s if b.direct_cases_s else 0.0
    per = b.live_bytes / b.live / 2**20 if b.live else 0.0
    return "\n".join([
        "harness serve (namespace sessions, through the real clients)",
        f"  E2B create + run_code + kill   median {e2b * ms:7.2f} ms   p99 {_p(b.e2b_s, 0.99) * ms:7.2f} ms   "
        f"(E2B's cloud: ~440 ms median)",
        f"  same on vmpool directly         median {direct * ms:7.2f} ms   p99 {_p(b.direct_s, 0.99) * ms:7.2f} ms   "
        f"(the service adds {e2b / direct if direct else 0:.1f}x)",
        f"  {b.live} live E2B sandboxes     created in {b.live_create_s:6.1f} s, {per:5.1f} MiB of available memory "
        f"each; {b.live_cells_ok}/{b.live} answered a cell",
        f"  verl check_correctness          {b.verl_cases} cases: {verl_rate:6.1f} programs/s   "
        f"program wall p99 {_p(b.verl_case_s, 0.99) * ms:6.1f} ms   (all passed: {b.verl_all_passed})",
        f"  same programs on vmpool.Pool    {direct_rate:6.1f} programs/s   program wall p99 {_p(b.direct_case_s, 0.99) * ms:6.1f} ms   "
        f"(service / direct: {verl_rate / direct_rate if direct_rate else 0:.2f}x)",
    ])
