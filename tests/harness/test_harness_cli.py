"""The command line, end to end in a subprocess (real sandbox pool)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FAST_CONFIG = REPO / "configs" / "fast.yaml"


def _harness(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], check=False, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def test_config_command_validates(tmp_path: Path) -> None:
    ok = _harness("config", "--config", str(FAST_CONFIG))
    assert ok.returncode == 0 and "pool.size = 2" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("pool:\n  size: 0\n")
    res = _harness("config", "--config", str(bad))
    assert res.returncode == 2
    assert f"error: {bad}: pool.size: must be an integer >= 1 or null, got 0" in res.stderr


def test_grade_bad_output_extension_is_usage_error(tmp_path: Path, humaneval_slice: tuple[Path, list[dict]]) -> None:
    problems, _ = humaneval_slice
    samples = tmp_path / "s.jsonl"
    samples.write_text("")
    res = _harness(
        "grade",
        "--problems",
        str(problems),
        "--samples",
        str(samples),
        "--out",
        str(tmp_path / "r.csv"),
        "--config",
        str(FAST_CONFIG),
        "--no-progress",
    )
    assert res.returncode == 2 and "must end in" in res.stderr


def test_grade_command_end_to_end(tmp_path: Path, humaneval_slice: tuple[Path, list[dict]]) -> None:
    problems, recs = humaneval_slice
    samples = tmp_path / "s.jsonl"
    lines = [json.dumps({"task_id": r["task_id"], "completion": r["canonical_solution"]}) for r in recs]
    lines += [json.dumps({"task_id": recs[0]["task_id"], "completion": "    return None\n"}), "not json"]
    samples.write_text("\n".join(lines) + "\n")
    out = tmp_path / "r.parquet"
    args = [
        "grade",
        "--problems",
        str(problems),
        "--samples",
        str(samples),
        "--out",
        str(out),
        "--config",
        str(FAST_CONFIG),
        "--workers",
        "2",
        "--no-progress",
    ]
    res = _harness(*args)
    assert res.returncode == 0, res.stderr
    assert "Grading summary" in res.stdout and "pass@1" in res.stdout
    assert "4 (4 graded now, 0 resumed)" in res.stdout
    assert f"{samples}:5: invalid JSON" in res.stdout
    again = _harness(*args, "--json")
    assert again.returncode == 0, again.stderr
    data = json.loads(again.stdout)
    assert data["n_graded"] == 0 and data["n_resumed"] == 4
    assert data["pass_at_k"]["pass@1"] == pytest.approx((0.5 + 1 + 1) / 3)


def test_demo_command(tmp_path: Path) -> None:
    res = _harness("demo", "--out", str(tmp_path), "--limit", "6", "--config", str(FAST_CONFIG), "--no-progress")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "All verdicts as expected" in res.stdout
    assert (tmp_path / "results.parquet").exists() and (tmp_path / "samples.jsonl").exists()
