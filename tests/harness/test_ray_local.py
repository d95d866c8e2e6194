"""Ray grading on an embedded local Ray: same verdicts as the local grader, actor kill, Ray Data, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

import harness
from harness import RayGrader, load_config, read_results
from rewards import Grader, Outcome, load_problems, reference_solutions
from vmpool import Limits, Pool, PoolConfig

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]
HUMANEVAL = REPO / "rewards" / "data" / "humaneval.jsonl"
FAST_CONFIG = REPO / "configs" / "fast.yaml"
LIMITS = Limits(wall_s=5.0, memory_mb=256)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One small embedded Ray for the module: 2 CPUs, no dashboard, 200 MB object store."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 * 1024, log_to_driver=False,
             configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


def _mixed_samples(records: list[dict]) -> list[dict]:
    """Canonical (pass), wrong (fail), hacking (sys.exit), syntax error, no code, per task."""
    out = []
    for r in records:
        out += [
            {"task_id": r["task_id"], "completion": r["canonical_solution"]},
            {"task_id": r["task_id"], "completion": "    return None\n"},
            {"task_id": r["task_id"], "completion": "    import sys\n    sys.exit(0)\n"},
            {"task_id": r["task_id"], "completion": "    return (\n"},
            {"task_id": r["task_id"], "completion": [{"role": "assistant", "content": ""}]},
        ]
    return out


def _comparable(rows: list) -> list[dict]:
    return sorted(({k: v for k, v in asdict(r).items() if k != "wall_s"} for r in rows),
                  key=lambda d: (d["task_id"], d["sample_index"]))


def test_ray_grader_matches_local_grader(local_ray: None) -> None:
    problems = list(load_problems(str(HUMANEVAL)))[:6]
    refs = reference_solutions(str(HUMANEVAL))
    items = [(p, c) for p in problems for c in (refs[p.task_id], "    return None\n", "    return (\n", "")]
    with Pool(PoolConfig(size=2)) as pool:
        expected = Grader(pool, default_limits=LIMITS).grade_batch(items)
    with RayGrader(actors_per_node=2, limits=LIMITS, chunk_size=3) as grader:
        assert len([a for a in grader.actors() if a["state"] == "live"]) == 2
        got = grader.grade_batch(items)
        assert grader.stats["programs"] == len(items) and grader.stats["resubmitted"] == 0
    strip = [(v.passed, v.outcome, v.tests_passed, v.tests_total, v.error) for v in expected]
    assert [(v.passed, v.outcome, v.tests_passed, v.tests_total, v.error) for v in got] == strip
    assert [v.outcome for v in got[:4]] == [Outcome.PASSED, Outcome.FAILED, Outcome.SYNTAX_ERROR, Outcome.NO_CODE]


def test_ray_harness_same_rows_and_summary_as_local(local_ray: None, tmp_path: Path,
                                                   humaneval_slice: tuple[Path, list[dict]]) -> None:
    problems, records = humaneval_slice
    samples = tmp_path / "s.jsonl"
    samples.write_text("".join(json.dumps(s) + "\n" for s in _mixed_samples(records)) + "not json\n")
    config = load_config(FAST_CONFIG)
    local = harness.grade(problems, samples, tmp_path / "local.parquet", config=config, progress=False)
    ray_summary = harness.grade_ray(problems, samples, tmp_path / "ray.parquet", config=config, progress=False)
    assert _comparable(read_results(tmp_path / "ray.parquet")) == _comparable(read_results(tmp_path / "local.parquet"))
    a, b = local.to_dict(), ray_summary.to_dict()
    for volatile in ("wall_s", "startup_s", "programs_per_s", "programs_per_s_overall", "out"):
        a.pop(volatile, None)
        b.pop(volatile, None)
    assert a == b


def test_ray_data_path_same_verdicts_as_local(local_ray: None, tmp_path: Path,
                                              humaneval_slice: tuple[Path, list[dict]]) -> None:
    problems, records = humaneval_slice
    samples = tmp_path / "s.jsonl"
    lines = [json.dumps(s) for s in _mixed_samples(records) * 3]
    lines.insert(4, "{broken")
    lines.insert(9, json.dumps({"task_id": "nope", "completion": "x"}))
    samples.write_text("\n".join(lines) + "\n")
    config = load_config(FAST_CONFIG)
    local = harness.grade(problems, samples, tmp_path / "local.parquet", config=config, progress=False)
    out_dir = tmp_path / "ray_out"
    summary = harness.grade_ray_data(problems, samples, out_dir, config=config, concurrency=1, batch_size=8)
    assert list(out_dir.glob("*.parquet"))
    from harness.ray._data import read_rows_dir

    assert _comparable(read_rows_dir(out_dir)) == _comparable(read_results(tmp_path / "local.parquet"))
    assert summary.pass_at_k == local.pass_at_k
    assert [str(i) for i in summary.input_issues] == [str(i) for i in local.input_issues]
    with pytest.raises(harness.InputError, match="does not resume"):
        harness.grade_ray_data(problems, samples, out_dir, config=config)


def test_actor_killed_mid_batch_loses_and_duplicates_nothing(local_ray: None) -> None:
    import ray

    problems = list(load_problems(str(HUMANEVAL)))[:40]
    refs = reference_solutions(str(HUMANEVAL))
    items = [(p, refs[p.task_id] if k % 2 == 0 else "    return None\n") for k in range(6) for p in problems]
    with RayGrader(actors_per_node=2, limits=LIMITS, chunk_size=8) as grader:
        victim = grader.actors()[0]["actor"]
        result: list = []
        worker = threading.Thread(target=lambda: result.append(grader.grade_batch(items)))
        worker.start()
        deadline = time.monotonic() + 60
        while grader.stats["programs"] < 24 and time.monotonic() < deadline:
            time.sleep(0.02)
        ray.kill(victim)  # no restart: the client must resubmit and replace it
        worker.join(timeout=120)
        assert not worker.is_alive()
        verdicts = result[0]
        assert grader.stats["programs"] == len(items)
        assert grader.stats["failed_programs"] == 0
        assert grader.stats["resubmitted"] >= 1
        assert grader.stats["actors_replaced"] >= 1
    assert len(verdicts) == len(items)
    for k, v in enumerate(verdicts):
        assert v.passed is ((k // len(problems)) % 2 == 0), (k, v)


def test_cli_grade_ray_end_to_end(tmp_path: Path, humaneval_slice: tuple[Path, list[dict]]) -> None:
    """``python -m harness grade --ray`` in a subprocess (its own embedded Ray) == the local CLI."""
    problems, records = humaneval_slice
    samples = tmp_path / "s.jsonl"
    samples.write_text("".join(json.dumps(s) + "\n" for s in _mixed_samples(records)))
    common = ["--problems", str(problems), "--samples", str(samples), "--config", str(FAST_CONFIG),
              "--no-progress", "--json"]
    outs = {}
    for name, extra in (("local", []), ("ray", ["--ray"])):
        out = tmp_path / f"{name}.jsonl"
        res = subprocess.run([sys.executable, "-m", "harness", "grade", *common, "--out", str(out), *extra],
                             cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
        assert res.returncode == 0, res.stderr[-3000:]
        outs[name] = (json.loads(res.stdout), read_results(out))
    assert _comparable(outs["ray"][1]) == _comparable(outs["local"][1])
    assert outs["ray"][0]["pass_at_k"] == outs["local"][0]["pass_at_k"]
    bad = subprocess.run([sys.executable, "-m", "harness", "grade", *common, "--out", str(tmp_path / "x.jsonl"),
                          "--address", "auto"], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "--address needs --ray" in bad.stderr
