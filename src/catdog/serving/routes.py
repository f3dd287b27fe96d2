"""The HTTP routes: the API under /v1, health probes, the page and its docs.

Each route finds the `Service`, `Settings` and `Stats` on `request.app.state` (set by
`create_app`), so the routes hold no state of their own.

    POST /v1/predict   images -> {"results": [one record per image, as `catdog predict` prints]}
    POST /v1/explain   one image -> PNG Grad-CAM overlay (501 without catdog.inference.gradcam)
    GET  /v1/info      model, image size, version, runtime, limits;  GET /v1/stats  counters
    GET  /healthz      alive;  GET /readyz  model loaded and warmed up
    GET  /             the page;  GET /docs  API docs rendered offline from /openapi.json
"""

from __future__ import annotations

import asyncio
import hmac
import time
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from catdog import __version__
from catdog.serving import openapi
from catdog.serving.batcher import QueueFull
from catdog.serving.uploads import read_uploads

STATIC = Path(__file__).parent / "static"


def authorized(request: Request) -> None:
    """With an API key set, 401 unless `Authorization: Bearer <key>` (compared in constant time)."""
    key = request.app.state.settings.api_key
    if not key:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
        raise HTTPException(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                            headers={"WWW-Authenticate": "Bearer"})


api = APIRouter(prefix="/v1")
page = APIRouter()


async def _answer(request: Request, work):
    """Runs `work` under the per-request timeout; a full queue is a 503 the client may retry."""
    timeout = request.app.state.settings.timeout_s
    try:
        return await asyncio.wait_for(work, timeout)
    except QueueFull as error:
        raise HTTPException(503, f"server busy: {error}; retry shortly", headers={"Retry-After": "1"}) from None
    except TimeoutError:
        raise HTTPException(504, f"no answer within {timeout:g} s") from None


@api.post("/predict", dependencies=[Depends(authorized)], **openapi.PREDICT)
async def predict(request: Request):
    settings, service = request.app.state.settings, request.app.state.service
    uploads = await read_uploads(request, settings.max_upload_bytes, settings.max_files)
    return {"results": await _answer(request, service.predict(uploads))}


@api.post("/explain", dependencies=[Depends(authorized)], **openapi.EXPLAIN)
async def explain(request: Request):
    settings, service = request.app.state.settings, request.app.state.service
    uploads = await read_uploads(request, settings.max_upload_bytes, 1)
    return Response(await _answer(request, service.explain(uploads[0])), media_type="image/png")


@api.get("/info", summary="The model, its image size, the limits, and what this server can do")
async def info(request: Request):
    settings, service = request.app.state.settings, request.app.state.service
    predictor = service.predictor
    meta = predictor.meta
    return {"version": __version__, "model": meta.get("model") or Path(predictor.path).name,
            "model_file": Path(predictor.path).name, "image_size": predictor.image_size,
            "runtime": predictor.runtime.name, "labels": [*meta.get("class_names", ("cat", "dog")), "unknown"],
            "detector_scores": predictor.detector_scores, "explain": service.explain_available(),
            "auth": bool(settings.api_key), "limits": settings.limits()}


@api.get("/stats", dependencies=[Depends(authorized)], summary="Counters since start-up")
async def stats(request: Request):
    service, counters = request.app.state.service, request.app.state.stats
    sizes = service.batcher.batch_sizes.copy()
    batches = sum(sizes.values())
    return {"uptime_s": round(time.time() - counters.started, 1), "images": service.images,
            "responses": dict(counters.responses), "queued": service.batcher.queued, "batches": batches,
            "batch_sizes": {str(k): v for k, v in sorted(sizes.items())},
            "mean_batch": round(sum(k * v for k, v in sizes.items()) / batches, 2) if batches else 0}


@page.get("/healthz", summary="The process is alive")
async def healthz():
    return {"status": "ok"}


@page.get("/readyz", summary="The model is loaded and warmed up")
async def readyz(request: Request):
    if not request.app.state.service.ready.is_set():
        return JSONResponse({"status": "warming up"}, status_code=503, headers={"Retry-After": "1"})
    return {"status": "ready"}


@page.get("/", include_in_schema=False)
async def index():
    return FileResponse(STATIC / "index.html")


@page.get("/docs", include_in_schema=False)
async def docs():
    return FileResponse(STATIC / "docs.html")
