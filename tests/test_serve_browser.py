"""The page end to end: the real server (uvicorn, a free port) and Debian's headless Chromium.

Screenshots are kept in tests/artifacts/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import base64
import io
import socket
import sys
import threading
import types
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from conftest import KAGGLE_ZIP, require_data, wait_until_ready
from PIL import Image

from catdog.inference.predictor import Predictor
from catdog.serving import Settings, create_app

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).parent / "artifacts"


def picture(seed: int) -> bytes:
    """A synthetic photo-sized JPEG: smooth blobs, so the thumbnail looks like a picture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:240, 0:320] / 60.0
    channels = [np.sin(x * rng.uniform(0.5, 2) + rng.uniform(0, 6)) * np.cos(y * rng.uniform(0.5, 2)) for _ in range(3)]
    pixels = ((np.stack(channels, -1) + 1) * 127.5).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


@pytest.fixture(scope="module")
def server():
    """The app on uvicorn in a thread, as `catdog serve` runs it; yields its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app(Predictor(), Settings())
    uvicorn_server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(url)
    yield url
    uvicorn_server.should_exit = True
    thread.join(30)


def api_label(url: str, name: str, data: bytes) -> dict:
    response = httpx.post(f"{url}/v1/predict", files=[("file", (name, data, "image/jpeg"))], timeout=60)
    return response.json()["results"][0]


def card_text(page, name: str) -> dict:
    card = page.locator(".card", has=page.locator(".name", has_text=name))
    card.and_(page.locator('[aria-busy="false"]')).wait_for(timeout=60_000)
    return {"label": card.get_attribute("data-label"), "p": card.locator(".p").inner_text(),
            "meter": card.locator(".bar").get_attribute("aria-valuenow")}


def test_drop_two_pictures_and_see_the_same_labels_as_the_api(server, browser_page):
    page = browser_page
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(server, wait_until="networkidle")
    assert page.locator("#key-form").is_hidden()  # no API key on this server
    images = {"blobs-1.jpg": picture(1), "blobs-2.jpg": picture(2)}
    files = [{"name": name, "b64": base64.b64encode(data).decode()} for name, data in images.items()]
    page.evaluate("""(files) => {
        const transfer = new DataTransfer();
        for (const f of files) {
            const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
            transfer.items.add(new File([bytes], f.name, { type: "image/jpeg" }));
        }
        document.querySelector("#drop").dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true }));
    }""", files)
    for name, data in images.items():
        expected = api_label(server, name, data)
        shown = card_text(page, name)
        assert shown["label"] == expected["label"]
        # The API's p_dog to three decimals. The server's batcher may answer the page's two uploads in
        # one batch, and Keras's answer for a picture moves with the batch it is in (blobs-1 with the
        # shipped model: p_dog 0.42747 alone, 0.42759 beside blobs-2, shown 0.427 and 0.428), so a step
        # of the third decimal either way is allowed.
        assert shown["p"].startswith("p(dog) ") and len(shown["p"].split(".")[-1]) == 3
        assert float(shown["p"].split()[-1]) == pytest.approx(expected["p_dog"], abs=0.0015)
        assert float(shown["meter"]) == pytest.approx(expected["p_dog"] * 100, abs=0.15)
    page.get_by_text("2 photos classified").wait_for()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve-desktop.png"), full_page=True)
    assert page.console_errors == []


def test_pick_and_paste_on_a_phone(server, browser_page, tmp_path):
    page = browser_page
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(server, wait_until="networkidle")
    (tmp_path / "picked.jpg").write_bytes(picture(3))
    page.set_input_files("#file-input", str(tmp_path / "picked.jpg"))
    assert card_text(page, "picked.jpg")["label"] == api_label(server, "picked.jpg", picture(3))["label"]
    png = io.BytesIO()
    Image.open(io.BytesIO(picture(4))).save(png, "PNG")
    page.evaluate("""(b64) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], "pasted.png", { type: "image/png" }));
        document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true }));
    }""", base64.b64encode(png.getvalue()).decode())
    pasted = card_text(page, "pasted.png")
    expected = api_label(server, "pasted.png", png.getvalue())
    assert pasted["label"] == expected["label"] and pasted["p"] == f"p(dog) {expected['p_dog']:.3f}"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve-phone.png"), full_page=True)
    assert page.console_errors == []


def test_an_unreadable_file_gets_its_reason_on_its_card(server, browser_page, tmp_path):
    page = browser_page
    page.goto(server, wait_until="networkidle")
    (tmp_path / "notes.jpg").write_bytes(b"not a picture at all")
    page.set_input_files("#file-input", str(tmp_path / "notes.jpg"))
    card = page.locator(".card", has=page.locator(".name", has_text="notes.jpg"))
    card.locator(".error").wait_for(timeout=60_000)
    assert card.get_attribute("data-label") == "error"
    assert card.locator(".error").inner_text() == "notes.jpg: not a recognised image format"
    assert card.locator(".explain").is_hidden()
    assert all("415" in error for error in page.console_errors)  # Chromium logs the refused request; nothing else


def test_docs_render_offline(server, browser_page):
    page = browser_page
    page.goto(f"{server}/docs", wait_until="networkidle")
    page.get_by_text("/v1/predict").first.wait_for()
    assert page.locator(".endpoint").count() >= 6
    assert page.console_errors == []


def test_grad_cam_toggle_when_explain_exists(server, browser_page, monkeypatch, tmp_path):
    class Explainer:  # stands in for catdog.inference.gradcam (another branch); the server runs in this process
        def __init__(self, model=None, layer=None):
            pass

        def overlay(self, pixels, alpha=0.45):
            return np.roll(pixels, 1, axis=-1)

    monkeypatch.setitem(sys.modules, "catdog.inference.gradcam", types.SimpleNamespace(Explainer=Explainer))
    page = browser_page
    page.goto(server, wait_until="networkidle")
    (tmp_path / "look.jpg").write_bytes(picture(5))
    page.set_input_files("#file-input", str(tmp_path / "look.jpg"))
    card_text(page, "look.jpg")
    button = page.get_by_role("button", name="Show where it looked")
    image = page.locator(".card img")
    original = image.get_attribute("src")
    button.click()
    page.get_by_role("button", name="Show the photo").wait_for()
    assert image.get_attribute("src") != original and image.get_attribute("src").startswith("blob:")
    page.get_by_role("button", name="Show the photo").click()
    assert image.get_attribute("src") == original
    assert page.console_errors == []


@pytest.mark.slow
def test_a_real_cat_is_labelled_cat(server, browser_page, tmp_path):
    require_data(KAGGLE_ZIP.exists(), f"{KAGGLE_ZIP} not found")
    with zipfile.ZipFile(KAGGLE_ZIP) as archive:
        (tmp_path / "cat.1.jpg").write_bytes(archive.read("train/cat.1.jpg"))
    page = browser_page
    page.goto(server, wait_until="networkidle")
    page.set_input_files("#file-input", str(tmp_path / "cat.1.jpg"))
    assert card_text(page, "cat.1.jpg")["label"] == "cat"
    assert page.locator(".card .label").inner_text() == "Cat"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve-cat.png"))
