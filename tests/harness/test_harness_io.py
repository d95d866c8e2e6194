"""Samples reader and result writers: malformed lines reported with file:line, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from harness import InputError, ResultRow, ResultStore, read_results, read_samples
from harness._io import RESULT_COLUMNS, output_format, samples_from_records


def _lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_read_samples_indexes_per_task_and_reports_bad_lines(tmp_path: Path) -> None:
    path = _lines(
        tmp_path / "samples.jsonl",
        [
            json.dumps({"task_id": "T/0", "completion": "a"}),
            json.dumps({"task_id": "T/1", "completion": "b"}),
            "{not json",
            json.dumps(
                {
                    "task_id": "T/0",
                    "completion": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "c"}],
                }
            ),
            json.dumps({"completion": "x"}),
            json.dumps({"task_id": "T/0", "completion": 5}),
            "",
            json.dumps([1, 2]),
            json.dumps({"task_id": 7, "completion": "int id"}),
            json.dumps({"task_id": "T/0", "completion": [{"role": "assistant"}]}),
            json.dumps({"task_id": "T/0", "completion": "d"}),
        ],
    )
    result = read_samples(path)
    got = [(s.task_id, s.sample_index, s.line) for s in result]
    assert got == [("T/0", 0, 1), ("T/1", 0, 2), ("T/0", 1, 4), ("7", 0, 9), ("T/0", 2, 11)]
    issues = {i.line: i.message for i in result.issues}
    assert sorted(issues) == [3, 5, 6, 8, 10]
    assert issues[3].startswith("invalid JSON")
    assert issues[5].startswith("task_id: missing (the record's keys: ")
    assert issues[6].startswith("completion: expected a string, a chat message or a list of them")
    assert issues[8].startswith("expected a JSON object")
    assert issues[10] == "completion[0].content: expected a string"
    assert str(result.issues[0]) == f"{path}:3: {issues[3]}"


def test_read_samples_bad_utf8_line_is_an_issue(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"task_id": "a", "completion": "x"}\n\xff\xfe garbage\n{"task_id": "a", "completion": "y"}\n')
    result = read_samples(path)
    assert [s.sample_index for s in result] == [0, 1]
    assert [i.line for i in result.issues] == [2]


def test_read_samples_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read samples"):
        read_samples(tmp_path / "nope.jsonl")


def test_samples_from_records() -> None:
    result = samples_from_records(
        [{"task_id": "a", "completion": "x"}, {"task_id": "a"}, {"task_id": "a", "completion": "y"}]
    )
    assert [s.sample_index for s in result] == [0, 1]
    assert [(i.line, i.message.split(" (")[0]) for i in result.issues] == [(2, "completion: missing")]


def _row(task: str, index: int, passed: bool | None = True) -> ResultRow:
    return ResultRow(
        task,
        index,
        passed,
        None if passed is None else float(bool(passed)),
        "passed" if passed else "failed",
        1 if passed else 0,
        1,
        0.25,
        "" if passed else "AssertionError",
    )


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_store_roundtrip_and_resume(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"results{suffix}"
    store = ResultStore(out)
    assert store.resumed == 0
    store.append([_row("a", 0), _row("a", 1, False)])
    store.append([_row("b", 0, None)])
    store.finalize()
    rows = read_results(out)
    assert [(r.task_id, r.sample_index, r.passed) for r in rows] == [("a", 0, True), ("a", 1, False), ("b", 0, None)]
    assert rows[2].reward is None and rows[1].error == "AssertionError" and rows[0].wall_s == 0.25

    again = ResultStore(out)
    assert again.resumed == 3
    assert again.is_done("a", 1) and not again.is_done("a", 2)
    again.append([_row("a", 1, True), _row("a", 2)])  # a/1 is a duplicate: the stored row wins
    again.finalize()
    rows = read_results(out)
    assert [(r.task_id, r.sample_index, r.passed) for r in rows] == [
        ("a", 0, True),
        ("a", 1, False),
        ("b", 0, None),
        ("a", 2, True),
    ]


def test_parquet_schema_and_journal(tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    store = ResultStore(out)
    store.append([_row("a", 0)])
    journal = tmp_path / "r.parquet.partial.jsonl"
    # Interrupted before finalize: the chunk is in the journal, and a new store picks it up.
    assert journal.exists() and not out.exists()
    assert [r.key for r in read_results(out)] == [("a", 0)]
    resumed = ResultStore(out)
    assert resumed.resumed == 1
    resumed.finalize()
    assert not journal.exists()
    table = pq.read_table(out)
    assert table.column_names == list(RESULT_COLUMNS) == [
        "task_id", "sample_index", "passed", "reward", "status", "tests_passed", "tests_total", "wall_s", "error",
        "problem_id", "completion_sha", "problem_sha", "settings_sha", "code", "details",
    ]
    assert str(table.schema.field("sample_index").type) == "int64"


def test_jsonl_partial_last_line_is_dropped_on_resume(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    store = ResultStore(out)
    store.append([_row("a", 0), _row("a", 1)])
    with open(out, "ab") as fh:
        fh.write(b'{"task_id": "a", "sample_ind')  # a write cut short by a crash
    resumed = ResultStore(out)
    assert resumed.resumed == 2 and not resumed.is_done("a", 2)
    resumed.append([_row("a", 2)])
    lines = out.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line)["task_id"] == "a" for line in lines)


def test_no_resume_starts_afresh(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    ResultStore(out).append([_row("a", 0)])
    fresh = ResultStore(out, resume=False)
    assert fresh.resumed == 0 and not fresh.is_done("a", 0)


def test_corrupt_parquet_is_an_input_error(tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    out.write_bytes(b"not parquet")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        ResultStore(out)


@pytest.mark.parametrize(
    ("name", "fmt"), [("a.parquet", "parquet"), ("a.PQ", "parquet"), ("a.jsonl", "jsonl"), ("a.ndjson", "jsonl")]
)
def test_output_format(name: str, fmt: str) -> None:
    assert output_format(name) == fmt


def test_output_format_rejects_unknown() -> None:
    with pytest.raises(InputError, match="must end in"):
        output_format("results.csv")


def test_evalplus_solution_samples_and_the_keys_a_bad_record_has(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text('{"task_id": "HumanEval/0", "solution": "def f(): pass"}\n'
                    '{"task_id": "HumanEval/1", "answer": "x", "model": "m"}\n'
                    '{"id": 3, "completion": "x"}\n')
    got = read_samples(path)
    assert [(s.task_id, s.completion) for s in got.samples] == [("HumanEval/0", "def f(): pass")]
    messages = [i.message for i in got.issues]
    assert 'completion: missing (expected "completion" or "solution"; the record\'s keys: answer, model, task_id)' \
        in messages
    assert "task_id: missing (the record's keys: completion, id)" in messages
