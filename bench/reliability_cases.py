"""Shared cases of the reliability suite: hostile programs, reward hacks, the soak mix, leak probes.

Imported by ``tests/reliability`` and by ``python -m harness bench --suite reliability``
(which must not import from ``tests/``). Every hostile program checks, inside the sandbox,
that the limit it attacks is in place *before* it attacks (and refuses otherwise), and
none signals ``-1``: the programs stay safe on a developer's machine even if isolation
were broken.

A hostile case is contained when :attr:`HostileCase.check` accepts its result (a string
says why not). A hack is defeated when its verdict is ``passed is False`` and a correct
control on the same problem passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vmpool import ExecRequest, ExecResult, Limits, Status

from ._reliability_hacks import (  # noqa: F401  (re-exported)
    CALL,
    CALL_LIST,
    HACKS,
    MBPP,
    MBPP_GOOD,
    SQUARE_GOOD,
    SQUARES_GOOD,
    STDIO,
    STDIO_GOOD,
    HackCase,
)
from ._reliability_hostile import (  # noqa: F401  (re-exported)
    _NPROC_GUARD,
    HOSTILE,
    LOOK_FOR_SECRET,
    PLANT_SECRET,
    Check,
    HostileCase,
    hostile_request,
)
from ._reliability_procs import (  # noqa: F401  (re-exported)
    allowed_process,
    cmdline,
    descendants,
    fd_count,
    parent_pid,
    rss_bytes,
    scratch_entries,
    stray_processes,
)

__all__ = [
    "HACKS",
    "HOSTILE",
    "HackCase",
    "HostileCase",
    "allowed_process",
    "descendants",
    "parent_pid",
    "scratch_entries",
    "soak_requests",
    "stray_processes",
]

# ----------------------------------------------------------------------------- soak mix


@dataclass(frozen=True)
class SoakItem:
    """One soak program and the statuses (and stdout, when deterministic) it may end with."""

    kind: str
    request: ExecRequest
    statuses: tuple[Status, ...]
    stdout: str | None = None


_SOAK_LIMITS = Limits(wall_s=3.0, max_processes=16, output_bytes=64 << 10, memory_mb=256)
_SHORT = Limits(wall_s=0.3, max_processes=16, output_bytes=64 << 10, memory_mb=256)


def soak_item(i: int) -> SoakItem:
    """The ``i``-th program of the soak mix: mostly correct, then wrong, crashing, timing-out
    (0.3 s wall limit) and hostile ones (forks, output floods, memory and disk bombs)."""
    slot = i % 20
    if slot < 10:
        return SoakItem("correct", ExecRequest(code=f"print(sum(range({i})))", limits=_SOAK_LIMITS),
                        (Status.OK,), f"{sum(range(i))}\n")
    if slot < 13:
        return SoakItem("wrong", ExecRequest(code=f"print({i} + 1)", limits=_SOAK_LIMITS),
                        (Status.OK,), f"{i + 1}\n")
    if slot < 15:
        return SoakItem("crash", ExecRequest(code=f"raise ValueError({i})", limits=_SOAK_LIMITS),
                        (Status.RUNTIME_ERROR,))
    if slot == 15:
        return SoakItem("timeout", ExecRequest(code="while True: pass", limits=_SHORT), (Status.TIMEOUT,))
    if slot == 16:
        code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n"
                "print('parent')\n")
        return SoakItem("hostile-daemon", ExecRequest(code=code, limits=_SOAK_LIMITS), (Status.OK,), "parent\n")
    if slot == 17:
        return SoakItem("hostile-output", ExecRequest(code="while True: print('x' * 4096)", limits=_SOAK_LIMITS),
                        (Status.OUTPUT_LIMIT,))
    if slot == 18:
        code = _NPROC_GUARD + ("import os\nn = 0\nwhile n < 1000:\n    try:\n        if os.fork() == 0:\n"
                               "            import time; time.sleep(30)\n        n += 1\n"
                               "    except OSError:\n        break\nprint('forks', n)\n")
        return SoakItem("hostile-forks", ExecRequest(code=code, limits=_SHORT), (Status.TIMEOUT, Status.OK))
    code = ("import resource\nassert 0 < resource.getrlimit(resource.RLIMIT_AS)[0] <= 512 << 20\n"
            "x = [bytearray(32 << 20) for _ in range(100)]\n")
    return SoakItem("hostile-memory", ExecRequest(code=code, limits=_SOAK_LIMITS), (Status.MEMORY_LIMIT,))


def soak_requests(start: int, stop: int) -> list[SoakItem]:
    return [soak_item(i) for i in range(start, stop)]


def check_soak_result(item: SoakItem, result: Any) -> str | None:
    """None when ``result`` is plausible for ``item``; else why not."""
    if not isinstance(result, ExecResult):
        return f"{item.kind}: no result ({result!r})"
    if result.status not in item.statuses:
        return f"{item.kind}: status {result.status.value}, expected {[s.value for s in item.statuses]}"
    if item.stdout is not None and result.stdout != item.stdout:
        return f"{item.kind}: stdout {result.stdout[:80]!r}, expected {item.stdout!r}"
    return None
