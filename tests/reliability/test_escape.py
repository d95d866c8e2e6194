"""Escape and isolation attempts, one test each (the ones tests/vmpool/test_sandbox.py lacks).

Each case lives in bench/reliability_cases.py (shared with the reliability bench) and checks
its limit inside the sandbox before attacking; none signals -1.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from bench.reliability_cases import (
    HOSTILE,
    LOOK_FOR_SECRET,
    PLANT_SECRET,
    HostileCase,
    descendants,
    hostile_request,
    parent_pid,
    stray_processes,
)
from vmpool import ExecRequest, Limits, Status

SLEEPER = "import time\nprint('sleeping', flush=True)\ntime.sleep(1.5)\n"


def _program_pids(root: int) -> list[int]:
    """Host pids of programs now running below ``root`` (children of a zygote agent)."""
    found = []
    for pid in descendants(root):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
            pcmd = open(f"/proc/{parent_pid(pid)}/cmdline", "rb").read()
        except OSError:
            continue
        if b"agent.py" in cmd and b"bwrap" not in cmd.split(b"\0")[0] and b"bwrap" not in pcmd.split(b"\0")[0]:
            found.append(pid)
    return found


def _run_case(pool, case: HostileCase):
    if not case.needs_host_pids:
        return pool.run(hostile_request(case))
    # Also aim at a concurrent program in the other sandbox: its host pid, and its zygote's.
    other = threading.Thread(target=pool.run, args=(ExecRequest(code=SLEEPER, limits=Limits(wall_s=5)),))
    other.start()
    try:
        deadline = time.monotonic() + 3
        while not (targets := _program_pids(os.getpid())) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert targets, "the concurrent program never showed up"
        pids = [os.getpid(), *targets, *(parent_pid(t) for t in targets)]
        return pool.run(hostile_request(case, pids))
    finally:
        other.join(10)


@pytest.mark.parametrize("case", HOSTILE, ids=[c.name for c in HOSTILE])
def test_hostile_program_is_contained(pool, case: HostileCase) -> None:
    result = _run_case(pool, case)
    assert case.check(result) is None, case.check(result)
    # Nothing the program started may outlive its result.
    assert not stray_processes(), stray_processes()
    after = pool.map([ExecRequest(code=f"print({i})", limits=Limits(wall_s=3)) for i in range(4)])
    assert [r.stdout for r in after] == [f"{i}\n" for i in range(4)]


def test_cannot_read_a_concurrent_programs_temp_files(pool) -> None:
    plant, look = pool.map([ExecRequest(code=PLANT_SECRET, limits=Limits(wall_s=5)),
                            ExecRequest(code=LOOK_FOR_SECRET, limits=Limits(wall_s=5))])
    assert plant.status is Status.OK and plant.stdout == "planted\n", plant.stderr
    assert look.status is Status.OK, look.stderr
    assert look.stdout.startswith("found [] procs "), look.stdout
    # its own pid namespace: init, agent, program zygote, the persistent tester (if any), itself
    assert int(look.stdout.split()[-1]) <= 5


def test_cannot_see_an_earlier_programs_secrets_in_the_same_sandbox(pool) -> None:
    # Run the planter and then the seeker in the same sandbox, one after the other.
    with pool._lock:
        sandboxes = list(pool._live)
    sb = sandboxes[0]
    while pool._idle.qsize() and sb not in list(pool._idle.queue):
        time.sleep(0.01)
    plant = sb.execute(ExecRequest(code=PLANT_SECRET.replace("time.sleep(1.5)", ""), limits=Limits(wall_s=5)))
    look = sb.execute(ExecRequest(code=LOOK_FOR_SECRET, limits=Limits(wall_s=5)))
    assert plant.status is Status.OK and look.stdout.startswith("found [] "), look.stdout


def test_the_secret_seeker_finds_its_own_secrets(pool) -> None:
    # Control for the two tests above: the seeker does find secrets that are there to find.
    code = PLANT_SECRET.replace("time.sleep(1.5)", "") + LOOK_FOR_SECRET
    r = pool.run(ExecRequest(code=code, limits=Limits(wall_s=5)))
    assert r.status is Status.OK and "secret.txt" in r.stdout and "/dev/shm/secret.txt" in r.stdout, r.stdout
