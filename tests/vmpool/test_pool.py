"""The warm pool: ordering, concurrency, recycling, replacement, retries, clean shutdown."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests._procs import pool_extra_processes, sandbox_processes
from vmpool import ExecRequest, Limits, Pool, PoolClosedError, PoolConfig, SandboxStartError, Status

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


def test_program_that_kills_its_zygote_twice_is_sandbox_killed_not_infrastructure(no_leaks):
    code = ("import os, signal\n"
            "ppid = os.getppid()\n"
            "cmd = open(f'/proc/{ppid}/cmdline', 'rb').read()\n"
            "assert b'agent.py' in cmd, 'parent is not the sandbox agent: refusing to signal it'\n"
            "os.kill(ppid, signal.SIGKILL)\n"
            "import time; time.sleep(5)\n")
    with Pool(PoolConfig(size=2)) as p:
        r = p.run(ExecRequest(code=code, limits=FAST))
        assert r.status is Status.SANDBOX_KILLED and r.attempts == 2
        assert not r.status.is_infrastructure
        after = p.run(ExecRequest(code="print('ok')", limits=FAST))
        assert after.status is Status.OK and after.stdout == "ok\n"
        assert p.live_sandboxes() == 2


def test_program_killed_only_once_gets_a_successful_retry(tmp_path, no_leaks):
    # The program kills its agent only if a marker (outside the sandbox) says it has not yet.
    marker = tmp_path / "first"
    marker.write_text("")
    code = ("import os, signal\n"
            "if open('first').read() == 'kill':\n"
            "    ppid = os.getppid()\n"
            "    assert b'agent.py' in open(f'/proc/{ppid}/cmdline', 'rb').read()\n"
            "    os.kill(ppid, signal.SIGKILL)\n"
            "    import time; time.sleep(5)\n"
            "print('survived')\n")
    calls = {"n": 0}

    class Flaky(ExecRequest):
        pass

    with Pool(PoolConfig(size=1)) as p:
        real_execute = type(next(iter(p._live))).execute

        def execute(self, request):
            calls["n"] += 1
            files = {"first": "kill" if calls["n"] == 1 else "no"}
            return real_execute(self, ExecRequest(code=request.code, files=files, limits=request.limits))

        type(next(iter(p._live))).execute = execute
        try:
            r = p.run(ExecRequest(code=code, limits=FAST))
        finally:
            type(next(iter(p._live))).execute = real_execute
        assert r.status is Status.OK and r.stdout == "survived\n" and r.attempts == 2


def test_no_process_survives_close_including_daemons():
    daemon = ("import os, time\n"
              "if os.fork() == 0:\n"
              "    os.setsid()\n"
              "    time.sleep(60)\n"
              "time.sleep(60)\n")
    p = Pool(PoolConfig(size=2))
    uids = {sb.uid for sb in p._live}
    # Leave programs running (and daemonised) in both sandboxes while closing.
    import threading
    threads = [threading.Thread(target=lambda: _swallow(p, daemon)) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.7)
    assert any(u in uids for _, u, _ in sandbox_processes())
    p.close()
    for t in threads:
        t.join(10)
    assert not [proc for proc in sandbox_processes() if proc[1] in uids]
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
