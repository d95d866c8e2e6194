"""The core install (`pip install .`, no extras) grades a file, and pulls in no heavy dependency.

A user who wants to grade a dataset should not get Ray, TRL, transformers, datasets or torch
(the full development venv is several GB). This builds the project into a throwaway venv
the way a user would, checks what got installed and grades the bundled HumanEval file there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("ray", "trl", "transformers", "datasets", "torch", "pytest")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("core") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(REPO)],
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        pytest.fail(f"pip install . failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return python


def test_core_install_has_no_heavy_dependency(core_venv: Path) -> None:
    probe = ("import importlib.util, json, sys; import harness, rewards, vmpool; "
             f"print(json.dumps({{'installed': [m for m in {HEAVY!r} if importlib.util.find_spec(m)], "
             f"'imported': sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))}}))")
    out = subprocess.run([str(core_venv), "-c", probe], capture_output=True, text=True, timeout=120, check=True,
                         cwd="/")
    assert json.loads(out.stdout) == {"installed": [], "imported": []}


def test_core_install_grades_the_bundled_data(core_venv: Path, tmp_path: Path) -> None:
    # The bundled data is found in the installed package, far from any checkout.
    where = subprocess.run([str(core_venv), "-c", "import rewards; print(rewards.data_path('humaneval'))"],
                           capture_output=True, text=True, timeout=120, check=True, cwd="/")
    problems = Path(where.stdout.strip())
    assert problems.is_file() and REPO not in problems.parents
    rows = [json.loads(line) for line in problems.read_text().splitlines()[:8]]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": r["task_id"], "completion": r["canonical_solution"]}) + "\n"
                               for r in rows))
    out = tmp_path / "results.jsonl"
    done = subprocess.run([str(core_venv), "-m", "harness", "grade", "--problems", str(problems),
                           "--samples", str(samples), "--out", str(out), "--workers", "2"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(results) == 8 and all(r["passed"] is True for r in results), results
