"""The FastAPI app over one loaded `Predictor`: settings, start-up and shutdown, middleware.

    >>> from catdog.inference.predictor import Predictor
    >>> app = create_app(Predictor(), Settings(api_key="s3cret"))   # any ASGI server runs it

The routes are in `routes.py`, the model work in `service.py`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import PlainTextResponse
from fastapi.staticfiles import StaticFiles
from starlette.requests import ClientDisconnect

from catdog import __version__
from catdog.config import ConfigError
from catdog.serving import routes
from catdog.serving.service import Service


@dataclass(frozen=True)
class Settings:
    """Server limits and options; every field has a `catdog serve` flag."""

    max_upload_bytes: int = 10 * 2**20  # per image; a request may carry max_files of them
    max_files: int = 16  # images in one request
    timeout_s: float = 30.0  # decode + queue + model, per request: then 504
    read_timeout_s: float = 30.0  # to send a whole request, headers and body, from its first byte: then 408
    queue_size: int = 64  # images waiting for the model: beyond it, 503 + Retry-After
    api_key: str | None = None  # when set, /v1/* needs "Authorization: Bearer <key>"
    cors_origins: tuple[str, ...] = ()  # CORS stays off unless origins are given
    max_batch: int = 32  # images per forward pass
    batch_wait_s: float = 0.004  # longest wait for more images, and only when some are already queued

    def __post_init__(self):
        for name in ("max_upload_bytes", "max_files", "timeout_s", "read_timeout_s", "queue_size", "max_batch"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"serve: {name} must be positive, got {getattr(self, name)!r}")
        if self.batch_wait_s < 0:
            raise ConfigError(f"serve: batch_wait_s must be >= 0, got {self.batch_wait_s!r}")

    def limits(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("api_key", "cors_origins")}


COUNTED = frozenset({"/v1/predict", "/v1/explain", "/v1/info", "/v1/stats", "/healthz", "/readyz", "/", "/docs"})


@dataclass
class Stats:
    started: float = field(default_factory=time.time)
    responses: Counter = field(default_factory=Counter)  # "METHOD /path STATUS" -> count


class VersionHeader:
    """ASGI middleware: X-Catdog-Version on every response (errors and static files too), and counts.

    What escapes the app is answered here too: a bug (or a request cut off by the server's
    shutdown) is a 500 with the header, then re-raised for the server to log; a client gone
    mid-request (ClientDisconnect) is not an error and ends the request without an answer (the
    server logs it in one line: `catdog.serving.server`).
    """

    def __init__(self, app, stats: Stats):
        self.app, self.stats = app, stats

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def send_with_version(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), (b"x-catdog-version", __version__.encode())]
                path = scope["path"] if scope["path"] in COUNTED else "other"  # bounded: no key per stray URL
                self.stats.responses[f"{scope['method']} {path} {message['status']}"] += 1
            await send(message)

        try:
            await self.app(scope, receive, send_with_version)
        except ClientDisconnect:
            return
        except (Exception, asyncio.CancelledError):  # a bug, or a request cut off by the server's shutdown
            if not started:  # Starlette's own 500 is sent from outside every middleware: without the header
                await PlainTextResponse("Internal Server Error", 500)(scope, receive, send_with_version)
            raise


def create_app(predictor, settings: Settings | None = None) -> FastAPI:
    """A FastAPI app answering with `predictor`; warm-up runs in the background at start-up."""
    settings = settings or Settings()
    service = Service(predictor, settings.max_batch, settings.queue_size, settings.batch_wait_s)
    stats = Stats()

    @asynccontextmanager
    async def lifespan(app):
        threading.Thread(target=service.warm_up, name="catdog-warm-up", daemon=True).start()
        yield
        await asyncio.to_thread(service.close)  # the queue drains: requests in flight get answers

    app = FastAPI(title="catdog", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Tell dogs from cats. Send images, get labels with calibrated probabilities.")
    app.state.service, app.state.settings, app.state.stats = service, settings, stats
    app.add_middleware(VersionHeader, stats=stats)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "X-Filename"])

    app.include_router(routes.api)
    app.include_router(routes.page)
    app.mount("/static", StaticFiles(directory=routes.STATIC), name="static")
    return app
