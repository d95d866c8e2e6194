"""The ASGI application: every face on one Starlette app, and the server that runs it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from vmpool import SessionPool

from .._grading import Harness
from . import _e2b_api, _e2b_code, _e2b_envd, _fusion, _grade
from ._config import ServeConfig
from ._http import Service, guarded
from ._sandboxes import Sandboxes, SessionSource

__all__ = ["create_app", "run"]

logger = logging.getLogger(__name__)


@guarded
async def index(service: Service, request: Request) -> Response:
    return JSONResponse({"service": "harness serve", "faces": ["sandboxfusion: POST /run_code",
                                                              "e2b: /sandboxes, envd, /execute", "grade: POST /grade"],
                         "sandboxes": service.sandboxes.count()})


def create_app(config: ServeConfig | None = None, *, source: SessionSource | None = None,
               runner: Any = None) -> Starlette:
    """The service as an ASGI app (``uvicorn``, Ray Serve or any ASGI server runs it).

    Args:
        config: the service's settings (defaults: loopback, no token).
        source: where E2B sandboxes' sessions come from (default: a local ``vmpool.SessionPool``
            of ``config.sandbox_session()``, ``config.warm_sessions`` warm); the app closes it.
        runner: what runs /run_code and /grade (default: a :class:`harness.Harness` on
            ``config.harness``; its pool starts on the first such request).

    Returns:
        The app; its lifespan closes every sandbox, the session source and the pool.
    """
    config = config or ServeConfig()
    if source is None:
        source = SessionPool(config.sandbox_session(), warm=config.warm_sessions)
    service = Service(config, Sandboxes(config, source), runner or Harness(config.harness))

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


def run(config: ServeConfig, *, log_level: str = "info") -> None:
    """Serve ``config`` with uvicorn until interrupted (what ``harness serve`` runs)."""
    import uvicorn

    app = create_app(config)
    logger.info("harness serve on http://%s:%d (%d token(s))", config.host, config.port, len(config.tokens))
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level, timeout_keep_alive=300,
                limit_concurrency=None)
