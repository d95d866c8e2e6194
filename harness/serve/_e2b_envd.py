"""E2B's in-sandbox daemon (envd) over a session: ``/health``, ``process.Process/Start`` (Connect
server streaming, JSON codec) and ``/files``.

A command is the session's shell call (``Session.run``) with its output streamed as Connect
envelopes: a 5-byte prefix (flags, big-endian length) and a JSON message each, ending with an
end-of-stream envelope (flag 0x02) that carries an error when the call failed. A client that
goes away mid-command has the command killed (``Session.interrupt``).
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import shlex
import struct
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from vmpool import CommandResult, SessionError

from ._errors import BadRequest, Gone, NotFound, TooLarge
from ._http import Service, Streamed, guarded
from ._sandboxes import Box

__all__ = ["HOME", "envelope", "resolve", "routes", "session_failure"]

logger = logging.getLogger(__name__)

HOME = "/home/user"
END_STREAM = 0x02
SHELLS = ("/bin/bash", "bash", "/usr/bin/bash", "/bin/sh", "sh", "/usr/bin/sh")


def envelope(message: dict[str, Any], flags: int = 0) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    return struct.pack(">BI", flags, len(body)) + body


def _unwrap(raw: bytes, encoding: str) -> dict[str, Any]:
    """The one message of a Connect streaming request body."""
    if len(raw) < 5:
        raise BadRequest("the body is not a Connect envelope (5-byte prefix, then the message)")
    flags, size = struct.unpack(">BI", raw[:5])
    data = raw[5:5 + size]
    if len(data) != size:
        raise BadRequest(f"the Connect envelope says {size} bytes but has {len(data)}")
    if flags & 0x01:
        if encoding != "gzip":
            raise BadRequest(f"compressed envelope with Connect-Content-Encoding {encoding!r}: only gzip is read")
        data = gzip.decompress(data)
    try:
        message = json.loads(data)
    except ValueError as exc:
        raise BadRequest(f"the Connect message is not JSON (send Content-Type application/connect+json): {exc}")
    if not isinstance(message, dict):
        raise BadRequest("the Connect message must be a JSON object")
    return message


def resolve(path: str) -> str:
    """An E2B path as the session's file calls take it: ``/home/user/...`` and relative paths
    are relative to the session's home (its ``/tmp/home``, which the namespace backend also
    shows at ``/home/user``; a microVM guest has only the home itself)."""
    if not path:
        raise BadRequest("the path is empty")
    if path == HOME or path.startswith(HOME + "/"):
        return path[len(HOME) + 1:] or "."
    return path


def session_failure(service: Service, box: Box, exc: SessionError) -> Exception:
    """What a session error means for the request: the sandbox is gone (404), or the call itself
    was refused (400 with the session's reason)."""
    if getattr(box.session, "closed", False):
        service.sandboxes.lost(box, str(exc))
        return Gone(f"sandbox {box.id} is gone: {exc}")
    return BadRequest(str(exc))


def command_script(process: dict[str, Any], box: Box) -> str:
    cmd = process.get("cmd")
    args = process.get("args") or []
    if not isinstance(cmd, str) or not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise BadRequest("process.cmd must be a string and process.args a list of strings")
    if cmd in SHELLS and "-c" in args and args.index("-c") + 1 < len(args):
        script = args[args.index("-c") + 1]
    else:
        script = shlex.join([cmd, *args])
    envs = {**box.env_vars, **(process.get("envs") or {})}
    exports = "".join(f"export {k}={shlex.quote(str(v))}\n" for k, v in envs.items() if k.isidentifier())
    cwd = resolve(str(process.get("cwd") or HOME))
    if cwd.startswith("/"):
        go = f"cd {shlex.quote(cwd)}"
    else:  # /home/user where the backend shows it (namespace), else the session's home itself
        rel = shlex.quote(cwd)
        go = f"{{ cd {HOME}/{rel} 2>/dev/null || cd \"$HOME\"/{rel}; }}"
    return f"{exports}{go} || exit 1\n{script}"


def _end_event(result: CommandResult) -> dict[str, Any]:
    if result.exit_code is None or result.exit_code < 0:
        status = "signal: killed"
        end: dict[str, Any] = {"exitCode": -1, "exited": False, "status": status}
    else:
        end = {"exitCode": result.exit_code, "exited": True, "status": f"exit status {result.exit_code}"}
    if result.limit:
        end["error"] = f"the command went over its {result.limit} limit and was killed"
    return {"event": {"end": end}}


@guarded
async def health(service: Service, request: Request) -> Response:
    try:
        service.sandbox(request)
    except NotFound as exc:  # E2B's edge answers a gone sandbox's traffic with 502: is_running() is False
        return JSONResponse({"code": 502, "message": str(exc)}, status_code=502)
    return Response(status_code=204)


@guarded
async def start_process(service: Service, request: Request) -> Response:
    box = service.sandbox(request)
    message = _unwrap(await service.body(request), request.headers.get("connect-content-encoding", "identity"))
    process = message.get("process")
    if not isinstance(process, dict):
        raise BadRequest("the StartRequest has no process")
    script = command_script(process, box)
    deadline_ms = request.headers.get("connect-timeout-ms", "")
    remaining = max(1.0, box.end_at - service.sandboxes.clock())
    timeout = min(float(deadline_ms) / 1000.0, remaining) if deadline_ms.isdigit() and int(deadline_ms) else remaining
    keepalive = float(request.headers.get("keepalive-ping-interval") or 50)
    box.next_pid += 1
    return StreamingResponse(_command_stream(service, request, box, script, timeout, keepalive, box.next_pid),
                             media_type="application/connect+json")


async def _command_stream(service: Service, request: Request, box: Box, script: str, timeout: float,
                          keepalive: float, pid: int) -> AsyncIterator[bytes]:
    call = Streamed(service, request, box.session)

    def run() -> CommandResult:
        with box.lock:
            return box.session.run(script, timeout=timeout, on_stdout=call.push("stdout"),
                                   on_stderr=call.push("stderr"))

    yield envelope({"event": {"start": {"pid": pid}}})
    call.start(run)
    try:
        async for piece in call.events(keepalive):
            if piece is None:
                yield envelope({"event": {"keepalive": {}}})
            else:
                yield envelope({"event": {"data": {piece[0]: base64.b64encode(piece[1].encode()).decode()}}})
        if call.left:
            return
        try:
            result = call.result()
        except SessionError as exc:
            err = session_failure(service, box, exc)
            yield envelope({"error": {"code": "not_found" if isinstance(err, NotFound) else "unavailable",
                                      "message": str(err)}}, END_STREAM)
            return
        if result.timed_out:
            yield envelope({"error": {"code": "deadline_exceeded",
                                      "message": f"the command ran past its {timeout:.0f} s and was killed"}},
                           END_STREAM)
        else:
            yield envelope(_end_event(result))
            yield envelope({}, END_STREAM)
    finally:
        call.close()


@guarded
async def read_file(service: Service, request: Request) -> Response:
    box = service.sandbox(request)
    path = resolve(request.query_params.get("path", ""))
    try:
        data = await service.blocking(box.session.read_file, path)
    except SessionError as exc:
        err = session_failure(service, box, exc)
        if isinstance(err, BadRequest) and ("No such file" in str(exc) or "Not a directory" in str(exc)):
            raise NotFound(f"file {path} not found") from exc
        raise err from exc
    return Response(data, media_type="application/octet-stream")


@guarded
async def write_file(service: Service, request: Request) -> Response:
    box = service.sandbox(request)
    cap = box.session.config.file_size_bytes if hasattr(box.session, "config") else service.config.max_body_bytes
    kind = request.headers.get("content-type", "")
    files: list[tuple[str, bytes]] = []
    if kind.startswith("multipart/form-data"):
        form = await request.form(max_files=1000, max_part_size=min(cap, service.config.max_body_bytes))
        single = request.query_params.get("path", "")
        for _, part in form.multi_items():
            if isinstance(part, str):
                continue
            data = await part.read()
            files.append((resolve(single or part.filename or ""), data))
    else:
        raw = await service.body(request)
        if request.headers.get("content-encoding", "") == "gzip":
            raw = gzip.decompress(raw)
        files.append((resolve(request.query_params.get("path", "")), raw))
    if not files:
        raise BadRequest("no file in the request (multipart field 'file', or an octet-stream body with ?path=)")
    written = []
    for path, data in files:
        if len(data) > cap:
            raise TooLarge(f"file {path} of {len(data)} bytes is over the sandbox's limit of {cap}")
        try:
            await service.blocking(_write, box, path, data)
        except SessionError as exc:
            raise session_failure(service, box, exc) from exc
        written.append({"name": path.rsplit("/", 1)[-1], "type": "file", "path": path})
    return JSONResponse(written)


def _write(box: Box, path: str, data: bytes) -> None:
    with box.lock:
        box.session.write_file(path, data)


def routes() -> list[Route]:
    return [
        Route("/health", health, methods=["GET"]),
        Route("/process.Process/Start", start_process, methods=["POST"]),
        Route("/files", read_file, methods=["GET"]),
        Route("/files", write_file, methods=["POST"]),
    ]

