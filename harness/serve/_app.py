"""The ASGI application: every face on one Starlette app, and the server that runs it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .._grading import Harness
from . import _e2b_api, _e2b_code, _e2b_envd, _fusion, _grade
from ._config import ServeConfig
from ._http import Service, guarded
from ._sandboxes import Sandboxes
from ._templates import TemplatePools

__all__ = ["create_app", "run", "running"]

logger = logging.getLogger(__name__)

# uvicorn's pure-Python stack, whatever else is installed: with uvloop and httptools together a
# streamed reply under 64 concurrent clients was seen to stall for good (tests/serve stress), and
# asyncio + h11 is the pair every test of the service runs on.
LOOP, HTTP = "asyncio", "h11"


@guarded
async def index(service: Service, request: Request) -> Response:
    return JSONResponse({"service": "harness serve", "faces": ["sandboxfusion: POST /run_code",
                                                              "e2b: /sandboxes, envd, /execute", "grade: POST /grade"],
                         "sandboxes": service.sandboxes.count()})


def create_app(config: ServeConfig | None = None, *, runner: Any = None, id_prefix: str = "") -> Starlette:
    """The service as an ASGI app (``uvicorn``, Ray Serve or any ASGI server runs it); E2B sandboxes
    are sessions from warm ``vmpool.SessionPool`` s (one per template config, ``config.warm_sessions``
    warm), started on the first create.

    Args:
        config: the service's settings (defaults: loopback, no token).
        runner: what runs /run_code and /grade (default: a :class:`harness.Harness` on
            ``config.harness``; its pool starts on the first such request).
        id_prefix: what the ids of the sandboxes this app makes start with (even length, hex).

    Returns:
        The app; its lifespan closes every sandbox, the session source and the pool.
    """
    config = config or ServeConfig()
    # E2B sandboxes' sessions: warm vmpool.SessionPools, one per template config, started on the
    # first create (so an app that only answers /run_code starts none).
    service = Service(config, Sandboxes(config, TemplatePools(config), id_prefix=id_prefix), runner or Harness(config.harness))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            service.close()

    routes = [Route("/", index, methods=["GET"]), *_fusion.routes(), *_grade.routes(), *_e2b_api.routes(),
              *_e2b_envd.routes(), *_e2b_code.routes()]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.service = service
    return app


@contextlib.contextmanager
def running(config: ServeConfig | None = None, *, port: int = 0, log_level: str = "warning",
            start_timeout_s: float = 30.0) -> Iterator[str]:
    """Serve ``config`` from a background thread of this process (uvicorn) on ``config.host`` and
    ``port`` (0: a free one; ``config.port`` is for :func:`run`), and yield its base URL; stopped,
    every sandbox closed, on exit.

    Raises:
        RuntimeError: the server did not start within ``start_timeout_s``.
    """
    import socket
    import threading
    import time

    import uvicorn

    config = config or ServeConfig()
    if port == 0:
        with socket.socket() as probe:
            probe.bind((config.host, 0))
            port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(config), host=config.host, port=port, log_level=log_level,
                                           loop=LOOP, http=HTTP,
                                           timeout_keep_alive=300))
    thread = threading.Thread(target=server.run, name="harness-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError(f"harness serve did not start on {config.host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{config.host}:{port}"
    finally:
        server.should_exit = True
        thread.join(60)


def run(config: ServeConfig, *, log_level: str = "info") -> None:
    """Serve ``config`` with uvicorn until interrupted (what ``harness serve`` runs)."""
    import uvicorn

    app = create_app(config)
    logger.info("harness serve on http://%s:%d (%d token(s))", config.host, config.port, len(config.tokens))
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level, timeout_keep_alive=300,
                limit_concurrency=None, loop=LOOP, http=HTTP)
