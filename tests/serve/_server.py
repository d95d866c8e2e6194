"""A real ``harness serve`` (uvicorn on a free loopback port, in a thread) that a test owns."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from harness.serve import ServeConfig, create_app

TOKEN = "test-token-0123456789"


@contextmanager
def running(config: ServeConfig | None = None, **app_args: Any) -> Iterator[str]:
    """Serve ``config`` (default: loopback, ``TOKEN``) and yield its base URL; stopped (every
    sandbox closed) on exit."""
    config = config or ServeConfig(tokens=(TOKEN,), warm_sessions=2)
    app = create_app(config, **app_args)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_keep_alive=300))
    thread = threading.Thread(target=server.run, name="test-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
