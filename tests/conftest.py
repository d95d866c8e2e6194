"""Shared fixtures."""

from __future__ import annotations

import pytest

from tests._procs import sandbox_processes


@pytest.fixture
def no_leaks():
    """Fail the test if it leaves any sandbox process running."""
    before = {pid for pid, _, _ in sandbox_processes()}
    yield
    leaked = [p for p in sandbox_processes() if p[0] not in before]
    assert not leaked, f"sandbox processes leaked: {leaked}"
