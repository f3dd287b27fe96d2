"""catdog serve: the API over the shipped model (TestClient), its limits, and the micro-batcher."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
import uvicorn
from conftest import wait_until_ready
from fastapi import HTTPException
from fastapi.testclient import TestClient
from PIL import Image
from starlette.requests import Request

from catdog import __version__
from catdog.inference.predictor import Predictor
from catdog.serving import Settings, create_app
from catdog.serving.batcher import Batcher, QueueFull
from catdog.serving.uploads import Upload, read_uploads


def jpeg(seed: int = 0, size=(180, 240), fmt: str = "JPEG") -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt)
    return out.getvalue()


@pytest.fixture(scope="module")
def predictor():
    return Predictor()


@contextmanager
def serving(predictor, **settings):
    with TestClient(create_app(predictor, Settings(**settings))) as client:
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.05)
        yield client


@pytest.fixture(scope="module")
def client(predictor):
    with serving(predictor) as client:
        yield client


def files(*images):
    return [("file", (name, data, "image/jpeg")) for name, data in images]


def test_one_image_answers_like_catdog_predict(client, predictor, tmp_path):
    (tmp_path / "a.jpg").write_bytes(jpeg(1))
    expected = next(predictor.predict_paths([str(tmp_path / "a.jpg")]))
    response = client.post("/v1/predict", files=files(("a.jpg", jpeg(1))))
    assert response.status_code == 200
    [record] = response.json()["results"]
    assert record.keys() == expected.keys() == {"path", "label", "p_dog", "p_pet", "pet_energy", "pet_score",
                                                   "pet_similarity"}
    assert record["path"] == "a.jpg" and record["label"] == expected["label"]
    for key in ("p_dog", "p_pet", "pet_energy"):
        assert record[key] == pytest.approx(expected[key], abs=1e-4)


def test_several_images_in_order_and_a_cat(client, predictor):
    cat = Image.open(io.BytesIO(jpeg(2))).convert("L").convert("RGB")  # any picture: order is what counts
    out = io.BytesIO()
    cat.save(out, "PNG")
    response = client.post("/v1/predict", files=files(("x.jpg", jpeg(3)), ("grey.png", out.getvalue()),
                                                      ("x.jpg", jpeg(4))))
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["path"] for r in results] == ["x.jpg", "grey.png", "x.jpg"]
    assert results[0]["p_dog"] != results[2]["p_dog"]


def test_raw_body_with_x_filename_never_a_path(client):
    response = client.post("/v1/predict", content=jpeg(5), headers={"content-type": "image/jpeg",
                                                                    "x-filename": "../../etc/passwd\x07"})
    assert response.status_code == 200
    assert response.json()["results"][0]["path"] == "passwd"
    response = client.post("/v1/predict", content=jpeg(5), headers={"content-type": "application/octet-stream"})
    assert response.json()["results"][0]["path"] == "upload"


@pytest.mark.parametrize("sent, path", [
    ("chat-\N{CAT FACE}.jpg".encode(), "chat-\N{CAT FACE}.jpg"),  # plain UTF-8 bytes, as curl sends them
    (b"UTF-8''chat-%F0%9F%90%B1.jpg", "chat-\N{CAT FACE}.jpg"),  # RFC 8187's ext-value
    (b"iso-8859-1'fr'caf%E9.jpg", "caf\N{LATIN SMALL LETTER E WITH ACUTE}.jpg"),  # another charset, a language
    (b"UTF-8''half-%F0%9F.jpg", "half-\N{REPLACEMENT CHARACTER}.jpg"),  # broken UTF-8: replaced, not refused
])
def test_x_filename_is_read_as_the_client_wrote_it(client, sent, path):
    """In-process, as test_serve_http.py checks it through a `catdog serve` process (where a
    mutation tool cannot reach the code)."""
    response = client.post("/v1/predict", content=jpeg(5), headers={"content-type": "image/jpeg", "x-filename": sent})
    assert response.status_code == 200 and response.json()["results"][0]["path"] == path


@pytest.mark.parametrize("body, status, words", [
    (b"just some text", 415, "a.jpg: not a recognised image format"),
    (jpeg(6)[:3000], 422, "a.jpg: corrupt or truncated image"),
])
def test_not_an_image_and_corrupt_image(client, body, status, words):
    response = client.post("/v1/predict", files=files(("ok.jpg", jpeg(7)), ("a.jpg", body)))
    assert response.status_code == status
    assert response.json()["detail"].startswith(words)


def test_decompression_bomb_is_refused(client):
    out = io.BytesIO()
    Image.new("1", (12000, 12000)).save(out, "PNG")  # tiny file, 144 megapixels
    response = client.post("/v1/predict", files=files(("bomb.png", out.getvalue())))
    assert response.status_code == 413
    assert "decompression bomb" in response.json()["detail"]


def test_no_image_sent(client):
    other = client.post("/v1/predict", files=[("other", ("notes.txt", b"hi", "text/plain"))])
    assert other.status_code == 422 and "multipart field 'file'" in other.json()["detail"]
    assert client.post("/v1/predict", content=b"", headers={"content-type": "image/jpeg"}).status_code == 422


def test_size_and_count_limits(predictor):
    with serving(predictor, max_upload_bytes=20_000, max_files=2) as client:
        big = jpeg(8, size=(100, 100), fmt="PNG")  # 30 kB: under the body limit, over the per-file one
        assert 20_000 < len(big) < 2 * 20_000
        response = client.post("/v1/predict", files=files(("big.png", big)))
        assert response.status_code == 413 and "big.png" in response.json()["detail"]
        response = client.post("/v1/predict", content=big, headers={"content-type": "image/png"})
        assert response.status_code == 413
        small = jpeg(9, size=(32, 32))
        response = client.post("/v1/predict", files=files(*[("s.jpg", small)] * 3))
        assert response.status_code == 413 and "at most 2" in response.json()["detail"]
        assert client.post("/v1/predict", files=files(*[("s.jpg", small)] * 2)).status_code == 200
        info = client.get("/v1/info").json()
        assert info["limits"]["max_files"] == 2 and info["limits"]["max_upload_bytes"] == 20_000


def _request(chunks: list[bytes], content_type: bytes, content_length: int | None = None, extra_headers=()):
    """A Starlette request whose body arrives in `chunks`; `.taken` counts the chunks read."""
    request_chunks = iter(chunks)
    state = types.SimpleNamespace(taken=0)

    async def receive():
        state.taken += 1
        body = next(request_chunks, b"")
        return {"type": "http.request", "body": body, "more_body": state.taken < len(chunks)}

    headers = [(b"content-type", content_type)]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    headers += extra_headers
    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers, "query_string": b""}
    return Request(scope, receive), state


def test_limits_refuse_before_the_whole_body_is_read():
    raw, state = _request([b"x" * 1000] * 100, b"image/jpeg")
    with pytest.raises(HTTPException) as error:
        asyncio.run(read_uploads(raw, max_bytes=5000, max_files=4))
    assert error.value.status_code == 413 and state.taken <= 6

    declared, state = _request([b"x" * 1000] * 100, b"image/jpeg", content_length=100_000)
    with pytest.raises(HTTPException):
        asyncio.run(read_uploads(declared, max_bytes=5000, max_files=4))
    assert state.taken == 0

    part = b'--B\r\nContent-Disposition: form-data; name="file"; filename="f.jpg"\r\n\r\n' + b"y" * 100 + b"\r\n"
    many, state = _request([part] * 50 + [b"--B--\r\n"], b"multipart/form-data; boundary=B")
    with pytest.raises(HTTPException) as error:
        asyncio.run(read_uploads(many, max_bytes=5000, max_files=3))
    assert "at most 3" in error.value.detail and state.taken == 4


def _multipart(*named: tuple[str | None, bytes], field: str = "file") -> bytes:
    """Parts of `field` with these file names (None: no filename) and bytes, boundary B."""
    def disposition(name):
        return f'form-data; name="{field}"' + (f'; filename="{name}"' if name is not None else "")
    return b"".join(b"--B\r\nContent-Disposition: " + disposition(name).encode() + b"\r\n"
                    b"Content-Type: image/jpeg\r\n\r\n" + data + b"\r\n" for name, data in named) + b"--B--\r\n"


def _read(body: bytes, content_type: bytes, chunk: int = 7, content_length: int | None = None, **limits):
    """read_uploads on `body` arriving `chunk` bytes at a time (header names and values cut up)."""
    request, state = _request([body[i:i + chunk] for i in range(0, len(body), chunk)] or [b""], content_type,
                              content_length)
    return asyncio.run(read_uploads(request, **limits)), state


def _refusal(*args, **kwargs) -> tuple[int, str]:
    with pytest.raises(HTTPException) as error:
        _read(*args, **kwargs)
    return error.value.status_code, error.value.detail


def test_uploads_arrive_whole_however_the_body_is_cut_and_each_file_may_reach_the_limit():
    multipart = b"multipart/form-data; boundary=B"
    body = _multipart(("a.jpg", b"a" * 100), ("b.jpg", b"b" * 100), ("c.jpg", b"c" * 100))
    uploads, _ = _read(body, multipart, max_bytes=100, max_files=3)  # 300 bytes: the limit is per file
    assert uploads == [Upload("a.jpg", b"a" * 100), Upload("b.jpg", b"b" * 100), Upload("c.jpg", b"c" * 100)]
    assert _refusal(_multipart(("a.jpg", b"a" * 101)), multipart, max_bytes=100, max_files=3) == (
        413, "file 'a.jpg' is larger than the limit of 100 bytes")
    # Files without a name are numbered; another field after a file is left out.
    body = _multipart((None, b"1"), (None, b"2")).removesuffix(b"--B--\r\n") + _multipart(("n.txt", b"x"), field="note")
    uploads, _ = _read(body, multipart, max_bytes=100, max_files=3)
    assert uploads == [Upload("upload-1", b"1"), Upload("upload-2", b"2")]
    raw, _ = _read(b"r" * 100, b"image/jpeg", content_length=100, max_bytes=100, max_files=1)
    assert raw == [Upload("upload", b"r" * 100)]
    # An X-Filename sent as latin-1 bytes (TestClient would re-encode it as UTF-8: hence read_uploads here)
    cafe = "caf\N{LATIN SMALL LETTER E WITH ACUTE}.jpg"
    latin, _ = _request([b"r"], b"image/jpeg", extra_headers=[(b"x-filename", cafe.encode("latin-1"))])
    assert asyncio.run(read_uploads(latin, max_bytes=100, max_files=1)) == [Upload(cafe, b"r")]
    assert _refusal(b"r" * 101, b"image/jpeg", max_bytes=100, max_files=1) == (
        413, "the image is larger than the limit of 100 bytes")
    assert _refusal(b"", b"image/jpeg", max_bytes=100, max_files=1) == (
        422, "empty request body: send multipart field 'file' or a raw image body")


def test_a_malformed_or_oversized_request_is_refused_with_its_reason():
    """In-process (test_serve_http.py sends some of these to a `catdog serve` process, out of a
    mutation tool's reach). The body limit of a multipart request is max_files x (max_bytes + 16 KiB)."""
    multipart = b"multipart/form-data; boundary=B"
    assert _refusal(b"x", b"multipart/form-data", max_bytes=100, max_files=1) == (
        422, "multipart/form-data without a boundary")
    assert _refusal(b"x", b"multipart/form-data; boundary=" + b"b" * 300, max_bytes=100, max_files=1) == (
        422, "malformed multipart Content-Type (Boundary length 300 exceeds maximum of 256)")
    assert _refusal(b"garbage", multipart, max_bytes=100, max_files=1) == (
        422, "malformed multipart body (Expected boundary character 45, got 103 at index 2)")
    limit = 100 + 16 * 1024
    head = _multipart(("f.jpg", b"f")).removesuffix(b"--B--\r\n")
    note = _multipart(("n.txt", b""), field="note")
    padded = head + note.replace(b"\r\n\r\n", b"\r\n\r\n" + b"n" * (limit - len(head) - len(note)), 1)
    assert len(padded) == limit  # the other field is bounded by the body limit only
    uploads, _ = _read(padded, multipart, chunk=1000, max_bytes=100, max_files=1)
    assert uploads == [Upload("f.jpg", b"f")]
    over = padded.replace(b"nnn", b"nnnn", 1)
    assert _refusal(over, multipart, chunk=1000, max_bytes=100, max_files=1) == (
        413, f"the request body is larger than the limit of {limit:,} bytes")
    declared, state = _request([b"r" * 101], b"image/jpeg", content_length=101)
    with pytest.raises(HTTPException) as error:
        asyncio.run(read_uploads(declared, max_bytes=100, max_files=1))
    assert (error.value.status_code, error.value.detail, state.taken) == (
        413, "the request body is larger than the limit of 100 bytes", 0)


def test_auth(predictor, monkeypatch):
    with serving(predictor, api_key="s3cret") as client:
        body = files(("a.jpg", jpeg(10)))
        assert client.post("/v1/predict", files=body).status_code == 401
        wrong = client.post("/v1/predict", files=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        assert client.get("/v1/stats").status_code == 401
        right = client.post("/v1/predict", files=body, headers={"Authorization": "Bearer s3cret"})
        assert right.status_code == 200
        assert client.get("/healthz").status_code == 200 and client.get("/v1/info").json()["auth"] is True
    with serving(predictor) as client:
        assert client.get("/v1/info").json()["auth"] is False
        assert client.get("/v1/stats").status_code == 200


class Gated:
    """The real predictor, whose model call blocks once `gate` is armed, until it is opened."""

    def __init__(self, predictor):
        self.predictor, self.armed, self.entered, self.gate = predictor, False, threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self.predictor, name)

    def scores(self, pixels):
        if self.armed:
            self.entered.set()
            assert self.gate.wait(30)
        return self.predictor.scores(pixels)


class Watched:
    """The real predictor, noting any two model calls that overlap; its warm-up calls are slow."""

    def __init__(self, predictor):
        self.predictor, self.inside, self.overlaps, self.calls = predictor, 0, 0, 0
        self.lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self.predictor, name)

    def scores(self, pixels):
        with self.lock:
            self.inside, self.calls = self.inside + 1, self.calls + 1
            self.overlaps += self.inside > 1
            warming = self.calls <= 2  # the warm-up's two calls come first
        try:
            if warming:
                time.sleep(0.5)
            return self.predictor.scores(pixels)
        finally:
            with self.lock:
                self.inside -= 1


def test_a_request_during_the_warm_up_waits_for_the_model(predictor):
    """The first request may come while the warm-up runs: the two must not meet in the model (a LiteRT
    interpreter then fails: "There is at least 1 reference to internal data")."""
    watched = Watched(predictor)
    with TestClient(create_app(watched, Settings())) as client:  # no wait for /readyz
        response = client.post("/v1/predict", files=files(("a.jpg", jpeg(21)), ("b.jpg", jpeg(22))))
        assert response.status_code == 200 and len(response.json()["results"]) == 2
    assert watched.calls >= 3 and watched.overlaps == 0


def test_full_queue_answers_503_with_retry_after(predictor):
    gated = Gated(predictor)
    with serving(gated, queue_size=1, max_batch=1) as client:
        gated.armed = True
        statuses = []
        post = lambda: statuses.append(client.post("/v1/predict", files=files(("a.jpg", jpeg(11)))).status_code)
        first = threading.Thread(target=post)
        first.start()
        assert gated.entered.wait(30)  # the model is busy with the first request
        second = threading.Thread(target=post)
        second.start()
        service = client.app.state.service
        while service.batcher.queued < 1:
            time.sleep(0.01)
        response = client.post("/v1/predict", files=files(("b.jpg", jpeg(12))))
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        gated.gate.set()
        first.join(30), second.join(30)
        assert statuses == [200, 200]


def test_timeout_answers_504(predictor):
    gated = Gated(predictor)
    with serving(gated, timeout_s=0.3) as client:
        gated.armed = True
        response = client.post("/v1/predict", files=files(("a.jpg", jpeg(13))))
        gated.gate.set()
        assert response.status_code == 504 and "0.3 s" in response.json()["detail"]


def test_version_header_docs_offline_and_static(client):
    for path in ("/healthz", "/readyz", "/v1/info", "/nope", "/", "/docs", "/static/app.js", "/openapi.json"):
        assert client.get(path).headers["x-catdog-version"] == __version__, path
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static/docs.js" in docs.text
    for page in (docs.text, client.get("/").text):  # no CDN: every resource comes from this app
        links = re.findall(r'(?:src|href)="([^"]*)"', page)
        assert links and all(link.startswith(("/", "data:")) for link in links), links
    spec = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/explain", "/v1/info", "/healthz", "/readyz"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]


def test_cors_off_by_default_on_when_asked(client, predictor):
    preflight = {"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client.options("/v1/predict", headers=preflight).headers
    with serving(predictor, cors_origins=("https://example.org",)) as cors:
        answer = cors.options("/v1/predict", headers=preflight)
        assert answer.headers["access-control-allow-origin"] == "https://example.org"


def test_info_stats_and_health(client, predictor):
    info = client.get("/v1/info").json()
    assert info["image_size"] == predictor.image_size in (224, 240) and info["version"] == __version__ and info["runtime"] == "keras"
    assert info["labels"] == ["cat", "dog", "unknown"] and info["explain"] is True
    client.post("/v1/predict", files=files(("a.jpg", jpeg(14)), ("b.jpg", jpeg(15))))
    stats = client.get("/v1/stats").json()
    assert stats["images"] >= 2 and sum(stats["batch_sizes"].values()) == stats["batches"] > 0
    assert stats["responses"]["POST /v1/predict 200"] >= 1
    assert client.get("/healthz").json() == {"status": "ok"}


def test_explain_501_without_catdog_explain_and_png_with_it(client, predictor, monkeypatch):
    with monkeypatch.context() as without:
        without.setitem(sys.modules, "catdog.inference.gradcam", None)  # an install without the module
        assert client.get("/v1/info").json()["explain"] is False
        assert client.post("/v1/explain", files=files(("a.jpg", jpeg(16)))).status_code == 501
    built = []

    class Explainer:  # stands in for catdog.inference.gradcam: same constructor and overlay()
        def __init__(self, model=None, layer=None):
            built.append(model)

        def overlay(self, pixels, alpha=0.45):
            return 255 - pixels

    monkeypatch.setitem(sys.modules, "catdog.inference.gradcam", types.SimpleNamespace(Explainer=Explainer))
    assert client.get("/v1/info").json()["explain"] is True
    for _ in range(2):
        response = client.post("/v1/explain", files=files(("a.jpg", jpeg(16, size=(600, 900)))))
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(response.content)).size == (512, 341)  # aspect kept, at most 512
    assert built == [predictor.path]  # built once, from the Keras model file
    assert client.post("/v1/explain", content=b"nope", headers={"content-type": "image/png"}).status_code == 415


def test_explain_draws_the_real_grad_cam_with_the_keras_model_behind_litert(predictor):
    with serving(predictor) as fresh:  # its own Service: the one above cached a stand-in Explainer
        response = fresh.post("/v1/explain", files=files(("a.jpg", jpeg(17, size=(300, 200)))))
        assert response.status_code == 200 and Image.open(io.BytesIO(response.content)).size == (200, 300)
    litert = Predictor(runtime="tflite")  # the shipped float export: no gradients, so Grad-CAM uses the .keras
    assert litert.path.suffix == ".tflite"
    with serving(litert) as fresh:
        response = fresh.post("/v1/explain", files=files(("a.jpg", jpeg(18, size=(120, 160)))))
        assert response.status_code == 200 and Image.open(io.BytesIO(response.content)).size == (160, 120)


def test_batcher_batches_what_queued_and_keeps_a_lone_request_unbatched():
    calls, started, gate = [], threading.Event(), threading.Event()

    def score(pixels):
        calls.append(len(pixels))
        started.set()
        gate.wait(10)
        return {"logit": pixels.reshape(len(pixels), -1)[:, 0].astype(float)}

    async def run():
        batcher = Batcher(score, max_batch=8, queue_size=16, max_wait_s=1.0)
        first = asyncio.create_task(batcher.submit([np.full((2, 2, 3), 0, np.uint8)]))
        while not started.is_set():
            await asyncio.sleep(0.01)
        rest = [asyncio.create_task(batcher.submit([np.full((2, 2, 3), i, np.uint8)])) for i in range(1, 6)]
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFull):
            await batcher.submit([np.zeros((2, 2, 3), np.uint8)] * 12)  # 5 queued + 12 > 16
        gate.set()
        results = [await task for task in [first, *rest]]
        lone_started = time.monotonic()
        await batcher.submit([np.zeros((2, 2, 3), np.uint8)])
        lone = time.monotonic() - lone_started
        batcher.close()
        return results, lone, batcher.batch_sizes

    results, lone, sizes = asyncio.run(run())
    assert [r[0]["logit"] for r in results] == [0, 1, 2, 3, 4, 5]
    assert calls == [1, 5, 1] and sizes == {1: 2, 5: 1}
    assert lone < 0.5  # did not wait out the 1 s window: nobody else was queued


def test_batcher_waits_for_announced_images_and_not_for_withdrawn_ones():
    def score(pixels):
        return {"logit": np.arange(len(pixels), dtype=float)}

    async def run():
        batcher = Batcher(score, max_batch=8, queue_size=16, max_wait_s=5.0)
        batcher.announce(1)  # another request is still decoding its image
        first = asyncio.create_task(batcher.submit([np.zeros((2, 2, 3), np.uint8)]))
        await asyncio.sleep(0.2)
        assert not first.done()  # held for the announced image, within the 5 s bound
        await batcher.submit([np.zeros((2, 2, 3), np.uint8)], announced=True)
        await first
        batcher.announce(1)
        lone = asyncio.create_task(batcher.submit([np.zeros((2, 2, 3), np.uint8)]))
        await asyncio.sleep(0.2)
        batcher.withdraw(1)  # its decoding failed: nothing more is coming
        started = time.monotonic()
        await lone
        waited = time.monotonic() - started
        batcher.close()
        return batcher.batch_sizes, waited

    sizes, waited = asyncio.run(run())
    assert sizes == {2: 1, 1: 1} and waited < 2.0


def test_settings_checked():
    with pytest.raises(Exception, match="max_files must be positive"):
        Settings(max_files=0)
    result = subprocess.run([sys.executable, "-m", "catdog.cli", "serve", "--max-files", "0"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "max_files must be positive" in result.stderr


def test_graceful_shutdown_answers_the_request_in_flight(predictor):
    gated = Gated(predictor)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(gated, Settings()), host="127.0.0.1", port=port,
                                           log_level="warning", timeout_graceful_shutdown=30))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    while not server.started or httpx.get(f"{url}/readyz").status_code != 200:
        time.sleep(0.05)
    gated.armed = True
    answers = []
    request = threading.Thread(target=lambda: answers.append(
        httpx.post(f"{url}/v1/predict", files=files(("a.jpg", jpeg(17))), timeout=60)))
    request.start()
    assert gated.entered.wait(30)
    server.should_exit = True  # what SIGTERM does
    time.sleep(0.3)
    assert thread.is_alive() and not answers  # still waiting for the request in flight
    gated.gate.set()
    request.join(30), thread.join(30)
    assert answers[0].status_code == 200 and answers[0].json()["results"][0]["path"] == "a.jpg"
    assert not thread.is_alive()


def test_catdog_serve_end_to_end_with_the_key_from_the_environment(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "CATDOG_API_KEY": "from-env"}
    server = subprocess.Popen([sys.executable, "-m", "catdog.cli", "serve", "--port", str(port), "--max-files", "3"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def alive():
            assert server.poll() is None, server.stdout.read()

        wait_until_ready(url, alive)
        body = files(("a.jpg", jpeg(18)))
        assert httpx.post(f"{url}/v1/predict", files=body).status_code == 401
        answer = httpx.post(f"{url}/v1/predict", files=body, headers={"Authorization": "Bearer from-env"})
        assert answer.status_code == 200 and answer.headers["x-catdog-version"] == __version__
        assert httpx.get(f"{url}/v1/info").json()["limits"]["max_files"] == 3
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=60)[0]
    # uvicorn finishes and runs the shutdown (the batcher drains): a clean stop, so status 0
    assert "Application shutdown complete" in output and "Finished server process" in output, output
    assert server.returncode == 0
