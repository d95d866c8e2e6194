"""The command line a new user reaches for: version, stdin, overrides, --strict, --k, config --yaml,
the problems command, and clear errors (subprocesses, real sandbox pool)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import HarnessConfig, config_from_dict

REPO = Path(__file__).resolve().parents[2]
FAST_CONFIG = REPO / "configs" / "fast.yaml"
MBPP = REPO / "rewards" / "data" / "mbpp_sanitized.jsonl"


def _harness(*args: str, stdin: str | None = None, timeout: float = 300,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], check=False, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, input=stdin, env=None if env is None else {**os.environ, **env})


def _samples(recs: list[dict], broken: bool = False) -> str:
    lines = [json.dumps({"task_id": r["task_id"], "completion": r["canonical_solution"]}) for r in recs]
    return "\n".join(lines + (["{not json"] if broken else [])) + "\n"


def test_version_and_the_console_script() -> None:
    res = _harness("--version")
    assert res.returncode == 0 and res.stdout.startswith("harness ")
    script = Path(sys.executable).with_name("harness")
    if script.exists():  # installed (pip install -e . / make deps): the console script runs the same CLI
        assert subprocess.run([str(script), "--version"], capture_output=True, text=True).stdout == res.stdout


def test_config_yaml_is_a_config_that_loads_back(tmp_path: Path) -> None:
    res = _harness("config", "--yaml", "--config", str(FAST_CONFIG), "--timeout", "3", "--reward-kind", "fraction")
    assert res.returncode == 0, res.stderr
    loaded = config_from_dict(yaml.safe_load(res.stdout))
    assert loaded.limits.cpu_s == 3.0 and loaded.reward.kind == "fraction" and loaded.pool.size == 2
    assert "# sandbox backend" in res.stdout  # help text as comments
    assert config_from_dict(yaml.safe_load(_harness("config", "--yaml").stdout)) == HarnessConfig()


def test_a_closed_pipe_is_not_a_traceback() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "harness", "config"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(10)
    proc.stdout.close()  # like `| head -1`
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 0 and "Traceback" not in err


def test_problems_lists_ids_and_converts_to_native(tmp_path: Path) -> None:
    listing = _harness("problems", str(MBPP))
    assert listing.returncode == 0 and "MBPP/2\tassert\t3" in listing.stdout and "427 problems, format mbpp" in listing.stdout
    out = tmp_path / "native.jsonl"
    res = _harness("problems", str(MBPP), "--native", "--out", str(out))
    assert res.returncode == 0, res.stderr
    native = _harness("problems", str(out))
    assert "format native" in native.stdout and native.stdout.count("\n") == listing.stdout.count("\n")


def test_grade_from_stdin_with_overrides_k_and_strict(tmp_path: Path, humaneval_slice: tuple[Path, list[dict]]) -> None:
    problems, recs = humaneval_slice
    args = ["grade", "--problems", str(problems), "--samples", "-", "--config", str(FAST_CONFIG),
            "--no-progress", "--json", "--timeout", "4", "--reward-kind", "fraction", "--k", "1"]
    ok = _harness(*args, "--out", str(tmp_path / "a.jsonl"), stdin=_samples(recs))
    assert ok.returncode == 0, ok.stderr
    summary = json.loads(ok.stdout)
    assert summary["pass_at_k"] == {"pass@1": 1.0} and summary["n_graded"] == len(recs)
    lenient = _harness(*args, "--out", str(tmp_path / "b.jsonl"), stdin=_samples(recs, broken=True))
    assert lenient.returncode == 0 and len(json.loads(lenient.stdout)["input_issues"]) == 1
    strict = _harness(*args, "--strict", "--out", str(tmp_path / "c.jsonl"), stdin=_samples(recs, broken=True))
    assert strict.returncode == 2 and "were skipped (--strict)" in strict.stderr and "<stdin>:" in strict.stderr


@pytest.mark.parametrize(("out", "message"), [
    ("/proc/harness-results.jsonl", "cannot write the output here"),
    ("SAMPLES", "--out is the --samples file"),
])
def test_bad_outputs_fail_before_grading(tmp_path: Path, humaneval_slice: tuple[Path, list[dict]],
                                         out: str, message: str) -> None:
    problems, recs = humaneval_slice
    samples = tmp_path / "s.jsonl"
    samples.write_text(_samples(recs))
    target = str(samples) if out == "SAMPLES" else out
    res = _harness("grade", "--problems", str(problems), "--samples", str(samples), "--out", target)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
    assert samples.read_text() == _samples(recs)


def test_an_empty_samples_file_is_an_error(tmp_path: Path, humaneval_slice: tuple[Path, list[dict]]) -> None:
    problems, _ = humaneval_slice
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    res = _harness("grade", "--problems", str(problems), "--samples", str(empty), "--out", str(tmp_path / "r.jsonl"))
    assert res.returncode == 2 and "no samples to grade" in res.stderr


def test_an_unknown_problem_format_names_the_flag(tmp_path: Path) -> None:
    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps({"question": "?", "answer": 1}) + "\n")
    res = _harness("problems", str(odd))
    assert res.returncode == 2 and "--format {" in res.stderr and "its keys: answer, question" in res.stderr


@pytest.mark.ray
def test_ray_address_without_a_cluster_says_what_to_do(tmp_path: Path, humaneval_slice: tuple[Path, list[dict]]) -> None:
    problems, recs = humaneval_slice
    samples = tmp_path / "s.jsonl"
    samples.write_text(_samples(recs))
    # Ray finds "auto" clusters through files in its temp dir: an empty one has none, whatever
    # else runs on this machine.
    res = _harness("grade", "--problems", str(problems), "--samples", str(samples), "--out", str(tmp_path / "r.jsonl"),
                   "--ray", "--address", "auto", timeout=180, env={"RAY_TMPDIR": str(tmp_path / "ray")})
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "no Ray cluster answers at 'auto'" in res.stderr and "ray start --head" in res.stderr


def test_details_rows_carry_the_code_and_each_test(tmp_path: Path) -> None:
    mbpp = [json.loads(line) for line in MBPP.read_text().splitlines()[:1]]
    problems = tmp_path / "p.jsonl"
    problems.write_text(json.dumps(mbpp[0]) + "\n")
    wrong = "```python\ndef remove_Occ(s, ch):\n    return s\n```"
    samples = [{"task_id": mbpp[0]["task_id"], "completion": f"```python\n{mbpp[0]['code']}\n```"},
               {"task_id": mbpp[0]["task_id"], "completion": wrong}]
    out = tmp_path / "r.jsonl"
    res = _harness("grade", "--problems", str(problems), "--samples", "-", "--out", str(out), "--details",
                   "--config", str(FAST_CONFIG), "--no-progress", stdin="".join(json.dumps(s) + "\n" for s in samples))
    assert res.returncode == 0, res.stderr
    right, bad = [json.loads(line) for line in out.read_text().splitlines()]
    assert right["code"].strip() == mbpp[0]["code"].strip() and bad["code"].startswith("def remove_Occ")
    cases = json.loads(bad["details"])
    assert len(cases) == right["tests_total"] and {"index", "passed", "status", "error"} <= set(cases[0])
    assert not all(c["passed"] for c in cases) and all(c["passed"] for c in json.loads(right["details"]))


@pytest.mark.ray
def test_the_ray_data_path_prints_the_summary_not_ray_noise(tmp_path: Path,
                                                            humaneval_slice: tuple[Path, list[dict]]) -> None:
    problems, recs = humaneval_slice
    samples = tmp_path / "s.jsonl"
    samples.write_text(_samples(recs))
    res = _harness("grade", "--problems", str(problems), "--samples", str(samples), "--out", f"{tmp_path}/out/",
                   "--ray", "--no-progress", "--config", str(FAST_CONFIG), timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Grading summary" in res.stdout
    noise = [line for line in res.stderr.splitlines() if line.strip()]
    assert not [line for line in noise if "logging_progress" in line or "streaming_executor" in line], noise
    assert len(noise) <= 3, noise  # Ray's own two start-up lines from its C++ core, at most
