"""Sessions on the microVM backend (one VM per session, under TCG here): state across calls,
a checkpoint of the whole VM forked into isolated VMs with background processes running on,
and a pause that writes the VM to disk and ends its QEMU, then a resume that restores it."""

from __future__ import annotations

import time

import pytest

from tests._procs import descendants
from vmpool import Session, SessionConfig, SessionError

pytestmark = pytest.mark.microvm

CONFIG = SessionConfig(backend="microvm", memory_mb=256, disk_mb=64)


def _qemus() -> set[int]:
    import os

    out = set()
    for pid in descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/comm") as fh:
                if fh.read().startswith("qemu"):
                    out.add(pid)
        except OSError:
            pass
    return out


def test_a_microvm_session_keeps_state_forks_whole_vms_and_pauses_to_disk() -> None:
    before = _qemus()
    with Session(CONFIG) as s:
        assert s.run_code("import os\nx = 40\nx + 2").data == 42
        assert s.run("mkdir -p w && cd w && echo hi > f").exit_code == 0
        assert s.run("pwd").stdout == "/tmp/home/w\n"
        s.run("(while :; do echo t >> ticks; sleep 0.1; done) > /dev/null 2>&1 &")
        with s.checkpoint() as cp:
            a, b = cp.fork(2)
        try:
            a.run_code("x = 'a'")
            a.run("echo a > f")
            assert (a.run_code("x").data, b.run_code("x").data, s.run_code("x").data) == ("a", 40, 40)
            assert (b.run("cat f").stdout, s.run("cat f").stdout) == ("hi\n", "hi\n")
            # the background loop came along into each VM: its file keeps growing there
            first = b.read_file("w/ticks").count(b"t")
            time.sleep(1.0)
            assert b.read_file("w/ticks").count(b"t") > first
            # separate kernels: what one VM's processes do is nowhere in another
            a.run("pkill -f 'sleep' ; echo gone > /tmp/home/marker")
            assert b.run("cat /tmp/home/marker").exit_code != 0
        finally:
            a.close()
            b.close()
        vms = _qemus() - before
        s.pause()
        assert s.paused and len(_qemus() - before) == len(vms) - 1  # its QEMU ended: memory freed
        with pytest.raises(SessionError, match="paused"):
            s.run_code("x")
        s.resume()
        assert s.run_code("x").data == 40 and s.run("cat f").stdout == "hi\n"
        grown = s.read_file("w/ticks").count(b"t")
        time.sleep(0.8)
        assert s.read_file("w/ticks").count(b"t") > grown  # the background process still runs
    deadline = time.monotonic() + 10
    while _qemus() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _qemus() - before


def test_the_sessions_bench_measures_microvm_sessions() -> None:
    from bench.sessions import SessionBench, _microvm_numbers, format_session_bench

    bench = SessionBench()
    _microvm_numbers(bench, 1)
    assert not bench.failures, bench.failures
    assert bench.vm_accel in ("kvm", "tcg") and len(bench.vm_call_s) == 10
    assert bench.vm_start_s and bench.vm_fork_s and bench.vm_pause_resume_s
    assert f"microvm backend, {bench.vm_accel.upper()}" in format_session_bench(bench)
