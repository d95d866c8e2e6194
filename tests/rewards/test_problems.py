"""Problem model, native schema, adapters for the real datasets, restricted unpickling."""

from __future__ import annotations

import base64
import json
import os
import pickle
import zlib
from pathlib import Path

import pytest

from rewards import (
    AssertTests,
    CallTests,
    ProblemFormatError,
    StdioTests,
    load_problems,
    problem_from_dict,
    problem_to_dict,
    reference_solutions,
    restricted_loads,
)


@pytest.mark.parametrize("name, fmt, count, kind", [
    ("humaneval.jsonl", "humaneval", 164, AssertTests),
    ("mbpp_sanitized.jsonl", "mbpp", 427, AssertTests),
    # SOURCES.md says 19 rows; the file has 20 records (its last line has no newline, so `wc -l` says 19).
    ("code_contests_sample.jsonl", "code_contests", 20, StdioTests),
    ("livecodebench_sample.jsonl", "livecodebench", 3, None),
])
def test_real_files_load(data_dir: Path, name: str, fmt: str, count: int, kind: type | None) -> None:
    ps = load_problems(data_dir / name)
    assert ps.fmt == fmt
    assert ps.errors == []
    assert len(ps) == count
    assert len({p.task_id for p in ps}) == count
    if kind is not None:
        assert all(isinstance(p.tests, kind) for p in ps)


def test_humaneval_shape(data_dir: Path) -> None:
    p = load_problems(data_dir / "humaneval.jsonl").by_id()["HumanEval/0"]
    assert p.completion_mode == "continue" and p.entry_point == "has_close_elements"
    assert p.tests.count == 1 and p.tests.code[0].rstrip().endswith("check(has_close_elements)")
    assert p.program_for("    return 1\n").startswith(p.prompt)


def test_mbpp_shape(data_dir: Path) -> None:
    p = load_problems(data_dir / "mbpp_sanitized.jsonl")[0]
    assert p.task_id == "MBPP/2" and p.completion_mode == "program"
    assert p.setup_code.startswith("import math")
    assert p.tests.count == 3 and all(u.startswith("assert") for u in p.tests.code)


def test_livecodebench_kinds(data_dir: Path) -> None:
    ps = load_problems(data_dir / "livecodebench_sample.jsonl").by_id()
    call = ps["livecodebench/leetcode/2727"]
    assert isinstance(call.tests, CallTests) and call.tests.fn_name == "countSeniors"
    assert call.tests.cases[0].args == (["7868190130M7522", "5303914400F9211", "9273338290F4010"],)
    assert call.tests.cases[0].expected == 2
    stdio = ps["livecodebench/codeforces/1873_A"]
    assert isinstance(stdio.tests, StdioTests) and stdio.tests.count == 5


def test_reference_solutions(data_dir: Path) -> None:
    he = reference_solutions(data_dir / "humaneval.jsonl")
    assert len(he) == 164 and "HumanEval/0" in he
    mbpp = reference_solutions(data_dir / "mbpp_sanitized.jsonl")
    assert len(mbpp) == 427 and "MBPP/2" in mbpp
    lcb = reference_solutions(data_dir / "livecodebench_sample.jsonl")
    assert set(lcb.values()) == {"import sys; sys.exit(0)"}
    assert reference_solutions(data_dir / "code_contests_sample.jsonl") == {}


def test_malformed_lines_are_reported_and_the_rest_loads(tmp_path: Path, data_dir: Path) -> None:
    lines = (data_dir / "humaneval.jsonl").read_text().splitlines()[:3]
    broken = json.loads(lines[1])
    del broken["entry_point"]
    bad = tmp_path / "he.jsonl"
    bad.write_text("\n".join([lines[0], json.dumps(broken), "{not json", lines[2]]) + "\n")
    ps = load_problems(bad, fmt="humaneval")
    assert len(ps) == 2
    assert [(e.line, e.field) for e in ps.errors] == [(2, "entry_point"), (3, "")]
    assert str(ps.errors[0]).startswith(f"{bad}:2:")


def test_native_round_trip_and_strict_validation(tmp_path: Path, data_dir: Path) -> None:
    originals = list(load_problems(data_dir / "livecodebench_sample.jsonl")) + \
        list(load_problems(data_dir / "mbpp_sanitized.jsonl"))[:3]
    native = tmp_path / "native.jsonl"
    native.write_text("".join(json.dumps(problem_to_dict(p)) + "\n" for p in originals))
    loaded = load_problems(native)
    assert loaded.fmt == "native" and loaded.errors == []
    assert list(loaded) == originals

    good = {"task_id": "t", "tests": {"kind": "assert", "code": ["assert f() == 1"]}}
    assert problem_from_dict(good).tests.code == ("assert f() == 1",)
    cases = [
        ({**good, "bogus": 1}, "bogus"),
        ({**good, "task_id": 3}, "task_id"),
        ({**good, "tests": {"kind": "assert", "code": [1]}}, "tests.code[0]"),
        ({**good, "tests": {"kind": "stdio", "cases": [{"stdin": "", "stdout": 1}]}}, "tests.cases[0].stdout"),
        ({**good, "tests": {"kind": "call", "fn_name": "f", "cases": [{"args": []}]}}, "tests.cases[0].expected"),
        ({**good, "tests": {"kind": "nope"}}, "tests.kind"),
        ({**good, "completion_mode": "continue"}, "prompt"),
        ({**good, "time_limit_s": -1}, "time_limit_s"),
        ({**good, "memory_mb": True}, "memory_mb"),
    ]
    for obj, field in cases:
        with pytest.raises(ProblemFormatError) as info:
            problem_from_dict(obj, "f.jsonl", 7)
        assert (info.value.file, info.value.line, info.value.field) == ("f.jsonl", 7, field)


def test_unknown_format_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"foo": 1}\n')
    with pytest.raises(ProblemFormatError, match="unknown problem record format"):
        load_problems(path)
    with pytest.raises(ProblemFormatError, match="unknown format"):
        load_problems(path, fmt="parquet")


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_globals(tmp_path: Path) -> None:
    blob = pickle.dumps({"input_output": _Evil()})
    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system"):
        restricted_loads(blob)
    assert restricted_loads(pickle.dumps({"a": [1, 2.5, "x", None, (True,)]})) == {"a": [1, 2.5, "x", None, (True,)]}
    row = {"content": "q", "labels": "{}", "id": 1, "canonical_solution": "",
           "test": base64.b64encode(zlib.compress(blob)).decode()}
    path = tmp_path / "lcb.jsonl"
    path.write_text(json.dumps(row) + "\n")
    ps = load_problems(path, fmt="livecodebench")
    assert len(ps) == 0 and "refused pickle" in str(ps.errors[0])
