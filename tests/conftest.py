"""Shared fixtures."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests._procs import descendants


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Fail the test if it leaves processes of its own behind (sandboxes included).

    Looks only below this test process, so sandboxes of other test runs on the same
    machine do not count; a closed pool's processes get a moment to be reaped.
    """
    before = descendants(os.getpid())
    yield
    deadline = time.monotonic() + 5.0
    while True:
        leaked = descendants(os.getpid()) - before
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not leaked, f"processes left behind: {sorted(leaked)}"


@pytest.fixture(scope="session")
def guest_image() -> object:
    """The default microvm guest image, built once per run when missing (cached on disk):
    the product never builds one on its own (a Pool only finds it)."""
    from vmpool import ImageConfig, build_image

    return build_image(ImageConfig())


@pytest.fixture(autouse=True)
def _microvm_needs_the_image(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("microvm") is not None:
        request.getfixturevalue("guest_image")
