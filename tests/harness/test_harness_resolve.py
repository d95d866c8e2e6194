"""Matching sample task ids to problems (exact, or unambiguous short ids) and renumbering."""

from __future__ import annotations

from pathlib import Path

from harness._inputs import resolve_task_ids
from harness._io import Sample
from rewards import load_problems

MBPP = Path(__file__).resolve().parents[2] / "rewards" / "data" / "mbpp_sanitized.jsonl"


def test_short_ids_resolve_and_indices_follow_the_problem_id() -> None:
    index = {p.task_id: p for p in load_problems(MBPP)}
    samples = [
        Sample("2", "a", 0, 1),
        Sample("MBPP/2", "b", 0, 2),  # same task spelled in full: indices must not collide
        Sample("3", "c", 0, 3),
        Sample("999999", "d", 0, 4),
        Sample("2", "e", 1, 5),
    ]
    matched, issues = resolve_task_ids(samples, index, "s.jsonl")
    assert [(s.task_id, s.problem_id, s.sample_index, s.line) for s in matched] == [
        ("2", "MBPP/2", 0, 1),  # the sample's own id is kept; the problem's is beside it
        ("MBPP/2", "MBPP/2", 1, 2),
        ("3", "MBPP/3", 0, 3),
        ("2", "MBPP/2", 2, 5),
    ]
    assert [str(i) for i in issues] == ["s.jsonl:4: task_id: unknown task '999999'"]


def test_ambiguous_short_id_is_not_guessed() -> None:
    problems = list(load_problems(MBPP))[:1]
    a = problems[0]
    index = {"x/7": a, "y/7": a}
    matched, issues = resolve_task_ids([Sample("7", "c", 0, 1)], index, "s.jsonl")
    assert matched == [] and "unknown task '7'" in issues[0].message
