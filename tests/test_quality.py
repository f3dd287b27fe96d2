import numpy as np
import pytest
from conftest import smooth_photo

from catdog.data.quality import pixel_stats, problem


def _blurred(pixels: np.ndarray, passes: int = 12) -> np.ndarray:
    out = pixels.astype(np.float32)
    for _ in range(passes):  # box blur, many times: close to a wide Gaussian
        out = (out + np.roll(out, 1, 0) + np.roll(out, -1, 0) + np.roll(out, 1, 1) + np.roll(out, -1, 1)) / 5
    return out.astype(np.uint8)


def _stamp(pixels: np.ndarray) -> np.ndarray:
    page = np.full((224, 224, 3), 250, np.uint8)
    page[90:130, 80:140] = pixels[:40, :60]
    return page


@pytest.mark.parametrize("make, words", [
    (lambda p: np.full_like(p, 140), "blank"),
    (lambda p: (p * 0.05).astype(np.uint8), "almost black"),
    (_blurred, "blurred"),
    (_stamp, "small picture on a large plain border"),
])
def test_each_problem_is_named(make, words):
    found = problem(pixel_stats(make(smooth_photo(3, 224))))
    assert found is not None and words in found[1] and 0 < found[0] <= 1


def test_an_ordinary_picture_has_no_problem():
    grain = np.random.default_rng(0).normal(0, 12, (224, 224, 3))
    noisy = np.clip(smooth_photo(4, 224) + grain, 0, 255).astype(np.uint8)
    stats = pixel_stats(noisy)
    assert problem(stats) is None and stats["content"] == 1.0
