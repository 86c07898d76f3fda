"""create_app: the FastAPI application over a given config, job store, artifacts and (optional) worker pool."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from api import problems
from api.artifacts import Artifacts
from api.config import ServiceConfig
from api.retention import Sweeper
from api.routes import health, jobs, metrics, uploads, webhooks
from api.store import JobStore
from api.webhooks import Deliverer, Secrets

WEB = Path(__file__).parent / "web"  # the web page: plain HTML, CSS and JavaScript, no build step


class BodyLimit:
    """Refuse (413) a request whose body is larger than the cap: by its Content-Length before reading it, or, sent
    without one (chunked), once what arrived passes the cap (such a body is read here, at most the cap, then handed
    on). Uploads have their own cap."""

    def __init__(self, app, max_body_bytes: int):
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].startswith("/v1/uploads"):
            return await self.app(scope, receive, send)
        too_large = problems.problem(413, f"the request body is larger than {self.max_body_bytes} bytes")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.max_body_bytes:
                return await too_large(scope, receive, send)
            return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                return await too_large(scope, receive, send)
            more = message.get("more_body", False)
        body = b"".join(chunks)

        async def replay():
            nonlocal body
            if body is None:
                return await receive()  # after the body: a disconnect, as the app would have got it
            message, body = {"type": "http.request", "body": body, "more_body": False}, None
            return message

        return await self.app(scope, replay, send)


def create_app(config: ServiceConfig, store: JobStore, artifacts: Artifacts, pool=None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        sweeper = Sweeper(store, artifacts, config.retention_seconds, config.max_disk_bytes)
        sweeper.start()
        deliverer = Deliverer(store, app.state.secrets, config.webhook_backoff_seconds, config.webhook_max_attempts)
        deliverer.start()
        yield
        sweeper.stop()
        if pool is not None:
            pool.stop(grace_seconds=config.grace_seconds)
        deliverer.stop()  # last: jobs finished in the grace period queue deliveries too

    app = FastAPI(title="avgen", version="1", lifespan=lifespan)
    app.state.config, app.state.store, app.state.artifacts, app.state.pool = config, store, artifacts, pool
    app.state.secrets = Secrets(store, config.data_dir)
    problems.install(app)
    app.state.metrics = metrics.new_registry(app.state)
    for module in (health, jobs, uploads, metrics, webhooks):
        app.include_router(module.router)
    app.add_api_route("/", lambda: FileResponse(WEB / "index.html"), include_in_schema=False)
    app.mount("/web", StaticFiles(directory=WEB), name="web")
    app.add_middleware(BodyLimit, max_body_bytes=config.max_body_bytes)
    return app
