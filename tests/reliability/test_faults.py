"""Fault injection while a batch runs: the batch completes, affected programs get a successful
retry or sandbox_error (reward None), the others are unaffected. Ray: tests/harness/test_ray_cluster.py."""

from __future__ import annotations

import os
import threading
import time

import pytest

from bench.reliability import FAULTS, agent_pids, check_fault_batch, fault_batch, run_fault
from bench.reliability_cases import stray_processes
from vmpool import ExecRequest, Limits, Pool, PoolConfig, Status


@pytest.mark.parametrize("fault", FAULTS)
def test_batch_survives_fault(fault: str, no_leaks) -> None:
    programs, injected, problems, stats = run_fault(fault)
    assert injected == 1
    assert not problems, problems
    if fault.startswith(("kill", "stop")):
        assert stats["retries"] >= 1 or stats["sandboxes_started"] > 2, stats
    assert stats["programs"] == programs


def test_agent_killed_twice_is_sandbox_killed_or_retried_never_lost(no_leaks) -> None:
    # Kill the zygote of a sandbox repeatedly during a batch: every program still gets one result.
    with Pool(PoolConfig(size=2, transport_slack_s=1.0)) as pool:
        stop = threading.Event()

        def killer() -> None:
            while not stop.wait(0.25):
                for pid in agent_pids(pool)[:1]:
                    try:
                        os.kill(pid, 9)
                    except ProcessLookupError:
                        pass

        t = threading.Thread(target=killer)
        t.start()
        try:
            results = pool.map(fault_batch(40))
        finally:
            stop.set()
            t.join()
        assert len(results) == 40
        for i, r in enumerate(results):
            assert (r.status is Status.OK and r.stdout == f"{i}\n") or r.status in (
                Status.SANDBOX_ERROR, Status.SANDBOX_KILLED), (i, r)
        after = pool.map(fault_batch(4))
        assert not check_fault_batch(after, 4) and all(r.status is Status.OK for r in after)
        assert not stray_processes()


@pytest.mark.microvm
def test_microvm_qemu_killed_and_stopped_mid_batch(no_leaks) -> None:
    from vmpool import MicroVMTemplate

    MicroVMTemplate.ensure()
    with Pool(PoolConfig(backend="microvm", size=1, start_timeout_s=60, transport_slack_s=2.0)) as pool:
        reqs = [ExecRequest(code=f"import time; time.sleep(0.5); print({i})", limits=Limits(wall_s=4.0))
                for i in range(3)]
        for action in ("kill", "stop"):
            def inject(action: str = action) -> None:
                with pool._lock:
                    (sb,) = list(pool._live)
                if action == "kill":
                    os.kill(sb.pid, 9)
                else:
                    sb._qmp.execute("stop")  # the guest stops answering on its channel

            timer = threading.Timer(0.3, inject)
            timer.start()
            start = time.monotonic()
            results = pool.map(reqs)
            timer.join()
            assert not check_fault_batch(results, 3), results
            assert time.monotonic() - start < 60
        assert pool.stats["retries"] >= 2, pool.stats
