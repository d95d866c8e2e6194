"""The bench's baselines and, with the sandbox a short full run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.throughput import _run_fork_workers, _run_naive, format_bench, humaneval_programs, run_bench
from harness._errors import InputError

REPO = Path(__file__).resolve().parents[2]
HUMANEVAL = REPO / "rewards" / "data" / "humaneval.jsonl"

PROGRAMS = [
    "assert sum(range(4)) == 6\n",
    "assert 1 == 2\n",
    "import sys; sys.exit(3)\n",
    "raise ValueError('boom')\n",
    "print('x' * 10)\n",
]
EXPECTED_CODES = [0, 1, 3, 1, 0]


def test_humaneval_programs_are_whole_programs() -> None:
    programs = humaneval_programs(HUMANEVAL)
    assert len(programs) == 164
    task_id, src = programs[0]
    assert task_id == "HumanEval/0" and src.rstrip().endswith("check(has_close_elements)")
    compile(src, task_id, "exec")


def test_humaneval_programs_bad_record(tmp_path: Path) -> None:
    path = tmp_path / "he.jsonl"
    path.write_text('{"task_id": "a"}\n')
    with pytest.raises(InputError, match=r"he\.jsonl:1: not a HumanEval record"):
        humaneval_programs(path)


@pytest.mark.parametrize("workers", [1, 2])
def test_fork_baseline_reports_each_exit_code_in_order(workers: int) -> None:
    times, codes, makespan, failures = _run_fork_workers(PROGRAMS, workers)
    assert failures == []
    assert codes == EXPECTED_CODES
    assert all(t > 0 for t in times) and makespan > 0


@pytest.mark.usefixtures("no_leaks")
def test_fork_floor_children_run_whole_programs_in_the_warm_worker() -> None:
    programs = [
        "import sys\nassert 'statistics' in sys.modules and 'unicodedata' in sys.modules\n",  # zygote's preload
        "assert __name__ == '__main__'\n",
        "def broken(:\n",  # compiled in the child: the worker survives a syntax error
        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
        "import os\nos._exit(7)\n",
    ]
    times, codes, wall, failures = _run_fork_workers(programs, 2)
    assert failures == [] and codes == [0, 0, 1, -9, 7]
    assert all(t > 0 for t in times) and 0 < wall


@pytest.mark.usefixtures("no_leaks")
def test_fork_floor_loops_start_together_and_wall_spans_them() -> None:
    times, codes, wall, failures = _run_fork_workers(["import time\ntime.sleep(0.3)\n"] * 2, 2)
    assert failures == [] and codes == [0, 0]
    assert all(t >= 0.3 for t in times)
    assert 0.3 <= wall < 0.55  # side by side: one loop's length, not the sum


@pytest.mark.usefixtures("no_leaks")
def test_fork_floor_more_workers_than_programs_and_none() -> None:
    _, codes, _, failures = _run_fork_workers(PROGRAMS[:2], 8)
    assert failures == [] and codes == EXPECTED_CODES[:2]
    assert _run_fork_workers([], 3) == ([], [], 0.0, [])


@pytest.mark.usefixtures("no_leaks")
def test_fork_floor_reports_a_worker_that_does_not_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bench._baselines.SANDBOX_PYTHON", "/bin/false")
    times, codes, wall, failures = _run_fork_workers(PROGRAMS, 2)
    assert len(failures) == 2 and all("fork worker did not start: exit 1" in f for f in failures)
    assert codes == [-1] * len(PROGRAMS) and times == [0.0] * len(PROGRAMS) and wall == 0.0


@pytest.mark.usefixtures("no_leaks")
def test_fork_floor_alarm_and_watchdog(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("bench._baselines.BASELINE_TIMEOUT_S", 1)
    _, codes, _, failures = _run_fork_workers(["import time\ntime.sleep(5)\n", "pass\n"], 2)
    assert failures == [] and codes == [-14, 0]  # the child's SIGALRM
    pid_file = tmp_path / "pid"
    stuck = (
        "import os, signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(30)\n"
    )
    start = time.monotonic()
    _, codes, _, failures = _run_fork_workers([stuck, "pass\n"], 2)
    assert time.monotonic() - start < 10
    assert codes == [-1, 0] and len(failures) == 1 and "fork worker timed out after 2 s" in failures[0]
    child = Path(f"/proc/{pid_file.read_text()}")
    deadline = time.monotonic() + 5
    while child.exists() and time.monotonic() < deadline:  # killed with its worker's group, then reaped
        time.sleep(0.05)
    assert not child.exists() or (child / "stat").read_text().split(") ")[1][0] in "ZX"


def test_naive_baseline_reports_each_exit_code_in_order() -> None:
    codes, wall = _run_naive(PROGRAMS, 2)
    assert codes == EXPECTED_CODES and wall > 0


@pytest.mark.slow
@pytest.mark.usefixtures("no_leaks")
def test_run_bench_small() -> None:
    result = run_bench(repeat=1, workers=2, latency_samples=5, naive=False)
    assert result.ok, result.failures
    assert set(result.modes) == {"sandboxed", "pool", "fork"}
    assert all(mode.n_ok == 164 for mode in result.modes.values())
    assert result.ratio("sandboxed", "fork") is not None and result.overhead_ms is not None
    assert result.pool_latency_ms is not None
    text = format_bench(result)
    assert "throughput sandboxed/fork" in text and "sandbox overhead" in text


@pytest.mark.microvm
@pytest.mark.slow
def test_microvm_bench_measures_clones_against_cold_boots():
    from bench.microvm import format_microvm_bench, run_microvm_bench

    bench = run_microvm_bench(cold_boots=1, clones=3, sustained=2, programs=4, workers=2)
    assert bench.accel in ("kvm", "tcg") and bench.accel_reason
    assert bench.clone_speedup > 1 and bench.clones_per_s > 0
    assert bench.memory_after_restore["rss_kb"] > 0
    assert bench.verdicts_match
    assert "clone vs cold boot" in format_microvm_bench(bench)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.usefixtures("no_leaks")
def test_ray_bench_small() -> None:
    pytest.importorskip("ray")
    from bench.ray_suite import format_ray_bench, run_ray_bench

    bench = run_ray_bench(
        repeat=1,
        programs=20,
        rounds=1,
        workers=2,
        grpo_prompts=8,
        grpo_group=4,
        latency_reps=2,
        nodes=(1, 2),
        scaling_repeat=1,
    )
    assert bench.ok, bench.failures
    assert set(bench.throughput) == {"local", "ray"}
    assert all(t.n_programs == t.n_ok == 20 and t.programs_per_s > 0 for t in bench.throughput.values())
    assert bench.ray_overhead_pct is not None and bench.sandboxes == 2 and bench.actors == 1
    assert set(bench.latency) == {"code_reward", "ray"}
    assert all(
        lat.rewards_ok and len(lat.times_s) == 2 and lat.p90_s >= lat.median_s > 0 for lat in bench.latency.values()
    )
    assert bench.grpo_prompts * bench.grpo_group == 32 and 0 < bench.grpo_expected_pass < 32
    assert [(p.nodes, p.sandboxes, p.n_ok) for p in bench.scaling] == [(1, 1, 20), (2, 2, 20)]
    data = bench.to_dict()
    assert data["ok"] and data["ray_overhead_pct"] == bench.ray_overhead_pct
    text = format_ray_bench(bench)
    assert "Ray overhead" in text and "GRPO reward latency" in text and f"{bench.cores} CPU core(s)" in text
    import ray

    assert not ray.is_initialized()


def test_the_command_line_offers_every_suite_and_runs_them_through_the_bench_package(tmp_path: Path) -> None:
    import bench
    from harness._cli import build_parser, main

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    suite = next(a for a in sub.choices["bench"]._actions if a.dest == "suite")
    assert sorted(suite.choices) == sorted(bench.SUITES)
    out = tmp_path / "bench.json"
    rc = main(["bench", "--repeat", "1", "--latency-samples", "0", "--skip-naive", "--workers", "2",
               "--json-out", str(out)])
    assert rc == 0
    import json

    data = json.loads(out.read_text())
    assert set(data["modes"]) >= {"sandboxed", "fork", "pool"} and data["ratios"]["sandboxed/fork"] > 0


def test_sessions_bench_measures_leases_episodes_and_memory() -> None:
    from bench.sessions import format_session_bench, run_session_bench

    bench = run_session_bench(leases=3, cold=2, sustained=2, rounds=1, density=3, forks=2, microvm=0)
    assert bench.ok, bench.failures
    assert len(bench.lease_s) == 3 and len(bench.episode_call_s) == 10 and bench.idle_rss_bytes > 0
    assert len(bench.fork1_s) == 2 and bench.fork8_s and bench.pause_resume_s and bench.density == 3
    # copy-on-write: a fork of a 100 MB heap does not copy it
    assert 0 < bench.fork_child_private_bytes < bench.fork_heap_bytes / 2
    text = format_session_bench(bench)
    assert "lease from a warm pool" in text and "10-turn episode" in text and "fork(8)" in text


def test_serve_bench_measures_the_clients_against_the_direct_path() -> None:
    from bench.serve import format_serve_bench, run_serve_bench

    bench = run_serve_bench(rounds=3, live=5, verl_repeat=1)
    assert bench.ok, bench
    assert len(bench.e2b_s) == 3 and len(bench.direct_s) == 3 and bench.live_cells_ok == 5
    assert bench.verl_cases > 0 and bench.verl_s > 0 and bench.direct_cases_s > 0
    text = format_serve_bench(bench)
    assert "E2B create + run_code + kill" in text and "verl check_correctness" in text
