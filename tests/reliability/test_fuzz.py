"""Property-based fuzzing of the input parsers and the comparator (extends tests/rewards, which
already fuzz extract_code and stdout_matches for "never raises").

Properties: only the documented error types escape; a bad record becomes an error that names
its location (file, line) and field; nothing else in the file is lost.
"""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness._io import read_samples
from rewards import ProblemFormatError, extract_code, load_problems, problem_from_dict, values_equal

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
json_value = st.recursive(json_scalar, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=8), kids, max_size=4)), max_leaves=12)

VALID = {"task_id": "t1", "prompt": "p", "tests": {"kind": "stdio", "cases": [{"stdin": "1\n", "stdout": "1\n"}]}}
KEYS = ["task_id", "prompt", "completion_mode", "setup_code", "entry_point", "tests", "time_limit_s",
        "memory_mb", "source"]
TESTS = [
    {"kind": "assert", "code": "assert f() == 1"},
    {"kind": "stdio", "cases": [{"stdin": "", "stdout": "x"}], "whitespace": "exact", "float_tol": 1e-6},
    {"kind": "call", "fn_name": "f", "cases": [{"args": [1], "kwargs": {}, "expected": 2}]},
]


@FAST
@given(st.dictionaries(st.sampled_from(KEYS + ["bogus"]), json_value, max_size=6))
def test_problem_from_dict_raises_only_problem_format_error(obj: dict) -> None:
    try:
        problem_from_dict(obj, "f.jsonl", 7)
    except ProblemFormatError as exc:
        assert exc.file == "f.jsonl" and exc.line == 7
        assert str(exc).startswith("f.jsonl:7:")
        if exc.field:
            assert exc.field.split(".")[0].split("[")[0] in obj or exc.field.split(".")[0] in KEYS, exc


@FAST
@given(st.sampled_from(KEYS), json_value, st.sampled_from(TESTS))
def test_one_bad_field_is_named(key: str, value: object, tests: dict) -> None:
    obj = {**VALID, "tests": tests, key: value}
    try:
        problem_from_dict(obj, "f.jsonl", 3)
    except ProblemFormatError as exc:
        # The only change is `key`: the error must point at it (or inside it).
        assert exc.field.split(".")[0].split("[")[0] in (key, "prompt"), (key, exc)


@FAST
@given(st.sampled_from(TESTS), st.text(max_size=6), json_value)
def test_bad_nested_test_field_is_named_with_its_path(tests: dict, key: str, value: object) -> None:
    bad = json.loads(json.dumps(tests))
    bad[key or "kind"] = value
    try:
        problem_from_dict({**VALID, "tests": bad})
    except ProblemFormatError as exc:
        assert exc.field.startswith("tests"), exc


def _lines(draw_lines: list) -> tuple[str, int]:
    good = 0
    out = []
    for i, item in enumerate(draw_lines):
        if item == "valid":
            out.append(json.dumps({**VALID, "task_id": f"t{i}"}))
            good += 1
        else:
            out.append(item)
    return "\n".join(out) + "\n", good


line_st = st.one_of(st.just("valid"), st.text(max_size=40).filter(lambda s: "\n" not in s and "\r" not in s),
                    json_value.map(json.dumps))


@FAST
@given(st.lists(line_st, min_size=1, max_size=12))
def test_load_problems_keeps_every_good_line(tmp_path_factory, lines: list) -> None:
    text, good = _lines(lines)
    path = tmp_path_factory.mktemp("fuzz") / "p.jsonl"
    path.write_text(text)
    loaded = load_problems(path, fmt="native")
    assert len(loaded.problems) >= good  # a random JSON line may also happen to be a valid problem
    nonblank = [n for n, line in enumerate(text.split("\n"), 1) if line.strip()]
    assert len(loaded.problems) + len(loaded.errors) == len(nonblank)
    for err in loaded.errors:
        assert isinstance(err, ProblemFormatError) and err.line in nonblank and err.file == str(path)


@FAST
@given(st.lists(st.one_of(
    st.builds(lambda t, c: json.dumps({"task_id": t, "completion": c}), st.text(max_size=5), st.text(max_size=20)),
    st.binary(max_size=30).filter(lambda b: b"\n" not in b and b"\r" not in b),
    json_value.map(json.dumps)), min_size=1, max_size=12))
def test_read_samples_never_raises_and_loses_nothing(tmp_path_factory, lines: list) -> None:
    raw = b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines) + b"\n"
    path = tmp_path_factory.mktemp("fuzz") / "s.jsonl"
    path.write_bytes(raw)
    samples = read_samples(path)
    nonblank = [n for n, line in enumerate(raw.split(b"\n"), 1) if line.strip()]
    assert len(samples.samples) + len(samples.issues) == len(nonblank)
    for issue in samples.issues:
        assert issue.line in nonblank and issue.message and str(issue).startswith(f"{path}:{issue.line}: ")


@FAST
@given(json_value, json_value, st.one_of(st.none(), st.floats(min_value=0, max_value=1)))
def test_values_equal_never_raises_and_is_reflexive(a: object, b: object, tol: float | None) -> None:
    assert isinstance(values_equal(a, b, float_tol=tol), bool)
    assert values_equal(a, a, float_tol=tol)


def test_values_equal_deep_nesting_and_nan() -> None:
    deep: object = 1
    for _ in range(50_000):
        deep = [deep]
    assert values_equal(deep, deep) in (True, False)
    assert values_equal(math.nan, 4) is False and values_equal(math.inf, 4) is False


@FAST
@given(st.text(max_size=200).filter(lambda s: "`" not in s and s.strip()))
def test_extract_code_takes_the_fenced_program_verbatim(code: str) -> None:
    text = f"Here you go:\n```python\n{code}\n```\nDone."
    got = extract_code(text)
    assert got is not None and got.strip() == code.replace("\r\n", "\n").strip()
