"""Shared fixtures: a small HumanEval slice and a skip when the sandbox stack is not importable."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HUMANEVAL = REPO / "rewards" / "data" / "humaneval.jsonl"
FAST_CONFIG = REPO / "configs" / "fast.yaml"


@pytest.fixture
def stack() -> None:
    """Skip unless the real rewards Grader and vmpool Pool can be imported."""
    pytest.importorskip("vmpool", reason="vmpool not importable")
    try:
        from rewards import Grader, load_problems  # noqa: F401
        from vmpool import Pool  # noqa: F401
    except ImportError as exc:  # the packages are developed in parallel
        pytest.skip(f"sandbox stack not importable: {exc}")


@pytest.fixture
def humaneval_slice(tmp_path: Path) -> tuple[Path, list[dict]]:
    """The first three HumanEval problems as their own file, and their records."""
    records = [json.loads(line) for line in HUMANEVAL.read_text().splitlines()[:3]]
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path, records


def _descendants(root: int) -> set[int]:
    """Pids of every live process below ``root`` (from /proc parent links)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                # The command name may hold spaces: fields resume after its closing parenthesis.
                fields = fh.read().rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                parents[int(entry)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


@pytest.fixture
def no_own_leaks() -> Iterator[None]:
    """Fail if the test leaves processes of its own behind (sandboxes included).

    Unlike the machine-wide ``no_leaks``, this looks only below this test process, so
    sandboxes of other test runs on the same machine do not count.
    """
    before = _descendants(os.getpid())
    yield
    deadline = time.monotonic() + 5.0  # a closed pool's processes may take a moment to be reaped
    while True:
        leaked = _descendants(os.getpid()) - before
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not leaked, f"processes left behind: {sorted(leaked)}"
