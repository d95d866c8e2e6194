"""Grader logic with a scripted pool (no sandbox), the tester's report, and the plain-data codec."""

from __future__ import annotations

import collections
import json
import math
import re

import pytest

from rewards import AssertTests, Grader, Outcome, Problem, RewardConfig, compute_reward
from rewards._runner import _MAGIC, build_request, parse_report, trusted_names
from rewards._sandbox_wire import WireError, decode, encode
from vmpool import ExecRequest, ExecResult, Limits, Status, VmpoolError

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
    # OK status but no tester report at all: never a pass.
    assert [v.passed for v in verdicts] == [False] * 5
    assert verdicts[4].outcome is Outcome.SYNTAX_ERROR


class SubmittingPool:
    """A pool with ``submit``: records each request taken, fails after ``fail_after`` submissions."""

    def __init__(self, fail_after: int | None = None, fail_at_start: bool = False) -> None:
        self.taken: list[ExecRequest] = []
        self.fail_after, self.fail_at_start = fail_after, fail_at_start

    def submit(self, request):
        from concurrent.futures import Future

        if self.fail_at_start or (self.fail_after is not None and len(self.taken) >= self.fail_after):
            raise VmpoolError("pool is gone")
        self.taken.append(request)
        future: Future = Future()
        future.set_result(ExecResult(status=Status.SANDBOX_ERROR, error="boom"))
        return future

    def map(self, requests):  # pragma: no cover - must not be used when submit exists
        raise AssertionError("grade_batch used map although the pool has submit")


def test_submitting_pool_gets_each_distinct_request_once_in_order() -> None:
    pool = SubmittingPool()
    items = [(P, "def f(): return 1"), (P, "def f(:"), (P, "def f(): return 1"), (P, "def f(): return 3"), (P, "")]
    verdicts = Grader(pool).grade_batch(items)
    assert len(pool.taken) == 2
    assert [v.outcome for v in verdicts] == [Outcome.SANDBOX_ERROR, Outcome.SYNTAX_ERROR, Outcome.SANDBOX_ERROR,
                                             Outcome.SANDBOX_ERROR, Outcome.NO_CODE]


@pytest.mark.parametrize("pool", [SubmittingPool(fail_after=1), SubmittingPool(fail_at_start=True)],
                         ids=["mid-way", "at-start"])
def test_a_pool_failure_leaves_no_sample_without_a_verdict(pool: SubmittingPool) -> None:
    items = [(P, f"def f(): return {i}") for i in range(4)] + [(P, "")]
    verdicts = Grader(pool).grade_batch(items)
    assert len(verdicts) == 5
    assert [v.passed for v in verdicts[:4]] == [None] * 4  # infrastructure, never a 0
    assert verdicts[4].outcome is Outcome.NO_CODE


def test_time_limit_is_cpu_with_a_wall_backstop() -> None:
    pool = ScriptedPool(status=Status.OK)
    Grader(pool, default_limits=Limits(wall_s=4.0), wall_factor=3.0, wall_slack_s=2.0).grade(P, "def f(): return 1")
    limits = pool.calls[0][0].limits
    assert limits.cpu_s == 4.0 and limits.wall_s == 14.0
    timed = Problem(task_id="u", tests=P.tests, time_limit_s=0.5)
    Grader(pool, default_limits=Limits(wall_s=4.0, cpu_s=2.0)).grade(timed, "def f(): return 1")
    assert pool.calls[1][0].limits.cpu_s == 0.5
    with pytest.raises(ValueError, match="wall_factor"):
        Grader(pool, wall_factor=0.5)


def test_request_keeps_tests_out_of_the_program() -> None:
    req = build_request(P, "def f():\n    return 1\n", Limits())
    assert req.companion is not None
    assert "assert f()" in req.companion.stdin
    assert "assert f()" not in req.code and not req.files and "assert f()" not in req.stdin
    # The program's stdin says what to load: its own code, the setup code, the names called.
    from rewards._sandbox_side import read_load

    assert read_load(req.stdin.encode()) == ("", "def f():\n    return 1\n", ["f"], "assert", _MAGIC, None)
    assert "return 1" not in req.companion.stdin  # the tester never holds the model's code
    assert req.argv == ("program",) and req.companion.argv == ("tester",)


def test_a_compiled_program_travels_with_its_text_and_is_used_only_by_the_same_bytecode() -> None:
    from rewards import _sandbox_side
    from rewards._runner import compile_program

    program = "def f():\n    assert False, 'kept'\n    return 1\n"
    req = build_request(P, program, Limits(), compile_program(program))
    setup, text, names, mode, magic, code = _sandbox_side.read_load(req.stdin.encode())
    assert text == program and magic == _sandbox_side._MAGIC and isinstance(code, bytes)
    ns: dict = {}
    exec(_sandbox_side._program_code(text, magic, code), ns)
    with pytest.raises(AssertionError, match="kept"):  # asserts are kept (optimize=0), whatever -O says
        ns["f"]()
    assert ns["f"].__code__.co_filename == "<solution>"
    # Another interpreter's bytecode is never loaded: the text is compiled.
    exec(_sandbox_side._program_code("def f():\n    return 2\n", b"\0\0\0\0", code), ns)
    assert ns["f"]() == 2
    assert _sandbox_side._program_code("x = 3\n", magic, None).co_filename == "<solution>"


def test_trusted_names_are_what_the_tests_call_on_the_program() -> None:
    units = ("assert math.isclose(area(2), 12.56, rel_tol=0.01)", "x = helper(1)\nassert x == area(1)")
    assert trusted_names(units, "import math\n", "def helper(v):\n    return v\n", None) == ("area",)
    # The entry point is a proxy even though the prompt declares it; builtins are never
    # the program's unless the problem names one as its entry point (MBPP/126's sum).
    assert trusted_names(("assert len(f(1)) == 2",), "", "def f(x):\n    '''doc'''\n", "f") == ("f",)
    assert trusted_names(("assert sum(1, 2) == 3",), "", "", "sum") == ("sum",)


def _report(*records: dict) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def test_report_needs_done_with_the_right_count() -> None:
    done = {"t": "done", "results": [True], "kinds": ["ok"]}
    assert parse_report(_report(done), 1).done
    assert not parse_report(_report(done), 2).done
    partial = parse_report(b"garbage\n" + _report({"t": "unit", "i": 0, "ok": True, "kind": "ok"}), 1)
    assert not partial.done and partial.partial == {0: True} and partial.kind(0) == "ok"
    odd = parse_report(_report({"t": "unit", "i": 7, "ok": True}, {"t": "unit", "i": 0, "ok": False, "kind": "?"}), 1)
    assert odd.partial == {0: False} and odd.kind(0) == "error"


@pytest.mark.parametrize("value", [
    None, True, False, 0, -1, 2**62, -(2**80), 10**400, 1.5, -0.0, math.inf, "", "é\udc80", b"\x00\xff",
    [1, [2, (3,)]], (1, "a"), {1, 2}, frozenset({"x"}), {(1, 2): [3], "k": {"n": None}}, 1 + 2j, [],
])
def test_codec_round_trips_plain_data_exactly(value: object) -> None:
    back = decode(json.loads(json.dumps(encode(value))))
    assert type(back) is type(value) and (back == value or (value != value and back != back))


def test_codec_nan_survives() -> None:
    assert math.isnan(decode(json.loads(json.dumps(encode(math.nan)))))


class MyInt(int):
    pass


@pytest.mark.parametrize("value", [
    MyInt(1), [MyInt(1)], {"k": object()}, type, print, (x for x in ()), collections.Counter(a=1),
    re.compile("x"), {1: [MyInt(2)]},
])
def test_codec_refuses_anything_else(value: object) -> None:
    with pytest.raises(WireError):
        encode(value)


def test_codec_materialises_by_documented_rule_only_when_asked() -> None:
    assert encode(collections.Counter(a=2), materialize=True) == ["d", "a", 2]
    assert encode(collections.deque([1]), materialize=True) == ["l", 1]
    assert encode(re.match("a", "a"), materialize=True) is True
    assert list(decode(encode((i for i in range(3)), materialize=True))) == [0, 1, 2]


@pytest.mark.parametrize("wire", [
    {"a": 1}, ["l", {"x": 1}], ["zz", 1], ["s", ["l", 1]], ["d", 1], ["d", ["l"], 1], ["i", 5], ["b", "!!"], [],
    ["c", "1", 2],
])
def test_decoder_rejects_malformed_values(wire: object) -> None:
    with pytest.raises(WireError):
        decode(wire)


def test_decoder_caps_depth() -> None:
    deep: list = ["l"]
    for _ in range(200):
        deep = ["l", deep]
    with pytest.raises(WireError, match="deeper"):
        decode(deep)
