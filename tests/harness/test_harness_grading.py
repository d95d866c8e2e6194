"""Offline grading end to end with the real Grader and a real sandbox pool."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from harness import Harness, InputError, load_config, read_results

FAST_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "fast.yaml"

pytestmark = pytest.mark.usefixtures("no_leaks")

EMPTY = "    pass\n"
HACK = "    import sys; sys.exit(0)\n"


def _write_samples(path: Path, records: list[dict], extra_lines: list[str] = ()) -> None:
    lines = [json.dumps(r) for r in records] + list(extra_lines)
    path.write_text("".join(line + "\n" for line in lines))


def test_grade_writes_one_row_per_sample_and_resumes(tmp_path: Path, humaneval_slice: tuple[Path, list[dict]]) -> None:
    problems, recs = humaneval_slice
    t0, t1, t2 = (r["task_id"] for r in recs)
    samples = tmp_path / "samples.jsonl"
    _write_samples(
        samples,
        [
            {"task_id": t0, "completion": recs[0]["canonical_solution"]},
            {"task_id": t0, "completion": EMPTY},
            {"task_id": t1, "completion": HACK},
            {
                "task_id": t1,
                "completion": [
                    {"role": "user", "content": "solve"},
                    {"role": "assistant", "content": recs[1]["canonical_solution"]},
                ],
            },
            {"task_id": "HumanEval/999", "completion": "x"},
        ],
        ["{broken json"],
    )
    out = tmp_path / "results.parquet"
    config = load_config(FAST_CONFIG)
    with Harness(config) as harness:
        summary = harness.grade(problems, samples, out, progress=False)
        rows = {r.key: r for r in read_results(out)}
        assert set(rows) == {(t0, 0), (t0, 1), (t1, 0), (t1, 1)}
        assert rows[(t0, 0)].passed is True and rows[(t0, 0)].reward == 1.0 and rows[(t0, 0)].status == "passed"
        assert rows[(t0, 1)].passed is False and rows[(t0, 1)].reward == 0.0
        assert rows[(t1, 0)].passed is False, "sys.exit(0) inside the tested function must not pass"
        assert rows[(t1, 1)].passed is True  # chat-message completion: the assistant's content is graded
        assert summary.n_graded == 4 and summary.n_resumed == 0 and summary.n_infra_failures == 0
        assert summary.pass_at_k == {1: pytest.approx(0.5), 2: pytest.approx(1.0)}
        issues = sorted((i.line, i.message) for i in summary.input_issues)
        assert issues[0][0] == 5 and "unknown task 'HumanEval/999'" in issues[0][1]
        assert issues[1][0] == 6 and issues[1][1].startswith("invalid JSON")
        assert all(i.path == str(samples) for i in summary.input_issues)

        # Add samples and grade again on the same open pool: only the new ones are graded.
        with open(samples, "a") as fh:
            fh.write(json.dumps({"task_id": t2, "completion": recs[2]["canonical_solution"]}) + "\n")
            fh.write(json.dumps({"task_id": t0, "completion": EMPTY}) + "\n")
        again = harness.grade(problems, samples, out, progress=False)
    assert again.n_graded == 2 and again.n_resumed == 4 and again.n_rows == 6
    rows = {r.key: r for r in read_results(out)}
    assert rows[(t2, 0)].passed is True and rows[(t0, 2)].passed is False
    assert again.pass_at_k[1] == pytest.approx((1 / 3 + 1 / 2 + 1) / 3)


def test_grade_jsonl_output_and_records_input(tmp_path: Path, humaneval_slice: tuple[Path, list[dict]]) -> None:
    problems, recs = humaneval_slice
    out = tmp_path / "r.jsonl"
    samples = [{"task_id": r["task_id"], "completion": r["canonical_solution"]} for r in recs]
    with Harness(load_config(FAST_CONFIG)) as harness:
        summary = harness.grade(problems, samples, out, progress=False)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(d["task_id"], d["sample_index"], d["passed"]) for d in lines] == [(r["task_id"], 0, True) for r in recs]
    assert set(lines[0]) == {
        "task_id",
        "sample_index",
        "passed",
        "reward",
        "status",
        "tests_passed",
        "tests_total",
        "wall_s",
        "error",
        "problem_id",
        "completion_sha",
        "problem_sha",
        "settings_sha",
        "code",
        "details",
    }
    assert lines[0]["problem_id"] == ""  # the sample named the problem by its own id
    assert lines[0]["code"] == lines[0]["details"] == ""  # only with grading.details
    assert summary.pass_at_k[1] == 1.0 and summary.programs_per_s > 0


def test_grade_timeout_is_a_failure_not_infra(tmp_path: Path, humaneval_slice: tuple[Path, list[dict]]) -> None:
    problems, recs = humaneval_slice
    config = load_config(FAST_CONFIG)
    samples = [{"task_id": recs[0]["task_id"], "completion": "    while True:\n        pass\n"}]
    out = tmp_path / "r.jsonl"

    fast = dataclasses.replace(config, limits=dataclasses.replace(config.limits, wall_s=1.0))
    with Harness(fast) as harness:
        summary = harness.grade(problems, samples, out, progress=False)
    (row,) = read_results(out)
    assert row.passed is False and row.status == "timeout"
    assert summary.n_infra_failures == 0


def test_missing_problems_file(tmp_path: Path) -> None:
    with Harness() as harness, pytest.raises(InputError, match="problems file does not exist"):
        harness.grade(tmp_path / "nope.jsonl", [], tmp_path / "r.jsonl", progress=False)


def test_interrupted_run_keeps_flushed_chunks_and_resumes(
    tmp_path: Path, humaneval_slice: tuple[Path, list[dict]]
) -> None:
    problems, recs = humaneval_slice
    samples = [{"task_id": r["task_id"], "completion": r["canonical_solution"]} for r in recs for _ in range(2)]
    config = load_config(FAST_CONFIG)
    config = dataclasses.replace(config, grading=dataclasses.replace(config.grading, batch_size=2))
    out = tmp_path / "r.parquet"

    class Crashing(Harness):
        calls = 0

        def verdicts(self, pairs):  # type: ignore[no-untyped-def]
            Crashing.calls += 1
            if Crashing.calls == 2:
                raise KeyboardInterrupt  # the user pressing ^C mid-run
            return super().verdicts(pairs)

    with Crashing(config) as harness, pytest.raises(KeyboardInterrupt):
        harness.grade(problems, samples, out, progress=False)
    assert [r.key for r in read_results(out)] == [(recs[0]["task_id"], 0), (recs[0]["task_id"], 1)]
    with Harness(config) as harness:
        summary = harness.grade(problems, samples, out, progress=False)
    assert summary.n_resumed == 2 and summary.n_graded == 4 and summary.n_rows == 6
    assert summary.pass_at_k == {1: 1.0, 2: 1.0}


def test_mbpp_integer_task_ids_match_and_weighted_rewards(tmp_path: Path) -> None:
    mbpp = Path(__file__).resolve().parents[2] / "rewards" / "data" / "mbpp_sanitized.jsonl"
    records = [json.loads(line) for line in mbpp.read_text().splitlines()[:2]]
    problems = tmp_path / "mbpp.jsonl"
    problems.write_text("".join(json.dumps(r) + "\n" for r in records))
    first, second = records
    samples = [
        {"task_id": first["task_id"], "completion": f"```python\n{first['code']}\n```"},
        {"task_id": first["task_id"], "completion": ""},
        {"task_id": second["task_id"], "completion": "def broken(:\n    pass\n"},
    ]
    config = load_config(FAST_CONFIG)
    config = dataclasses.replace(config, reward=dataclasses.replace(config.reward, kind="weighted"))
    out = tmp_path / "r.jsonl"
    with Harness(config) as harness:
        summary = harness.grade(problems, samples, out, progress=False)
    rows = {r.key: r for r in read_results(out)}
    assert summary.input_issues == []
    assert {r.task_id for r in rows.values()} == {str(first["task_id"]), str(second["task_id"])}  # as given
    assert set(rows) == {
        (f"MBPP/{first['task_id']}", 0),
        (f"MBPP/{first['task_id']}", 1),
        (f"MBPP/{second['task_id']}", 0),
    }
    passed, no_code, bad = (
        rows[(f"MBPP/{first['task_id']}", 0)],
        rows[(f"MBPP/{first['task_id']}", 1)],
        rows[(f"MBPP/{second['task_id']}", 0)],
    )
    assert passed.passed is True and passed.reward == pytest.approx(
        config.reward.pass_bonus + config.reward.fraction_weight
    )
    assert no_code.status == "no_code" and no_code.reward == config.reward.no_code_penalty
    assert bad.status == "syntax_error" and bad.reward == config.reward.syntax_error_penalty


def test_harness_grades_with_any_grader_it_is_given(tmp_path: Path, humaneval_slice: tuple[Path, list[dict]]) -> None:
    # The seam: anything with grade_batch (rewards.Grader, RayGrader) grades for a Harness.
    from rewards import Grader, Outcome, Verdict
    from vmpool import Pool, PoolConfig

    problems, rows = humaneval_slice
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": r["task_id"], "completion": r["canonical_solution"]}) + "\n"
                               for r in rows))

    class Recording:
        def __init__(self, inner: Grader) -> None:
            self.inner, self.calls = inner, 0

        def grade_batch(self, items: list) -> list[Verdict]:
            self.calls += 1
            return self.inner.grade_batch(items)

    with Pool(PoolConfig(size=2)) as pool:
        recording = Recording(Grader(pool))
        with Harness(grader=recording) as harness:
            summary = harness.grade(problems, samples, tmp_path / "out.jsonl", progress=False)
            with pytest.raises(AttributeError, match="no pool"):
                _ = harness.pool
        assert recording.calls >= 1 and summary.n_graded == len(rows) and summary.pass_at_k[1] == 1.0
        assert all(r.status == Outcome.PASSED.value for r in read_results(tmp_path / "out.jsonl"))
    with pytest.raises(TypeError, match="pool or a grader"):
        Harness(pool=object(), grader=recording)  # type: ignore[arg-type]
