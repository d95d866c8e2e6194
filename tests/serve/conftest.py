"""Fixtures of the service tests: a service on a free loopback port, verl's real client."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest

from bench.serve import verl_client

from ._server import running


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    """A service with the tests' key, owned by one test module (a module may define its own)."""
    with running() as base:
        yield base


@pytest.fixture(scope="module")
def verl() -> ModuleType:
    """verl's SandboxFusion client module (``verl/utils/reward_score/sandbox_fusion/utils.py``)."""
    return verl_client()
