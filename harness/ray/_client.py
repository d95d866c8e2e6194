"""Driver side of distributed grading: :class:`RayGrader`, a drop-in for ``rewards.Grader``.

Placement is Ray's: one or more :class:`~harness.ray._actor.GraderActorImpl` actors per
alive node, each pinned with ``NodeAffinitySchedulingStrategy`` and reserving its CPUs (and
any custom resources) through Ray's resource scheduler; Ray restarts a crashed actor in place
(``max_restarts``). The client only decides which live actor gets the next chunk (the one
with the most free capacity), streams results back with ``ray.wait``, and puts them in
input order.

Delivery is exactly once per program: a chunk's verdicts are recorded the first time they
arrive and never again. A chunk whose actor dies (``RayActorError``: ``ActorDiedError``,
``ActorUnavailableError``; or its result object is lost) is resubmitted to a live actor, at
most ``max_resubmits`` times, after which its programs get ``SANDBOX_ERROR`` verdicts
(reward ``None``). Program statuses are never retried here: the pool already retries a
program that killed its sandbox once and then reports ``SANDBOX_KILLED``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Self

from rewards import Problem, RewardConfig, Verdict, compute_reward
from vmpool import Limits, PoolConfig, SandboxStartError

from ._actor import alive_nodes, default_runtime_env, ensure_ray, grader_actor_class
from ._chunks import _ChunkScheduler, _Run
from ._support import _fields, _Metrics, _short, _Slot

__all__ = ["RayGrader"]

logger = logging.getLogger(__name__)


class RayGrader(_ChunkScheduler):
    """Grades ``(Problem, completion)`` pairs on pool actors spread over a Ray cluster.

    Same contract as ``rewards.Grader.grade_batch`` (one verdict per item, in input order), so
    harness code can use either.

    Args:
        address: ``None``: an embedded local Ray instance sized to the machine (or, inside a
            Ray job, the job's cluster); ``"auto"``, ``"ray://host:10001"`` or ``"host:port"``:
            join that cluster. An already initialised Ray is used as is.
        actors_per_node: actors on each eligible node (ignored when ``cores_per_actor`` is set).
        cores_per_actor: CPUs each actor reserves; a node then gets ``floor(cpus / cores)``
            actors. Default: the node's CPUs divided by ``actors_per_node``.
        pool_size: sandboxes per actor. Default: the actor's CPUs (at least 1).
        pool_config: other ``vmpool.PoolConfig`` fields (backend, recycling...); its ``size``
            is replaced by the per-actor size.
        limits: default per-program limits.
        grader_options: further ``rewards.Grader`` keywords of every actor (backstop, stop rule;
            :meth:`harness.HarnessConfig.grader_options`).
        resources: custom Ray resources each actor needs (e.g. ``{"grader": 1}``); only nodes
            offering them get actors.
        chunk_size: programs per actor call (default: adaptive, at most 64).
        chunks_in_flight: chunks kept queued per sandbox of an actor (the free-capacity window).
        max_resubmits: resubmissions of one chunk after actor deaths before its programs are
            reported as ``SANDBOX_ERROR``.
        max_restarts: Ray's ``max_restarts`` for each actor (restart in place after a crash).
        max_replacements: new actors started in place of one that died for good.
        runtime_env: Ray runtime env of the actors (default: this checkout on ``PYTHONPATH``).
        init_kwargs: extra ``ray.init`` arguments when this grader connects to Ray.
        start_timeout_s: how long the actors may take to start.
        actor_wait_s: how long a batch waits with no live actor before failing its rest.

    Raises:
        vmpool.SandboxStartError: no actor could start (no eligible node, or every actor's
            pool failed to start, e.g. bubblewrap missing).

    Example::

        with RayGrader(pool_config=PoolConfig(backend="namespace")) as grader:
            verdicts = grader.grade_batch([(problem, completion), ...])
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        actors_per_node: int = 1,
        cores_per_actor: float | None = None,
        pool_size: int | None = None,
        pool_config: PoolConfig | None = None,
        limits: Limits | None = None,
        grader_options: Mapping[str, Any] | None = None,
        resources: Mapping[str, float] | None = None,
        chunk_size: int | None = None,
        chunks_in_flight: int = 2,
        max_resubmits: int = 3,
        max_restarts: int = 1,
        max_replacements: int = 3,
        runtime_env: Mapping[str, Any] | None = None,
        init_kwargs: Mapping[str, Any] | None = None,
        start_timeout_s: float = 120.0,
        actor_wait_s: float = 60.0,
    ) -> None:
        if actors_per_node < 1:
            raise ValueError(f"actors_per_node must be >= 1, got {actors_per_node}")
        if cores_per_actor is not None and cores_per_actor <= 0:
            raise ValueError(f"cores_per_actor must be > 0, got {cores_per_actor}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if chunks_in_flight < 1 or max_resubmits < 0:
            raise ValueError("chunks_in_flight must be >= 1 and max_resubmits >= 0")
        self.address = address
        self.actors_per_node = actors_per_node
        self.cores_per_actor = cores_per_actor
        self.pool_size = pool_size
        self.pool_config = pool_config or PoolConfig(size=1)
        self.default_limits = limits or Limits()
        self.grader_options = dict(grader_options or {})
        self.resources = dict(resources or {})
        self.chunk_size = chunk_size
        self.chunks_in_flight = chunks_in_flight
        self.max_resubmits = max_resubmits
        self.max_restarts = max_restarts
        self.max_replacements = max_replacements
        self.runtime_env = dict(runtime_env) if runtime_env is not None else default_runtime_env()
        self.start_timeout_s = start_timeout_s
        self.actor_wait_s = actor_wait_s
        self.stats: dict[str, int] = {
            "programs": 0, "chunks": 0, "resubmitted": 0, "failed_programs": 0,
            "actors_started": 0, "actors_replaced": 0,
        }
        self._slots: list[_Slot] = []
        self._probes: dict[Any, _Slot] = {}
        self._closed = False
        self._owns_ray = ensure_ray(address, init_kwargs=init_kwargs)
        try:
            self._metrics = _Metrics()
            self._fill_nodes()
            self._await_start()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ actors
    def _actors_for(self, node: Mapping[str, Any]) -> tuple[int, float]:
        cpus = float(node.get("Resources", {}).get("CPU", 0.0))
        if self.cores_per_actor is not None:
            return int(cpus // self.cores_per_actor), float(self.cores_per_actor)
        return (self.actors_per_node, cpus / self.actors_per_node) if cpus > 0 else (0, 0.0)

    def _spawn(self, node_id: str, index: int, num_cpus: float) -> _Slot:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        size = self.pool_size or max(1, int(num_cpus))
        pool_config = PoolConfig(**{**_fields(self.pool_config), "size": size})
        actor = grader_actor_class().options(
            num_cpus=num_cpus,
            resources=self.resources or None,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            max_restarts=self.max_restarts,
            max_task_retries=0,  # resubmission is ours: to a live actor, bounded, exactly-once
            runtime_env=self.runtime_env or None,
        ).remote(pool_config, self.default_limits, self.grader_options)
        slot = _Slot(node_id=node_id, index=index, num_cpus=num_cpus, actor=actor, capacity=size)
        self._slots.append(slot)
        self._probes[actor.ready.remote()] = slot
        self.stats["actors_started"] += 1
        logger.info("grader actor %s: %s CPUs, %d sandboxes", slot.key, num_cpus, size)
        return slot

    def _fill_nodes(self) -> int:
        """Start actors on eligible alive nodes that have fewer than their share. Returns how many."""
        started = 0
        for node in alive_nodes(0.0, self.resources):
            count, cpus = self._actors_for(node)
            if count < 1 or cpus <= 0:
                continue
            node_id = node["NodeID"]
            taken = {s.index for s in self._slots if s.node_id == node_id and s.state != "dead"}
            for index in range(count):
                if index not in taken:
                    self._spawn(node_id, index, cpus)
                    started += 1
        return started

    def _await_start(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while any(s.state == "starting" for s in self._slots) and time.monotonic() < deadline:
            self._poll_probes(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
        live = [s for s in self._slots if s.state == "live"]
        if not live:
            reasons = "; ".join(sorted({s.reason for s in self._slots if s.reason})) or (
                "no alive node offers " + ", ".join(f"{k}={v}" for k, v in {"CPU": ">0", **self.resources}.items())
                if not self._slots else "actors did not start in time")
            raise SandboxStartError(f"no grader actor could start: {reasons}")
        logger.info("%d grader actors live (%d sandboxes)", len(live), sum(s.capacity for s in live))

    def _poll_probes(self, timeout: float) -> None:
        import ray

        if not self._probes:
            return
        ready, _ = ray.wait(list(self._probes), num_returns=len(self._probes), timeout=timeout)
        for ref in ready:
            self._probe_done(ref)

    def _probe_done(self, ref: Any) -> None:
        import ray

        slot = self._probes.pop(ref)
        try:
            info = ray.get(ref)
        except ray.exceptions.RayError as exc:
            slot.state, slot.reason = "dead", _short(exc)
            logger.warning("grader actor %s is gone: %s", slot.key, slot.reason)
            self._replace(slot)
            return
        slot.state, slot.capacity, slot.pid = "live", int(info["capacity"]), int(info["pid"])

    def _replace(self, slot: _Slot) -> None:
        """Start a new actor in place of a dead one, if its node is alive; also fill new nodes."""
        if self._closed:
            return
        alive = {n["NodeID"] for n in alive_nodes(0.0, self.resources)}
        if slot.node_id in alive and slot.replacements < self.max_replacements:
            fresh = self._spawn(slot.node_id, slot.index, slot.num_cpus)
            fresh.replacements = slot.replacements + 1
            self.stats["actors_replaced"] += 1
            self._metrics.inc("replaced")
        self._fill_nodes()

    def _on_actor_failure(self, slot: _Slot, exc: BaseException) -> None:
        if slot.state != "live":
            return
        slot.state, slot.reason = "down", _short(exc)
        logger.warning("grader actor %s failed: %s", slot.key, slot.reason)
        # Ray restarts it in place if it can (max_restarts); the probe tells us when it is back,
        # or fails and we replace it.
        self._probes[slot.actor.ready.remote()] = slot

    def actors(self) -> list[dict[str, Any]]:
        """The actors and their state (``live``, ``starting``, ``down``, ``dead``)."""
        return [{"key": s.key, "node_id": s.node_id, "state": s.state, "capacity": s.capacity,
                 "inflight": s.inflight, "pid": s.pid, "actor": s.actor} for s in self._slots]

    @property
    def capacity(self) -> int:
        """Sandboxes over all live actors."""
        return sum(s.capacity for s in self._slots if s.state == "live")

    # ------------------------------------------------------------------ grading
    def grade(self, problem: Problem, completion: Any) -> Verdict:
        """Grade one completion (see :meth:`grade_batch`)."""
        return self.grade_batch([(problem, completion)])[0]

    def rewards(self, items: Iterable[tuple[Problem, Any]],
                reward_config: RewardConfig | None = None) -> list[float | None]:
        """Rewards under ``reward_config`` (default binary; ``None`` = infrastructure failure)."""
        return [compute_reward(v, reward_config) for v in self.grade_batch(items)]

    def grade_batch(self, items: Iterable[tuple[Problem, Any]]) -> list[Verdict]:
        """Grade many samples over the actors; one verdict per item, in input order.

        Raises:
            TypeError: an item's problem is not a ``rewards.Problem``.
            RuntimeError: the grader is closed.
        """
        import ray

        if self._closed:
            raise RuntimeError("RayGrader is closed")
        items = list(items)
        for problem, _ in items:
            if not isinstance(problem, Problem):
                raise TypeError(f"grade items must be (Problem, completion) pairs, got a {type(problem).__name__}")
        if not items:
            return []
        size = self.chunk_size or self._auto_chunk(len(items))
        bounds = [(i, min(i + size, len(items))) for i in range(0, len(items), size)]
        run = _Run(items, bounds, [None] * len(items), [0] * len(bounds), [False] * len(bounds),
                   deque(range(len(bounds))))
        no_live_since: float | None = None
        while run.pending or run.inflight:
            self._dispatch(run)
            if run.pending and not any(s.state == "live" for s in self._slots):
                no_live_since = no_live_since or time.monotonic()
                if time.monotonic() - no_live_since > self.actor_wait_s:
                    self._fail_pending(run, "no live grader actor")
                    continue
                if not self._probes:
                    self._fill_nodes()
            else:
                no_live_since = None
            refs = list(run.inflight) + list(self._probes)
            if not refs:
                time.sleep(0.2)
                continue
            ready, rest = ray.wait(refs, num_returns=1, timeout=1.0)
            if ready and rest:
                more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
                ready += more
            for ref in ready:
                if ref in self._probes:
                    self._probe_done(ref)
                else:
                    self._chunk_done(run, ref)
        missing = sum(v is None for v in run.results)
        if missing:  # pragma: no cover - the loop only ends when every chunk is done
            raise RuntimeError(f"{missing} verdicts missing")
        return [v for v in run.results if v is not None]

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Close every actor's pool, kill the actors, and shut Ray down if this grader started it."""
        if self._closed:
            return
        self._closed = True
        try:
            import ray

            if ray.is_initialized():
                closing = [s.actor.close.remote() for s in self._slots if s.state in ("live", "starting")]
                if closing:
                    ray.wait(closing, num_returns=len(closing), timeout=10.0)
                for slot in self._slots:
                    try:
                        ray.kill(slot.actor, no_restart=True)
                    except Exception:  # already gone
                        pass
        finally:
            self._slots.clear()
            self._probes.clear()
            if self._owns_ray:
                import ray

                ray.shutdown()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

