"""E2B's code interpreter over a session: ``POST /execute`` (NDJSON stream) and the contexts.

A cell runs in the session's kernel context of the same name, rewritten first from IPython
syntax (:mod:`harness.serve._jupyter`); its output streams as it comes, then its results, its
error and ``end_of_execution``. One cell at a time per sandbox, as a kernel runs them; a client
that disconnects has its cell interrupted. ``language: "bash"`` runs the code as a shell script.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from vmpool import CodeError, CodeResult, SessionError

from ._e2b_envd import HOME, resolve, session_failure
from ._errors import BadRequest, Unprocessable
from ._http import Service, Streamed, field, guarded
from ._jupyter import Context, cell_events, rewrite, setup_code
from ._sandboxes import Box

__all__ = ["routes"]

logger = logging.getLogger(__name__)

LANGUAGES = ("python", "bash")


def _now_ns() -> int:
    return time.time_ns()


def _line(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


def _hidden(box: Box, ctx: Context, code: str) -> bool:
    """A cell the user did not send (set-up, working directory): its failure is only logged."""
    r = box.session.run_code(code, context=ctx.id, timeout=30.0)
    if r.error is not None:
        logger.info("sandbox %s context %s: set-up cell failed: %s: %s", box.id, ctx.id, r.error.name, r.error.value)
    return r.error is None


def _run_cell(box: Box, ctx: Context, code: str, env: dict[str, str], timeout: float, call: Streamed) -> CodeResult:
    stopped = CodeResult(None, None, False, "", "", CodeError("KeyboardInterrupt", "the client went away", ""), 0)
    with box.lock:
        if ctx.language == "bash":
            c = box.session.run(code, timeout=timeout, on_stdout=call.push("stdout"), on_stderr=call.push("stderr"))
            error = None if c.exit_code == 0 else CodeError(
                "TimeoutError" if c.timed_out else "CalledProcessError",
                "the command ran past its timeout" if c.timed_out else f"exit status {c.exit_code}", "")
            return CodeResult(None, None, False, c.stdout, c.stderr, error, 0, c.timed_out)
        if not ctx.ready:
            ctx.ready = _hidden(box, ctx, setup_code(box.env_vars))
        moved = ctx.cwd != HOME or env
        if moved:
            _hidden(box, ctx, f"_e2b_.enter({resolve(ctx.cwd)!r}, {env!r})")
        try:
            if call.stop.is_set():
                return stopped
            return box.session.run_code(rewrite(code), context=ctx.id, timeout=timeout,
                                        on_stdout=call.push("stdout"), on_stderr=call.push("stderr"))
        finally:
            if moved and not box.session.closed:
                _hidden(box, ctx, "_e2b_.leave()")


@guarded
async def execute(service: Service, request: Request) -> Response:
    box = service.sandbox(request)
    body = await service.json(request)
    code = field(body, "code", str, required=True)
    context_id = field(body, "context_id", str)
    language = field(body, "language", str)
    if context_id and language:
        raise BadRequest("give context_id or language, not both")
    if language and language not in LANGUAGES:
        raise Unprocessable(f"language {language!r} is not available here; languages: {', '.join(LANGUAGES)}")
    env = field(body, "env_vars", dict, default={})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise BadRequest("field 'env_vars' must be an object of strings")
    if language == "bash":
        ctx = box.contexts.setdefault("bash", Context("bash", "bash"))
    else:
        ctx = box.context(context_id)
    if box.state == "paused":
        raise BadRequest(f"sandbox {box.id} is paused: connect to it first")
    timeout = max(1.0, box.end_at - service.sandboxes.clock())
    ctx.count += 1
    return StreamingResponse(_cell_stream(service, request, box, ctx, code, env, timeout), media_type="application/x-ndjson")


async def _cell_stream(service: Service, request: Request, box: Box, ctx: Context, code: str,
                       env: dict[str, str], timeout: float) -> AsyncIterator[bytes]:
    call = Streamed(service, request, box.session)
    yield _line({"type": "number_of_executions", "execution_count": ctx.count})
    call.start(_run_cell, box, ctx, code, env, timeout, call)
    try:
        async for piece in call.events():
            if piece is not None:
                yield _line({"type": piece[0], "text": piece[1], "timestamp": _now_ns()})
        if call.left:
            return
        try:
            result = call.result()
        except SessionError as exc:
            err = session_failure(service, box, exc)
            yield _line({"type": "error", "name": "SandboxError", "value": str(err), "traceback": ""})
            yield _line({"type": "end_of_execution"})
            return
        for event in _events(result, ctx):
            yield _line(event)
    finally:
        call.close()


def _events(result: CodeResult, ctx: Context) -> Iterator[dict[str, Any]]:
    return cell_events(result, ctx.count, streamed=True, now=_now_ns)


@guarded
async def create_context(service: Service, request: Request) -> Response:
    box = service.sandbox(request)
    body = await service.json(request)
    language = field(body, "language", str, default="python")
    if language not in LANGUAGES:
        raise Unprocessable(f"language {language!r} is not available here; languages: {', '.join(LANGUAGES)}")
    cwd = field(body, "cwd", str, default=HOME)
    resolve(cwd)  # refuses an empty one
    ctx = Context(secrets.token_hex(8), language, cwd)
    box.contexts[ctx.id] = ctx
    return JSONResponse(ctx.to_json())


@guarded
async def list_contexts(service: Service, request: Request) -> Response:
    box = service.sandbox(request)
    box.context(None)
    return JSONResponse([c.to_json() for c in box.contexts.values()])


@guarded
async def delete_context(service: Service, request: Request) -> Response:
    box = service.sandbox(request)
    ctx = box.context(request.path_params["context_id"])
    box.contexts.pop(ctx.id, None)
    try:
        await service.blocking(_restart, box, ctx)
    except SessionError as exc:
        raise session_failure(service, box, exc) from exc
    return Response(status_code=204)


@guarded
async def restart_context(service: Service, request: Request) -> Response:
    box = service.sandbox(request)
    ctx = box.context(request.path_params["context_id"])
    try:
        await service.blocking(_restart, box, ctx)
    except SessionError as exc:
        raise session_failure(service, box, exc) from exc
    ctx.ready, ctx.count = False, 0
    return Response(status_code=204)


def _restart(box: Box, ctx: Context) -> None:
    if ctx.language == "python":
        with box.lock:
            box.session.restart_context(ctx.id)


def routes() -> list[Route]:
    return [
        Route("/execute", execute, methods=["POST"]),
        Route("/contexts", create_context, methods=["POST"]),
        Route("/contexts", list_contexts, methods=["GET"]),
        Route("/contexts/{context_id}", delete_context, methods=["DELETE"]),
        Route("/contexts/{context_id}/restart", restart_context, methods=["POST"]),
    ]


