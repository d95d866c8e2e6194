"""The Ray side of distributed grading: the pool actor, Ray start-up and placement helpers.

``ray`` is imported lazily (inside functions), so ``import harness`` stays cheap and works
without a Ray runtime; :func:`grader_actor_class` builds the ``@ray.remote`` class on first use.

One :class:`GraderActor` owns one ``vmpool.Pool`` (any backend) and one ``rewards.Grader``;
``grade_chunk`` grades a list of ``(Problem, completion)`` pairs with the Grader's usual
contract (one ``Verdict`` per item, in order; a program's failure is a verdict, never an
exception). ``Problem`` and ``Verdict`` are plain frozen dataclasses and travel pickled.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rewards import Grader, Problem, Verdict
from vmpool import Limits, Pool, PoolConfig

from .._errors import ConfigError

__all__ = [
    "GraderActorImpl",
    "alive_nodes",
    "default_runtime_env",
    "ensure_ray",
    "grader_actor_class",
    "remote_class",
]

logger = logging.getLogger(__name__)

#: Object store of an embedded Ray instance: small, other processes share the machine.
EMBEDDED_OBJECT_STORE_BYTES = 200 * 1024 * 1024

_REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout: harness/ray/_actor.py -> .


class GraderActorImpl:
    """Owns a sandbox pool and a Grader; grades chunks. Runs inside a Ray actor.

    Args:
        pool_config: the ``vmpool.PoolConfig`` of this actor's pool (``size`` = sandboxes).
        limits: default per-program limits.
        grader_options: further ``rewards.Grader`` keywords (backstop, stop rule).
    """

    def __init__(self, pool_config: PoolConfig, limits: Limits | None = None,
                 grader_options: Mapping[str, Any] | None = None) -> None:
        self.pool = Pool(pool_config)
        self.grader = Grader(self.pool, default_limits=limits, **dict(grader_options or {}))
        self.size = self.pool.config.sandboxes
        self.graded = 0
        self._lock = threading.Lock()

    def ready(self) -> dict[str, Any]:
        """Where this actor runs and how many programs it runs at once."""
        import ray

        return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "capacity": self.size}

    def capacity(self) -> int:
        """Sandboxes in this actor's pool (programs it runs at once)."""
        return self.size

    def grade_chunk(self, items: Sequence[tuple[Problem, Any]]) -> list[Verdict]:
        """Grade ``(Problem, completion)`` pairs; one verdict per pair, in order."""
        verdicts = self.grader.grade_batch(list(items))
        with self._lock:
            self.graded += len(verdicts)
        return verdicts

    def stats(self) -> dict[str, Any]:
        """Programs graded by this actor, and its pool's counters."""
        with self._lock:
            return {"graded": self.graded, "pid": os.getpid(), **self.pool.stats}

    def close(self) -> None:
        """Close the pool (kills every sandbox). Idempotent."""
        self.pool.close()

    def __del__(self) -> None:  # the actor process is going away: no sandbox may outlive it
        try:
            self.pool.close()
        except Exception:  # pragma: no cover - best effort at interpreter exit
            pass


@functools.cache
def remote_class(cls: type, max_concurrency: int) -> Any:
    """The ``@ray.remote`` version of ``cls`` (threaded: ``max_concurrency`` calls at once),
    built once, on first use: ``ray`` is imported only then."""
    import ray

    return ray.remote(max_concurrency=max_concurrency)(cls)  # type: ignore[call-overload]


def grader_actor_class() -> Any:
    """The ``@ray.remote`` version of :class:`GraderActorImpl` (built once, lazily).

    Threaded (``max_concurrency=4``): a chunk is planned while the previous one runs, and
    ``ready``/``stats`` answer while chunks run.
    """
    return remote_class(GraderActorImpl, 4)


def default_runtime_env() -> dict[str, Any]:
    """Runtime env for the actors: make this checkout importable in worker processes.

    On a cluster whose nodes share this file system (a local head, ``ray.cluster_utils``),
    ``PYTHONPATH`` pointing at the checkout is enough; remote clusters should use a Ray job
    with ``--working-dir`` (the job's working dir is on every worker's path) and may pass
    their own ``runtime_env``.
    """
    path = os.environ.get("PYTHONPATH", "")
    parts = [str(_REPO_ROOT), *[p for p in path.split(os.pathsep) if p and p != str(_REPO_ROOT)]]
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(parts)}}


def ensure_ray(address: str | None, *, num_cpus: int | None = None,
               object_store_memory: int = EMBEDDED_OBJECT_STORE_BYTES,
               init_kwargs: Mapping[str, Any] | None = None) -> bool:
    """Connect to Ray unless already connected.

    Args:
        address: ``None``: join the cluster named by ``RAY_ADDRESS`` (set inside a Ray job),
            else start an embedded local instance sized to the machine (``num_cpus``, no
            dashboard, small object store); ``"auto"`` or ``ray://host:port`` or
            ``host:port``: join that cluster.
        num_cpus: CPUs of an embedded instance (default: the machine's).
        object_store_memory: object store of an embedded instance, bytes.
        init_kwargs: extra ``ray.init`` keyword arguments.

    Returns:
        True when this call started or joined Ray (so the caller should shut it down).
    """
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False, **(init_kwargs or {})}
    if address is None and not os.environ.get("RAY_ADDRESS"):
        kwargs.setdefault("num_cpus", num_cpus or os.cpu_count() or 1)
        kwargs.setdefault("include_dashboard", False)
        kwargs.setdefault("object_store_memory", object_store_memory)
        logger.info("starting an embedded Ray instance: %s", kwargs)
        # "local": always a fresh instance; a bare ray.init() would attach to any
        # `ray start` cluster already running on this machine (/tmp/ray/ray_current_cluster).
        kwargs.setdefault("address", "local")
        ray.init(**kwargs)
    else:
        where = address or os.environ.get("RAY_ADDRESS")
        logger.info("joining Ray cluster %s", where)
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, TimeoutError) as exc:
            raise ConfigError(
                f"no Ray cluster answers at {where!r} ({exc}); start one with `ray start --head` (then "
                "--address auto), or leave --address out to run an embedded local Ray", key="address") from exc
    return True


def alive_nodes(num_cpus: float, resources: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """Alive nodes that can hold an actor needing ``num_cpus`` and ``resources`` (total, not free)."""
    import ray

    wanted = {"CPU": num_cpus, **(resources or {})}
    nodes = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        have = node.get("Resources", {})
        if all(have.get(name, 0.0) >= amount for name, amount in wanted.items() if amount > 0):
            nodes.append(node)
    return sorted(nodes, key=lambda n: n["NodeID"])


def wait_for(predicate: Any, timeout_s: float, interval_s: float = 0.1) -> bool:
    """Poll ``predicate`` until true or ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())
