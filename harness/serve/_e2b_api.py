"""E2B's control plane (``E2B_API_URL``): create, get, list, kill, pause, connect, timeout.

Each E2B sandbox is one session (:mod:`harness.serve._sandboxes`); ``pause`` and ``connect``
are the session's pause and resume. The create's ``allow_internet_access: true`` is refused:
sandboxes never have a network.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from vmpool import VmpoolError

from ._errors import BadRequest
from ._http import Service, field, guarded

__all__ = ["routes"]


def _strings(value: Any, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise BadRequest(f"field {name!r} must be an object of strings")
    return dict(value)


@guarded
async def create(service: Service, request: Request) -> Response:
    owner = service.owner(request)
    body = await service.json(request)
    template = field(body, "templateID", str, default="base")
    if template not in service.config.template_ids():
        raise BadRequest(f"template {template!r} is not served here; templates: {', '.join(service.config.template_ids())}")
    if body.get("allow_internet_access") is True or (body.get("network") or {}).get("allowOut"):
        raise BadRequest("allow_internet_access is not available: sandboxes here never have a network "
                         "(create with allow_internet_access=False)")
    timeout = field(body, "timeout", (int, float))
    try:
        box = await service.blocking(service.sandboxes.create, owner, template, timeout,
                                     _strings(body.get("metadata"), "metadata"),
                                     _strings(body.get("envVars"), "envVars"), bool(body.get("autoPause")))
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    except VmpoolError as exc:  # SessionError included: infrastructure, not the request's fault
        return JSONResponse({"code": 503, "message": f"no sandbox could be started: {exc}"}, status_code=503)
    return JSONResponse(box.created_json(), status_code=201)


@guarded
async def list_sandboxes(service: Service, request: Request) -> Response:
    owner = service.owner(request)
    states = request.query_params.get("state", "")
    boxes = service.sandboxes.list(owner)
    if states:
        wanted = set(states.split(","))
        boxes = [b for b in boxes if b.state in wanted]
    return JSONResponse([b.detail_json(service.config) for b in boxes])


@guarded
async def detail(service: Service, request: Request) -> Response:
    box = service.sandboxes.get(service.owner(request), request.path_params["sandbox_id"])
    return JSONResponse(box.detail_json(service.config))


@guarded
async def kill(service: Service, request: Request) -> Response:
    owner = service.owner(request)
    await service.blocking(service.sandboxes.kill, owner, request.path_params["sandbox_id"])
    return Response(status_code=204)


@guarded
async def pause(service: Service, request: Request) -> Response:
    owner = service.owner(request)
    await service.blocking(service.sandboxes.pause, owner, request.path_params["sandbox_id"])
    return Response(status_code=204)


@guarded
async def connect(service: Service, request: Request) -> Response:
    owner = service.owner(request)
    body = await service.json(request)
    timeout = field(body, "timeout", (int, float))
    try:
        box = await service.blocking(service.sandboxes.resume, owner, request.path_params["sandbox_id"], timeout)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    return JSONResponse(box.detail_json(service.config), status_code=200)


@guarded
async def set_timeout(service: Service, request: Request) -> Response:
    owner = service.owner(request)
    body = await service.json(request)
    timeout = field(body, "timeout", (int, float), required=True)
    try:
        service.sandboxes.set_timeout(owner, request.path_params["sandbox_id"], timeout)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    return Response(status_code=204)


@guarded
async def refresh(service: Service, request: Request) -> Response:
    owner = service.owner(request)
    body = await service.json(request)
    duration = field(body, "duration", (int, float), default=service.config.default_timeout_s)
    try:
        service.sandboxes.set_timeout(owner, request.path_params["sandbox_id"], duration)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    return Response(status_code=204)


def routes() -> list[Route]:
    sid = "/sandboxes/{sandbox_id}"
    return [
        Route("/sandboxes", create, methods=["POST"]),
        Route("/v2/sandboxes", create, methods=["POST"]),
        Route("/sandboxes", list_sandboxes, methods=["GET"]),
        Route("/v2/sandboxes", list_sandboxes, methods=["GET"]),
        Route(sid, detail, methods=["GET"]),
        Route(sid, kill, methods=["DELETE"]),
        Route(f"{sid}/pause", pause, methods=["POST"]),
        Route(f"{sid}/resume", connect, methods=["POST"]),
        Route(f"/v2{sid}/connect", connect, methods=["POST"]),
        Route(f"{sid}/connect", connect, methods=["POST"]),
        Route(f"{sid}/timeout", set_timeout, methods=["POST"]),
        Route(f"{sid}/refreshes", refresh, methods=["POST"]),
    ]
