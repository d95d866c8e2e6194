"""Small pieces of :class:`~harness.ray._client.RayGrader`: the client's view of one actor
(:class:`_Slot`), Ray metrics (:class:`_Metrics`) and helpers. Split out of ``_client``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from vmpool import PoolConfig

# The RayGrader's logger (``harness.ray._client``), shared by the modules it is split into.
logger = logging.getLogger(f"{__package__}._client")


@dataclass(eq=False)
class _Slot:
    """One grader actor as the client sees it."""

    node_id: str
    index: int
    num_cpus: float
    actor: Any
    capacity: int = 1
    state: str = "starting"  # starting | live | down (failed, maybe restarting) | dead
    inflight: int = 0
    replacements: int = 0
    pid: int = 0
    reason: str = ""

    @property
    def key(self) -> str:
        return f"{self.node_id[:8]}#{self.index}"

def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _fields(config: PoolConfig) -> dict[str, Any]:
    import dataclasses

    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


class _Metrics:
    """Ray metrics (exported by Ray's metrics agent where one runs); no-ops if unavailable."""

    def __init__(self) -> None:
        self._counters: dict[str, Any] = {}
        self._latency: Any = None
        try:
            from ray.util.metrics import Counter, Histogram

            self._counters = {
                "programs": Counter("harness_programs_graded", description="programs graded through RayGrader"),
                "resubmitted": Counter("harness_chunks_resubmitted",
                                       description="chunks resubmitted after a grader actor died"),
                "replaced": Counter("harness_actors_replaced", description="grader actors started in place of dead ones"),
            }
            self._latency = Histogram("harness_chunk_latency_s", description="seconds from submit to result per chunk",
                                      boundaries=[0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60])
        except Exception as exc:  # pragma: no cover - metrics are best effort
            logger.debug("Ray metrics unavailable: %s", exc)

    def inc(self, name: str, value: int = 1) -> None:
        counter = self._counters.get(name)
        if counter is not None:
            try:
                counter.inc(value)
            except Exception:  # pragma: no cover
                pass

    def observe(self, seconds: float) -> None:
        if self._latency is not None:
            try:
                self._latency.observe(seconds)
            except Exception:  # pragma: no cover
                pass
