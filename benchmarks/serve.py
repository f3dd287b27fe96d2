"""`catdog serve` under load: requests/s, latency and batch sizes at 1, 4 and 16 concurrent clients.

    python benchmarks/serve.py [--model runs/NAME] [--runtime auto] [--requests 2000] [--clients 1 4 16]

The server runs in a subprocess on 127.0.0.1 (`catdog serve`, as a user starts it); clients
post one JPEG each (multipart) with httpx. In the same run, as references on the same
machine: the batched `Predictor.score_paths` images/s (what `catdog predict` does) and a warm
single-image predict (decode included). Prints a table, writes benchmarks/results/serve.json.
Targets (issue #14): at 16 clients >= 80% of the batched images/s with p99 <= 250 ms; at
1 client p50 within 10 ms of the single-image latency; no errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import httpx  # noqa: E402
import numpy as np  # noqa: E402

KAGGLE_ZIP = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "dogs-vs-cats" / "train.zip"


def sample_images(folder: Path, n: int, source: Path) -> list[Path]:
    """`n` real JPEGs from Kaggle's train.zip when it is there, else synthetic photo-sized JPEGs."""
    folder.mkdir(parents=True, exist_ok=True)
    if source.is_file():
        with zipfile.ZipFile(source) as archive:
            names = sorted(name for name in archive.namelist() if name.endswith(".jpg"))[-n:]  # the end: cats and dogs
            for name in names:
                (folder / Path(name).name).write_bytes(archive.read(name))
        return sorted(folder.glob("*.jpg"))
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (375, 500, 3), np.uint8)).save(folder / f"synthetic-{i}.jpg", quality=90)
    return sorted(folder.glob("*.jpg"))


def references(model: str | None, runtime: str, paths: list[Path]) -> dict:
    """Batched images/s over the files, and a warm single-image latency from bytes (decode included)."""
    from catdog.inference.predictor import Predictor, Scored

    predictor = Predictor(model, runtime=runtime)
    many = [str(p) for p in paths] * max(1, 256 // len(paths))
    list(predictor.score_paths(many[:64]))  # trace and warm up
    started = time.perf_counter()
    list(predictor.score_paths(many))
    batched = len(many) / (time.perf_counter() - started)
    datas = [p.read_bytes() for p in paths]
    latencies = []
    for i in range(len(datas) + 5):
        started = time.perf_counter()
        scores = predictor.scores(predictor.load(datas[i % len(datas)], name="x.jpg")[None])
        predictor.record(Scored("x.jpg", float(scores["logit"][0])))
        latencies.append(time.perf_counter() - started)
    return dict(batched_images_per_second=round(batched, 1), batched_images=len(many),
                single_image_ms=round(1000 * float(np.median(latencies[5:])), 1))


def start_server(model: str | None, runtime: str, port: int, queue_size: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "catdog.cli", "serve", "--port", str(port), "--queue-size", str(queue_size),
               "--runtime", runtime]
    server = subprocess.Popen(command + (["--model", model] if model else []), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited: {server.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.kill()
    raise RuntimeError("server not ready after 180 s")


async def load(url: str, datas: list[bytes], clients: int, requests: int) -> dict:
    """`requests` posts from `clients` concurrent clients, each waiting for its answer before the next."""
    latencies, errors, counter = [], [], iter(range(requests))

    async def client(http: httpx.AsyncClient):
        for i in counter:
            files = [("file", (f"{i}.jpg", datas[i % len(datas)], "image/jpeg"))]
            started = time.perf_counter()
            try:
                response = await http.post(f"{url}/v1/predict", files=files)
                if response.status_code != 200:
                    errors.append(response.status_code)
            except httpx.HTTPError as error:
                errors.append(type(error).__name__)
            latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return dict(clients=clients, requests=requests, requests_per_second=round(requests / elapsed, 1),
                p50_ms=round(float(np.percentile(ms, 50)), 1), p99_ms=round(float(np.percentile(ms, 99)), 1),
                errors=len(errors), error_kinds=sorted({str(e) for e in errors}))


def batch_sizes(url: str) -> dict[int, int]:
    return {int(k): v for k, v in httpx.get(f"{url}/v1/stats").json()["batch_sizes"].items()}


def run_levels(url: str, datas: list[bytes], levels: list[int], requests: int) -> list[dict]:
    rows = []
    for clients in levels:
        asyncio.run(load(url, datas, clients, min(requests, 4 * clients)))  # connections and threads warm
        before = batch_sizes(url)
        row = asyncio.run(load(url, datas, clients, requests))
        formed = {k: v - before.get(k, 0) for k, v in batch_sizes(url).items() if v - before.get(k, 0)}
        row["batch_sizes"] = dict(sorted(formed.items()))
        row["mean_batch"] = round(sum(k * v for k, v in formed.items()) / max(1, sum(formed.values())), 2)
        rows.append(row)
        print(f"  {clients:>2} clients: {row['requests_per_second']} req/s, p50 {row['p50_ms']} ms, "
              f"p99 {row['p99_ms']} ms, errors {row['errors']}, mean batch {row['mean_batch']}", flush=True)
    return rows


def verdicts(rows: list[dict], ref: dict) -> dict:
    by = {row["clients"]: row for row in rows}
    out = {"no_errors": all(row["errors"] == 0 for row in rows)}
    if 16 in by:
        share = by[16]["requests_per_second"] / ref["batched_images_per_second"]
        out["16_clients_share_of_batched"] = round(share, 3)
        out["16_clients_ok"] = share >= 0.8 and by[16]["p99_ms"] <= 250
    if 1 in by:
        out["1_client_p50_over_single_ms"] = round(by[1]["p50_ms"] - ref["single_image_ms"], 1)
        out["1_client_ok"] = by[1]["p50_ms"] <= ref["single_image_ms"] + 10
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="run folder or .keras (default: the shipped model)")
    parser.add_argument("--runtime", default="auto", help="for the server and the references alike")
    parser.add_argument("--requests", type=int, default=2000, help="requests per concurrency level")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--images", type=int, default=64, help="distinct JPEGs the clients cycle through")
    parser.add_argument("--data", default=str(KAGGLE_ZIP), help="zip to take real JPEGs from (else synthetic)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "serve.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        paths = sample_images(Path(tmp), args.images, Path(args.data))
        print(f"references on {len(paths)} JPEGs ...", flush=True)
        ref = references(args.model, args.runtime, paths)
        print(f"  batched Predictor.score_paths: {ref['batched_images_per_second']} images/s; "
              f"single image: {ref['single_image_ms']} ms", flush=True)
        datas = [p.read_bytes() for p in paths]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = start_server(args.model, args.runtime, port, queue_size=4 * max(args.clients))
    try:
        rows = run_levels(f"http://127.0.0.1:{port}", datas, args.clients, args.requests)
    finally:
        server.terminate()
        server.wait(60)
    result = dict(machine=dict(cpus=os.cpu_count(), processor=platform.processor() or platform.machine(),
                               load_average=os.getloadavg()),
                  runtime=args.runtime, reference=ref, rows=rows, verdicts=verdicts(rows, ref))
    print(f"\n{'clients':>7}  {'req/s':>6}  {'p50 ms':>6}  {'p99 ms':>6}  {'errors':>6}  batch sizes formed")
    for row in rows:
        sizes = ", ".join(f"{k}x{v}" for k, v in row["batch_sizes"].items())
        print(f"{row['clients']:>7}  {row['requests_per_second']:>6}  {row['p50_ms']:>6}  {row['p99_ms']:>6}  "
              f"{row['errors']:>6}  {sizes}")
    print(f"reference: batched {ref['batched_images_per_second']} images/s, single image {ref['single_image_ms']} ms")
    print(json.dumps(result["verdicts"]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
