"""A multi-node Ray cluster on this machine for the cluster tests (``ray.cluster_utils.Cluster``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def ray_cluster(workers: int, resources: dict[str, float], store: int) -> Iterator[Any]:
    """A head with no CPUs and ``workers`` 1-CPU nodes offering ``resources`` (``store`` bytes of
    object store each), the driver connected; a dead node is noticed in ~2 s, not the default ~30 s."""
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "object_store_memory": store,
        "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 4,
                           "health_check_initial_delay_ms": 0}})
    try:
        for _ in range(workers):
            c.add_node(num_cpus=1, resources=resources, object_store_memory=store)
        c.wait_for_nodes()
        ray.init(address=c.address, log_to_driver=False, configure_logging=False)
        yield c
    finally:
        ray.shutdown()
        c.shutdown()
