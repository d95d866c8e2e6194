"""The warm pool: ordering, concurrency, recycling, replacement, retries, clean shutdown."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from tests._procs import cmdline, descendants, pool_extra_processes, sandbox_processes
from vmpool import ExecRequest, Limits, Pool, PoolClosedError, PoolConfig, SandboxStartError, Status
from vmpool._uids import uid_plan

FAST = Limits(wall_s=3.0)


def test_map_returns_results_in_input_order(pool):
    reqs = [ExecRequest(code=f"import time; time.sleep({0.02 * (i % 3)}); print({i})", limits=FAST) for i in range(30)]
    assert [r.stdout for r in pool.map(reqs)] == [f"{i}\n" for i in range(30)]


def test_map_runs_programs_concurrently(pool):
    reqs = [ExecRequest(code="import time; time.sleep(0.5)", limits=FAST)] * 4
    start = time.monotonic()
    results = pool.map(reqs)
    elapsed = time.monotonic() - start
    assert all(r.status is Status.OK for r in results)
    assert elapsed < 1.6  # 4 x 0.5 s over 2 sandboxes: ~1 s, not 2 s


def test_sandbox_recycled_after_max_programs():
    with Pool(PoolConfig(size=1, max_programs_per_sandbox=3)) as p:
        pids = []
        for _ in range(7):
            r = p.run(ExecRequest(code="import os; print(os.getpid())", limits=FAST))
            assert r.status is Status.OK
        assert p.stats["sandboxes_started"] == 3 and p.stats["sandboxes_retired"] == 2
        del pids


def test_sandbox_killed_from_outside_is_replaced(no_leaks):
    with Pool(PoolConfig(size=1)) as p:
        (sandbox,) = list(p._live)
        os.kill(sandbox.pid, signal.SIGKILL)
        time.sleep(0.2)
        r = p.run(ExecRequest(code="print('still serving')", limits=FAST))
        assert r.status is Status.OK and r.stdout == "still serving\n"
        assert p.stats["sandboxes_started"] == 2


SIGNAL_EVERYONE = (
    "import os, signal\n"
    "me = os.getpid()\n"
    "hit = []\n"
    "for entry in os.listdir('/proc'):\n"
    "    if entry.isdigit() and int(entry) != me:\n"
    "        try:\n"
    "            os.kill(int(entry), signal.SIGKILL)\n"
    "            hit.append(entry)\n"
    "        except PermissionError:\n"
    "            pass\n"
    "print('killed', hit)\n"
)


def test_program_cannot_signal_its_agent_zygote_or_init(no_leaks):
    # The program runs under a uid of its own: every other process of the sandbox
    # (bwrap's init, the agent, the program zygote) refuses its signals.
    with Pool(PoolConfig(size=1)) as p:
        r = p.run(ExecRequest(code=SIGNAL_EVERYONE, limits=FAST))
        assert r.status is Status.OK and r.stdout == "killed []\n", r
        after = p.run(ExecRequest(code="print('ok')", limits=FAST))
        assert after.status is Status.OK and after.stdout == "ok\n"
        assert p.stats["sandboxes_started"] == 1


def _killing_execute(real_execute, kills: dict):
    """A Sandbox.execute that kills the sandbox from the host while the program runs,
    as long as ``kills["left"]`` says so: the host-side view of a program that took
    its sandbox down."""
    def execute(self, request):
        if kills["left"] > 0:
            kills["left"] -= 1
            threading.Timer(0.3, lambda: os.kill(self.pid, signal.SIGKILL)).start()
        return real_execute(self, request)
    return execute


def test_sandbox_dying_twice_under_a_program_is_sandbox_killed_not_infrastructure(no_leaks):
    code = "import time; time.sleep(2)\n"
    kills = {"left": 2}
    with Pool(PoolConfig(size=2)) as p:
        cls = type(next(iter(p._live)))
        real_execute = cls.execute
        cls.execute = _killing_execute(real_execute, kills)
        try:
            r = p.run(ExecRequest(code=code, limits=FAST))
        finally:
            cls.execute = real_execute
        assert r.status is Status.SANDBOX_KILLED and r.attempts == 2
        assert not r.status.is_infrastructure
        after = p.run(ExecRequest(code="print('ok')", limits=FAST))
        assert after.status is Status.OK and after.stdout == "ok\n"
        assert p.live_sandboxes() == 2


def test_sandbox_dying_once_gets_a_successful_retry(no_leaks):
    kills = {"left": 1}
    with Pool(PoolConfig(size=1)) as p:
        cls = type(next(iter(p._live)))
        real_execute = cls.execute
        cls.execute = _killing_execute(real_execute, kills)
        try:
            r = p.run(ExecRequest(code="import time; time.sleep(1); print('survived')", limits=FAST))
        finally:
            cls.execute = real_execute
        assert r.status is Status.OK and r.stdout == "survived\n" and r.attempts == 2


def test_no_process_survives_close_including_daemons():
    daemon = ("import os, time\n"
              "if os.fork() == 0:\n"
              "    os.setsid()\n"
              "    time.sleep(60)\n"
              "time.sleep(60)\n")
    before = descendants(os.getpid())
    p = Pool(PoolConfig(size=2))
    uids = {u for sb in p.sandboxes() for u in sb.uids if uid_plan().owns(u)}
    # Leave programs running (and daemonised) in both sandboxes while closing.
    import threading
    threads = [threading.Thread(target=lambda: _swallow(p, daemon)) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.7)
    running = descendants(os.getpid()) - before
    assert any("sleep" in cmdline(pid) or "python" in cmdline(pid) for pid in running)
    p.close()
    for t in threads:
        t.join(10)
    assert not [proc for proc in sandbox_processes() if proc[1] in uids]
    deadline = time.monotonic() + 5
    while descendants(os.getpid()) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not descendants(os.getpid()) - before
    with pytest.raises(PoolClosedError):
        p.run(ExecRequest(code="print(1)"))


def _swallow(pool, code):
    try:
        pool.run(ExecRequest(code=code, limits=Limits(wall_s=30)))
    except PoolClosedError:
        pass


def test_sandbox_that_cannot_start_fails_loudly():
    with pytest.raises(SandboxStartError, match="did not become ready|cannot start"):
        Pool(PoolConfig(size=1, python="/nonexistent/python3", start_timeout_s=5))


def test_sandbox_error_when_no_replacement_can_start(no_leaks):
    with Pool(PoolConfig(size=1)) as p:
        (sandbox,) = list(p._live)
        p._factory = lambda: (_ for _ in ()).throw(SandboxStartError("image missing"))
        os.kill(sandbox.pid, signal.SIGKILL)
        time.sleep(0.2)
        r = p.run(ExecRequest(code="print(1)", limits=FAST))
        assert r.status is Status.SANDBOX_ERROR and r.status.is_infrastructure
        assert "image missing" in r.error


def test_hostile_programs_leave_the_pool_serving(pool):
    hostile = [
        "while True: pass",
        "x = bytearray(10**10)",
        "while True: print('z' * 10000)",
        "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass",
    ]
    reqs = [ExecRequest(code=c, limits=Limits(wall_s=1.0, max_processes=8, output_bytes=50_000)) for c in hostile]
    statuses = [r.status for r in pool.map(reqs)]
    assert statuses[:3] == [Status.TIMEOUT, Status.MEMORY_LIMIT, Status.OUTPUT_LIMIT]
    assert statuses[3] in (Status.TIMEOUT, Status.RUNTIME_ERROR)
    assert not pool_extra_processes(pool)
    good = pool.map([ExecRequest(code=f"print({i} * 2)", limits=FAST) for i in range(6)])
    assert [r.stdout for r in good] == [f"{i * 2}\n" for i in range(6)]
