"""Resuming keeps a stored row only while it still holds, and an output never overwrites an input.

Real sandboxes: each case grades into one output twice and checks what the second run kept.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from harness import Harness, InputError, load_config, read_results

FAST_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "fast.yaml"

pytestmark = pytest.mark.usefixtures("no_leaks")

WRONG = "    return None\n"


def _samples(recs: list[dict], body: str | None = None, per_task: int = 1) -> list[dict]:
    return [{"task_id": r["task_id"], "completion": r["canonical_solution"] if body is None else body}
            for r in recs for _ in range(per_task)]


def test_new_completions_into_an_old_output_are_graded_not_resumed(
        tmp_path: Path, humaneval_slice: tuple[Path, list[dict]]) -> None:
    problems, recs = humaneval_slice
    out = tmp_path / "r.jsonl"
    with Harness(load_config(FAST_CONFIG)) as harness:
        first = harness.grade(problems, _samples(recs, WRONG), out, progress=False)
        assert first.pass_at_k[1] == 0.0
        second = harness.grade(problems, _samples(recs), out, progress=False)
    assert second.n_regraded == len(recs) and second.n_graded == len(recs) and second.n_resumed == 0
    assert second.pass_at_k[1] == 1.0
    assert all(r.passed for r in read_results(out)) and len(read_results(out)) == len(recs)


def test_unchanged_rows_are_kept_and_changed_settings_regrade(
        tmp_path: Path, humaneval_slice: tuple[Path, list[dict]]) -> None:
    problems, recs = humaneval_slice
    out = tmp_path / "r.parquet"
    config = load_config(FAST_CONFIG)
    with Harness(config) as harness:
        harness.grade(problems, _samples(recs), out, progress=False)
        same = harness.grade(problems, _samples(recs), out, progress=False)
    assert same.n_graded == 0 and same.n_resumed == len(recs)
    weighted = dataclasses.replace(config, reward=dataclasses.replace(config.reward, kind="weighted"))
    with Harness(weighted) as harness:
        changed = harness.grade(problems, _samples(recs), out, progress=False)
    assert changed.n_regraded == len(recs) and changed.n_resumed == 0
    assert {r.reward for r in read_results(out)} == {weighted.reward.pass_bonus + weighted.reward.fraction_weight}


def test_a_changed_problem_regrades_its_rows(tmp_path: Path, humaneval_slice: tuple[Path, list[dict]]) -> None:
    problems, recs = humaneval_slice
    out = tmp_path / "r.jsonl"
    with Harness(load_config(FAST_CONFIG)) as harness:
        harness.grade(problems, _samples(recs), out, progress=False)
        edited = [dict(r) for r in recs]
        edited[0]["test"] = edited[0]["test"] + "\n    assert False, 'a stricter test'\n"
        harder = tmp_path / "harder.jsonl"
        harder.write_text("".join(json.dumps(r) + "\n" for r in edited))
        again = harness.grade(harder, _samples(recs), out, progress=False)
    assert again.n_regraded == 1 and again.n_resumed == len(recs) - 1
    rows = {r.task_id: r for r in read_results(out)}
    assert rows[recs[0]["task_id"]].passed is False and rows[recs[1]["task_id"]].passed is True


def test_an_output_of_another_dataset_is_refused(tmp_path: Path, humaneval_slice: tuple[Path, list[dict]]) -> None:
    problems, recs = humaneval_slice
    out = tmp_path / "r.jsonl"
    with Harness(load_config(FAST_CONFIG)) as harness:
        harness.grade(problems, _samples(recs[:2]), out, progress=False)
        with pytest.raises(InputError, match=r"another problems or samples file.*--no-resume"):
            harness.grade(problems, _samples(recs[2:]), out, progress=False)
        assert len(read_results(out)) == 2  # refused before anything was written
        fresh = harness.grade(problems, _samples(recs[2:]), out, progress=False, resume=False)
    assert fresh.n_rows == len(recs) - 2


@pytest.mark.parametrize("which", ["samples", "problems"])
def test_out_naming_an_input_is_refused_up_front(
        tmp_path: Path, humaneval_slice: tuple[Path, list[dict]], which: str) -> None:
    problems, recs = humaneval_slice
    samples = tmp_path / "s.jsonl"
    samples.write_text("".join(json.dumps(s) + "\n" for s in _samples(recs)))
    before = {p: p.read_bytes() for p in (samples, problems)}
    out = samples if which == "samples" else problems
    with Harness(load_config(FAST_CONFIG)) as harness, pytest.raises(InputError, match=f"--out is the --{which} file"):
        harness.grade(problems, samples, out, progress=False)
    assert {p: p.read_bytes() for p in before} == before


def test_summary_reports_every_k_the_samples_allow(tmp_path: Path, humaneval_slice: tuple[Path, list[dict]]) -> None:
    problems, recs = humaneval_slice
    config = load_config(FAST_CONFIG)
    auto = dataclasses.replace(config, grading=dataclasses.replace(config.grading, ks=None))
    with Harness(auto) as harness:
        summary = harness.grade(problems, _samples(recs[:2], per_task=3), tmp_path / "r.jsonl", progress=False)
    assert sorted(summary.pass_at_k) == [1, 2, 3] and not summary.skipped_ks
    assert 0 <= summary.startup_s < summary.wall_s
    assert summary.programs_per_s >= summary.programs_per_s_overall > 0


def test_in_memory_grading_writes_nothing_and_returns_the_rows(
        tmp_path: Path, humaneval_slice: tuple[Path, list[dict]], monkeypatch: pytest.MonkeyPatch) -> None:
    problems, recs = humaneval_slice
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    with Harness(load_config(FAST_CONFIG)) as harness:
        summary = harness.grade(problems, _samples(recs[:2]) + _samples(recs[:1], WRONG), progress=False)
    assert summary.out == "" and list(work.iterdir()) == []
    assert [(r.task_id, r.sample_index, r.passed) for r in summary.rows] == \
        [(recs[0]["task_id"], 0, True), (recs[1]["task_id"], 0, True), (recs[0]["task_id"], 1, False)]
    assert "rows" not in summary.to_dict()
