"""Soak: a mix of correct, wrong, crashing, timing-out and hostile programs through one pool.

Every program gets exactly one plausible result; this process's fd count and RSS stay flat;
no program process outlives its result; nothing (process, /tmp/vmpool-* path, /dev/shm file)
outlives the pool. RELIABILITY_SOAK_N=20000 runs the long variant.
"""

from __future__ import annotations

import os
import time

import pytest

from bench.reliability import run_soak
from bench.reliability_cases import descendants, scratch_entries
from vmpool import Pool, PoolConfig

FD_SLACK = 4
RSS_SLACK = 32 << 20


def _soak(n: int, chunk: int) -> None:
    before_paths = scratch_entries()
    before_procs = descendants(os.getpid())
    with Pool(PoolConfig(size=2)) as pool:
        report = run_soak(pool, n, chunk=chunk)
    assert report.lost == 0 and report.results == n
    assert not report.implausible, report.implausible
    assert not report.strays, report.strays[:10]
    assert report.fd_growth <= FD_SLACK, report.fds
    assert report.rss_growth <= RSS_SLACK, [r >> 20 for r in report.rss]
    deadline = time.monotonic() + 5
    while (left := descendants(os.getpid()) - before_procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, left
    assert not scratch_entries() - before_paths, scratch_entries() - before_paths
    kinds = set(report.statuses)
    assert {"ok", "runtime_error", "timeout", "output_limit", "memory_limit"} <= kinds, report.statuses


def test_soak_short() -> None:
    _soak(200, chunk=50)


@pytest.mark.slow
def test_soak() -> None:
    _soak(int(os.environ.get("RELIABILITY_SOAK_N", "2000")), chunk=200)
