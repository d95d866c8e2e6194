"""``harness serve --ray``: the service on Ray Serve, its sandboxes on every node of the cluster.

One **node service** actor per alive node (``harness-serve-<node id>``, pinned to its node with a
hard ``NodeAffinitySchedulingStrategy``, never restarted) runs the whole local service
(:func:`~harness.serve.create_app`: sessions from a local ``vmpool.SessionPool``, the grading
pool) and answers ASGI requests handed to it as plain values, its reply streamed back as a Ray
generator (the response start, then the body's pieces). Every sandbox id it makes starts with its
node's tag (the node id's first 8 hex digits).

The **gateway** is the Ray Serve deployment (``--replicas`` of it, stateless): it routes a request
that names a sandbox (the ``E2b-Sandbox-Id`` header or ``/sandboxes/{id}``) to the node service
whose tag the id starts with; a create goes to the node holding the fewest sandboxes, a list to
every node, ``/run_code`` and ``/grade`` round-robin. A node that left (its actor dead or gone)
makes its sandboxes a 404 that says so, never a hang; a client that leaves mid-stream has its
cell or command stopped on the node (the node's app sees the disconnect).

Limits (sandboxes per key, per service) are each node's own: on N nodes the service holds up
to N x ``max_sandboxes``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

from .._errors import ConfigError
from ..ray._actor import alive_nodes, default_runtime_env, ensure_ray, remote_class
from ..ray._sessions import lost_errors
from ._config import ServeConfig

__all__ = ["NODE_PREFIX", "deploy", "node_tag", "shutdown"]

logger = logging.getLogger(__name__)

NODE_PREFIX = "harness-serve-"
NAMESPACE = "harness-serve"
APP_NAME = "harness-serve"
_SANDBOX_PATH = re.compile(r"^/(?:v2/)?sandboxes/([^/]+)")


def node_tag(node_id: str) -> str:
    return node_id[:8].lower()


class NodeServiceImpl:
    """The local service on one node, answering requests the gateway forwards."""

    def __init__(self, config: ServeConfig, tag: str) -> None:
        from ._app import create_app

        self.tag = tag
        self.app = create_app(config, id_prefix=tag)

    def ready(self) -> str:
        return self.tag

    def load(self) -> int:
        return int(self.app.state.service.sandboxes.count())

    async def handle(self, method: str, path: str, query: str, headers: list[tuple[str, str]],
                     body: bytes) -> AsyncIterator[Any]:
        """Run one request through the app: yields ``{"status", "headers"}``, then body pieces."""
        queue: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
        given, left = False, asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            await left.wait()  # the gateway stopped reading: the client is gone
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            await queue.put(message)

        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
                 "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
                 "query_string": query.encode(), "root_path": "", "server": ("ray", 0), "client": ("gateway", 0),
                 "headers": [(k.lower().encode(), v.encode()) for k, v in headers]}
        task = asyncio.ensure_future(self.app(scope, receive, send))
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                message = getter.result()
                if message["type"] == "http.response.start":
                    yield {"status": message["status"],
                           "headers": [(k.decode(), v.decode()) for k, v in message.get("headers", [])]}
                elif message["type"] == "http.response.body":
                    if message.get("body"):
                        yield message["body"]
                    if not message.get("more_body"):
                        break
        finally:
            left.set()

    def shutdown(self) -> None:
        self.app.state.service.close()


def node_service_class() -> Any:
    """The ``@ray.remote`` version of :class:`NodeServiceImpl` (one request per thread: a
    streamed reply holds one for as long as its cell runs)."""
    return remote_class(NodeServiceImpl, 1000)


class _Nodes:
    """The node services, found or started on every alive node (refreshed every few seconds)."""

    def __init__(self, config: ServeConfig, refresh_s: float = 5.0) -> None:
        self.config, self.refresh_s = config, refresh_s
        self.actors: dict[str, Any] = {}  # tag -> actor handle
        self.loads: dict[str, int] = {}
        self._refreshed = 0.0
        self._turn = itertools.count()
        self._lock = threading.Lock()

    def refresh(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._refreshed < self.refresh_s:
            return
        with self._lock:
            self._refresh()

    def _refresh(self) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        alive = {node_tag(n["NodeID"]): n["NodeID"] for n in alive_nodes(0.0)}
        for tag in list(self.actors):
            if tag not in alive:
                del self.actors[tag]
        for tag, node_id in alive.items():
            if tag in self.actors:
                continue
            actor = node_service_class().options(
                name=f"{NODE_PREFIX}{node_id}", namespace=NAMESPACE, get_if_exists=True, lifetime="detached",
                num_cpus=0, max_restarts=0, max_task_retries=0, runtime_env=default_runtime_env(),
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            ).remote(self.config, tag)
            try:
                ray.get(actor.ready.remote(), timeout=120)
            except Exception as exc:
                logger.warning("node service on %s is not usable: %s", tag, exc)
                continue
            self.actors[tag] = actor
        refs = {tag: a.load.remote() for tag, a in self.actors.items()}
        for tag, ref in refs.items():
            try:
                self.loads[tag] = int(ray.get(ref, timeout=10))
            except Exception:
                self.actors.pop(tag, None)
        self._refreshed = time.monotonic()

    def least_loaded(self) -> list[str]:
        return sorted(self.actors, key=lambda t: self.loads.get(t, 0))

    def any(self) -> list[str]:
        tags = sorted(self.actors)
        if not tags:
            return []
        start = next(self._turn) % len(tags)
        return tags[start:] + tags[:start]


def _gone(sandbox_id: str, why: str) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"code": 404, "message": f"sandbox {sandbox_id!r} not found: {why}"}, status_code=404)


class GatewayImpl:
    """The Ray Serve ingress: routes each request to a node service (see the module docstring)."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.nodes = _Nodes(config)
        self.nodes.refresh(force=True)

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.config.max_body_bytes:
            return JSONResponse({"code": 413, "message": f"request body of {declared} bytes is over this service's "
                                 f"limit of {self.config.max_body_bytes}"}, status_code=413)
        body = await request.body()
        await asyncio.to_thread(self.nodes.refresh)
        path = request.url.path
        match = _SANDBOX_PATH.match(path)
        sandbox_id = request.headers.get("e2b-sandbox-id", "") or (match.group(1) if match else "")
        if sandbox_id:
            tag = sandbox_id[:8].lower()
            if tag not in self.nodes.actors:
                await asyncio.to_thread(self.nodes.refresh, True)
            if tag not in self.nodes.actors:
                return _gone(sandbox_id, "no node of the cluster holds it (its node left, or it never existed)")
            return await self._forward(request, body, [tag], sandbox_id)
        if request.method == "GET" and path in ("/sandboxes", "/v2/sandboxes"):
            return await self._list(request, body)
        if request.method == "POST" and path in ("/sandboxes", "/v2/sandboxes"):
            return await self._forward(request, body, self.nodes.least_loaded(), "")
        return await self._forward(request, body, self.nodes.any(), "")

    async def _forward(self, request: Any, body: bytes, tags: list[str], sandbox_id: str) -> Any:
        from starlette.responses import JSONResponse, StreamingResponse

        headers = [(k, v) for k, v in request.headers.items()]
        for tag in tags:
            actor = self.nodes.actors.get(tag)
            if actor is None:
                continue
            gen = actor.handle.remote(request.method, request.url.path, request.url.query, headers, body)
            try:
                start = await gen.__anext__()
                start = await start
            except lost_errors() as exc:
                self.nodes.actors.pop(tag, None)
                if sandbox_id:
                    return _gone(sandbox_id, f"its node left the cluster ({type(exc).__name__}); its state is lost")
                continue  # a create or a stateless call: the next node takes it
            except StopAsyncIteration:
                return JSONResponse({"code": 502, "message": "the node service gave no answer"}, status_code=502)
            if start["status"] == 201:  # a create: counted now, not at the next refresh
                self.nodes.loads[tag] = self.nodes.loads.get(tag, 0) + 1
            return StreamingResponse(self._rest(gen, tag), status_code=start["status"],
                                     headers={k: v for k, v in start["headers"] if k.lower() != "content-length"})
        return JSONResponse({"code": 503, "message": "no node service is available in the cluster"}, status_code=503)

    async def _rest(self, gen: Any, tag: str) -> AsyncIterator[bytes]:
        ended = False
        try:
            async for ref in gen:
                yield await ref
            ended = True
        except lost_errors():
            ended = True
            self.nodes.actors.pop(tag, None)  # mid-stream: the reply just ends
        finally:
            if not ended:  # the client left: cancelling the generator tells the node's app so
                import ray

                ray.cancel(gen)

    async def _list(self, request: Any, body: bytes) -> Any:
        from starlette.responses import JSONResponse

        merged: list[Any] = []
        for tag in sorted(self.nodes.actors):
            response = await self._forward(request, body, [tag], "")
            chunks = [chunk async for chunk in response.body_iterator]
            if response.status_code != 200:
                return response.__class__(content=b"".join(chunks), status_code=response.status_code)
            merged.extend(json.loads(b"".join(chunks)))
        return JSONResponse(merged)


def deploy(config: ServeConfig, *, address: str | None = None, replicas: int = 2,
           proxy_location: str = "EveryNode") -> str:
    """Start (or update) the service on Ray Serve; returns its base URL. Ray is joined (``address``,
    see ``harness.ray.ensure_ray``) if not connected yet. ``proxy_location``: Ray Serve's HTTP
    proxies on every node (``EveryNode``, each at ``config.port``) or the head only (``HeadOnly``).

    Raises:
        ConfigError: ``replicas`` < 1.
    """
    if replicas < 1:
        raise ConfigError(f"must be >= 1, got {replicas}", key="replicas")
    ensure_ray(address)
    from ray import serve

    serve.start(proxy_location=proxy_location, http_options={"host": config.host, "port": config.port})
    gateway = serve.deployment(name="gateway", num_replicas=replicas, max_ongoing_requests=config.max_inflight,
                               ray_actor_options={"num_cpus": 0, "runtime_env": default_runtime_env()})(GatewayImpl)
    serve.run(gateway.bind(config), name=APP_NAME, route_prefix="/")
    return f"http://{config.host}:{config.port}"


def shutdown() -> None:
    """Remove the app and the node services (every sandbox on them ends)."""
    import ray
    from ray import serve

    serve.delete(APP_NAME)
    for node in alive_nodes(0.0):
        try:
            actor = ray.get_actor(f"{NODE_PREFIX}{node['NodeID']}", namespace=NAMESPACE)
        except ValueError:
            continue
        try:
            ray.get(actor.shutdown.remote(), timeout=30)
        except Exception as exc:
            logger.debug("node service %s: %s", node["NodeID"][:8], exc)
        ray.kill(actor)

