"""How usable a picture's pixels are, from the pixels alone: dark, blank, blurred, or a small
picture pasted on a large plain border.

    >>> stats = pixel_stats(load_image("cat.1.jpg", size=224))
    >>> problem(stats)           # None, or (score in 0..1, "almost black: mean brightness 9 of 255")

Measured on the square the model sees (224 x 224), so the thresholds do not depend on the file's
own size. Each threshold marks a picture a person would call unusable, not merely a poor one.
"""

from __future__ import annotations

import numpy as np

STATS = ("brightness", "contrast", "sharpness", "content")
DARK = 24.0  # mean brightness (0..255) below which a picture is almost black
BLANK = 6.0  # standard deviation of brightness below which it is one flat colour
BLURRED = 12.0  # variance of the Laplacian (edges) below which no detail is left
SMALL = 0.25  # share of the frame inside a plain border below which the picture is a stamp on a page
_BORDER_TOLERANCE = 10.0  # brightness steps a plain border may vary by (JPEG noise)


def _grey(pixels: np.ndarray) -> np.ndarray:
    return np.asarray(pixels, np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def _plain_edges(grey: np.ndarray) -> int:
    """How many rows from the top are plain and of the border's colour (the first row's median)."""
    colour = np.median(grey[0])
    plain = np.mean(np.abs(grey - colour) <= _BORDER_TOLERANCE, axis=1) >= 0.98
    return len(plain) if plain.all() else int(np.argmin(plain))


def content_share(grey: np.ndarray) -> float:
    """The share of the frame left inside plain borders of one colour (1.0: no border)."""
    height, width = grey.shape
    top, bottom = _plain_edges(grey), _plain_edges(grey[::-1])
    left, right = _plain_edges(grey.T), _plain_edges(grey.T[::-1])
    inside = max(0, height - top - bottom) * max(0, width - left - right)
    return inside / (height * width)


def pixel_stats(pixels: np.ndarray) -> dict[str, float]:
    """{"brightness", "contrast", "sharpness", "content"} of (H, W, 3) uint8 pixels."""
    grey = _grey(pixels)
    laplacian = grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1]
    return dict(brightness=float(grey.mean()), contrast=float(grey.std()), sharpness=float(laplacian.var()),
                content=content_share(grey))


def problem(stats: dict[str, float]) -> tuple[float, str] | None:
    """The worst quality problem of a picture as (score in 0..1, reason), or None for a usable one."""
    found = []
    if stats["contrast"] < BLANK:
        found.append((1 - stats["contrast"] / BLANK / 2, f"blank: one flat colour (brightness varies by "
                                                           f"{stats['contrast']:.1f} of 255)"))
    if stats["brightness"] < DARK:
        found.append((1 - stats["brightness"] / DARK / 2, f"almost black: mean brightness "
                                                           f"{stats['brightness']:.0f} of 255"))
    if stats["sharpness"] < BLURRED and stats["contrast"] >= BLANK:
        found.append((1 - stats["sharpness"] / BLURRED / 2, f"blurred: no sharp detail (edge strength "
                                                             f"{stats['sharpness']:.1f})"))
    if stats["content"] < SMALL and stats["contrast"] >= BLANK:
        found.append((1 - stats["content"] / SMALL / 2, f"a small picture on a large plain border (it fills "
                                                         f"{stats['content']:.0%} of the frame)"))
    return max(found) if found else None
