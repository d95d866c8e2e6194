"""Exceptions raised by the rewards package (tree drawn in :mod:`rewards`)."""

from __future__ import annotations

from vmpool import SettingsError

__all__ = ["RewardsError", "ProblemFormatError", "RewardConfigError"]


class RewardsError(Exception):
    """Base class of every exception this package raises on purpose."""


class ProblemFormatError(RewardsError, ValueError):
    """A problem record (or a whole problem file) is malformed.

    Args:
        file: the file the record came from ("<memory>" for in-memory data).
        line: 1-based line number of the record (0 when the error concerns the whole file).
        field: the offending field, dotted for nested fields (e.g. ``tests.cases[3].stdout``);
            "" when the record as a whole is bad (e.g. not JSON).
        message: what is wrong and, where possible, what was expected.
    """

    def __init__(self, file: str, line: int, field: str, message: str) -> None:
        self.file = str(file)
        self.line = int(line)
        self.field = field
        self.message = message
        where = f"{self.file}:{self.line}" if self.line else self.file
        what = f" field {field!r}" if field else ""
        super().__init__(f"{where}:{what} {message}")


class RewardConfigError(RewardsError, SettingsError):
    """A :class:`~rewards.RewardConfig` value is invalid: ``key`` names the field, the message
    says what to change (a ``vmpool.SettingsError``, so one loader reads every config)."""
