from __future__ import annotations

import pytest

from vmpool import Pool, PoolConfig


@pytest.fixture(scope="module")
def pool():
    """A small pool owned by one test module; closed (with every sandbox) at its end."""
    with Pool(PoolConfig(size=2, transport_slack_s=5.0)) as p:
        yield p
