"""Driver side of sessions over Ray: :class:`RaySessions` starts or finds the per-node session
actors (:class:`~harness.ray._session_actor.SessionActorImpl`) and leases sessions on them."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from vmpool import SandboxStartError, SessionConfig, SessionError

from ._actor import alive_nodes, default_runtime_env, ensure_ray
from ._session_actor import session_actor_class
from ._sessions import RaySession, SessionLostError, actor_name, ray_get
from ._support import _short

__all__ = ["DEFAULT_NAMESPACE", "RaySessions"]

logger = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "harness-sessions"


@dataclass(eq=False)
class _NodeActor:
    """One node's session actor as this driver sees it."""

    node_id: str
    name: str
    actor: Any = field(repr=False)
    state: str = "starting"  # starting | live | dead
    epoch: str = ""
    reason: str = ""


class RaySessions:
    """Sessions on a Ray cluster: one session actor per eligible node, leases by node or load.

    The actors are named ``harness-sessions-<node id>`` in ``namespace`` and found again by any
    driver (the first one to come starts them, with its settings; a driver that finds actors
    with other settings logs a warning and uses them as they are). A context manager:
    :meth:`close` closes the sessions this object leased (and Ray, if it started it);
    :meth:`shutdown` also stops the node actors, for every driver.

    Args:
        address: Ray address as for :class:`RayGrader` (``None``: embedded or the job's cluster).
        config: the sessions' ``vmpool.SessionConfig``.
        warm: sessions each actor keeps started and idle.
        idle_timeout_s: an actor closes a leased session no call used for this long, so sessions
            of drivers that died do not leak (``None``: never).
        namespace: Ray namespace of the actors (separate namespaces = separate actors).
        resources: custom Ray resources each actor needs and reserves (e.g. ``{"sessions": 1}``);
            only nodes offering them get an actor (a node offering one unit holds the actor of
            one namespace only).
        num_cpus: CPUs each actor reserves (default 0: sessions share the node with grading).
        detached: actors outlive the driver that started them (``lifetime="detached"``), so
            handles stay usable from other drivers; else they end with it.
        transport_slack_s: seconds past a call's own timeout a handle waits for an answer
            before it raises :class:`SessionLostError`.
        start_timeout_s: how long the actors may take to start.
        refresh_s: a lease looks for new (or lost) nodes at most this often.
        runtime_env: runtime env of the actors (default: this checkout on ``PYTHONPATH``).
        init_kwargs: extra ``ray.init`` arguments when this object connects to Ray.

    Raises:
        vmpool.SandboxStartError: no session actor could start.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        config: SessionConfig | None = None,
        warm: int = 2,
        idle_timeout_s: float | None = 600.0,
        namespace: str = DEFAULT_NAMESPACE,
        resources: Mapping[str, float] | None = None,
        num_cpus: float = 0.0,
        detached: bool = True,
        transport_slack_s: float = 30.0,
        start_timeout_s: float = 120.0,
        refresh_s: float = 10.0,
        runtime_env: Mapping[str, Any] | None = None,
        init_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(warm, bool) or not isinstance(warm, int) or warm < 1:
            raise ValueError(f"warm must be an integer >= 1, got {warm!r}")
        if idle_timeout_s is not None and not idle_timeout_s > 0:
            raise ValueError(f"idle_timeout_s must be > 0 or None, got {idle_timeout_s!r}")
        if not transport_slack_s > 0 or not start_timeout_s > 0 or num_cpus < 0:
            raise ValueError("transport_slack_s and start_timeout_s must be > 0, num_cpus >= 0")
        self.config = config or SessionConfig()
        self.warm = warm
        self.idle_timeout_s = idle_timeout_s
        self.namespace = namespace
        self.resources = dict(resources or {})
        self.num_cpus = num_cpus
        self.detached = detached
        self.transport_slack_s = transport_slack_s
        self.start_timeout_s = start_timeout_s
        self.refresh_s = refresh_s
        self.runtime_env = dict(runtime_env) if runtime_env is not None else default_runtime_env()
        self._nodes: dict[str, _NodeActor] = {}
        self._leased: weakref.WeakSet[RaySession] = weakref.WeakSet()
        self._lock = threading.RLock()
        self._refreshed = 0.0
        self._closed = False
        self._owns_ray = ensure_ray(address, init_kwargs=init_kwargs)
        try:
            import ray

            self.address: str | None = ray.get_runtime_context().gcs_address
            self.refresh()
            if not self._live():
                reasons = "; ".join(sorted({n.reason for n in self._nodes.values() if n.reason})) or (
                    "no alive node offers " + ", ".join(f"{k}={v}" for k, v in self.resources.items())
                    if self.resources else "no alive node")
                raise SandboxStartError(f"no session actor could start: {reasons}")
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ actors
    def _live(self) -> list[_NodeActor]:
        return [n for n in self._nodes.values() if n.state == "live"]

    def _spawn(self, node_id: str) -> _NodeActor:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        name = actor_name(node_id)
        options: dict[str, Any] = {
            "name": name, "namespace": self.namespace, "get_if_exists": True,
            "num_cpus": self.num_cpus, "resources": self.resources or None,
            "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False),
            "max_restarts": 0,  # a restarted actor would hold none of the sessions: lost is the truth
            "max_task_retries": 0, "runtime_env": self.runtime_env or None,
        }
        if self.detached:
            options["lifetime"] = "detached"
        actor = session_actor_class().options(**options).remote(self.config, self.warm, self.idle_timeout_s)
        return _NodeActor(node_id, name, actor)

    def refresh(self) -> list[dict[str, Any]]:
        """Start or find an actor on every eligible alive node that has no live one; forget the
        actors of nodes that left. Returns :meth:`nodes`."""
        import ray

        with self._lock:
            alive = {n["NodeID"] for n in alive_nodes(self.num_cpus, self.resources)}
            for na in self._nodes.values():
                if na.node_id not in alive and na.state != "dead":
                    na.state, na.reason = "dead", "its node is not alive"
            fresh = [self._spawn(node_id) for node_id in sorted(alive)
                     if node_id not in self._nodes or self._nodes[node_id].state == "dead"]
            for na in fresh:
                self._nodes[na.node_id] = na
            probes = {na.actor.ready.remote(): na for na in fresh}
            if probes:
                done, _ = ray.wait(list(probes), num_returns=len(probes), timeout=self.start_timeout_s)
                for ref, na in probes.items():
                    if ref not in done:
                        na.state, na.reason = "dead", f"did not start within {self.start_timeout_s:g} s"
                        continue
                    try:
                        info = ray.get(ref)
                    except Exception as exc:  # the constructor failed (no bubblewrap...) or the node died
                        na.state, na.reason = "dead", _short(exc)
                        logger.warning("session actor on node %s is not usable: %s", na.node_id[:8], na.reason)
                        continue
                    na.state, na.epoch = "live", str(info["epoch"])
                    if info["config"] != self.config or info["idle_timeout_s"] != self.idle_timeout_s:
                        logger.warning("session actor %s/%s runs with other settings (config %s, idle_timeout_s %s)"
                                       "; using it as it is", self.namespace, na.name, info["config"],
                                       info["idle_timeout_s"])
            self._refreshed = time.monotonic()
            return self.nodes()

    def nodes(self) -> list[dict[str, Any]]:
        """The node actors this driver knows: node id, actor name, state, epoch, reason."""
        with self._lock:
            return [{"node_id": n.node_id, "name": n.name, "state": n.state, "epoch": n.epoch, "reason": n.reason}
                    for n in self._nodes.values()]

    def load(self) -> dict[str, int]:
        """Sessions leased on each live node actor (by any driver); an actor that does not
        answer within the transport slack is marked dead and left out."""
        import ray

        with self._lock:
            probes = {na.actor.load.remote(): na for na in self._live()}
        if not probes:
            return {}
        done, _ = ray.wait(list(probes), num_returns=len(probes), timeout=self.transport_slack_s)
        loads: dict[str, int] = {}
        for ref, na in probes.items():
            try:
                if ref not in done:
                    raise SessionLostError(f"no answer within {self.transport_slack_s:g} s")
                loads[na.node_id] = int(ray_get(ref, self.transport_slack_s, "load"))
            except Exception as exc:
                with self._lock:
                    na.state, na.reason = "dead", _short(exc)
        return loads

    # ------------------------------------------------------------------ leasing
    def lease(self, node_id: str | None = None) -> RaySession:
        """A fresh session on ``node_id``, or on the node with the fewest leased sessions.

        Raises:
            vmpool.SessionError: ``node_id`` has no live session actor; or this object is closed.
            SessionLostError: the chosen node's actor was lost while leasing.
            vmpool.SandboxStartError: no node has a live session actor, or the session did not start.
        """
        if self._closed:
            raise SessionError("RaySessions is closed")
        stale = time.monotonic() - self._refreshed > self.refresh_s
        if stale or (node_id is not None and (node_id not in self._nodes or self._nodes[node_id].state != "live")):
            self.refresh()
        if node_id is not None:
            na = self._nodes.get(node_id)
            if na is None or na.state != "live":
                why = na.reason if na is not None else "not an alive node offering the actors' resources"
                raise SessionError(f"no live session actor on node {node_id}: {why}")
            return self._lease_on(na)
        loads = self.load()
        last: BaseException | None = None
        for nid in sorted(loads, key=lambda k: (loads[k], k)):
            try:
                return self._lease_on(self._nodes[nid])
            except SessionLostError as exc:  # try the next node
                last = exc
        raise SandboxStartError(f"no live session actor to lease from{f' ({last})' if last else ''}")

    def _lease_on(self, na: _NodeActor) -> RaySession:
        deadline = self.config.start_timeout_s + self.transport_slack_s
        try:
            sid, epoch = ray_get(na.actor.lease.remote(), deadline, f"lease on node {na.node_id[:8]}")
        except SessionLostError as exc:
            with self._lock:
                na.state, na.reason = "dead", str(exc)
            raise
        handle = RaySession(na.name, self.namespace, sid, epoch, na.node_id, address=self.address,
                            transport_slack_s=self.transport_slack_s)
        self._leased.add(handle)
        return handle

    # ------------------------------------------------------------------ lifetime
    def close(self, *, sessions: bool = True) -> None:
        """Close the sessions this object leased and still holds (unless ``sessions=False``:
        they live on, for other drivers, until closed or idle), and shut Ray down if this
        object started it. The node actors stay (see :meth:`shutdown`). Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            import ray

            if sessions and ray.is_initialized():
                open_ = [h for h in list(self._leased) if not h._lost]
                refs = []
                for handle in open_:
                    try:
                        refs.append(handle._handle().close_session.remote(handle.session_id))
                    except Exception:  # its actor is gone: so is the session
                        pass
                if refs:
                    ray.wait(refs, num_returns=len(refs), timeout=self.transport_slack_s)
        finally:
            self._leased = weakref.WeakSet()
            if self._owns_ray:
                import ray

                ray.shutdown()

    def shutdown(self) -> None:
        """Stop the session actors of this namespace on the nodes this object knows (every
        session on them is closed, for every driver), then :meth:`close`."""
        import ray

        if not self._closed and ray.is_initialized():
            with self._lock:
                actors = [na for na in self._nodes.values() if na.state != "dead"]
            refs = [na.actor.shutdown.remote() for na in actors]
            if refs:
                ray.wait(refs, num_returns=len(refs), timeout=self.transport_slack_s)
            for na in actors:
                try:
                    ray.kill(na.actor, no_restart=True)
                except Exception:  # already gone
                    pass
                na.state, na.reason = "dead", "shut down"
        self.close(sessions=False)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
