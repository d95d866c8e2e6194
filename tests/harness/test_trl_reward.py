"""The TRL reward functions (harness.CodeReward / AsyncCodeReward) on a real sandbox pool."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import json
import logging
import pickle
import sys
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from harness import AsyncCodeReward, CodeReward, NoTestsError, RewardBatch
from rewards import Outcome, RewardConfig, load_problems, problem_to_dict
from tests.harness._recorder import Recorder
from vmpool import ExecResult, Limits, Pool, PoolConfig, Status

pytestmark = pytest.mark.usefixtures("no_leaks")

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "rewards" / "data"

GOOD = "def smallest_num(xs):\n    return min(xs)\n"
WRONG = "def smallest_num(xs):\n    return max(xs)\n"
HACK = "import sys\nsys.exit(0)\n"


@pytest.fixture(scope="module")
def mbpp_problem() -> str:
    """MBPP/62 (smallest_num, three asserts) as the native JSON a dataset column carries."""
    problem = load_problems(DATA / "mbpp_sanitized.jsonl").by_id()["MBPP/62"]
    return json.dumps(problem_to_dict(problem))


@pytest.fixture(scope="module")
def humaneval_rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / "humaneval.jsonl").read_text().splitlines()[:2]]


@pytest.fixture
def pool() -> Iterator[Pool]:
    with Pool(PoolConfig(size=2)) as p:
        yield p


def _call(reward: Any, completions: list[Any], problem: str, rec: Recorder | None = None, **extra: Any) -> Any:
    """Call the way GRPOTrainer._calculate_rewards does (keyword args, TRL's own kwargs included)."""
    n = len(completions)
    kwargs: dict[str, Any] = {"problem": [problem] * n, "task_id": ["MBPP/62"] * n, "trainer_state": object()}
    if rec is not None:
        kwargs.update(log_extra=rec.log_extra, log_metric=rec.log_metric)
    kwargs.update(extra)
    return reward(prompts=["Write smallest_num."] * n, completions=completions,
                  completion_ids=[[1, 2, 3]] * n, **kwargs)


# --------------------------------------------------------------------------- the TRL contract

def test_name_and_async_detection_match_trl() -> None:
    utils = pytest.importorskip("trl.trainer.utils")
    assert utils.get_callable_name(CodeReward()) == "code_reward"
    assert utils.get_callable_name(CodeReward(name="mbpp_pass")) == "mbpp_pass"
    assert utils.get_callable_name(AsyncCodeReward()) == "code_reward"
    assert not utils.is_async_callable(CodeReward())
    assert utils.is_async_callable(AsyncCodeReward())


def test_correct_wrong_and_hack(pool: Pool, mbpp_problem: str) -> None:
    reward = CodeReward(pool=pool)
    assert _call(reward, [GOOD, WRONG, HACK], mbpp_problem) == [1.0, 0.0, 0.0]


def test_conversational_and_fenced_completions(pool: Pool, mbpp_problem: str) -> None:
    reward = CodeReward(pool=pool)
    chat = [{"role": "assistant", "content": f"Here you go:\n```python\n{GOOD}```\nDone."}]
    chat_wrong = [{"role": "assistant", "content": f"```python\n{WRONG}```"}]
    fenced = f"Sure.\n```python\n{GOOD}```\n"
    assert _call(reward, [chat, chat_wrong, fenced], mbpp_problem) == [1.0, 0.0, 1.0]


def test_weighted_shaping_and_host_side_verdicts(pool: Pool, mbpp_problem: str) -> None:
    reward = CodeReward(RewardConfig(kind="weighted"), pool=pool)
    partial = "def smallest_num(xs):\n    return xs[0] if xs[0] == 1 else min(xs) + 1\n"
    out = _call(reward, [GOOD, "   ", "def (:", partial], mbpp_problem)
    assert out[0] == pytest.approx(1.1) and out[1] == pytest.approx(-0.2) and out[2] == pytest.approx(-0.1)
    assert 0.0 < out[3] < 0.1  # a fraction of the tests passed, no pass bonus


def test_humaneval_raw_columns_text_and_chat(pool: Pool, humaneval_rows: list[dict[str, Any]]) -> None:
    reward = CodeReward(pool=pool)
    r0, r1 = humaneval_rows
    cols = {"test": [r0["test"], r0["test"], r1["test"]], "entry_point": [r0["entry_point"], r0["entry_point"],
                                                                           r1["entry_point"]]}
    text = reward(prompts=[r0["prompt"], r0["prompt"], r1["prompt"]],
                  completions=[r0["canonical_solution"], "    return None\n", r1["canonical_solution"]], **cols)
    assert text == [1.0, 0.0, 1.0]
    # A conversational prompt: the completion must hold the whole function (program mode).
    chat_prompt = [{"role": "user", "content": r0["prompt"]}]
    whole = r0["prompt"] + r0["canonical_solution"]
    chat = reward(prompts=[chat_prompt] * 2,
                  completions=[[{"role": "assistant", "content": f"```python\n{whole}```"}],
                               [{"role": "assistant", "content": r0["canonical_solution"]}]],
                  test=[r0["test"]] * 2, entry_point=[r0["entry_point"]] * 2)
    assert chat[0] == 1.0 and chat[1] == 0.0


def test_mbpp_raw_and_native_tests_columns(pool: Pool) -> None:
    reward = CodeReward(pool=pool)
    tests = ["assert smallest_num([3, 1, 2]) == 1", "assert smallest_num([5]) == 5"]
    assert reward(prompts=["p", "p"], completions=[GOOD, WRONG], test_list=[tests, tests]) == [1.0, 0.0]
    native = {"kind": "call", "fn_name": "smallest_num", "cases": [{"args": [[4, 2]], "expected": 2}]}
    assert reward(prompts=["p", "p"], completions=[GOOD, WRONG], tests=[json.dumps(native), native]) == [1.0, 0.0]


# --------------------------------------------------------------------------- batching

def test_identical_samples_run_once_in_one_pool_pass(pool: Pool, mbpp_problem: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    submitted: list[object] = []
    real_submit = pool.submit

    def counting_submit(request):
        submitted.append(request)
        return real_submit(request)

    monkeypatch.setattr(pool, "submit", counting_submit)
    reward = CodeReward(pool=pool)
    chat_good = [{"role": "assistant", "content": f"```python\n{GOOD}```"}]
    out = _call(reward, [GOOD, GOOD, chat_good, WRONG, WRONG, GOOD, "no code here (", WRONG], mbpp_problem)
    assert out == [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    assert len(submitted) == 2, "one request per distinct program"


# --------------------------------------------------------------------------- logging

def test_log_extra_and_log_metric(pool: Pool, mbpp_problem: str) -> None:
    rec = Recorder()
    reward = CodeReward(limits=Limits(wall_s=1.0), pool=pool)
    out = _call(reward, [GOOD, WRONG, HACK, "while True: pass\n"], mbpp_problem, rec)
    assert out == [1.0, 0.0, 0.0, 0.0]
    assert rec.extra["code_status"] == ["passed", "failed", "runtime_error", "timeout"]
    assert rec.extra["tests_passed"] == [3, 0, 0, 0]
    metrics = {k: v[0] for k, v in rec.metrics.items()}
    assert all(len(v) == 1 for v in rec.metrics.values())
    assert metrics["code/pass_rate"] == pytest.approx(0.25)
    assert metrics["code/timeouts"] == 1.0
    assert metrics["code/infra_failures"] == 0.0
    assert metrics["code/sandbox_latency_s"] > 0.0
    assert metrics["code/grade_wall_s"] > 0.0


def test_score_returns_everything_without_logging(pool: Pool, mbpp_problem: str) -> None:
    batch = CodeReward(pool=pool).score(["p", "p"], [GOOD, WRONG], problem=[mbpp_problem] * 2)
    assert isinstance(batch, RewardBatch)
    assert batch.rewards == [1.0, 0.0] and batch.statuses == ["passed", "failed"] and batch.tests_passed == [3, 0]


# --------------------------------------------------------------------------- infrastructure failures

def test_pool_that_cannot_start_gives_none_never_zero(mbpp_problem: str) -> None:
    rec = Recorder()
    with CodeReward(pool_config=PoolConfig(size=2, python="/nonexistent/python3", start_timeout_s=5)) as reward:
        out = _call(reward, [GOOD, WRONG, "def (:"], mbpp_problem, rec)
    # Sandboxed samples: None. A syntax error is decided on the host: still the model's fault.
    assert out == [None, None, 0.0]
    assert rec.extra["code_status"] == ["sandbox_error", "sandbox_error", "syntax_error"]
    assert rec.metrics["code/infra_failures"] == [2.0]
    assert rec.metrics["code/pass_rate"] == [0.0]


def test_sandbox_error_results_give_none(pool: Pool, mbpp_problem: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(request: object) -> Future:
        future: Future = Future()
        future.set_result(ExecResult(status=Status.SANDBOX_ERROR, error="x"))
        return future

    monkeypatch.setattr(pool, "submit", broken)
    rec = Recorder()
    out = _call(CodeReward(pool=pool), [GOOD, WRONG], mbpp_problem, rec)
    assert out == [None, None]
    assert rec.metrics["code/infra_failures"] == [2.0] and "code/pass_rate" not in rec.metrics


def test_bad_rows_are_none_and_missing_columns_raise(pool: Pool, mbpp_problem: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    reward = CodeReward(pool=pool)
    with caplog.at_level(logging.WARNING, logger="harness"):
        out = reward(prompts=["p"] * 4, completions=[GOOD] * 4,
                     problem=[mbpp_problem, "{not json", '{"task_id": "x"}', "[]"],
                     log_extra=rec.log_extra, log_metric=rec.log_metric)
    assert out == [1.0, None, None, None]
    assert rec.extra["code_status"] == ["passed"] + ["bad_problem"] * 3 and rec.metrics["code/bad_problems"] == [3.0]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # one per batch, not per row
    assert "3 of 4 rows" in warnings[0].getMessage() and "column 'problem'" in warnings[0].getMessage()
    with pytest.raises(NoTestsError, match="no tests: expected a 'problem' column") as info:
        reward(prompts=["p"], completions=[GOOD], answer=["1"])
    assert "got columns ['answer']" in str(info.value) and isinstance(info.value, LookupError)
    with pytest.raises(ValueError, match="one value per completion"):
        reward(prompts=["p", "p"], completions=[GOOD, GOOD], problem=[mbpp_problem])


# --------------------------------------------------------------------------- lifecycle

def test_lazy_pool_pickling_and_close(mbpp_problem: str) -> None:
    reward = CodeReward(pool_config=PoolConfig(size=2), name="mbpp")
    copy0 = pickle.loads(pickle.dumps(reward))  # before the first call: nothing started
    assert reward._pool is None
    try:
        assert _call(reward, [GOOD, WRONG], mbpp_problem) == [1.0, 0.0]
        assert reward._pool is not None
        blob = pickle.dumps(reward)  # after: the pool stays behind
        copy1 = pickle.loads(blob)
        assert copy1._pool is None and copy1.__name__ == "mbpp" and copy0.__name__ == "mbpp"
        with copy1:
            assert _call(copy1, [WRONG, GOOD], mbpp_problem) == [0.0, 1.0]
        assert copy1._pool is None
    finally:
        reward.close()
        reward.close()  # idempotent
    assert reward._pool is None


def test_injected_pool_is_not_closed(pool: Pool, mbpp_problem: str) -> None:
    with CodeReward(pool=pool) as reward:
        _call(reward, [GOOD], mbpp_problem)
    assert pool.run is not None and _call(CodeReward(pool=pool), [GOOD], mbpp_problem) == [1.0]


def test_async_variant_under_asyncio(pool: Pool, mbpp_problem: str) -> None:
    rec = Recorder()
    reward = AsyncCodeReward(pool=pool)
    other = AsyncCodeReward(pool=pool, name="other")

    async def both() -> list:
        return await asyncio.gather(_call(reward, [GOOD, WRONG], mbpp_problem, rec),
                                    _call(other, [HACK, GOOD], mbpp_problem))

    first, second = asyncio.run(both())
    assert first == [1.0, 0.0] and second == [0.0, 1.0]
    assert rec.extra["code_status"] == ["passed", "failed"] and rec.metrics["code/pass_rate"] == [0.5]
    assert pickle.loads(pickle.dumps(reward)).__name__ == "code_reward"


# --------------------------------------------------------------------------- GRPO end to end

@pytest.mark.slow
def test_grpo_tiny_example_trains_with_our_reward(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    pytest.importorskip("trl")
    spec = importlib.util.spec_from_file_location("grpo_tiny", REPO / "examples" / "grpo_tiny.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "grpo_tiny", module)  # its dataclasses look their module up
    monkeypatch.setattr(sys, "path", list(sys.path))  # the example prepends the repository root
    spec.loader.exec_module(module)
    run = module.main(steps=2)
    assert run.steps == 2
    steps = [entry for entry in run.log_history if "rewards/code_reward/mean" in entry]
    assert len(steps) == 2
    for entry in steps:
        for key in ("rewards/code_reward/std", "code/pass_rate", "code/infra_failures", "code/timeouts",
                    "code/sandbox_latency_s"):
            assert key in entry, f"{key} missing from {sorted(entry)}"
        assert entry["code/infra_failures"] == 0.0
    columns = run.extra["completion_columns"]
    assert {"code_status", "tests_passed"} <= set(columns)
    assert columns["code_status"] and set(columns["code_status"]) <= {o.value for o in Outcome}
    assert run.correct_rewards == [1.0] * len(run.correct_rewards)
    assert run.wrong_rewards == [0.0] * len(run.wrong_rewards)


def test_one_looping_completion_does_not_stall_the_step(pool: Pool) -> None:
    # A 101-case CodeContests problem: with a binary reward, the looping sample stops at its
    # first failed case (the queued cases never start), so it costs about one time limit.
    problem = next(p for p in load_problems(DATA / "code_contests_sample.jsonl") if p.tests.count >= 100)
    column = json.dumps(problem_to_dict(dataclasses.replace(problem, time_limit_s=0.5)))
    before = pool.stats["programs"]
    reward = CodeReward(pool=pool)
    out = reward(prompts=["p", "p"], completions=["while True:\n    pass\n", "print('?')\n"],
                 problem=[column, column])
    assert out == [0.0, 0.0]
    assert pool.stats["programs"] - before < problem.tests.count // 4
