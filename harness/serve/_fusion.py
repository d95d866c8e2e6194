"""SandboxFusion's ``POST /run_code`` on the grading pool.

Meanings are SandboxFusion's: ``status`` is ``Success`` when the program ran and exited 0,
``Failed`` when it ran and failed (non-zero exit, time limit), ``SandboxError`` when no sandbox
could run it (infrastructure: verl scores it -1, never as the program's failure).
``run_result.status`` is ``Finished`` (it exited), ``TimeLimitExceeded`` or ``Error`` (it brought
its sandbox down). Beyond SandboxFusion, ``run_result.outcome`` names how the run ended in
vmpool's words (``ok``, ``runtime_error``, ``timeout``, ``memory_limit``, ``output_limit``,
``sandbox_killed``), so a memory-limit death is told apart from a crash.

The time limit is judged on CPU seconds (``run_timeout``); the wall-clock backstop is
``grading.wall_factor`` x it + ``grading.wall_slack_s``, so a loaded host does not turn
correct programs into timeouts (a program that sleeps is stopped at the backstop).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from vmpool import ExecRequest, ExecResult, Limits, SettingsError, Status, VmpoolError

from ._errors import BadRequest, Unprocessable
from ._http import Service, field, guarded

__all__ = ["fusion_reply", "routes"]

# SandboxFusion's names for what runs as Python here.
PYTHON_NAMES = ("python", "python3")


def _limits(service: Service, run_timeout: float, memory_mb: int | None) -> Limits:
    base = service.config.harness.limits
    grading = service.config.harness.grading
    try:
        return dataclasses.replace(base, cpu_s=run_timeout, wall_s=run_timeout * grading.wall_factor +
                                   grading.wall_slack_s, memory_mb=memory_mb or base.memory_mb)
    except SettingsError as exc:
        raise BadRequest(f"field {_FIELDS.get(exc.key or '', exc.key)!r}: {exc}") from exc


_FIELDS = {"memory_mb": "memory_limit_MB", "cpu_s": "run_timeout", "wall_s": "run_timeout"}


def _files(value: Any) -> dict[str, bytes]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest("field 'files' must be an object of path -> base64 content")
    out = {}
    for name, b64 in value.items():
        path = str(name).removeprefix("./")
        if not path or path.startswith("/") or ".." in path.split("/"):
            raise BadRequest(f"files: {name!r} must be a relative path inside the program's directory")
        try:
            out[path] = base64.b64decode(b64 or "", validate=True)
        except (binascii.Error, TypeError) as exc:
            raise BadRequest(f"files: {name!r} is not base64: {exc}") from exc
    return out


def _fetch(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise BadRequest("field 'fetch_files' must be a list of paths")
    out = []
    for name in value:
        path = name.removeprefix("./")
        if not path or path.startswith("/") or ".." in path.split("/"):
            raise BadRequest(f"fetch_files: {name!r} must be a relative path inside the program's directory")
        out.append(path)
    return out


def fusion_reply(result: ExecResult, limits: Limits, fetched: dict[str, str]) -> dict[str, Any]:
    """SandboxFusion's answer for one run."""
    if result.status is Status.SANDBOX_ERROR:
        return {"status": "SandboxError", "message": f"no sandbox could run the program: {result.error}",
                "compile_result": None, "run_result": None, "executor_pod_name": None, "files": {}}
    run_status = {Status.TIMEOUT: "TimeLimitExceeded", Status.SANDBOX_KILLED: "Error"}.get(result.status, "Finished")
    code = result.exit_code
    if code is None and run_status == "Finished":
        code = 128 + result.signal if result.signal else 1
    message = {
        Status.TIMEOUT: f"time limit exceeded ({limits.effective_cpu_s:g} s of CPU"
                        f"{', wall-clock backstop' if result.timeout_by == 'wall' else ''})",
        Status.MEMORY_LIMIT: f"memory limit exceeded ({limits.memory_mb} MiB)",
        Status.OUTPUT_LIMIT: f"output limit exceeded ({limits.output_bytes} bytes)",
        Status.SANDBOX_KILLED: f"the program brought its sandbox down: {result.error}",
    }.get(result.status, "")
    return {
        "status": "Success" if result.status is Status.OK else "Failed",
        "message": message,
        "compile_result": None,
        "run_result": {"status": run_status, "execution_time": round(result.wall_s, 6),
                       "return_code": code if run_status == "Finished" else None,
                       "stdout": result.stdout, "stderr": result.stderr, "outcome": result.status.value},
        "executor_pod_name": None,
        "files": fetched,
    }


@guarded
async def run_code(service: Service, request: Request) -> Response:
    service.api_key(request)
    body = await service.json(request)
    code = field(body, "code", str, required=True)
    language = field(body, "language", str, default="python")
    if language not in PYTHON_NAMES:
        raise Unprocessable(f"language {language!r} is not available here yet; languages: python")
    stdin = field(body, "stdin", str, default="")
    run_timeout = field(body, "run_timeout", (int, float), default=10)
    field(body, "compile_timeout", (int, float), default=10)
    cap = service.config.max_run_timeout_s
    if not 0 < run_timeout <= cap:
        raise BadRequest(f"run_timeout must be > 0 and <= {cap:g} (this service's max_run_timeout_s), "
                         f"got {run_timeout!r}")
    memory = field(body, "memory_limit_MB", (int, float))
    memory_mb = int(memory) if memory is not None and memory > 0 else None  # SandboxFusion: -1 = its default
    limits = _limits(service, float(run_timeout), memory_mb)
    try:
        req = ExecRequest(code=code, stdin=stdin, files=_files(body.get("files")), limits=limits,
                          fetch_files=_fetch(body.get("fetch_files")))
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    try:
        result = await service.blocking(service.runner.pool.run, req)
    except VmpoolError as exc:  # the pool itself could not start: infrastructure (verl: -1)
        result = ExecResult(status=Status.SANDBOX_ERROR, error=str(exc))
    fetched = {name: base64.b64encode(data).decode() for name, data in result.files.items()}
    return JSONResponse(fusion_reply(result, limits, fetched))


def routes() -> list[Route]:
    return [Route("/run_code", run_code, methods=["POST"]), Route("/{prefix:path}/run_code", run_code,
                                                                    methods=["POST"])]
