"""Workload builders and checks of ``python -m harness bench --suite ray``: the HumanEval records,
the GRPO batch, timing, percentiles and the expected rewards.

See :mod:`bench.ray_suite`, which re-exports them.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness import InputError

#: One GRPO group's completions, by kind; rotated by the prompt index so positions vary.
#: Canonical solutions appear verbatim (duplicates) and with a trailing comment (another
#: program that passes); wrong ones are an empty body and ``return None``.
_GROUP_PATTERN = ("canonical", "canonical", "pass", "canonical_b", "canonical", "pass", "return_none", "canonical_b")
_WRONG = {"pass": "    pass\n", "return_none": "    return None\n"}


def _percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, linearly interpolated between order statistics."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _records(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read HumanEval records: {exc}", str(path)) from exc


def _grpo_batch(records: list[dict[str, Any]], prompts: int, group: int) -> tuple[dict[str, list[Any]], list[bool]]:
    """TRL-style columns for ``prompts`` x ``group`` completions, and whether each must pass."""
    cols: dict[str, list[Any]] = {"prompts": [], "completions": [], "task_id": [], "test": [], "entry_point": []}
    expect: list[bool] = []
    for g in range(prompts):
        rec = records[g % len(records)]
        for j in range(group):
            kind = _GROUP_PATTERN[(j + g) % len(_GROUP_PATTERN)]
            if kind == "canonical":
                completion = rec["canonical_solution"]
            elif kind == "canonical_b":
                completion = f"{rec['canonical_solution']}\n# another sample\n"
            else:
                completion = _WRONG[kind]
            cols["prompts"].append(rec["prompt"])
            cols["completions"].append(completion)
            cols["task_id"].append(rec["task_id"])
            cols["test"].append(rec["test"])
            cols["entry_point"].append(rec["entry_point"])
            expect.append(kind.startswith("canonical"))
    return cols, expect


def _time(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _ideal(problem: Any, passed: bool) -> Any:
    """A verdict with the expected outcome, to compute the expected reward."""
    from rewards import Outcome, Verdict
    from vmpool import Status

    count = problem.tests.count
    if passed:
        return Verdict(True, Outcome.PASSED, count, count, "", 0.0, Status.OK)
    return Verdict(False, Outcome.FAILED, 0, count, "", 0.0, Status.OK)


def _check_rewards(name: str, got: list[float | None], want: list[float | None], failures: list[str]) -> bool:
    """Compare rewards; for partial-credit rewards only pass (max) versus not-pass is checked."""
    top = max((w for w in want if w is not None), default=None)
    bad = [i for i, (g, w) in enumerate(zip(got, want)) if g is None or (g == top) != (w == top)]
    if len(got) != len(want):
        bad.append(len(want))
    if bad:
        failures.append(f"GRPO {name}: {len(bad)} of {len(want)} rewards not as expected (first at {bad[0]})")
    return not bad
