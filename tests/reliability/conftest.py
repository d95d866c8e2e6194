"""Fixtures of the reliability suite: a namespace pool and a grader over it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vmpool import Pool, PoolConfig


@pytest.fixture(scope="module")
def pool() -> Iterator[Pool]:
    with Pool(PoolConfig(size=2, transport_slack_s=5.0)) as p:
        yield p


@pytest.fixture(scope="module")
def grader(pool: Pool):
    from rewards import Grader

    return Grader(pool)
