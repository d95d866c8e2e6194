"""A reward function for verl: ``compute_score(data_source, solution_str, ground_truth, extra_info)``.

verl loads a custom reward function from a file (``custom_reward_function.path``) by name
(``custom_reward_function.name``, default ``compute_score``). Point it at this file::

    python -c "import harness.verl; print(harness.verl.__file__)"
    python -m verl.trainer.main_ppo ... custom_reward_function.path=<that path> \\
        custom_reward_function.name=compute_score

verl calls it once per response with keyword arguments (``NaiveRewardManager``), or with
lists (``BatchRewardManager``: ``data_sources``, ``solution_strs``, ``ground_truths``,
``extra_infos``); both work. The tests come from ``ground_truth`` (or ``extra_info["problem"]``)
in any of these forms, as a dict or its JSON text:

* a native problem (``{"task_id", "tests": {...}}``, see the README's problem schema);
* APPS/TACO style ``{"inputs": [...], "outputs": [...]}``: stdin/stdout cases, or calls of
  ``fn_name`` when the dict has one (``inputs[i]`` the argument list, ``outputs[i]`` the value).

The score is the harness's reward (binary by default; ``HARNESS_CONFIG`` names a harness YAML
config for the pool, limits and reward). verl needs a float for every response, so an
infrastructure failure (no sandbox could run the program, never the program's doing) raises
instead of scoring it: a silent 0 would train the model on a failure that is not its own.
The sandbox pool starts on the first call in each worker process and stays warm.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["compute_score", "problem_from_ground_truth"]

_LOCK = threading.Lock()
_REWARD: Any = None


def _reward() -> Any:
    global _REWARD
    with _LOCK:
        if _REWARD is None:
            from harness import CodeReward, HarnessConfig, load_config

            path = os.environ.get("HARNESS_CONFIG")
            _REWARD = CodeReward.from_config(load_config(path) if path else HarnessConfig(), name="verl_code")
        return _REWARD


def problem_from_ground_truth(ground_truth: Any, extra_info: Mapping[str, Any] | None = None,
                              task_id: str = "verl") -> dict[str, Any]:
    """The native problem (a dict) that ``ground_truth`` / ``extra_info`` describe.

    Raises:
        ValueError: neither holds tests in a form listed in the module docstring.
    """
    value = (extra_info or {}).get("problem", ground_truth)
    if isinstance(value, (str, bytes)):
        value = json.loads(value)
    if not isinstance(value, Mapping):
        raise ValueError(f"ground_truth must be a problem or an inputs/outputs mapping, got {type(value).__name__}")
    if "tests" in value:
        return {"task_id": task_id, **value}
    if "inputs" in value and "outputs" in value:
        inputs, outputs = list(value["inputs"]), list(value["outputs"])
        if len(inputs) != len(outputs):
            raise ValueError(f"ground_truth has {len(inputs)} inputs but {len(outputs)} outputs")
        if value.get("fn_name"):
            cases = [{"args": list(i) if isinstance(i, (list, tuple)) else [i],
                      # APPS wraps each expected value in a one-element list.
                      "expected": o[0] if isinstance(o, list) and len(o) == 1 else o}
                     for i, o in zip(inputs, outputs)]
            return {"task_id": task_id, "tests": {"kind": "call", "fn_name": value["fn_name"], "cases": cases}}
        cases = [{"stdin": i if isinstance(i, str) else "\n".join(map(str, i)),
                  "stdout": o if isinstance(o, str) else "\n".join(map(str, o))} for i, o in zip(inputs, outputs)]
        return {"task_id": task_id, "tests": {"kind": "stdio", "cases": cases}}
    raise ValueError(f"ground_truth has no tests: expected 'tests' or 'inputs' + 'outputs', got keys {sorted(value)}")


def _score_all(solutions: Sequence[str], ground_truths: Sequence[Any],
               extra_infos: Sequence[Mapping[str, Any] | None]) -> list[float]:
    from rewards import problem_from_dict

    problems = []
    for i, (g, e) in enumerate(zip(ground_truths, extra_infos)):
        native = problem_from_ground_truth(g, e, f"verl/{i}")
        problem_from_dict(native, file="ground_truth", line=i)  # bad tests: a ValueError naming them, not a None
        problems.append(json.dumps(native))
    rewards = _reward()(prompts=[None] * len(solutions), completions=list(solutions), problem=problems)
    missing = [i for i, r in enumerate(rewards) if r is None]
    if missing:
        raise RuntimeError(f"no sandbox could grade {len(missing)} of {len(rewards)} responses (infrastructure, "
                           "not the model's doing); see the harness log for why")
    return [float(r) for r in rewards]


def compute_score(data_source: Any = None, solution_str: Any = None, ground_truth: Any = None,
                  extra_info: Mapping[str, Any] | None = None, **kwargs: Any) -> float | list[float]:
    """verl's custom reward function: the reward of ``solution_str`` against the tests in ``ground_truth``.

    Args:
        data_source: the dataset name (not used: the tests say everything).
        solution_str: the decoded response (code is extracted as for every harness reward).
        ground_truth: the tests (see the module docstring).
        extra_info: may hold ``problem`` (taking precedence over ``ground_truth``).
        **kwargs: verl's batch form (``solution_strs``, ``ground_truths``, ``extra_infos``) and
            ``reward_kwargs`` (ignored).

    Returns:
        The reward (a float), or a list of them in the batch form.

    Raises:
        ValueError: a ground truth holds no usable tests.
        RuntimeError: infrastructure failure (no sandbox could run a program).
    """
    if "solution_strs" in kwargs:
        solutions = list(kwargs["solution_strs"])
        truths = list(kwargs.get("ground_truths") or [None] * len(solutions))
        infos = list(kwargs.get("extra_infos") or [None] * len(solutions))
        return _score_all(solutions, truths, infos)
    return _score_all([solution_str], [ground_truth], [extra_info])[0]
