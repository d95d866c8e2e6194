"""``harness serve --ray`` on a real multi-node Ray cluster (``ray.cluster_utils``), driven by the
unmodified E2B SDK and verl's client: sandboxes on several nodes, each request routed to the node
that holds its sandbox, node loss a 404 that says so."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from harness.serve import ServeConfig
from tests.harness._ray_cluster import ray_cluster

from ._server import TOKEN

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Any, str]]:
    from harness.serve._ray_serve import deploy, shutdown

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with ray_cluster(2, {}, 80 << 20) as c:
        config = ServeConfig(port=port, tokens=(TOKEN,), warm_sessions=1)
        url = deploy(config, replicas=1, proxy_location="HeadOnly")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/", headers={"X-API-KEY": TOKEN}, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        try:
            yield c, url
        finally:
            shutdown()
            from ray import serve

            serve.shutdown()


def _env(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("E2B_API_URL", url)
    monkeypatch.setenv("E2B_SANDBOX_URL", url)
    monkeypatch.setenv("E2B_API_KEY", TOKEN)


def test_sandboxes_spread_over_nodes_and_keep_their_state(cluster: tuple[Any, str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from e2b_code_interpreter import Sandbox

    _, url = cluster
    _env(monkeypatch, url)
    boxes = [Sandbox.create() for _ in range(3)]
    try:
        assert len({b.sandbox_id[:8] for b in boxes}) >= 2  # the least loaded node takes each create
        for i, b in enumerate(boxes):
            b.run_code(f"v = {i}")
        assert [b.run_code("v * 10").text for b in boxes] == ["0", "10", "20"]
        assert boxes[0].commands.run("echo routed").stdout == "routed\n"
        boxes[1].pause()
        assert Sandbox.connect(boxes[1].sandbox_id).run_code("v").text == "1"
        listed = httpx.get(f"{url}/v2/sandboxes", headers={"X-API-KEY": TOKEN}).json()
        assert {b.sandbox_id for b in boxes} <= {s["sandboxID"] for s in listed}
        r = httpx.post(f"{url}/run_code", json={"code": "print(6 * 7)", "language": "python"},
                       headers={"X-API-KEY": TOKEN}, timeout=60)
        assert r.json()["run_result"]["stdout"] == "42\n"
    finally:
        for b in boxes:
            b.kill()


def test_a_node_that_leaves_takes_its_sandboxes_with_it_as_a_404(cluster: tuple[Any, str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from e2b import NotFoundException
    from e2b_code_interpreter import Sandbox

    c, url = cluster
    _env(monkeypatch, url)
    boxes = [Sandbox.create() for _ in range(4)]
    workers = {n.node_id[:8]: n for n in c.list_all_nodes() if n is not c.head_node}
    doomed = next(b for b in boxes if b.sandbox_id[:8] in workers)
    kept = [b for b in boxes if b.sandbox_id[:8] != doomed.sandbox_id[:8]]
    doomed.run_code("x = 1")
    c.remove_node(workers[doomed.sandbox_id[:8]])
    started = time.monotonic()
    with pytest.raises(NotFoundException, match="node"):
        for _ in range(60):  # until the cluster has noticed (~2 s here), each call answers at once
            doomed.run_code("x")
            time.sleep(0.5)
    assert time.monotonic() - started < 60
    assert all(b.run_code("1 + 1").text == "2" for b in kept)
    for b in kept:
        b.kill()
