"""RayGrader on a multi-node ``ray.cluster_utils.Cluster``: a worker node dies mid-batch."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import RayGrader
from rewards import load_problems, reference_solutions
from tests.harness._ray_cluster import ray_cluster
from vmpool import Limits

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]
HUMANEVAL = REPO / "rewards" / "data" / "humaneval.jsonl"
STORE = 100 * 1024 * 1024


@pytest.fixture
def cluster() -> Iterator[Any]:
    """A head with no CPUs and three 1-CPU worker nodes offering the custom resource ``grader``."""
    pytest.importorskip("ray")
    with ray_cluster(3, {"grader": 1}, STORE) as c:
        yield c


def test_node_killed_mid_batch_every_result_once_and_correct(cluster: Any) -> None:
    problems = list(load_problems(str(HUMANEVAL)))
    refs = reference_solutions(str(HUMANEVAL))
    n = 1000
    expect = [k % 3 != 2 for k in range(n)]  # two canonical solutions, then a wrong one
    items = [(problems[k % len(problems)], refs[problems[k % len(problems)].task_id] if expect[k] else
              "    return None\n") for k in range(n)]
    started = time.monotonic()
    with RayGrader(address=cluster.address, resources={"grader": 1}, limits=Limits(wall_s=10.0, memory_mb=256),
                   chunk_size=20) as grader:
        live = [a for a in grader.actors() if a["state"] == "live"]
        assert len(live) == 3 and len({a["node_id"] for a in live}) == 3  # one actor per worker node
        result: list = []
        worker = threading.Thread(target=lambda: result.append(grader.grade_batch(items)))
        worker.start()
        deadline = time.monotonic() + 60
        while grader.stats["programs"] < 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        busy = next(a["node_id"] for a in grader.actors() if a["state"] == "live" and a["inflight"] > 0)
        victim = next(node for node in cluster.worker_nodes if node.node_id == busy)
        done_before_kill = grader.stats["programs"]
        cluster.remove_node(victim, allow_graceful=False)
        worker.join(timeout=180)
        assert not worker.is_alive(), "grade_batch did not finish"
        verdicts = result[0]
        stats = dict(grader.stats)
        states = {a["node_id"]: a["state"] for a in grader.actors()}
    elapsed = time.monotonic() - started
    assert done_before_kill < n, "the node died after the batch finished: nothing was tested"
    assert stats["programs"] == n and stats["failed_programs"] == 0  # each delivered exactly once
    assert stats["resubmitted"] >= 1  # the dead node's in-flight chunks went elsewhere
    assert states[busy] == "dead"
    assert len(verdicts) == n
    wrong = [(k, v.outcome.value, v.error) for k, v in enumerate(verdicts) if v.passed is not expect[k]]
    assert not wrong, wrong[:5]
    assert elapsed < 150
