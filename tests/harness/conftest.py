"""Shared fixtures: a small HumanEval slice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HUMANEVAL = REPO / "rewards" / "data" / "humaneval.jsonl"
FAST_CONFIG = REPO / "configs" / "fast.yaml"


@pytest.fixture
def humaneval_slice(tmp_path: Path) -> tuple[Path, list[dict]]:
    """The first three HumanEval problems as their own file, and their records."""
    records = [json.loads(line) for line in HUMANEVAL.read_text().splitlines()[:3]]
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path, records
