"""pass@k estimator against hand-computed values, summaries, and their printing."""

from __future__ import annotations

import math

import pytest

from harness import InputIssue, ResultRow, format_summary, pass_at_k, summarize


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (1, 1, 1, 1.0),
        (1, 0, 1, 0.0),
        (10, 3, 1, 0.3),  # pass@1 is the pass fraction
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (10, 3, 5, 1 - 21 / 252),  # C(7,5) = 21, C(10,5) = 252
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (6, 4, 3, 1.0),  # n - c < k: every draw holds a pass
        (20, 0, 10, 0.0),
    ],
)
def test_pass_at_k_hand_computed(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_binomials_for_large_n() -> None:
    n, c, k = 200, 17, 100
    assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), rel=1e-9)


@pytest.mark.parametrize(("n", "c", "k"), [(3, 4, 1), (3, 1, 0), (3, 1, 4), (0, 0, 1)])
def test_pass_at_k_rejects_bad_arguments(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def _row(task: str, index: int, passed: bool | None, status: str | None = None) -> ResultRow:
    status = status or ("passed" if passed else "sandbox_error" if passed is None else "failed")
    reward = None if passed is None else float(passed)
    return ResultRow(task, index, passed, reward, status, None, None, 0.01, "")


def test_summary_excludes_infra_failures_and_limits_k() -> None:
    rows = [_row("a", i, i < 2) for i in range(5)]  # a: n=5, c=2
    rows += [_row("b", i, i == 0) for i in range(4)]  # b: n=4, c=1
    rows += [_row("b", 4, None)]  # infra failure: not a sample of b for pass@k
    summary = summarize(rows, ks=(1, 2, 5, 10), n_graded=10, wall_s=2.0)
    assert summary.n_rows == 10 and summary.n_tasks == 2 and summary.n_infra_failures == 1
    assert summary.pass_at_k[1] == pytest.approx((2 / 5 + 1 / 4) / 2)
    assert summary.pass_at_k[2] == pytest.approx(((1 - 3 / 10) + (1 - 3 / 6)) / 2)
    assert 5 not in summary.pass_at_k and summary.skipped_ks == [5, 10]  # min n over tasks is 4
    assert summary.status_counts == {"failed": 6, "passed": 3, "sandbox_error": 1}
    assert summary.programs_per_s == pytest.approx(5.0)
    assert summary.mean_reward == pytest.approx(3 / 9)


def test_summary_of_nothing() -> None:
    summary = summarize([], ks=(1,))
    assert summary.pass_at_k == {} and summary.skipped_ks == [1] and summary.mean_reward is None


def test_task_with_only_infra_failures_does_not_block_k() -> None:
    rows = [_row("a", 0, True), _row("a", 1, False), _row("z", 0, None)]
    summary = summarize(rows, ks=(1, 2))
    assert summary.pass_at_k == {1: pytest.approx(0.5), 2: pytest.approx(1.0)}


def test_format_summary_table() -> None:
    rows = [_row("a", 0, True), _row("a", 1, False), _row("b", 0, None)]
    issues = [InputIssue("s.jsonl", 3, "invalid JSON: x"), InputIssue("s.jsonl", 9, "task_id: unknown task 'q'")]
    text = format_summary(
        summarize(rows, ks=(1, 5), n_graded=3, n_resumed=0, wall_s=1.5, input_issues=issues, out="o.parquet")
    )
    assert "Grading summary (o.parquet)" in text
    assert "pass@1" in text and "50.00 %" in text
    assert "not reported (too few samples per task): pass@5" in text
    assert "infrastructure failures  1 (excluded from pass@k)" in text
    assert "s.jsonl:3: invalid JSON: x" in text and "s.jsonl:9: task_id: unknown task 'q'" in text
    assert "programs/s" in text and "2.0" in text


def test_format_summary_truncates_issue_list() -> None:
    issues = [InputIssue("s.jsonl", i, "bad") for i in range(1, 31)]
    text = format_summary(summarize([], input_issues=issues), max_issues=5)
    assert "s.jsonl:5: bad" in text and "s.jsonl:6: bad" not in text and "... and 25 more" in text
