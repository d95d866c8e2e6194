"""The namespace backend run by an ordinary user (``.ci/unprivileged.sh`` runs this as one).

With a subordinate uid range (``/etc/subuid``) and ``newuidmap``, the tester and the program
get uids of their own, as under root; without, every process of the sandbox shares one uid,
and the pool says which isolation property is lost (in a warning and in the summary).
"""

from __future__ import annotations

import logging
import os

import pytest

import vmpool._namespace
import vmpool._uids
from vmpool import Companion, ExecRequest, Pool, PoolConfig, Status
from vmpool._uids import UidPlan, uid_plan

ordinary_user = pytest.mark.skipif(os.geteuid() == 0, reason="checks what an ordinary user gets")

# The tester writes the program's and its own uid as the run's report.
TESTER = ("import os, socket\n"
          "s = socket.socket(fileno=4)\n"
          "program_uid = s.recv(64).decode()\n"
          "os.write(3, f'{program_uid} {os.getuid()}'.encode())\n")
PROGRAM = ("import os, socket\n"
           "s = socket.socket(fileno=3)\n"
           "s.sendall(str(os.getuid()).encode())\n"
           "try:\n"
           "    os.kill(os.getppid(), 0)\n"
           "except OSError:\n"
           "    pass\n")


@ordinary_user
def test_leases_live_in_a_directory_of_the_users_own() -> None:
    plan = uid_plan()
    if plan.mode == "single":
        pytest.skip(f"no subordinate uids here: {plan.lost}")
    assert plan.mode == "subuid" and plan.block == 2
    st = os.stat(plan.lock_dir)
    assert st.st_uid == os.geteuid() and st.st_mode & 0o077 == 0
    assert not plan.lock_dir.startswith("/run/vmpool-uids")


@ordinary_user
def test_subordinate_uids_separate_the_program_from_its_tester() -> None:
    plan = uid_plan()
    if plan.mode != "subuid":
        pytest.skip(f"no subordinate uids here: {plan.lost}")
    with Pool(PoolConfig(size=1)) as pool:
        (sb,) = pool.sandboxes()
        assert sb.uid_separation and not pool.isolation_lost  # type: ignore[attr-defined]
        res = pool.run(ExecRequest(code=PROGRAM, companion=Companion(code=TESTER)))
        host = sb.uids  # type: ignore[attr-defined]
    assert res.status is Status.OK, res
    program_uid, tester_uid = res.report.decode().split()
    assert program_uid == "65534" and tester_uid == "65533"  # inside: each its own uid
    assert host[0] == os.getuid() and all(plan.owns(u) for u in host[1:]) and len(set(host)) == 3


def test_without_subordinate_uids_it_grades_and_says_what_is_lost(monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    lost = "not root and no subordinate uids (test): programs share a uid with their tester"
    single = UidPlan("single", lost=lost)
    monkeypatch.setattr(vmpool._uids, "uid_plan", lambda: single)
    monkeypatch.setattr(vmpool._namespace, "uid_plan", lambda: single)
    vmpool._namespace._warn_shared_uid.cache_clear()
    with caplog.at_level(logging.WARNING, logger="vmpool"), Pool(PoolConfig(size=1)) as pool:
        res = pool.run(ExecRequest(code="print(6 * 7)"))
        assert pool.isolation_lost == lost
    assert res.status is Status.OK and res.stdout == "42\n"
    assert lost in caplog.text
