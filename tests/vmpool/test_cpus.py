"""CPU pinning: the machine-wide CPU lease, and sandboxes that really run on their CPU."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vmpool import ExecRequest, Limits, NamespaceSandbox, Pool, PoolConfig, _cpus

FAST = Limits(wall_s=10, cpu_s=5)


@pytest.fixture
def lock_dir(tmp_path, monkeypatch):
    """Leases of this test only (the host's real ones may be held by other test processes)."""
    monkeypatch.setattr(_cpus, "_lock_dir", lambda: str(tmp_path))
    return tmp_path


def test_leases_spread_over_cpus_before_sharing_one(lock_dir):
    leases = [_cpus.lease_cpu({0, 1, 2}) for _ in range(7)]
    try:
        assert all(lease is not None for lease in leases)
        cpus = [lease.cpu for lease in leases]  # type: ignore[union-attr]
        assert sorted(cpus[:3]) == [0, 1, 2]  # one per CPU first
        assert sorted(cpus[3:6]) == [0, 1, 2]  # then a second on each
        assert [lease.slot for lease in leases] == [0, 0, 0, 1, 1, 1, 2]  # type: ignore[union-attr]
    finally:
        for lease in leases:
            if lease is not None:
                lease.release()


def test_a_released_cpu_is_leased_again_first(lock_dir):
    a, b = _cpus.lease_cpu({0, 1}), _cpus.lease_cpu({0, 1})
    assert a is not None and b is not None
    freed = a.cpu
    a.release()
    c = _cpus.lease_cpu({0, 1})
    assert c is not None and (c.cpu, c.slot) == (freed, 0)
    for lease in (b, c):
        lease.release()


def test_leases_are_exclusive_across_processes(lock_dir):
    """Another process sees the CPU taken (flock), and gets it once the holder is gone."""
    held = _cpus.lease_cpu({5})
    assert held is not None and held.slot == 0
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); from vmpool import _cpus; "
        "_cpus._lock_dir = lambda: sys.argv[2]; l = _cpus.lease_cpu({5}); print(l.cpu, l.slot)"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", probe, root, str(lock_dir)], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["5", "1"]
    held.release()
    out = subprocess.run([sys.executable, "-c", probe, root, str(lock_dir)], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["5", "0"]


def test_no_lease_when_every_slot_is_taken(lock_dir, monkeypatch):
    monkeypatch.setattr(_cpus, "MAX_SLOTS", 2)
    leases = [_cpus.lease_cpu({3}) for _ in range(2)]
    assert all(leases)
    assert _cpus.lease_cpu({3}) is None
    for lease in leases:
        lease.release()  # type: ignore[union-attr]


def test_no_lease_without_a_writable_lock_dir(monkeypatch):
    monkeypatch.setattr(_cpus, "_lock_dir", lambda: "")
    assert _cpus.lease_cpu({0}) is None


def _affinity_of_program(sandbox) -> set[int]:
    r = sandbox.execute(ExecRequest(code="import os; print(sorted(os.sched_getaffinity(0)))", limits=FAST))
    assert r.ok, r.stderr
    return set(eval(r.stdout))


def test_pinned_sandbox_runs_its_programs_on_its_cpu(no_leaks):
    with NamespaceSandbox(pin_cpu=True) as sb:
        assert sb.cpu is not None
        assert sb.cpu in os.sched_getaffinity(0)
        assert _affinity_of_program(sb) == {sb.cpu}
    with NamespaceSandbox(pin_cpu=False) as sb:
        assert sb.cpu is None
        assert _affinity_of_program(sb) == os.sched_getaffinity(0)


def test_pool_pins_its_sandboxes_only_when_asked(no_leaks):
    cpus = os.sched_getaffinity(0)
    with Pool(PoolConfig(size=2, pin_cpus=True)) as pool:
        seen = {pool.run(ExecRequest(code="import os; print(sorted(os.sched_getaffinity(0)))", limits=FAST)).stdout
                for _ in range(8)}
        assert all(len(eval(s)) == 1 and set(eval(s)) <= cpus for s in seen)
    with Pool(PoolConfig(size=1, pin_cpus=False)) as pool:
        r = pool.run(ExecRequest(code="import os; print(sorted(os.sched_getaffinity(0)))", limits=FAST))
        assert set(eval(r.stdout)) == cpus


def test_pin_cpus_must_be_a_bool():
    with pytest.raises(ValueError, match="pin_cpus"):
        PoolConfig(pin_cpus="yes")  # type: ignore[arg-type]


def test_a_program_cannot_raise_its_priority(no_leaks):
    """Pinning is a performance setting: a program may leave SCHED_BATCH or widen its own
    affinity, but it can neither take a real-time policy nor a higher nice level."""
    probe = (
        "import os\n"
        "for attempt in (lambda: os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1)),\n"
        "                lambda: os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1)),\n"
        "                lambda: os.setpriority(os.PRIO_PROCESS, 0, -1)):\n"
        "    try:\n"
        "        attempt()\n"
        "        print('raised')\n"
        "    except PermissionError:\n"
        "        print('refused')\n"
        "print(os.sched_getscheduler(0) == os.SCHED_BATCH)\n"
    )
    with NamespaceSandbox(pin_cpu=True) as sb:
        r = sb.execute(ExecRequest(code=probe, limits=FAST))
        assert r.ok, r.stderr
        assert r.stdout.split() == ["refused", "refused", "refused", "True"]
