"""Code extraction, output/value comparison and reward shaping (pure host-side logic)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewards import (
    Outcome,
    RewardConfig,
    RewardConfigError,
    Verdict,
    compute_reward,
    extract_code,
    stdout_matches,
    values_equal,
)

# ------------------------------------------------------------------ extraction


def test_extract_plain_and_fenced() -> None:
    assert extract_code("print(1)") == "print(1)"
    assert extract_code("    return x\n") == "    return x\n"  # continue mode keeps indentation
    assert extract_code("text\n```python\na = 1\n```\nmore\n```py\nb = 2\n```\n") == "b = 2\n"
    assert extract_code("```\nc = 3\n```") == "c = 3\n"
    assert extract_code("Here:\n```python\nx = 1\nprint(x)") == "x = 1\nprint(x)"  # unterminated final fence
    assert extract_code("```json\n{}\n```") is None
    assert extract_code("```python\n```") is None


@pytest.mark.parametrize("value", ["", "   \n\t", None, 3, b"print(1)", [], {}, [{"role": "user", "content": "x"}]])
def test_extract_nothing(value: object) -> None:
    assert extract_code(value) is None


def test_extract_chat_messages() -> None:
    msgs = [{"role": "user", "content": "write"}, {"role": "assistant", "content": "```python\nold\n```"},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": [{"type": "text", "text": "```python\n"}, {"type": "text", "text": "new\n```"}]}]
    assert extract_code(msgs) == "new\n"
    assert extract_code({"role": "assistant", "content": "x = 1"}) == "x = 1"


json_like = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                         lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=10)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), json_like, st.lists(st.dictionaries(st.sampled_from(["role", "content", "type", "text"]),
                                                               json_like))))
def test_extract_never_raises(value: object) -> None:
    result = extract_code(value)
    assert result is None or (isinstance(result, str) and result.strip())

# ------------------------------------------------------------------ stdout comparison


def test_stdout_whitespace_tolerance() -> None:
    assert stdout_matches("1 2\n3\n", "1  2 \n3")
    assert stdout_matches("1 2\n3\n\n\n", "1 2\n3\n")
    assert not stdout_matches("12\n3", "1 2\n3")
    assert not stdout_matches("1 2 \n3\n", "1 2\n3", whitespace="exact")
    assert stdout_matches("a\n", "a", whitespace="exact")


def test_stdout_never_truncates_like_zip() -> None:
    assert not stdout_matches("YES\n", "YES\nNO\nYES\n")          # printing only the first line
    assert not stdout_matches("YES\nNO\nYES\nNO\n", "YES\nNO\nYES\n")  # printing extra lines
    assert not stdout_matches("", "0\n")
    assert not stdout_matches("1 2", "1 2 3")


def test_stdout_float_tolerance() -> None:
    assert not stdout_matches("0.3333", "0.333333")
    assert stdout_matches("0.3333", "0.333333", float_tol=1e-3)
    assert stdout_matches("nan", "nan", float_tol=1e-3)  # identical tokens match textually
    assert not stdout_matches("nan", "1.0", float_tol=1e-3)
    assert not stdout_matches("1.5", "abc", float_tol=1.0)


@settings(max_examples=300, deadline=None)
@given(st.text(), st.text(), st.one_of(st.none(), st.floats(min_value=0, max_value=1)),
       st.sampled_from(["tolerant", "exact"]))
def test_stdout_comparator_never_raises(a: str, b: str, tol: float | None, ws: str) -> None:
    assert stdout_matches(a, b, float_tol=tol, whitespace=ws) in (True, False)
    assert stdout_matches(a, a, float_tol=tol, whitespace=ws)

# ------------------------------------------------------------------ value comparison


def test_values_equal_strict() -> None:
    assert values_equal([1, [2, {"a": 3.0}]], [1, (2, {"a": 3})])
    assert not values_equal(True, 1) and not values_equal(1, True) and not values_equal(0, False)
    assert not values_equal(None, 0) and not values_equal("1", 1)
    assert not values_equal([1, 2], [1, 2, 3]) and not values_equal({"a": 1}, {"a": 1, "b": 2})
    assert not values_equal(0.1 + 0.2, 0.3) and values_equal(0.1 + 0.2, 0.3, float_tol=1e-9)
    assert values_equal(math.nan, math.nan) and not values_equal(math.nan, 1.0)

    class Sneaky:
        def __eq__(self, other: object) -> bool:
            return True
    assert not values_equal(Sneaky(), 1) and not values_equal([Sneaky()], [1])

# ------------------------------------------------------------------ shaping


def _v(passed: bool | None, outcome: Outcome, k: int = 0, n: int = 4) -> Verdict:
    return Verdict(passed, outcome, k, n)


def test_rewards_by_kind() -> None:
    binary, frac, weighted = RewardConfig(), RewardConfig(kind="fraction"), RewardConfig(kind="weighted")
    assert compute_reward(_v(True, Outcome.PASSED, 4), binary) == 1.0
    assert compute_reward(_v(False, Outcome.FAILED, 3), binary) == 0.0
    assert compute_reward(_v(False, Outcome.FAILED, 3), frac) == 0.75
    assert compute_reward(_v(False, Outcome.FAILED, 2), weighted) == pytest.approx(0.05)
    assert compute_reward(_v(True, Outcome.PASSED, 4), weighted) == pytest.approx(1.1)
    assert compute_reward(_v(False, Outcome.NO_CODE), weighted) == -0.2
    assert compute_reward(_v(False, Outcome.SYNTAX_ERROR), weighted) == -0.1
    assert compute_reward(_v(False, Outcome.NO_CODE), binary) == 0.0


@pytest.mark.parametrize("kind", ["binary", "fraction", "weighted"])
def test_infrastructure_failure_is_none_never_zero(kind: str) -> None:
    assert compute_reward(_v(None, Outcome.SANDBOX_ERROR), RewardConfig(kind=kind)) is None


@pytest.mark.parametrize("kwargs, hint", [
    ({"kind": "pass_at_k"}, "one of binary"),
    ({"pass_bonus": 0}, "> 0"),
    ({"fraction_weight": -1}, ">= 0"),
    ({"no_code_penalty": 0.5}, "negative"),
    ({"syntax_error_penalty": math.inf}, "finite"),
])
def test_reward_config_validation(kwargs: dict, hint: str) -> None:
    with pytest.raises(RewardConfigError, match=hint):
        RewardConfig(**kwargs)


def test_thinking_is_never_the_program() -> None:
    from rewards import extract_code

    assert extract_code("<think>maybe ```python\nprint(0)\n```</think>\n```python\nprint(1)\n```") == "print(1)\n"
    assert extract_code("<think>\nprint(0)\n</think>print(1)\n").strip() == "print(1)"
    assert extract_code("print(0) is wrong</think>\n```python\nprint(2)\n```") == "print(2)\n"  # tag in the prompt
    assert extract_code("<think>I never finished ```python\nprint(0)\n```") is None
    assert extract_code([{"role": "assistant", "content": "<THINK>x</THINK>```py\nprint(3)\n```"}]) == "print(3)\n"


def test_the_block_that_defines_the_entry_point_wins() -> None:
    from rewards import extract_code

    text = ("```python\ndef add(a, b):\n    return a + b\n```\nUsage:\n```python\nprint(add(1, 2))\n```\n")
    assert extract_code(text, "add") == "def add(a, b):\n    return a + b\n"
    assert extract_code(text) == "print(add(1, 2))\n"  # no entry point known: the last block
    assert extract_code(text, "mul") == "print(add(1, 2))\n"  # none defines it: the last block
    two = "```python\ndef f():\n    return 1\n```\n```python\ndef f():\n    return 2\n```"
    assert extract_code(two, "f") == "def f():\n    return 2\n"  # the last defining one
