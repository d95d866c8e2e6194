"""harness.CodeEnvironment (TRL's environment_factory contract) on real sessions and grading sandboxes."""

from __future__ import annotations

import gc
import importlib.util
import inspect
import json
import pickle
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import (
    CodeEnvironment,
    CodeEnvironmentGrader,
    EnvironmentConfig,
    NoTestsError,
    close_environments,
    environment_stats,
)
from harness._env_code import program_from_cells
from harness._env_sessions import _shared_for
from rewards import RewardConfig, load_problems, problem_to_dict
from tests.harness._recorder import Recorder
from vmpool import PoolConfig, SessionConfig

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "rewards" / "data"

GOOD = "def smallest_num(xs):\n    return min(xs)\n"
WRONG = "def smallest_num(xs):\n    return max(xs)\n"
HACK = "import sys\nsys.exit(0)\n"
ADD = {"task_id": "add", "prompt": "Write add(a, b).", "tests": {
    "kind": "call", "fn_name": "add", "cases": [{"args": [2, 3], "expected": 5}, {"args": [-1, 1], "expected": 0}]}}


@pytest.fixture(autouse=True)
def _closed(no_leaks: None) -> Iterator[None]:
    """Every test ends with the process-wide pools closed, then checks no process is left behind."""
    yield
    close_environments()


@pytest.fixture(scope="module")
def mbpp() -> str:
    """MBPP/62 (smallest_num, three asserts) as the native JSON a dataset column carries."""
    return json.dumps(problem_to_dict(load_problems(DATA / "mbpp_sanitized.jsonl").by_id()["MBPP/62"]))


def _tools(env_type: type) -> list[str]:
    """The tool names TRL finds on an environment class (GRPOTrainer.__init__'s own rule)."""
    return [name for name, _ in inspect.getmembers(env_type, predicate=inspect.isfunction)
            if name not in ("reset", "get_reward") and not name.startswith("_")]


# --------------------------------------------------------------------------- TRL's contract

def test_tools_are_the_public_methods_with_typed_documented_arguments() -> None:
    assert _tools(CodeEnvironment) == ["bash", "python", "submit"]
    env = CodeEnvironment()  # TRL probes one instance at init: constructing it starts nothing
    assert not env.has_session and env.result is None
    utils = pytest.importorskip("transformers.utils")
    for name, arg in (("python", "code"), ("bash", "command"), ("submit", "code")):
        schema = utils.get_json_schema(getattr(env, name))["function"]
        assert schema["name"] == name and schema["description"]
        assert schema["parameters"]["required"] == [arg]
        assert schema["parameters"]["properties"][arg]["type"] == "string"
        assert schema["parameters"]["properties"][arg]["description"]
    assert env.get_reward() is None  # never reset: nothing to grade, never a 0.0


def test_config_validation() -> None:
    for bad in ({"warm_sessions": 0}, {"max_output_chars": 10}, {"tool_timeout_s": 0}, {"max_tool_calls": 1.5},
                {"problem_column": ""}, {"session": PoolConfig()}, {"mention_entry_point": "yes"}):
        with pytest.raises(ValueError):
            EnvironmentConfig(**bad)
    with pytest.raises(TypeError):
        CodeEnvironment(PoolConfig())


def test_reset_installs_files_and_setup_and_returns_the_task(mbpp: str) -> None:
    env = CodeEnvironment()
    row = {"prompt": [{"role": "user", "content": "Use the tools."}], "problem": mbpp,
           "files": {"data/in.txt": "3 1 2\n"}, "setup": "import statistics\nDATA = [3, 1, 2]"}
    text = env.reset(**row)
    assert text == "\n\nWrite a python function to find smallest number in a list.\n\n" \
                   "Your solution must define `smallest_num`."
    assert env.has_session
    assert env.python("DATA, statistics.mean(DATA)") == "([3, 1, 2], 2)"
    assert env.bash("cat data/in.txt") == "3 1 2\n[exit code 0]"
    # TRL appends the text to the prompt's last message: alone when there is none, nothing when it is there.
    assert env.reset(problem=mbpp) == text.lstrip()
    assert env.python("'DATA' in dir()") == "False"  # a fresh session: the last episode's state is gone
    assert env.reset(prompt=[{"role": "user", "content": "Task:\n" + text.lstrip()}], problem=mbpp) == ""
    assert env.reset(problem=mbpp, task="Find the minimum with `smallest_num`.") == \
        "Find the minimum with `smallest_num`."
    assert env.reset(files=json.dumps({"a.txt": "x"}), problem=mbpp).endswith("`smallest_num`.")
    assert env.bash("cat a.txt") == "x\n[exit code 0]"


# --------------------------------------------------------------------------- tools

def test_python_state_persists_and_bash_keeps_its_directory(mbpp: str) -> None:
    env = CodeEnvironment()
    env.reset(problem=mbpp)
    assert env.python("x = 41") == "(no output)"
    env.python("def f():\n    return x + 1")
    assert env.python("f()") == "42"
    assert env.python("print('hi')\nx") == "hi\n41"
    err = env.python("1 / 0")
    assert "ZeroDivisionError: division by zero" in err and "Traceback" in err
    assert env.python("x") == "41"  # an error is data: the state survives
    assert "[stderr]\noops" in env.python("import sys\nprint('oops', file=sys.stderr)")
    assert env.bash("mkdir -p work && cd work && pwd") == "/tmp/home/work\n[exit code 0]"
    assert env.bash("pwd; echo bad >&2; exit 3") == "/tmp/home/work\n[stderr]\nbad\n[exit code 3]"
    assert env.python(123) == "Error: code must be a string, got int."
    assert env.cells[0] == "x = 41" and len(env.cells) == 7
    assert _shared_for(env.config).stats["python_calls"] >= 6  # calls that ran in the session


def test_timeouts_killed_sessions_and_the_call_cap(mbpp: str) -> None:
    env = CodeEnvironment(EnvironmentConfig(tool_timeout_s=1.0, max_session_starts=2, max_tool_calls=8))
    env.reset(problem=mbpp)
    env.python("x = 1")
    assert env.python("while True:\n    pass") == "TimeoutError: the code ran past 1 s and was interrupted."
    assert env.bash("sleep 5") == "[timed out after 1 s; the command was killed]"
    assert env.python("x") == "1"  # the session survives a timeout
    assert env.python("import os\nos._exit(3)").startswith("Error: the session stopped")
    assert "NameError" in env.python("x")  # a fresh session: the state is lost
    env.python("import os\nos._exit(3)")
    assert env.python("x") == "Error: the session stopped and no new one can be started for this task."
    assert env.python("x").startswith("Error: this task's limit of 8 python/bash calls is reached")
    assert env.submit(GOOD).startswith("Submitted")  # submitting is never capped
    assert env.get_reward() == 1.0  # the model killing its session is not an infrastructure failure
    assert env.result is not None and env.result.session_starts == 2 and env.result.calls == {"python": 7, "bash": 1, "submit": 1}


def test_outputs_are_truncated_with_a_visible_marker(mbpp: str) -> None:
    env = CodeEnvironment(EnvironmentConfig(max_output_chars=200))
    env.reset(problem=mbpp)
    out = env.python("print('a' * 5000 + 'END')")
    assert out.startswith("aaa") and out.endswith("END") and len(out) < 260
    assert re.search(r"\n\[\.\.\. 48\d\d characters truncated \.\.\.\]\n", out)
    out = env.bash("seq 1 5000")
    assert out.startswith("1\n2\n") and out.endswith("[exit code 0]") and "characters truncated ...]" in out
    capped = CodeEnvironment(EnvironmentConfig(session=SessionConfig(output_bytes=100)))
    capped.reset(problem=mbpp)
    assert capped.python("print('b' * 1000)").endswith("[... output truncated by the sandbox ...]")


# --------------------------------------------------------------------------- rewards

def test_submissions_graded_correct_and_wrong_the_last_one_counting(mbpp: str) -> None:
    env = CodeEnvironment()
    env.reset(problem=mbpp)
    assert env.submit(GOOD) == "Submitted (2 lines). It is graded when the task ends."
    assert env.get_reward() == 1.0
    assert env.result is not None and (env.result.status, env.result.tests_passed) == ("passed", 3)
    assert env.result.graded_from == "submission" and not env.has_session
    assert env.get_reward() == 1.0  # once per episode: the same verdict
    for submissions, expected in (([GOOD, WRONG], 0.0), ([WRONG, GOOD], 1.0), ([HACK], 0.0),
                                  ([f"Here:\n```python\n{GOOD}```"], 1.0)):
        env.reset(problem=mbpp)
        for code in submissions:
            env.submit(code)
        assert env.get_reward() == expected, submissions
    env.reset(problem=mbpp)
    assert "warning: it does not parse" in env.submit("def smallest_num(xs:")
    assert env.submit("def other(xs):\n    return 1\n").endswith("warning: it does not define `smallest_num`.")
    assert env.get_reward() == 0.0
    calls = CodeEnvironment()
    assert calls.reset(problem=json.dumps(ADD)) == "Write add(a, b).\n\nYour solution must define `add`."
    calls.submit("def add(a, b):\n    return a + b\n")
    assert calls.get_reward() == 1.0


def test_the_sessions_state_is_never_trusted(mbpp: str) -> None:
    env = CodeEnvironment()
    env.reset(problem=mbpp)
    # The session is the model's: whatever it holds (a correct function, patched builtins, files
    # that claim success) grading happens in a fresh sandbox, on the submitted code alone.
    env.python(GOOD)
    env.python("import builtins\nbuiltins.max = min\nCHEAT = [1]")
    env.bash("echo '{\"passed\": true}' > result.json")
    env.submit("def smallest_num(xs):\n    return max(xs)\n")
    assert env.get_reward() == 0.0
    env.reset(problem=mbpp)
    env.python("ANSWERS = {(10, 20, 1, 45, 99): 1, (1, 2, 3): 1, (45, 46, 50, 60): 45}")
    env.submit("def smallest_num(xs):\n    return ANSWERS[tuple(xs)]\n")  # a name only the session has
    assert env.get_reward() == 0.0
    assert env.result is not None and env.result.status == "runtime_error"


def test_never_submitted_grades_the_entry_point_the_cells_define(mbpp: str) -> None:
    env = CodeEnvironment()
    env.reset(problem=mbpp)
    env.python("import math\ndef helper(xs):\n    return sorted(xs)[0]")
    env.python(WRONG)
    env.python("print(smallest_num([1, 2]))\nUNUSED = undefined_name")
    env.python("def smallest_num(xs):\n    return helper(xs)\nsmallest_num([3, 1])")  # the last definition wins
    env.python("def (:")
    assert env.get_reward() == 1.0
    assert env.result is not None and env.result.graded_from == "cells"


def test_program_from_cells() -> None:
    cells = ["import math, os\nLIMIT = 10\nx = LIMIT + 1", "def helper(a):\n    return math.floor(a)",
             "print(1)\n1 / 0", "def f(a):\n    return 0", "def (:",
             "@staticmethod\ndef f(a):\n    return helper(a) + ZERO\nZERO = 0\nf(1)"]
    assert program_from_cells(cells, "f") == ("import math, os\n\ndef helper(a):\n    return math.floor(a)\n\n"
                                              "@staticmethod\ndef f(a):\n    return helper(a) + ZERO\n\nZERO = 0\n")
    assert program_from_cells(cells[:3], "f") is None
    assert program_from_cells(cells, None) is None
    assert program_from_cells(["class Solution:\n    def f(self, a):\n        return a\n"], "f") is not None
    assert program_from_cells(["f = lambda a: a"], "f") == "f = lambda a: a\n"


def test_nothing_usable_scores_as_no_code_never_none(mbpp: str) -> None:
    env = CodeEnvironment()
    env.reset(problem=mbpp)
    env.python("print('thinking')")
    env.bash("ls")
    assert env.get_reward() == 0.0
    assert env.result is not None and (env.result.status, env.result.graded_from) == ("no_code", "nothing")
    env.reset(problem=mbpp)  # no call at all
    assert env.get_reward() == 0.0
    weighted = CodeEnvironment(EnvironmentConfig(reward=RewardConfig(kind="weighted")))
    weighted.reset(problem=mbpp)
    assert weighted.get_reward() == pytest.approx(-0.2)  # the no-code penalty, as CodeReward gives it


def test_infrastructure_failures_give_none_never_zero(mbpp: str) -> None:
    broken_grading = CodeEnvironment(EnvironmentConfig(pool=PoolConfig(size=1, python="/nonexistent/python3",
                                                                       start_timeout_s=5)))
    broken_grading.reset(problem=mbpp)
    assert broken_grading.python("1 + 1") == "2"  # the session is fine; grading cannot start
    broken_grading.submit(GOOD)
    assert broken_grading.get_reward() is None
    assert broken_grading.result is not None and broken_grading.result.status == "sandbox_error"
    broken_grading.reset(problem=mbpp)
    broken_grading.submit("def smallest_num(xs:")  # decided on the host: still the model's fault
    assert broken_grading.get_reward() == 0.0

    no_sessions = CodeEnvironment(EnvironmentConfig(session=SessionConfig(python="/nonexistent/python3",
                                                                          start_timeout_s=5)))
    assert no_sessions.reset(problem=mbpp).startswith("Write a python function")
    assert no_sessions.python("1").startswith("Error: no sandbox is available for this task")
    assert no_sessions.bash("ls").startswith("Error: no sandbox is available")
    no_sessions.submit(GOOD)
    assert no_sessions.get_reward() is None
    assert no_sessions.result is not None and no_sessions.result.status == "no_session"


def test_unusable_rows_give_none_and_rows_without_tests_raise(mbpp: str) -> None:
    env = CodeEnvironment()
    for row, status in (({"problem": "{not json"}, "bad_problem"), ({"problem": mbpp, "files": ["x"]}, "bad_problem"),
                        ({"problem": mbpp, "setup": "raise RuntimeError('no data')"}, "setup_failed")):
        env.reset(**row)
        assert env.python("1").startswith("Error: no sandbox is available")
        env.submit(GOOD)
        assert env.get_reward() is None and env.result is not None and env.result.status == status
        assert not env.has_session
    with pytest.raises(NoTestsError):
        env.reset(prompt=[{"role": "user", "content": "hi"}], answer="1")


def test_sessions_are_released(mbpp: str) -> None:
    shared = _shared_for(EnvironmentConfig())
    envs = [CodeEnvironment() for _ in range(3)]
    for env in envs:
        env.reset(problem=mbpp)
    assert len(shared.leased) == 3 and environment_stats()["sessions_leased"] == 3
    envs[0].get_reward()  # the reward computed: released
    assert not envs[0].has_session and len(shared.leased) == 2
    envs[1].reset(problem=mbpp)  # TRL reuses instances: the next reset releases the last episode's session
    assert len(shared.leased) == 2
    del envs[2], env  # discarded: released by its finalizer
    gc.collect()
    assert len(shared.leased) == 1
    envs[1].get_reward()
    assert not shared.leased and not shared.session_pool()._leased
    assert environment_stats()["sessions_leased"] == 0 and environment_stats()["sessions_started"] == 4
    close_environments()
    assert environment_stats() == {"python_calls": 0, "bash_calls": 0, "sessions_started": 0, "sessions_forked": 0,
                                   "episodes_graded": 0, "sessions_leased": 0}


def test_a_groups_rollouts_fork_one_prepared_session(mbpp: str) -> None:
    """Rows with set-up: it runs once per row; every other rollout of the row is a fork of it,
    and what one rollout does stays in its own session."""
    row = {"problem": mbpp, "files": {"data.txt": "3 1 2"},
           "setup": "import os\nTOKEN = os.urandom(8).hex()\nDATA = [3, 1, 2]"}
    group = [CodeEnvironment() for _ in range(4)]
    for env in group:
        env.reset(**row)
    tokens = {env.python("TOKEN") for env in group}
    assert len(tokens) == 1  # the set-up ran once: every rollout holds its result
    stats = environment_stats()
    assert stats["sessions_started"] == 1 and stats["sessions_forked"] == 3
    group[0].python("DATA.append(99)")
    group[0].bash("echo changed > data.txt")
    assert [env.python("len(DATA)") for env in group] == ["4", "3", "3", "3"]
    assert all(env.bash("cat data.txt").startswith("3 1 2") for env in group[1:])
    group[1].submit(GOOD)
    assert group[1].get_reward() == 1.0 and group[2].get_reward() == 0.0  # graded in fresh sandboxes, as ever
    other = CodeEnvironment()
    other.reset(**{**row, "setup": "TOKEN = 'another row'"})  # another row: set up on its own
    assert other.python("TOKEN") == "'another row'" and environment_stats()["sessions_started"] == 2
    for env in (*group, other):
        env.get_reward()
    assert environment_stats()["sessions_leased"] == 0


def test_pickled_copy_holds_no_session(mbpp: str) -> None:
    env = CodeEnvironment(EnvironmentConfig(max_output_chars=500))
    env.reset(problem=mbpp)
    env.python("x = 1")
    copy = pickle.loads(pickle.dumps(env))
    assert not copy.has_session and copy.cells == ("x = 1",) and copy.config == env.config
    copy.reset(problem=mbpp)
    assert copy.python("1 + 1") == "2" and env.python("x") == "1"
    assert len(_shared_for(env.config).leased) == 2


def test_batch_grader_logs_like_code_reward_and_get_reward_reuses_its_verdicts(mbpp: str) -> None:
    envs = [CodeEnvironment() for _ in range(4)]
    for env in envs:
        env.reset(problem=mbpp)
    envs[0].submit(GOOD)
    envs[1].submit(WRONG)
    envs[2].python(GOOD)
    envs[3].bash("ls")
    rec = Recorder()
    grader = CodeEnvironmentGrader()
    n = len(envs)
    out = grader(prompts=[[{"role": "user", "content": "p"}]] * n, completions=[[]] * n, completion_ids=[[1]] * n,
                 problem=[mbpp] * n, environments=envs, trainer_state=None,
                 log_extra=rec.log_extra, log_metric=rec.log_metric)
    assert out == [None] * n  # not a reward source: the environments' get_reward is
    assert rec.extra["code_status"] == ["passed", "failed", "passed", "no_code"]
    assert rec.extra["graded_from"] == ["submission", "submission", "cells", "nothing"]
    assert rec.extra["tests_passed"] == [3, 0, 3, 0]
    metrics = {k: v[0] for k, v in rec.metrics.items()}
    assert all(len(v) == 1 for v in rec.metrics.values())
    assert metrics["code/pass_rate"] == 0.5 and metrics["code/infra_failures"] == 0.0
    assert metrics["env/submitted"] == 0.5 and metrics["env/graded_from_cells"] == 0.25
    assert metrics["env/tool_calls"] == 1.0 and metrics["env/python_calls"] == 0.25
    assert "code/sandbox_latency_s" in metrics and "code/grade_wall_s" in metrics
    shared = _shared_for(envs[0].config)
    graded = shared.stats["episodes_graded"]
    assert not shared.leased  # grading released every session
    assert [env.get_reward() for env in envs] == [1.0, 0.0, 1.0, 0.0]
    assert shared.stats["episodes_graded"] == graded  # no second grading
    with pytest.raises(ValueError, match="environments"):
        grader(prompts=["p"], completions=["c"], problem=[mbpp])


# --------------------------------------------------------------------------- GRPO end to end

@pytest.mark.slow
def test_grpo_trains_with_tool_calls_that_run_in_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    pytest.importorskip("trl")
    spec = importlib.util.spec_from_file_location("trl_environment", REPO / "examples" / "trl_environment.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "trl_environment", module)  # its dataclasses look their module up
    monkeypatch.setattr(sys, "path", list(sys.path))  # the example prepends the repository root
    spec.loader.exec_module(module)
    # A tiny model fitted on tool-call transcripts first, then real GRPO steps with
    # environment_factory=CodeEnvironment: no mock of TRL, of generation or of the sandboxes.
    run = module.main(steps=2)
    assert run.steps == 2 and run.fit_loss < 0.05
    steps = [entry for entry in run.log_history if "rewards/CodeEnvironment/mean" in entry]
    assert len(steps) == 2
    for entry in steps:
        assert isinstance(entry["rewards/CodeEnvironment/mean"], float)  # rewards computed, not None
        for key in ("tools/call_frequency", "code/pass_rate", "env/tool_calls", "env/python_calls"):
            assert key in entry, f"{key} missing from {sorted(entry)}"
        assert entry["code/infra_failures"] == 0.0 and entry["tools/failure_frequency"] == 0.0
    assert sum(entry["tools/call_frequency"] for entry in steps) > 0
    # The model's tool calls ran in sessions: the session counter, and outputs only a run can give.
    assert run.stats["python_calls"] >= 1 and run.stats["sessions_started"] >= 8
    outputs = [m["content"] for completion in run.completions for m in completion
               if isinstance(m, dict) and m.get("role") == "tool" and m.get("name") == "python"]
    assert set(outputs) & {"5", "1"}, outputs  # print(add(2, 3)) / print(smallest_num([3, 1, 2])) executed
    assert run.leased_after == 0  # every rollout's session released
