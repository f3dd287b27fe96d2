"""Adaptive micro-batching: many requests, one model, one worker thread.

Requests put their images on a bounded queue and await futures. One worker thread takes
whatever queued while the model was busy (up to `max_batch`) and runs it as one batch. It
waits for more (at most `max_wait_s`) only when more are surely coming: others were already
queued, or requests have announced images they are decoding right now. So a lone request is
never held back by a batch window, while concurrent requests share forward passes instead of
splitting into cohorts that take turns.

    >>> batcher = Batcher(predictor.scores, max_batch=32, queue_size=64)
    >>> batcher.announce(2)                                   # optional: decoding two images
    >>> scores = await batcher.submit([pixels_a, pixels_b], announced=True)
    >>> scores                                                # [{"logit": ..., "p_pet": ...}, ...]
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter, deque
from collections.abc import Callable

import numpy as np


class QueueFull(Exception):
    """The queue cannot take these images now; the client should retry later."""


class Batcher:
    """Runs `score(np.stack(pixels)) -> {name: array (N,)}` on batches formed from concurrent requests."""

    def __init__(self, score: Callable[[np.ndarray], dict], max_batch: int = 32, queue_size: int = 64,
                 max_wait_s: float = 0.004):
        self.score, self.max_batch, self.queue_size, self.max_wait_s = score, max_batch, queue_size, max_wait_s
        self.batch_sizes: Counter[int] = Counter()  # the batches actually formed, for /v1/stats
        self._items: deque = deque()
        self._ready = threading.Condition()
        self._closing = False
        self._incoming = 0  # images announced by requests still decoding them
        self._thread = threading.Thread(target=self._run, name="catdog-batcher", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        return len(self._items)

    def announce(self, n: int) -> None:
        """`n` images are being decoded and will be submitted (or withdrawn) shortly."""
        with self._ready:
            self._incoming += n

    def withdraw(self, n: int) -> None:
        """The announced images will not come (their decoding failed)."""
        with self._ready:
            self._incoming -= n
            self._ready.notify()

    async def submit(self, images: list[np.ndarray], announced: bool = False) -> list[dict[str, float]]:
        """Scores for each image, in order; `QueueFull` at once when the queue has no room for all."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in images]
        with self._ready:
            self._incoming -= len(images) if announced else 0  # in one step with the queueing: no gap to miss
            self._ready.notify()
            if self._closing:
                raise QueueFull("shutting down")
            if len(self._items) + len(images) > self.queue_size:
                raise QueueFull(f"{len(self._items)} images queued (limit {self.queue_size})")
            self._items.extend((pixels, future, loop) for pixels, future in zip(images, futures, strict=True))
            self._ready.notify()
        try:
            return list(await asyncio.gather(*futures))
        finally:
            for future in futures:  # a timed-out request: the worker skips what is still queued
                future.cancel()

    def close(self, timeout: float | None = 30) -> None:
        """Stops taking work, finishes what is queued, then stops the worker thread."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        self._thread.join(timeout)

    def _take(self) -> list | None:
        """Blocks for one item, then takes what else is queued, waiting briefly only for what is coming.

        None once closing and nothing is left.
        """
        with self._ready:
            while not self._items and not self._closing:
                self._ready.wait()
            if not self._items:
                return None
            batch = [self._items.popleft()]
            traffic = bool(self._items)  # others arrived while the model was busy: more may follow
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch:
                while self._items and len(batch) < self.max_batch:
                    batch.append(self._items.popleft())
                left = deadline - time.monotonic()
                if len(batch) >= self.max_batch or left <= 0 or not (traffic or self._incoming > 0):
                    break
                self._ready.wait(left)
            return [item for item in batch if not item[1].done()]  # drop requests that gave up

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            if not batch:
                continue
            self.batch_sizes[len(batch)] += 1
            try:
                outputs = self.score(np.stack([pixels for pixels, _, _ in batch]))
                results = [{name: float(values[i]) for name, values in outputs.items()} for i in range(len(batch))]
            except Exception as error:  # noqa: BLE001  (the requests get the error, the worker lives on)
                results = [error] * len(batch)
            for (_, future, loop), result in zip(batch, results, strict=True):
                loop.call_soon_threadsafe(_resolve, future, result)


def _resolve(future: asyncio.Future, result) -> None:
    if future.done():  # cancelled by a timeout meanwhile
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)
