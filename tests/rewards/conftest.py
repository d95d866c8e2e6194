"""Fixtures for the rewards tests: data paths and a real vmpool pool."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "rewards" / "data"

@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


def _pool_available() -> str | None:
    try:
        from vmpool import Pool  # noqa: F401
    except Exception as exc:  # pragma: no cover - depends on the lead's package state
        return f"vmpool.Pool not importable: {exc}"
    return None


@pytest.fixture(scope="session")
def pool() -> Iterator[object]:
    """A real namespace-backend vmpool pool shared by the integration tests, closed at the end."""
    reason = _pool_available()
    if reason:
        pytest.skip(reason)
    from vmpool import Pool, PoolConfig
    p = Pool(PoolConfig(size=max(2, min(4, os.cpu_count() or 2))))
    try:
        yield p
    finally:
        p.close()


@pytest.fixture(scope="session")
def grader(pool: object) -> object:
    from rewards import Grader
    return Grader(pool)
