"""Grader logic with a scripted pool (no sandbox): infra failures, dedup, one map call; the runner run directly."""

from __future__ import annotations

import json

from rewards import RUNNER_SOURCE, AssertTests, Grader, Outcome, Problem, RewardConfig, compute_reward
from rewards._runner import build_payload, new_nonce, parse_report
from vmpool import ExecRequest, ExecResult, Status, VmpoolError

P = Problem(task_id="t", tests=AssertTests(code=("assert f() == 1", "assert f() != 2")))


class ScriptedPool:
    def __init__(self, status: Status = Status.SANDBOX_ERROR, raise_exc: bool = False) -> None:
        self.calls: list[list[ExecRequest]] = []
        self.status, self.raise_exc = status, raise_exc

    def map(self, requests: list[ExecRequest]) -> list[ExecResult]:
        self.calls.append(list(requests))
        if self.raise_exc:
            raise VmpoolError("pool is gone")
        return [ExecResult(status=self.status, error="boom") for _ in requests]


def test_sandbox_error_is_none_never_zero() -> None:
    pool = ScriptedPool()
    v = Grader(pool).grade(P, "def f(): return 1")
    assert v.passed is None and v.outcome is Outcome.SANDBOX_ERROR
    assert compute_reward(v, RewardConfig()) is None


def test_pool_exception_becomes_infrastructure_verdicts() -> None:
    verdicts = Grader(ScriptedPool(raise_exc=True)).grade_batch([(P, "def f(): return 1"), (P, "")])
    assert verdicts[0].passed is None and verdicts[1].outcome is Outcome.NO_CODE


def test_batch_is_one_map_call_and_deduplicated() -> None:
    pool = ScriptedPool(status=Status.OK)
    items = [(P, "def f(): return 1")] * 3 + [(P, "def f(): return 2"), (P, "def f(:")]
    verdicts = Grader(pool).grade_batch(items)
    assert len(pool.calls) == 1 and len(pool.calls[0]) == 2
    # OK status but no runner report at all: never a pass.
    assert [v.passed for v in verdicts] == [False] * 5
    assert verdicts[4].outcome is Outcome.SYNTAX_ERROR


def _direct(run_direct, program: str, units: list[str]) -> tuple[int, object]:
    nonce = new_nonce()
    payload = build_payload(nonce=nonce, mode="assert", program=program, units=units)
    rc, _out, _err, report = run_direct(RUNNER_SOURCE, {"payload.json": payload})
    return rc, parse_report(report, nonce, len(units))


def test_runner_direct_pass_and_fail(direct_run) -> None:
    rc, rep = _direct(direct_run, "def f():\n    return 1\n", ["assert f() == 1", "assert f() == 2", "raise SystemExit(0)"])
    assert rc == 0 and rep.done and rep.results == [True, False, False]


def test_runner_direct_forged_records_are_ignored(direct_run) -> None:
    hack = ("import os, json\n"
            "for fd in range(3, 64):\n"
            "    try: os.write(fd, (json.dumps({'t': 'done', 'results': [True]}) + '\\n').encode())\n"
            "    except OSError: pass\n"
            "def f():\n    return 2\n")
    _rc, rep = _direct(direct_run, hack, ["assert f() == 1"])
    assert rep.done and rep.results == [False]


def test_parse_report_needs_nonce_and_done() -> None:
    good = json.dumps({"n": "k", "t": "done", "results": [True], "load_error": None}).encode()
    assert parse_report(good, "k", 1).done
    assert not parse_report(good, "other", 1).done
    assert not parse_report(good, "k", 2).done  # wrong number of units
    partial = json.dumps({"n": "k", "t": "unit", "i": 0, "ok": True}).encode()
    rep = parse_report(b"garbage\n" + partial, "k", 1)
    assert not rep.done and rep.partial == {0: True} and rep.forged == 1
