"""The service the serve tests drive: ``harness.serve.running`` with the tests' key."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from harness.serve import ServeConfig
from harness.serve import running as _running

TOKEN = "test-token-0123456789"


@contextmanager
def running(config: ServeConfig | None = None) -> Iterator[str]:
    """Serve ``config`` (default: loopback, ``TOKEN``) on a free port; yields its base URL."""
    with _running(config or ServeConfig(tokens=(TOKEN,), warm_sessions=2)) as url:
        yield url
