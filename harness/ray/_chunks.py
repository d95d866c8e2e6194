"""Chunk scheduling of :class:`~harness.ray._client.RayGrader`: dispatch to the live actor with
the most free capacity, exactly-once delivery, bounded resubmission after actor deaths, and
``SANDBOX_ERROR`` verdicts for chunks that run out of resubmissions. Split out of ``_client``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rewards import Outcome, Problem, Verdict, excerpt
from vmpool import Status

from ._support import _Metrics, _short, _Slot, logger

_MAX_AUTO_CHUNK = 64


@dataclass
class _Run:
    """State of one grade_batch call."""

    items: list[tuple[Problem, Any]]
    bounds: list[tuple[int, int]]
    results: list[Verdict | None]
    attempts: list[int]
    done: list[bool]
    pending: deque[int] = field(default_factory=deque)
    inflight: dict[Any, tuple[int, _Slot, float]] = field(default_factory=dict)


class _ChunkScheduler:
    """Chunk scheduling methods of :class:`~harness.ray._client.RayGrader` (a mixin)."""

    if TYPE_CHECKING:  # what RayGrader, whose mixin this is, provides
        chunks_in_flight: int
        max_resubmits: int
        stats: dict[str, int]
        _slots: list[_Slot]
        _metrics: _Metrics

        @property
        def capacity(self) -> int: ...

        def _on_actor_failure(self, slot: _Slot, exc: BaseException) -> None: ...

    def _auto_chunk(self, n: int) -> int:
        capacity = max(1, self.capacity)
        return max(1, min(_MAX_AUTO_CHUNK, math.ceil(n / (capacity * self.chunks_in_flight * 2))))

    def _dispatch(self, run: _Run) -> None:
        while run.pending:
            live = [s for s in self._slots if s.state == "live"]
            if not live:
                return
            limit = {id(s): s.capacity * self.chunks_in_flight for s in live}
            slot = max(live, key=lambda s: ((limit[id(s)] - s.inflight) / limit[id(s)], s.capacity))
            if slot.inflight >= limit[id(slot)]:
                return
            cid = run.pending.popleft()
            start, end = run.bounds[cid]
            ref = slot.actor.grade_chunk.remote(run.items[start:end])
            slot.inflight += 1
            run.inflight[ref] = (cid, slot, time.monotonic())

    def _chunk_done(self, run: _Run, ref: Any) -> None:
        import ray

        cid, slot, started = run.inflight.pop(ref)
        slot.inflight = max(0, slot.inflight - 1)
        start, end = run.bounds[cid]
        try:
            verdicts = ray.get(ref)
        except _actor_lost_errors() as exc:
            self._on_actor_failure(slot, exc)
            if run.done[cid]:
                return
            run.attempts[cid] += 1
            if run.attempts[cid] > self.max_resubmits:
                self._fail_chunk(run, cid, f"grader actor died {run.attempts[cid]} times: {_short(exc)}")
                return
            self.stats["resubmitted"] += 1
            self._metrics.inc("resubmitted")
            logger.info("resubmitting chunk %d (%d programs) after: %s", cid, end - start, _short(exc))
            run.pending.appendleft(cid)
            return
        except ray.exceptions.RayTaskError as exc:
            raise exc.as_instanceof_cause() from None
        if run.done[cid]:  # cannot happen (one ref per submission), but never deliver twice
            return
        if len(verdicts) != end - start:
            raise RuntimeError(f"grader actor returned {len(verdicts)} verdicts for {end - start} programs")
        run.results[start:end] = verdicts
        run.done[cid] = True
        self.stats["programs"] += end - start
        self.stats["chunks"] += 1
        self._metrics.inc("programs", end - start)
        self._metrics.observe(time.monotonic() - started)

    def _fail_chunk(self, run: _Run, cid: int, why: str) -> None:
        start, end = run.bounds[cid]
        for i in range(start, end):
            problem = run.items[i][0]
            run.results[i] = Verdict(None, Outcome.SANDBOX_ERROR, 0, problem.tests.count, excerpt(why, 500), 0.0,
                                     Status.SANDBOX_ERROR)
        run.done[cid] = True
        self.stats["failed_programs"] += end - start
        logger.error("chunk %d (%d programs) reported as sandbox_error: %s", cid, end - start, why)

    def _fail_pending(self, run: _Run, why: str) -> None:
        while run.pending:
            self._fail_chunk(run, run.pending.popleft(), why)


def _actor_lost_errors() -> tuple[type[BaseException], ...]:
    """Errors meaning "the actor (or its node) went away", not "the program failed".

    ``ActorDiedError`` and ``ActorUnavailableError`` are ``RayActorError`` subclasses; an actor
    pinned to a node that died reports ``ActorUnschedulableError``; a result lost with its node
    reports ``ObjectLostError`` (``OwnerDiedError`` is a subclass).
    """
    from ray import exceptions as rx

    names = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "ActorUnschedulableError",
             "ObjectLostError", "OwnerDiedError")
    return tuple(getattr(rx, name) for name in names if hasattr(rx, name))
