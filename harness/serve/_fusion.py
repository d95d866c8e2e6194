"""SandboxFusion's ``POST /run_code`` on the grading pool, in every language ``rewards`` grades.

Languages, by SandboxFusion's names (``language``; anything else is a 422 that lists these):
``python`` and ``python3`` (Python 3, run in the sandbox's warm interpreter), ``cpp`` (g++, GNU
C++17), ``c`` (gcc, GNU C17: beyond SandboxFusion, which has no C), ``java`` (javac; the class
declaring ``main`` runs), ``nodejs`` (``javascript`` and ``js`` too), ``go``, ``rust`` (rustc,
edition 2021) and ``bash``. Toolchains and run commands are ``rewards._languages``'.

The compiled ones (C, C++, Java, Go, Rust) are built first, each unique source once per service
(one :class:`rewards.Builder`; requests for a source that is building wait for that build), under
``compile_timeout`` CPU seconds, and ``compile_result`` says how it went: ``Finished`` with
``return_code`` 0 when it built; a compile error is top-level ``Failed`` with the compiler's first
lines in ``compile_result.stderr``, a non-zero ``return_code`` and ``run_result`` null (verl: -4);
a build past its time (its compiler's processes counted together) is
``compile_result.status`` ``TimeLimitExceeded`` (also ``Failed``, no run);
a build no sandbox could run is ``SandboxError``. Python, Node and Bash have no compile step
(``compile_result`` null), as in SandboxFusion: a syntax error is the run's failure.

Meanings are SandboxFusion's: ``status`` is ``Success`` when the program ran and exited 0,
``Failed`` when it ran and failed (non-zero exit, time limit) or did not build, ``SandboxError``
when no sandbox could run it (infrastructure: verl scores it -1, never as the program's failure).
``run_result.status`` is ``Finished`` (it exited), ``TimeLimitExceeded`` or ``Error`` (it brought
its sandbox down). Beyond SandboxFusion, ``run_result.outcome`` (and ``compile_result.outcome``)
names how the run (the build) ended in vmpool's words (``ok``, ``runtime_error``, ``timeout``,
``memory_limit``, ``output_limit``, ``sandbox_killed``), so a memory-limit death is told apart
from a crash.

The time limit is judged on CPU seconds (``run_timeout``); the wall-clock backstop is
``grading.wall_factor`` x it + ``grading.wall_slack_s``, so a loaded host does not turn
correct programs into timeouts (a program that sleeps is stopped at the backstop). The build's
wall-clock backstop is reckoned the same way from ``compile_timeout``; its memory and output
limits are :data:`rewards.COMPILE_LIMITS`'. A program in any language but Python runs with the
request's limits as ``rewards.Build.run_request`` adjusts them for its runtime (the JVM's heap,
Go's and Node's resident-memory accounting). ``run_timeout`` and ``compile_timeout`` are each at
most ``max_run_timeout_s``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import logging
import weakref
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rewards import Build, Builder, Language, find_language
from vmpool import ExecRequest, ExecResult, Limits, SettingsError, Status, VmpoolError

from ._errors import BadRequest, Unprocessable
from ._http import Service, field, guarded

__all__ = ["LANGUAGES", "builder", "fusion_reply", "routes"]

logger = logging.getLogger(__name__)

# SandboxFusion's language names -> the rewards language each runs as.
LANGUAGES: dict[str, str] = {
    "python": "python", "python3": "python", "cpp": "cpp", "c": "c", "java": "java", "nodejs": "javascript",
    "javascript": "javascript", "js": "javascript", "go": "go", "rust": "rust", "bash": "bash",
}


def _language(name: str) -> Language:
    lang = find_language(LANGUAGES.get(name, ""))
    if lang is None:
        raise Unprocessable(f"language {name!r} is not available here; languages: {', '.join(LANGUAGES)}")
    return lang


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


def _timeout(service: Service, body: dict[str, Any], name: str) -> float:
    value = field(body, name, (int, float), default=10)
    cap = service.config.max_run_timeout_s
    if not 0 < value <= cap:
        raise BadRequest(f"{name} must be > 0 and <= {cap:g} (this service's max_run_timeout_s), got {value!r}")
    return float(value)


def fusion_reply(result: ExecResult, limits: Limits, fetched: dict[str, str],
                 compile_result: dict[str, Any] | None = None) -> dict[str, Any]:
    """SandboxFusion's answer for one run (``compile_result``: the build's, where there was one)."""
    if result.status is Status.SANDBOX_ERROR:
        return {"status": "SandboxError", "message": f"no sandbox could run the program: {result.error}",
                "compile_result": compile_result, "run_result": None, "executor_pod_name": None, "files": {}}
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
        "compile_result": compile_result,
        "run_result": {"status": run_status, "execution_time": round(result.wall_s, 6),
                       "return_code": code if run_status == "Finished" else None,
                       "stdout": result.stdout, "stderr": result.stderr, "outcome": result.status.value},
        "executor_pod_name": None,
        "files": fetched,
    }


def _compile_result(build: Build) -> dict[str, Any]:
    """SandboxFusion's ``compile_result`` of a build that ran (or was cached): ``Finished`` with return code 0 (built) or the compiler's non-zero one (a compile
    error), ``TimeLimitExceeded`` past its time."""
    timed_out = build.ok is False and build.status is Status.TIMEOUT
    code = 0 if build.ok else (build.exit_code or 1)  # the program's fault is never a return code 0
    return {"status": "TimeLimitExceeded" if timed_out else "Finished", "execution_time": round(build.wall_s, 6),
            "return_code": None if timed_out else code, "stdout": "", "stderr": "" if build.ok else build.error,
            "outcome": "timeout" if timed_out else (build.status or Status.OK).value}


def _not_built(build: Build, compile_s: float) -> dict[str, Any]:
    """The answer when ``build`` did not build: the program's compile error, or infrastructure."""
    if build.ok is None:
        return {"status": "SandboxError", "message": f"no sandbox could build the program: {build.error}",
                "compile_result": None, "run_result": None, "executor_pod_name": None, "files": {}}
    if build.status is Status.TIMEOUT:
        said = f"compile time limit exceeded ({compile_s:g} s of CPU)"
    else:
        first = build.error.strip().splitlines()[0] if build.error.strip() else "the build failed"
        said = f"compile error: {first}" if build.status is Status.RUNTIME_ERROR else first
    return {"status": "Failed", "message": said, "compile_result": _compile_result(build),
            "run_result": None, "executor_pod_name": None, "files": {}}


class _Builds:
    """What /run_code builds with, one per service: a Builder (its cache: each unique source and
    compile limits built once) and the builds under way, so that concurrent requests for one
    source (verl sends every test case of a program at once) wait for one build."""

    def __init__(self) -> None:
        self.builder = Builder()
        self.pending: dict[str, asyncio.Future[Build]] = {}


_BUILDS: weakref.WeakKeyDictionary[Service, _Builds] = weakref.WeakKeyDictionary()


def _builds(service: Service) -> _Builds:
    builds = _BUILDS.get(service)
    if builds is None:  # only the event loop's thread gets here: no race
        builds = _BUILDS[service] = _Builds()
    return builds


def builder(service: Service) -> Builder:
    """The :class:`rewards.Builder` that builds ``service``'s /run_code programs (made on first use)."""
    return _builds(service).builder


def _compile_limits(service: Service, builder: Builder, compile_timeout: float) -> Limits:
    grading = service.config.harness.grading
    return dataclasses.replace(builder.compile_limits, cpu_s=compile_timeout,
                               wall_s=compile_timeout * grading.wall_factor + grading.wall_slack_s)


def _build_now(service: Service, builder: Builder, lang: Language, source: str, limits: Limits) -> Build:
    """On a worker thread: build ``source`` in the grading pool (or find it built)."""
    try:
        return builder.build_all(service.runner.pool.map, [(lang, source)], limits)[builder.key(lang, source, limits)]
    except VmpoolError as exc:  # the pool itself could not start: infrastructure
        return Build(lang, None, error=str(exc), status=Status.SANDBOX_ERROR)


async def _build(service: Service, lang: Language, source: str, compile_timeout: float) -> Build:
    """``source`` built (or a compile error, or ``ok=None``), through the service's Builder."""
    if not lang.artifact:  # Node, Bash: no compile step (SandboxFusion has none: a syntax error is the run's)
        return Build(lang, True, {lang.source_name(source): source.encode()}, main=lang.main_class(source))
    builds = _builds(service)
    limits = _compile_limits(service, builds.builder, compile_timeout)
    cached = builds.builder.get(lang, source, limits)
    if cached is not None:
        return cached
    key = builds.builder.key(lang, source, limits)
    future = builds.pending.get(key)
    if future is None:
        future = asyncio.ensure_future(service.blocking(_build_now, service, builds.builder, lang, source, limits))
        builds.pending[key] = future
        future.add_done_callback(lambda _: builds.pending.pop(key, None))
    # Shielded: a client that leaves does not cancel the build the others wait for.
    return await asyncio.shield(future)


def _request(make: Callable[..., ExecRequest], *args: Any, **kwargs: Any) -> ExecRequest:
    try:
        return make(*args, **kwargs)
    except ValueError as exc:  # the request's files or limits
        raise BadRequest(str(exc)) from exc


def _run(service: Service, req: ExecRequest) -> ExecResult:
    """On a worker thread: run ``req`` in the grading pool."""
    try:
        return service.runner.pool.run(req)
    except VmpoolError as exc:  # the pool itself could not start: infrastructure (verl: -1)
        return ExecResult(status=Status.SANDBOX_ERROR, error=str(exc))


@guarded
async def run_code(service: Service, request: Request) -> Response:
    service.api_key(request)
    body = await service.json(request)
    code = field(body, "code", str, required=True)
    lang = _language(field(body, "language", str, default="python"))
    stdin = field(body, "stdin", str, default="")
    run_timeout = _timeout(service, body, "run_timeout")
    compile_timeout = _timeout(service, body, "compile_timeout")
    memory = field(body, "memory_limit_MB", (int, float))
    memory_mb = int(memory) if memory is not None and memory > 0 else None  # SandboxFusion: -1 = its default
    limits = _limits(service, run_timeout, memory_mb)
    files, fetch = _files(body.get("files")), _fetch(body.get("fetch_files"))
    built: dict[str, Any] | None = None
    if lang.is_python:
        req = _request(ExecRequest, code=code, stdin=stdin, files=files, limits=limits, fetch_files=fetch)
    else:
        build = await _build(service, lang, code, compile_timeout)
        if not build.ok:
            return JSONResponse(_not_built(build, compile_timeout))
        built = _compile_result(build) if lang.artifact else None
        run = build.run_request(stdin, limits)
        # The program's own files win over the request's of the same name (as in SandboxFusion).
        req = _request(dataclasses.replace, run, files={**files, **run.files}, fetch_files=fetch)
    result = await service.blocking(_run, service, req)
    fetched = {name: base64.b64encode(data).decode() for name, data in result.files.items()}
    return JSONResponse(fusion_reply(result, limits, fetched, built))


def routes() -> list[Route]:
    return [Route("/run_code", run_code, methods=["POST"]), Route("/{prefix:path}/run_code", run_code,
                                                                    methods=["POST"])]
