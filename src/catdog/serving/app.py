"""The FastAPI app: routes, limits, auth, and the page, over one loaded `Predictor`.

    >>> from catdog.predict import Predictor
    >>> app = create_app(Predictor(), Settings(api_key="s3cret"))   # any ASGI server runs it

Endpoints: POST /v1/predict, POST /v1/explain, GET /v1/info, GET /v1/stats, GET /healthz,
GET /readyz, GET / (the page), GET /docs (API docs, served offline), GET /openapi.json.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
import time
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from catdog import __version__
from catdog.config import ConfigError
from catdog.serving import openapi
from catdog.serving.batcher import QueueFull
from catdog.serving.service import Service
from catdog.serving.uploads import read_uploads

STATIC = Path(__file__).parent / "static"


@dataclass(frozen=True)
class Settings:
    """Server limits and options; every field has a `catdog serve` flag."""

    max_upload_bytes: int = 10 * 2**20  # per image; a request may carry max_files of them
    max_files: int = 16  # images in one request
    timeout_s: float = 30.0  # decode + queue + model, per request: then 504
    queue_size: int = 64  # images waiting for the model: beyond it, 503 + Retry-After
    api_key: str | None = None  # when set, /v1/* needs "Authorization: Bearer <key>"
    cors_origins: tuple[str, ...] = ()  # CORS stays off unless origins are given
    max_batch: int = 32  # images per forward pass
    batch_wait_s: float = 0.004  # longest wait for more images, and only when some are already queued
    runtime: str = "keras"  # reported by /v1/info

    def __post_init__(self):
        for name in ("max_upload_bytes", "max_files", "timeout_s", "queue_size", "max_batch"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"serve: {name} must be positive, got {getattr(self, name)!r}")
        if self.batch_wait_s < 0:
            raise ConfigError(f"serve: batch_wait_s must be >= 0, got {self.batch_wait_s!r}")

    def limits(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("api_key", "cors_origins", "runtime")}


@dataclass
class Stats:
    started: float = field(default_factory=time.time)
    responses: Counter = field(default_factory=Counter)  # "METHOD /path STATUS" -> count


class VersionHeader:
    """ASGI middleware: X-Catdog-Version on every response (errors and static files too), and counts."""

    def __init__(self, app, stats: Stats):
        self.app, self.stats = app, stats

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_version(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-catdog-version", __version__.encode())]
                self.stats.responses[f"{scope['method']} {scope['path']} {message['status']}"] += 1
            await send(message)

        await self.app(scope, receive, send_with_version)


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
    app.state.service, app.state.settings = service, settings
    app.add_middleware(VersionHeader, stats=stats)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "X-Filename"])

    def authorized(request: Request) -> None:
        if not settings.api_key:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise HTTPException(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                headers={"WWW-Authenticate": "Bearer"})

    async def answer(work):
        """Runs `work` under the per-request timeout; a full queue is a 503 the client may retry."""
        try:
            return await asyncio.wait_for(work, settings.timeout_s)
        except QueueFull as error:
            raise HTTPException(503, f"server busy: {error}; retry shortly", headers={"Retry-After": "1"}) from None
        except TimeoutError:
            raise HTTPException(504, f"no answer within {settings.timeout_s:g} s") from None

    @app.post("/v1/predict", dependencies=[Depends(authorized)], **openapi.PREDICT)
    async def predict(request: Request):
        uploads = await read_uploads(request, settings.max_upload_bytes, settings.max_files)
        return {"results": await answer(service.predict(uploads))}

    @app.post("/v1/explain", dependencies=[Depends(authorized)], **openapi.EXPLAIN)
    async def explain(request: Request):
        uploads = await read_uploads(request, settings.max_upload_bytes, 1)
        return Response(await answer(service.explain(uploads[0])), media_type="image/png")

    @app.get("/v1/info", summary="The model, its image size, the limits, and what this server can do")
    async def info():
        meta = predictor.meta
        return {"version": __version__, "model": meta.get("model") or Path(predictor.path).name,
                "model_file": Path(predictor.path).name, "image_size": predictor.image_size,
                "runtime": settings.runtime, "labels": [*meta.get("class_names", ("cat", "dog")), "unknown"],
                "detector_scores": predictor.detector_scores, "explain": service.explain_available(),
                "auth": bool(settings.api_key), "limits": settings.limits()}

    @app.get("/v1/stats", dependencies=[Depends(authorized)], summary="Counters since start-up")
    async def stats_route():
        sizes = service.batcher.batch_sizes
        batches = sum(sizes.values())
        return {"uptime_s": round(time.time() - stats.started, 1), "images": service.images,
                "responses": dict(stats.responses), "queued": service.batcher.queued, "batches": batches,
                "batch_sizes": {str(k): v for k, v in sorted(sizes.items())},
                "mean_batch": round(sum(k * v for k, v in sizes.items()) / batches, 2) if batches else 0}

    @app.get("/healthz", summary="The process is alive")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", summary="The model is loaded and warmed up")
    async def readyz():
        if not service.ready.is_set():
            return JSONResponse({"status": "warming up"}, status_code=503, headers={"Retry-After": "1"})
        return {"status": "ready"}

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return FileResponse(STATIC / "docs.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
