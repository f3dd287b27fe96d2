import io

import numpy as np
import pytest
from conftest import smooth_photo
from PIL import Image

from catdog.data import similar


def _recompressed(pixels: np.ndarray, side: int, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((side, side)).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def _bits(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


def test_a_resized_recompressed_copy_hashes_close_and_another_picture_far():
    pictures = [smooth_photo(seed) for seed in range(6)]
    for pixels in pictures:
        assert _bits(similar.phash(pixels), similar.phash(_recompressed(pixels, 120, 60))) <= 4
    others = [_bits(similar.phash(a), similar.phash(b)) for i, a in enumerate(pictures) for b in pictures[i + 1:]]
    assert min(others) > 12


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(similar, "CHUNK_BYTES", 64)  # a few rows at a time: the chunk edges are crossed


def test_hash_pairs_finds_what_comparing_all_pairs_finds(small_chunks):
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, 40, dtype=np.uint64)
    hashes[7] = hashes[3] ^ np.uint64(0b1011)  # 3 bits apart
    hashes[30] = hashes[12]
    expected = {(i, j, _bits(int(hashes[i]), int(hashes[j]))) for i in range(40) for j in range(i + 1, 40)
                if _bits(int(hashes[i]), int(hashes[j])) <= 3}
    assert set(similar.hash_pairs(hashes, 3)) == expected == {(3, 7, 3), (12, 30, 0)}


def test_nearest_matches_the_full_similarity_matrix(small_chunks):
    features = np.random.default_rng(1).normal(size=(50, 8)).astype(np.float32)
    indices, similarities = similar.nearest(features, k=3)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    full = unit @ unit.T
    np.fill_diagonal(full, -np.inf)
    np.testing.assert_array_equal(indices, np.argsort(-full, axis=1)[:, :3])
    np.testing.assert_allclose(similarities, np.sort(full, axis=1)[:, ::-1][:, :3], rtol=1e-5)


def _a_set_with_outliers(rng, n=300):
    """(features, outliers): `n` rows around 3 centres, then 4 rows of their own direction, one of them
    repeated 6 times (its copies must not make it ordinary)."""
    centres = rng.normal(size=(3, 16))
    rows = centres[rng.integers(0, 3, n)] + 0.3 * rng.normal(size=(n, 16))
    odd = rng.normal(size=(4, 16)) * 3
    return np.concatenate([rows, odd, np.repeat(odd[:1], 6, axis=0)]).astype(np.float32), list(range(n, n + 4))


def test_unusual_ranks_the_rows_unlike_the_rest_highest(small_chunks):
    features, outliers = _a_set_with_outliers(np.random.default_rng(2))
    share = similar.unusual(features)
    assert share.shape == (len(features),) and share.min() == 0 and share.max() == 1
    assert min(share[outliers]) > np.sort(share[:300])[-3]  # above all but a few ordinary rows
    assert share[outliers[0]] > 0.95  # its own 6 copies do not make it ordinary


def test_unusual_against_a_sample_ranks_as_against_all(monkeypatch):
    features, outliers = _a_set_with_outliers(np.random.default_rng(3), n=2000)
    exact = similar.unusual(features)
    monkeypatch.setattr(similar, "REFERENCE", 500)
    sampled = similar.unusual(features)
    assert np.corrcoef(exact, sampled)[0, 1] > 0.75  # the ordinary rows' order is mostly noise
    assert min(sampled[outliers]) > 0.99


def test_groups_link_chains_of_pairs():
    assert similar.groups(6, [(0, 4, 1), (4, 5, 2), (2, 3, 0)]).tolist() == [0, 1, 2, 2, 0, 0]


def test_hash_pairs_by_parts_finds_every_pair_within_the_bits_wherever_they_differ(small_chunks):
    """Multi-index hashing compares only hashes that share a part: pairs 0..4 bits apart, the differing
    bits anywhere (in one part, or spread over all), and a crowd of equal hashes, as brute force finds them."""
    rng = np.random.default_rng(2)
    hashes = rng.integers(0, 2**63, 300, dtype=np.int64).astype(np.uint64)
    spread = {5: [0, 1, 2, 3], 7: [0, 16, 32, 48], 8: [5, 20, 40, 60]}  # in one part; one in each quarter
    for k, bits in enumerate([0, 1, 2, 3, 4, 4, 5, 4, 4]):
        flips = spread.get(k, rng.choice(64, bits, replace=False))
        hashes[100 + k] = hashes[k] ^ np.uint64(sum(1 << int(b) for b in flips))
    hashes[200:230] = hashes[199]  # a blank picture's hash, 31 times
    n = len(hashes)
    expected = {(i, j, _bits(int(hashes[i]), int(hashes[j]))) for i in range(n) for j in range(i + 1, n)
                if _bits(int(hashes[i]), int(hashes[j])) <= 4}
    found = list(similar.hash_pairs(hashes, 4))
    assert set(found) == expected and found == sorted(found) and len(found) == len(set(found))
    assert {(k, 100 + k) for k in range(9) if k != 6} <= {(i, j) for i, j, _ in found}
    assert (6, 106) not in {(i, j) for i, j, _ in found}  # 5 bits apart


def test_nearest_at_least_a_similarity_sorts_only_the_rows_that_have_such_neighbours(small_chunks):
    rng = np.random.default_rng(3)
    features = rng.normal(size=(60, 32)).astype(np.float32)
    features[40] = features[5] + 0.01 * rng.normal(size=32)  # one near copy
    everything, similarities = similar.nearest(features, k=3)
    indices, close = similar.nearest(features, k=3, at_least=0.9)
    for row in (5, 40):
        np.testing.assert_array_equal(indices[row], everything[row])
        np.testing.assert_allclose(close[row], similarities[row])
    others = [r for r in range(60) if r not in (5, 40)]
    assert (indices[others] == -1).all() and (close[others] == -1).all() and similarities[others].max() < 0.9
