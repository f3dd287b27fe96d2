"""catdog serve against hostile HTTP clients, through real sockets (issue #27).

A `catdog serve` subprocess on a free 127.0.0.1 port, with a short --read-timeout so that slow
clients are cut off within a test's patience; its log is kept to check what it says.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import wait_until_ready
from fastapi.testclient import TestClient
from PIL import Image

from catdog import __version__
from catdog.serving import Settings, create_app
from catdog.serving import server as catdog_server

READ_TIMEOUT_S = 2.0
IDLE_S = 5  # uvicorn's keep-alive timeout, which catdog serve applies from a connection's start too


def jpeg(seed: int = 0) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (120, 160, 3), np.uint8)).save(out, "JPEG")
    return out.getvalue()


@contextmanager
def catdog_serve(log: Path, *flags: str):
    """`catdog serve FLAGS` on a free port, ready; yields (process, port). Stopped (SIGTERM) at the end."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "catdog.cli", "serve", "--port", str(port), *flags],
                                   stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "CATDOG_API_KEY": ""})
    try:
        def alive():
            assert process.poll() is None, log.read_text()

        wait_until_ready(f"http://127.0.0.1:{port}", alive)
        yield process, port
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(60)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(port, log file) of one `catdog serve --read-timeout 2` for the whole module."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with catdog_serve(log, "--read-timeout", str(READ_TIMEOUT_S)) as (_, port):
        yield port, log


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_until_closed(sock: socket.socket, patience: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed (monotonic)."""
    sock.settimeout(patience)
    received = b""
    while chunk := sock.recv(65536):  # socket.timeout here: the server kept the connection open
        received += chunk
    return received, time.monotonic()


def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Sends raw `request` bytes (which should ask for Connection: close); (status, headers, body)."""
    with connect(port) as sock:
        sock.sendall(request)
        response, _ = read_until_closed(sock, 30)
    return parse(response)


def parse(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def raw_upload(filename: bytes, body: bytes) -> bytes:
    return (b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: image/jpeg\r\n"
            b"X-Filename: " + filename + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def trickle(sock: socket.socket, data: bytes, every: float, patience: float) -> tuple[bytes, float]:
    """Sends `data` a byte at a time, `every` seconds apart, until the server answers or closes."""
    started = time.monotonic()
    sock.settimeout(every)
    for byte in data:
        assert time.monotonic() - started < patience, "the server never cut the slow client off"
        try:
            sock.sendall(bytes([byte]))
            answer = sock.recv(65536)
        except socket.timeout:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return b"", time.monotonic() - started
        return answer, time.monotonic() - started
    raise AssertionError("the whole slow request went through: send more bytes or a shorter --read-timeout")


def test_a_boundary_python_multipart_refuses_is_422_not_500(server):
    port, log = server
    answer = httpx.post(f"http://127.0.0.1:{port}/v1/predict", content=jpeg(),
                        headers={"content-type": "multipart/form-data; boundary=" + "b" * 300})
    assert answer.status_code == 422 and "boundary" in answer.json()["detail"].lower()
    assert answer.headers["x-catdog-version"] == __version__
    assert "Traceback" not in log.read_text()


def test_uvicorns_own_400_carries_the_version(server):
    port, _ = server
    status, headers, _ = exchange(port, b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
    assert status == 400 and headers["x-catdog-version"] == __version__


class Broken:
    """A predictor whose image loading has a bug: every upload raises inside the app."""

    image_size, detector_scores = 8, ()

    def scores(self, pixels):
        return {"logit": np.zeros(len(pixels))}

    def load(self, data, name):
        raise RuntimeError("a bug in catdog")


def test_a_500_carries_the_version_and_is_counted():
    with TestClient(create_app(Broken(), Settings()), raise_server_exceptions=False) as client:
        answer = client.post("/v1/predict", content=jpeg(), headers={"content-type": "image/jpeg"})
        assert answer.status_code == 500 and answer.headers["x-catdog-version"] == __version__
        assert client.get("/v1/stats").json()["responses"]["POST /v1/predict 500"] == 1


def test_a_slow_body_is_answered_408_within_the_read_timeout(server):
    port, _ = server
    with connect(port) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                     b"Content-Length: 4096\r\n\r\n")
        answer, waited = trickle(sock, b"x" * 4096, every=0.25, patience=READ_TIMEOUT_S + 5)
        rest, _ = read_until_closed(sock, 5)  # and the connection is closed
    status, headers, body = parse(answer + rest)
    assert status == 408 and headers["connection"] == "close" and headers["x-catdog-version"] == __version__
    assert READ_TIMEOUT_S - 0.5 < waited < READ_TIMEOUT_S + 2, waited
    assert b"2 s" in body


def test_headers_sent_a_byte_at_a_time_are_answered_408(server):
    port, _ = server
    with connect(port) as sock:
        answer, waited = trickle(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 4000,
                                 every=0.25, patience=READ_TIMEOUT_S + 5)
        rest, _ = read_until_closed(sock, 5)
    status, headers, _ = parse(answer + rest)
    assert status == 408 and headers["x-catdog-version"] == __version__
    assert waited < READ_TIMEOUT_S + 2, waited


def test_the_408_survives_a_client_that_goes_on_sending(server):
    """The server half-closes and drains: closing at once with the client's bytes unread would
    answer them with a TCP reset (seen in CI as ConnectionResetError after the 408)."""
    port, _ = server
    with connect(port) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                     b"Content-Length: 4096\r\n\r\n" + b"x" * 100)
        sock.settimeout(READ_TIMEOUT_S + 5)
        answer = sock.recv(65536)  # the 408, once the read timeout has passed
        sock.sendall(b"x" * 1000)  # the client has not read it yet and still sends its body
        time.sleep(0.3)
        rest, _ = read_until_closed(sock, 5)  # the whole answer, then a clean close: no reset
    status, headers, _ = parse(answer + rest)
    assert status == 408 and headers["connection"] == "close"


def test_a_connection_that_sends_nothing_is_closed(server):
    port, _ = server
    with connect(port) as sock:
        opened = time.monotonic()
        received, closed = read_until_closed(sock, IDLE_S + 5)
    assert received == b"" and IDLE_S - 1 < closed - opened < IDLE_S + 3  # closed without an answer


@pytest.mark.parametrize("sent, path", [
    ("chat-\N{CAT FACE}.jpg".encode(), "chat-\N{CAT FACE}.jpg"),  # plain UTF-8 bytes, as curl sends them
    (b"UTF-8''chat-%F0%9F%90%B1.jpg", "chat-\N{CAT FACE}.jpg"),  # RFC 8187, as in filename*=
    ("caf\N{LATIN SMALL LETTER E WITH ACUTE}.jpg".encode("latin-1"), "caf\N{LATIN SMALL LETTER E WITH ACUTE}.jpg"),
    (b"a\xc2\x85b\xc2\x9fc.jpg", "abc.jpg"),  # C1 controls (U+0085, U+009F) are dropped, as C0 ones are
])
def test_x_filename_is_read_as_the_client_wrote_it(server, sent, path):
    port, _ = server
    status, _, body = exchange(port, raw_upload(sent, jpeg()))
    assert status == 200 and json.loads(body)["results"][0]["path"] == path


def test_a_client_dropping_mid_upload_is_one_log_line_not_a_traceback(server):
    port, log = server
    with connect(port) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                     b"Content-Length: 40960\r\n\r\n" + b"x" * 1000)
        time.sleep(0.3)
    deadline = time.monotonic() + 5
    while "disconnected" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    text = log.read_text()
    assert "Traceback" not in text and "Exception in ASGI application" not in text, text
    [line] = [line for line in text.splitlines() if "disconnected" in line]
    assert "POST /v1/predict" in line and line.startswith("INFO"), line


def test_sigterm_after_a_clean_drain_exits_0(tmp_path):
    body = jpeg(1)
    with catdog_serve(tmp_path / "serve.log") as (process, port), connect(port) as sock:
        request = raw_upload(b"in-flight.jpg", body)
        sock.sendall(request[:-1000])  # a request in flight when SIGTERM comes
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        sock.sendall(request[-1000:])
        status, _, answer = parse(read_until_closed(sock, 30)[0])
        assert status == 200 and json.loads(answer)["results"][0]["path"] == "in-flight.jpg"
        assert process.wait(60) == 0, (tmp_path / "serve.log").read_text()


class Stuck(Broken):
    """A predictor whose model call, once armed, holds its batch for 3 s: longer than the drain below allows."""

    armed = False

    def __init__(self):
        self.entered = threading.Event()

    def load(self, data, name):
        return np.zeros((8, 8, 3), np.uint8)

    def scores(self, pixels):
        if self.armed:
            self.entered.set()
            time.sleep(3)
        return super().scores(pixels)


def test_a_drain_cut_short_is_counted_so_the_exit_is_not_0():
    stuck = Stuck()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = catdog_server.config(create_app(stuck, Settings()), port=port, timeout_graceful_shutdown=0.5,
                                  log_level="critical")  # the cut-off request's traceback is expected here
    server = catdog_server.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    while not server.started or httpx.get(f"{url}/readyz").status_code != 200:
        assert thread.is_alive()
        time.sleep(0.05)
    stuck.armed = True
    answers = []
    request = threading.Thread(target=lambda: answers.append(httpx.post(
        f"{url}/v1/predict", content=jpeg(), headers={"content-type": "image/jpeg"}, timeout=30)))
    request.start()
    assert stuck.entered.wait(10)
    server.should_exit = True  # what SIGTERM does
    thread.join(20), request.join(20)
    [answer] = answers
    assert server.cut_off == 1 and answer.status_code == 500 and answer.headers["x-catdog-version"] == __version__

