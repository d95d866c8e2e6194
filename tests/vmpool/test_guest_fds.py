"""The guest's fd placement for a forked child (``_place_fds``), on every arrangement of sources.

A child puts the fds it was handed on 0, 1, 2, ... before anything else runs; a source that
sits on a target number must not be overwritten before it is placed. Each case runs in a
forked child of the test (the helper rearranges the process's own fds 0..n).
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import pytest

GUEST = Path(__file__).resolve().parents[2] / "vmpool" / "_guest"


def _place_in_child(arrangement: list[int]) -> int:
    """Fork; in the child, put a distinct pipe end on each fd of ``arrangement``, call
    _place_fds on them and exit 0 when fd i holds the end that was on arrangement[i]."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            sys.path.insert(0, str(GUEST))
            from _vmpool_procs import _place_fds

            pipes = [os.pipe() for _ in arrangement]
            # Park every pipe end far away, then move one onto each requested number.
            parked = [os.dup2(r, 200 + i) for i, (r, _w) in enumerate(pipes)]
            wanted = {}
            for i, number in enumerate(arrangement):
                os.dup2(parked[i], number)
                wanted[i] = os.fstat(parked[i]).st_ino
            _place_fds(list(arrangement))
            code = 0 if all(os.fstat(i).st_ino == wanted[i] for i in range(len(arrangement))) else 2
        except BaseException:
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize("arrangement", [
    [3, 4, 5, 6],  # what the zygote receives: above 0..2
    [6, 5, 4, 3],
    [3, 9, 10, 11],
    *[list(p) for p in itertools.permutations([1, 2, 3, 7])],  # sources on target numbers
    [0, 1, 2, 3],  # already in place
    [2, 0],
    [1, 0, 9],
])
def test_every_source_lands_on_its_target(arrangement: list[int]) -> None:
    assert _place_in_child(arrangement) == 0
