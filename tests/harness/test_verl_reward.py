"""harness/verl.py loaded the way verl loads a custom reward function (by file path, by name),
in a fresh process, scoring real programs in real sandboxes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import harness.verl

REPO = Path(__file__).resolve().parents[2]

# What verl's trainer does with custom_reward_function.path / .name (get_custom_reward_fn).
LOAD_AS_VERL_DOES = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("custom_module", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["custom_module"] = module
spec.loader.exec_module(module)
compute_score = getattr(module, "compute_score")
calls = json.loads(sys.stdin.read())
out = [compute_score(**call) for call in calls]
print(json.dumps(out))
"""

NATIVE = {"task_id": "add", "entry_point": "add",
          "tests": {"kind": "assert", "code": "assert add(1, 2) == 3\nassert add(-1, 1) == 0\n"}}
STDIO = {"inputs": ["1 2\n", "5 7\n"], "outputs": ["3\n", "12\n"]}
CALL = {"fn_name": "add", "inputs": [[1, 2], [5, 7]], "outputs": [[3], [12]]}
ADD = "```python\ndef add(a, b):\n    return a + b\n```"
SUB = "```python\ndef add(a, b):\n    return a - b\n```"
STDIN_ADD = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"


def _verl(calls: list[dict]) -> list:
    done = subprocess.run([sys.executable, "-c", LOAD_AS_VERL_DOES, harness.verl.__file__], input=json.dumps(calls),
                          capture_output=True, text=True, timeout=300, cwd="/tmp")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_verl_loads_it_by_path_and_scores_each_ground_truth_form() -> None:
    calls = [
        {"data_source": "mine", "solution_str": ADD, "ground_truth": json.dumps(NATIVE), "extra_info": {"index": 0}},
        {"data_source": "mine", "solution_str": SUB, "ground_truth": NATIVE},
        {"data_source": "apps", "solution_str": STDIN_ADD, "ground_truth": json.dumps(STDIO)},
        {"data_source": "apps", "solution_str": "print(0)", "ground_truth": STDIO},
        {"data_source": "apps", "solution_str": ADD, "ground_truth": json.dumps(CALL)},
        {"data_source": "x", "solution_str": ADD, "ground_truth": "ignored", "extra_info": {"problem": NATIVE}},
        {"solution_strs": [ADD, SUB], "ground_truths": [NATIVE, NATIVE], "data_sources": ["a", "a"]},
    ]
    assert _verl(calls) == [1.0, 0.0, 1.0, 0.0, 1.0, 1.0, [1.0, 0.0]]


def test_ground_truth_without_tests_is_a_clear_error() -> None:
    import pytest

    with pytest.raises(ValueError, match="ground_truth has no tests"):
        harness.verl.problem_from_ground_truth({"answer": 3})
    assert harness.verl.problem_from_ground_truth(CALL)["tests"]["cases"][0] == {"args": [1, 2], "expected": 3}
