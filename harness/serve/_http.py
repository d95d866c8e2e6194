"""What every face of the service shares: the API key check, bounded bodies, blocking sandbox
work off the event loop, and one error answer per refusal."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import secrets
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ._config import ServeConfig
from ._errors import BadRequest, ServeError, TooLarge, Unauthorized
from ._sandboxes import Box, Sandboxes, owner_of

__all__ = ["Service", "Streamed", "disconnected", "error_response", "field", "guarded"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Service:
    """The state behind the routes: config, sandboxes, the grading pool, the worker threads.

    Args:
        config: the service's settings.
        sandboxes: the E2B sandbox registry.
        runner: runs one-shot programs (SandboxFusion's /run_code) and grades (/grade).
    """

    def __init__(self, config: ServeConfig, sandboxes: Sandboxes, runner: Any) -> None:
        self.config, self.sandboxes, self.runner = config, sandboxes, runner
        # Sandbox calls block (a cell runs for as long as it runs): they run on these threads,
        # at most max_inflight at once, so the event loop always answers.
        self.executor = ThreadPoolExecutor(max_workers=config.max_inflight, thread_name_prefix="harness-serve")

    async def blocking(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on a worker thread and wait for it (not cancellable once started: what
        must stop a running call on disconnect uses :meth:`start` and interrupts it)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    def start(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    # ------------------------------------------------------------------ who is asking
    def api_key(self, request: Request) -> str:
        """The caller's API key (X-API-KEY, Authorization: Bearer, or ?token= / ?api_key=).

        Raises:
            Unauthorized: the service has keys and this is none of them.
        """
        key = request.headers.get("x-api-key", "")
        auth = request.headers.get("authorization", "")
        if not key and auth.lower().startswith("bearer "):
            key = auth[7:].strip()
        key = key or request.query_params.get("token", "") or request.query_params.get("api_key", "")
        if self.config.tokens and not any(secrets.compare_digest(key, t) for t in self.config.tokens):
            raise Unauthorized("a valid API key is required (X-API-KEY or Authorization: Bearer; ?token= for "
                               "clients that cannot send headers)" if not key else "this API key is not accepted")
        return key

    def owner(self, request: Request) -> str:
        return owner_of(self.api_key(request))

    def sandbox(self, request: Request) -> Box:
        """The sandbox an envd or interpreter request is for (E2b-Sandbox-Id, and its access token
        as X-Access-Token or E2B-Traffic-Access-Token)."""
        sandbox_id = request.headers.get("e2b-sandbox-id", "")
        if not sandbox_id:
            raise BadRequest("the E2b-Sandbox-Id header is missing: point E2B_SANDBOX_URL at this service")
        token = request.headers.get("x-access-token", "") or request.headers.get("e2b-traffic-access-token", "")
        return self.sandboxes.by_access(sandbox_id, token)

    # ------------------------------------------------------------------ bodies
    async def body(self, request: Request, limit: int | None = None) -> bytes:
        """The request body, refused past ``limit`` (default ``max_body_bytes``) as it arrives."""
        cap = limit or self.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > cap:
            raise TooLarge(f"request body of {declared} bytes is over this service's limit of {cap}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                raise TooLarge(f"request body is over this service's limit of {cap} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def json(self, request: Request) -> dict[str, Any]:
        raw = await self.body(request)
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the body is not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise BadRequest(f"the body must be a JSON object, got {type(value).__name__}")
        return value

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.sandboxes.close()
        close = getattr(self.runner, "close", None)
        if close is not None:
            close()


class Streamed:
    """One blocking session call on a worker thread, its output handed to the event loop as it
    comes, stopped when the client leaves.

    ``events()`` yields ``(stream, text)`` pieces (``None`` every ``keepalive`` seconds of silence)
    until the call is done or the client has gone (``left``); :meth:`close` (in the caller's
    ``finally``) then interrupts the session until the call returns, so a call that had not
    reached the session yet when the client left is stopped too.
    """

    def __init__(self, service: Service, request: Request, session: Any) -> None:
        self.service, self.request, self.session = service, request, session
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.stop, self.done = threading.Event(), threading.Event()
        self.left = False
        self.future: asyncio.Future[Any] | None = None

    def push(self, name: str) -> Callable[[str], None]:
        def put(text: str) -> None:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (name, text))

        return put

    def start(self, fn: Callable[..., Any], *args: Any) -> None:
        def work() -> Any:
            try:
                return fn(*args)
            finally:
                self.done.set()

        self.future = self.service.start(work)

    async def events(self, keepalive: float | None = None) -> AsyncIterator[tuple[str, str] | None]:
        assert self.future is not None
        gone: asyncio.Future[Any] = asyncio.ensure_future(disconnected(self.request))
        getter: asyncio.Future[Any] | None = None
        try:
            while True:
                getter = asyncio.ensure_future(self.queue.get())
                waiting: set[asyncio.Future[Any]] = {getter, self.future, gone}
                done, _ = await asyncio.wait(waiting, timeout=keepalive, return_when=asyncio.FIRST_COMPLETED)
                if gone in done:
                    getter.cancel()
                    self.left = True
                    return
                if getter in done:
                    yield getter.result()
                    continue
                getter.cancel()
                if self.future in done:
                    break
                yield None
            while not self.queue.empty():
                yield self.queue.get_nowait()
        finally:
            gone.cancel()
            if getter is not None:
                getter.cancel()

    def result(self) -> Any:
        assert self.future is not None
        return self.future.result()

    def close(self) -> None:
        if self.future is None or self.done.is_set():
            return
        self.stop.set()
        logger.info("client left mid-call: interrupting its session")

        def stopper() -> None:  # until the call returns: it may not have reached the session yet
            while not self.done.wait(0.2):
                self.session.interrupt()

        threading.Thread(target=stopper, name="harness-serve-stop", daemon=True).start()


async def disconnected(request: Request) -> None:
    """Returns when the client of a streaming reply has gone away (its body already read, the
    next ASGI message is the disconnect): a reply that sends nothing for a while still learns it."""
    while True:
        message = await request.receive()
        if message.get("type") == "http.disconnect":
            return


def error_response(exc: ServeError) -> Response:
    return JSONResponse({"code": exc.status, "message": str(exc)}, status_code=exc.status)


def guarded(handler: Callable[[Service, Request], Any]) -> Callable[[Request], Any]:
    """A route handler that answers a :class:`ServeError` as its HTTP error and an unexpected
    failure as a 500 with its message (logged with its traceback), never a raw traceback."""

    @functools.wraps(handler)
    async def route(request: Request) -> Response:
        service: Service = request.app.state.service
        try:
            return await handler(service, request)
        except ServeError as exc:
            return error_response(exc)
        except Exception as exc:
            logger.exception("%s %s failed", request.method, request.url.path)
            return JSONResponse({"code": 500, "message": f"internal error: {type(exc).__name__}: {exc}"},
                                status_code=500)

    return route


def field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None,
          required: bool = False) -> Any:
    """``body[name]`` checked against ``kind`` (None / missing gives ``default``).

    Raises:
        BadRequest: missing when ``required``, or of another type (the message names the field).
    """
    value = body.get(name)
    if value is None:
        if required:
            raise BadRequest(f"field {name!r} is required")
        return default
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise BadRequest(f"field {name!r} must be {_kind_name(kind)}, got a boolean")
    if not isinstance(value, kind):
        raise BadRequest(f"field {name!r} must be {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", dict: "an object",
             list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)
