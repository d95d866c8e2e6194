"""A stand-in for TRL's ``log_extra`` / ``log_metric`` (the reward tests' shared helper)."""

from __future__ import annotations

from typing import Any


class Recorder:
    """Stands in for TRL's ``log_extra`` / ``log_metric``."""

    def __init__(self) -> None:
        self.extra: dict[str, list[Any]] = {}
        self.metrics: dict[str, list[float]] = {}

    def log_extra(self, column: str, values: list) -> None:
        self.extra.setdefault(column, []).extend(values)

    def log_metric(self, name: str, value: float) -> None:
        self.metrics.setdefault(name, []).append(value)
