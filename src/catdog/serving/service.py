"""The model side of the server: decode off the event loop, score through the batcher, explain.

One `Service` holds the `Predictor` (loaded once, before the server starts), a small thread
pool for decoding and the `Batcher`'s worker thread for the model, so the event loop itself
never decodes an image or runs the network.
"""

from __future__ import annotations

import asyncio
import importlib
import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastapi import HTTPException
from PIL import Image

from catdog.data.images import ImageError, load_image, thumbnail
from catdog.inference.predictor import Scored
from catdog.serving.batcher import Batcher
from catdog.serving.uploads import Upload

OVERLAY_SIDE = 512  # Grad-CAM overlays are drawn at most this large: enough for a card, cheap to send


def status_for(error: ImageError) -> int:
    """415 for bytes that are no image at all, 413 for decompression bombs, 422 for broken images."""
    if error.reason.startswith("not a recognised image format"):
        return 415
    if error.reason.startswith("too large"):
        return 413
    return 422


def _refuse_bombs(upload: Upload) -> None:
    """413 for an image whose header declares more pixels than Pillow's bomb limit.

    The loader refuses these too, but it turns Pillow's bomb *warning* into an error with
    `warnings.catch_warnings`, which is not thread-safe; decoding runs on several threads here,
    so the header is checked first (reading it decodes nothing).
    """
    try:
        with Image.open(io.BytesIO(upload.data)) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001  (not an image: the loader gives the one-line reason)
        return
    if width * height > (Image.MAX_IMAGE_PIXELS or float("inf")):
        raise HTTPException(413, f"{upload.name}: too large, possible decompression bomb "
                                 f"({width}x{height} pixels, limit {Image.MAX_IMAGE_PIXELS:,})")


class Service:
    """`predict(uploads)` -> records as `catdog predict` prints them; `explain(upload)` -> PNG bytes."""

    def __init__(self, predictor, max_batch: int = 32, queue_size: int = 64, max_wait_s: float = 0.004):
        self.predictor = predictor
        # One model call at a time: the warm-up thread and the batcher's would otherwise meet in the
        # model, and a LiteRT interpreter cannot be resized or run by two threads at once.
        self._model_lock = threading.Lock()
        self.batcher = Batcher(self._scores, max_batch=max_batch, queue_size=queue_size, max_wait_s=max_wait_s)
        self.decoders = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="catdog-decode")
        self.ready = threading.Event()
        self.images = 0
        self._explainer = None
        self._explainer_lock = threading.Lock()

    def warm_up(self) -> None:
        """Traces the model and touches its memory at batch sizes 1 and max, off the request path."""
        size = self.predictor.image_size
        for n in (1, self.batcher.max_batch):
            self._scores(np.zeros((n, size, size, 3), np.uint8))
        self.ready.set()

    def _scores(self, pixels: np.ndarray) -> dict:
        with self._model_lock:
            return self.predictor.scores(pixels)

    def close(self) -> None:
        self.batcher.close()
        self.decoders.shutdown(wait=True)

    def _decode(self, upload: Upload) -> np.ndarray:
        _refuse_bombs(upload)
        try:
            return self.predictor.load(upload.data, name=upload.name)
        except ImageError as error:
            raise HTTPException(status_for(error), str(error)) from None

    async def predict(self, uploads: list[Upload]) -> list[dict]:
        loop = asyncio.get_running_loop()
        self.batcher.announce(len(uploads))  # the model may wait a few ms for these rather than run without them
        try:
            pixels = await asyncio.gather(*(loop.run_in_executor(self.decoders, self._decode, u) for u in uploads))
        except BaseException:
            self.batcher.withdraw(len(uploads))
            raise
        scores = await self.batcher.submit(list(pixels), announced=True)
        self.images += len(uploads)
        detector = self.predictor.detector_scores
        return [self.predictor.record(Scored(upload.name, score["logit"],
                                             {name: score[name] for name in detector if name in score} or None))
                for upload, score in zip(uploads, scores, strict=True)]

    # --- Grad-CAM, where the install has catdog.inference.gradcam (another part of the project adds it)

    @staticmethod
    def explain_available() -> bool:
        try:
            importlib.import_module("catdog.inference.gradcam")
        except ImportError:
            return False
        return True

    async def explain(self, upload: Upload) -> bytes:
        if not self.explain_available():
            raise HTTPException(501, "Grad-CAM is not available in this install (no catdog.inference.gradcam module)")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.decoders, self._overlay_png, upload)

    def _explainer_for_model(self):
        with self._explainer_lock:  # built once, on first use: it holds a second view of the model
            if self._explainer is None:
                from catdog.inference.gradcam import Explainer

                # Under LiteRT the predictor's path is a .tflite: the Explainer finds the Keras model behind it.
                self._explainer = Explainer(self.predictor.path)
            return self._explainer

    def _overlay_png(self, upload: Upload) -> bytes:
        _refuse_bombs(upload)
        try:
            pixels = load_image(upload.data, name=upload.name)
        except ImageError as error:
            raise HTTPException(status_for(error), str(error)) from None
        overlay = self._explainer_for_model().overlay(thumbnail(pixels, OVERLAY_SIDE))
        out = io.BytesIO()
        Image.fromarray(overlay).save(out, format="PNG")
        return out.getvalue()
