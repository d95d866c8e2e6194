"""Sessions over Ray on a multi-node ``ray.cluster_utils.Cluster``: state across calls on two
nodes, a pickled handle used from a second driver process, closed ids, idle expiry, an
unresponsive actor and a removed node (``SessionLostError`` within a bound, never a hang)."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.ray import RaySession, RaySessions, SessionLostError
from tests.harness._ray_cluster import ray_cluster
from vmpool import CodeResult, CommandResult, FileInfo, SessionConfig, SessionError

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]
STORE = 80 * 1024 * 1024
# Only worker nodes offer it (the head, which cannot be removed, gets no actor); each actor reserves
# one unit, so the actors of several namespaces fit on a node.
OFFERS, NEEDS = {"sessions": 4.0}, {"sessions": 1.0}
CONFIG = SessionConfig(memory_mb=512, disk_mb=64)
LOST_BOUND_S = 60.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A head with no CPUs and two 1-CPU worker nodes offering ``sessions``; dead nodes noticed in ~2 s."""
    pytest.importorskip("ray")
    with ray_cluster(2, OFFERS, STORE) as c:
        yield c


@pytest.fixture(scope="module")
def sessions(cluster: Any) -> Iterator[RaySessions]:
    rs = RaySessions(address=cluster.address, config=CONFIG, warm=1, resources=NEEDS,
                     namespace=f"test-{uuid.uuid4().hex[:8]}")
    try:
        yield rs
    finally:
        rs.shutdown()


def _error(res: CodeResult) -> str | None:
    return res.error.name if res.error else None


def _live_nodes(rs: RaySessions) -> list[str]:
    return sorted(n["node_id"] for n in rs.nodes() if n["state"] == "live")


def test_sessions_on_two_nodes_keep_their_own_state(sessions: RaySessions) -> None:
    nodes = _live_nodes(sessions)
    assert len(nodes) == 2
    a, b = sessions.lease(node_id=nodes[0]), sessions.lease(node_id=nodes[1])
    try:
        assert (a.node_id, b.node_id) == (nodes[0], nodes[1])
        a.run_code("import math\nr = 2")
        b.run_code("r = 10")
        res = a.run_code("print('area'); math.pi * r ** 2")
        assert isinstance(res, CodeResult) and res.stdout == "area\n" and res.execution_count == 2
        assert abs(res.data - 12.566) < 0.01
        assert b.run_code("r * 3").data == 30  # each node's session has its own state
        assert _error(a.run_code("1 / 0")) == "ZeroDivisionError"  # a cell's failure is data
        with pytest.raises(TypeError):  # the session's own exceptions come back as themselves
            a.run_code(b"not str")  # type: ignore[arg-type]
        cmd = a.run("mkdir -p app && cd app && echo hi > f.txt")
        assert isinstance(cmd, CommandResult) and cmd.exit_code == 0
        assert a.run("pwd").stdout.strip().endswith("/app")  # the shell's working directory persists
        a.write_file("data/in.txt", b"1 2")
        assert a.read_file("app/f.txt") == b"hi\n" and a.read_file("data/in.txt") == b"1 2"
        assert a.list_dir("data") == [FileInfo("in.txt", "file", 3)]
        with pytest.raises(SessionError):
            b.read_file("data/in.txt")  # not on b
        a.restart_context()
        assert _error(a.run_code("r")) == "NameError"
        assert sessions.load() == {nodes[0]: 1, nodes[1]: 1}
        with sessions.lease(node_id=nodes[0]) as c, sessions.lease() as d:
            assert d.node_id == nodes[1] and not c.closed  # nodes[0] had 2: the least loaded one was nodes[1]
        assert c.closed and d.closed
    finally:
        a.close()
        b.close()


_SECOND_DRIVER = """
import json, pickle, sys
import ray
if sys.argv[1]:  # else the handle connects to the cluster it came from by itself
    ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False)
with open(sys.argv[2], "rb") as f:
    handle = pickle.load(f)
seen = handle.run_code("x + 1").data
handle.run_code("y = 'from the second driver'")
handle.write_file("second.txt", "written by driver 2")
print(json.dumps({"seen": seen, "cwd": handle.run("pwd").stdout.strip(), "files": [e.name for e in handle.list_dir()]}))
"""


def test_checkpoint_fork_and_pause_through_handles(sessions: RaySessions) -> None:
    node = _live_nodes(sessions)[0]
    with sessions.lease(node_id=node) as s:
        s.run_code("x = 'base'")
        forks = s.fork(2)
        assert all(isinstance(f, RaySession) and f.node_id == node for f in forks)
        forks[0].run_code("x = 'changed'")
        assert [f.run_code("x").data for f in forks] == ["changed", "base"] and s.run_code("x").data == "base"
        with s.checkpoint() as cp:
            restored = pickle.loads(pickle.dumps(cp)).fork(1)[0]  # a checkpoint handle pickles too
            assert restored.run_code("x").data == "base"
        s.pause()
        with pytest.raises(SessionError, match="paused"):
            s.run_code("1")
        s.resume()
        assert s.run_code("x").data == "base"
        for f in (*forks, restored):
            f.close()
        with pytest.raises(SessionError, match="closed"):
            cp.fork(1)


def test_pickled_handle_works_from_a_second_driver_process(cluster: Any, sessions: RaySessions,
                                                           tmp_path: Path) -> None:
    with sessions.lease() as handle:
        handle.run_code("x = 41")
        handle.run("mkdir -p work && cd work")
        handle.write_file("first.txt", "written by driver 1")
        blob = tmp_path / "handle.pkl"
        blob.write_bytes(pickle.dumps(handle))
        assert "_actor" not in pickle.loads(blob.read_bytes()).__getstate__()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        for address, seen in ((cluster.address, 42), ("", 43)):  # joining the cluster first, or not
            proc = subprocess.run([sys.executable, "-c", _SECOND_DRIVER, address, str(blob)], cwd=REPO, env=env,
                                  capture_output=True, text=True, timeout=120, check=False)
            assert proc.returncode == 0, proc.stderr[-3000:]
            got = json.loads(proc.stdout.strip().splitlines()[-1])
            assert got["seen"] == seen and got["cwd"].endswith("/work") and "first.txt" in got["files"]
            assert handle.run_code("y").data == "from the second driver"  # driver 2's changes, seen by driver 1
            assert handle.read_file("second.txt") == b"written by driver 2"
            handle.run_code("x = 42")


def test_closed_or_unknown_session_id_is_a_plain_session_error(sessions: RaySessions) -> None:
    handle = sessions.lease()
    handle.run_code("z = 1")
    handle.close()
    handle.close()  # idempotent
    assert handle.closed
    with pytest.raises(SessionError, match="session is closed: closed by its owner") as info:
        handle.run_code("z")
    assert not isinstance(info.value, SessionLostError)
    bogus = RaySession(handle.actor_name, handle.namespace, uuid.uuid4().hex, handle.epoch, handle.node_id)
    with pytest.raises(SessionError, match="session is closed") as info:
        bogus.run("true")
    assert not isinstance(info.value, SessionLostError)
    stale = RaySession(handle.actor_name, handle.namespace, handle.session_id, "another-epoch", handle.node_id)
    with pytest.raises(SessionLostError, match="started anew"):
        stale.run("true")
    with pytest.raises(SessionError, match="no live session actor"):
        sessions.lease(node_id="f" * 56)


def test_idle_sessions_expire_and_an_unresponsive_actor_is_lost_in_bounded_time(cluster: Any) -> None:
    import ray

    rs = RaySessions(address=cluster.address, config=CONFIG, warm=1, resources=NEEDS, idle_timeout_s=1.5,
                     transport_slack_s=3.0, namespace=f"idle-{uuid.uuid4().hex[:8]}")
    try:
        node = _live_nodes(rs)[0]
        idle, busy = rs.lease(node_id=node), rs.lease(node_id=node)
        idle.run_code("v = 1")
        busy.run_code("w = 2")
        # A call longer than the idle limit: the session is in use, not idle.
        assert busy.run_code("import time; time.sleep(3); w", timeout=10).data == 2
        with pytest.raises(SessionError, match="idle for more than 1.5 s") as info:
            idle.run_code("v")  # a driver that leased it and went away would have leaked it
        assert not isinstance(info.value, SessionLostError)
        assert busy.run_code("w").data == 2  # used all along: kept
        # The actor stops answering (its process frozen; node and actor alive): bounded, then lost.
        actor: Any = ray.get_actor(busy.actor_name, namespace=busy.namespace)
        ready: dict[str, Any] = ray.get(actor.ready.remote())
        pid = int(ready["pid"])
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(SessionLostError, match="no answer within 4 s"):
                busy.run_code("w", timeout=1.0)
            assert time.monotonic() - started < 15
            with pytest.raises(SessionLostError):  # lost for good, at once
                busy.run("true")
        finally:
            os.kill(pid, signal.SIGCONT)
    finally:
        rs.shutdown()


def test_removed_node_sessions_raise_session_lost_within_bound(cluster: Any, sessions: RaySessions) -> None:
    node = cluster.add_node(num_cpus=1, resources=OFFERS, object_store_memory=STORE)
    cluster.wait_for_nodes()
    sessions.refresh()
    assert node.node_id in _live_nodes(sessions)
    survivor = sessions.lease(node_id=next(n for n in _live_nodes(sessions) if n != node.node_id))
    doomed, running = sessions.lease(node_id=node.node_id), sessions.lease(node_id=node.node_id)
    doomed.run_code("s = 'state'")
    survivor.run_code("s = 'kept'")
    outcome: list[tuple[BaseException | None, float]] = []

    def long_call() -> None:  # in flight when the node goes: its own deadline would be 150 + 30 s
        t0 = time.monotonic()
        try:
            running.run_code("import time; time.sleep(140)", timeout=150)
            outcome.append((None, time.monotonic() - t0))
        except BaseException as exc:
            outcome.append((exc, time.monotonic() - t0))

    worker = threading.Thread(target=long_call, daemon=True)
    worker.start()
    time.sleep(1.0)
    removed = time.monotonic()
    cluster.remove_node(node, allow_graceful=False)
    worker.join(timeout=LOST_BOUND_S + 10)
    assert outcome, "the in-flight call hung"
    exc, _ = outcome[0]
    assert isinstance(exc, SessionLostError) and isinstance(exc, SessionError), exc
    assert time.monotonic() - removed < LOST_BOUND_S
    t0 = time.monotonic()
    with pytest.raises(SessionLostError, match="lost"):
        doomed.run_code("s")
    assert time.monotonic() - t0 < LOST_BOUND_S
    assert doomed.closed and running.closed
    doomed.close()  # a lost session is already gone: no error
    assert survivor.run_code("s").data == "kept"  # other nodes' sessions go on
    sessions.refresh()
    assert node.node_id not in _live_nodes(sessions)
    with sessions.lease() as fresh:  # leasing goes on on the live nodes
        assert fresh.node_id != node.node_id and fresh.run_code("1 + 1").data == 2
    survivor.close()
