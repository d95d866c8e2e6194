"""``ray job submit -- python -m harness grade --ray`` against a local head node with a job server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import read_results

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
FAST_CONFIG = REPO / "configs" / "fast.yaml"
RAY = Path(sys.executable).with_name("ray")


def _env() -> dict[str, str]:
    """No inherited RAY_ADDRESS; token auth off for this loopback-only head (ray 2.5x turns it on)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def head_node() -> Iterator[str]:
    """``ray start --head --block`` with the dashboard (job server) on a free port; killed by process group.

    Skipped where the dashboard cannot run: it needs the ``ray[default]`` extras (aiohttp, ...).
    """
    pytest.importorskip("aiohttp", reason="the Ray dashboard/job server needs ray[default] (aiohttp is missing)")
    # Every port Ray would otherwise take at a fixed default (the dashboard agent's 52365,
    # the client server's 10001) is chosen free: another Ray on the machine must not collide.
    port, gcs, agent, client = _free_port(), _free_port(), _free_port(), _free_port()
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's unix socket paths are length-limited
    log = open(os.path.join(temp_dir, "start.log"), "wb")
    proc = subprocess.Popen(
        [str(RAY), "start", "--head", "--block", "--num-cpus", "2", "--include-dashboard=true",
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(port), "--port", str(gcs),
         "--dashboard-agent-listen-port", str(agent), "--ray-client-server-port", str(client),
         "--temp-dir", temp_dir, "--object-store-memory", str(200 * 1024 * 1024), "--disable-usage-stats"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=_env(),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ray start exited {proc.returncode}: {Path(temp_dir, 'start.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/api/version", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the job server did not answer within 90 s")
            time.sleep(0.5)
        yield url
    finally:
        # Only what we started: the `ray start --block` process group (head daemons included).
        # SIGTERM lets `ray start --block` stop its daemons; then SIGKILL whatever of the group is left.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            time.sleep(2 if sig == signal.SIGTERM else 0)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_grade_as_ray_job(head_node: str, tmp_path: Path, humaneval_slice: tuple[Path, list[dict]]) -> None:
    problems, records = humaneval_slice
    samples = tmp_path / "s.jsonl"
    rows = [{"task_id": r["task_id"], "completion": r["canonical_solution"]} for r in records]
    rows += [{"task_id": r["task_id"], "completion": "    return None\n"} for r in records]
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "job.parquet"
    entry = (f"{sys.executable} -m harness grade --ray --problems {problems} --samples {samples} --out {out} "
             f"--config {FAST_CONFIG} --no-progress --json")
    submit = [str(RAY), "job", "submit", "--address", head_node, "--working-dir", str(REPO),
              "--runtime-env-json", json.dumps({"excludes": [".venv", ".git", "*.parquet", "notebooks"]}),
              "--", *entry.split()]
    deadline = time.monotonic() + 120
    while True:
        res = subprocess.run(submit, capture_output=True, text=True, timeout=400, check=False, env=_env(), cwd=REPO)
        # The job server answers /api/version before the head's job agent has registered;
        # on a loaded machine that gap can last seconds: Ray says so, and asks to retry.
        if res.returncode == 0 or "No available agent" not in res.stderr + res.stdout:
            break
        if time.monotonic() > deadline:
            break
        time.sleep(2)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    assert "succeeded" in (res.stdout + res.stderr).lower()
    got = {(r.task_id, r.sample_index): r.passed for r in read_results(out)}
    assert got == {**{(r["task_id"], 0): True for r in records}, **{(r["task_id"], 1): False for r in records}}
