"""Turn a :class:`~rewards.Verdict` into a scalar reward."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._errors import RewardConfigError

if TYPE_CHECKING:
    from ._verdict import Verdict

__all__ = ["RewardConfig", "compute_reward"]

_KINDS = ("binary", "fraction", "weighted")


def _setting(help_text: str, default: object) -> Any:
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class RewardConfig:
    """How verdicts become rewards; every field's help is in its metadata.

    ``binary``: ``pass_bonus`` if every test passed, else 0.0. ``fraction``: the fraction of
    tests passed, in [0, 1]. ``weighted``: ``pass_bonus`` * passed + ``fraction_weight`` *
    fraction, with ``no_code_penalty`` / ``syntax_error_penalty`` replacing it when there
    was no code or it did not compile.

    Raises:
        RewardConfigError: a value is out of range; the message says what to change.
    """

    kind: str = _setting(
        "'binary': pass_bonus on a full pass, else 0; 'fraction': share of tests passed; 'weighted': "
        "pass_bonus on a full pass + fraction_weight x share of tests passed, with the penalties below "
        "replacing it when there is no code or it does not compile", "binary")
    pass_bonus: float = _setting("reward of a full pass ('binary', 'weighted'); > 0", 1.0)
    fraction_weight: float = _setting("weight of the share of tests passed ('weighted'); >= 0", 0.1)
    no_code_penalty: float = _setting("reward when the completion holds no code ('weighted'); <= 0", -0.2)
    syntax_error_penalty: float = _setting("reward when the code does not compile, a syntax or a compile error "
                                           "('weighted'); <= 0", -0.1)

    def __post_init__(self) -> None:
        def fail(name: str, rule: str) -> RewardConfigError:
            return RewardConfigError(f"is {getattr(self, name)!r}: {rule}", name, owner="RewardConfig")

        if self.kind not in _KINDS:
            raise fail("kind", f"set it to one of {', '.join(_KINDS)}")
        for name in ("pass_bonus", "fraction_weight", "no_code_penalty", "syntax_error_penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise fail(name, "set it to a finite number")
        if self.pass_bonus <= 0:
            raise fail("pass_bonus", "set it to a number > 0")
        if self.fraction_weight < 0:
            raise fail("fraction_weight", "set it to a number >= 0")
        for name in ("no_code_penalty", "syntax_error_penalty"):
            if getattr(self, name) > 0:
                raise fail(name, "set it to 0 or a negative number (a positive value would reward broken output)")


def compute_reward(verdict: Verdict, cfg: RewardConfig | None = None) -> float | None:
    """The reward of one verdict.

    Args:
        verdict: the grading verdict.
        cfg: the shaping configuration (default :class:`RewardConfig()`).

    Returns:
        ``None`` exactly when the verdict is an infrastructure failure (``passed is None``),
        otherwise a float as described in :class:`RewardConfig`.
    """
    cfg = cfg or RewardConfig()
    if verdict.passed is None:
        return None
    total = verdict.tests_total
    earned = verdict.credit if verdict.credit is not None else verdict.tests_passed
    fraction = (earned / total) if total > 0 else 0.0
    fraction = 1.0 if verdict.passed else min(fraction, 1.0)
    if cfg.kind == "binary":
        return float(cfg.pass_bonus) if verdict.passed else 0.0
    if cfg.kind == "fraction":
        return float(fraction)
    if verdict.outcome == "no_code":
        return float(cfg.no_code_penalty)
    if verdict.outcome in ("syntax_error", "compile_error"):
        return float(cfg.syntax_error_penalty)
    return float(cfg.pass_bonus) * (1.0 if verdict.passed else 0.0) + float(cfg.fraction_weight) * fraction
