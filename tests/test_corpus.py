"""A corpus of odd and broken inputs, run through prepare and predict: nothing crashes, and
every file that cannot be used is reported with its name and reason."""

import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_image
from PIL import Image

from catdog import config
from catdog.data import prepare as data
from catdog.data.images import IMAGE_SUFFIXES
from catdog.inference.predictor import Predictor
from catdog.training.train import train

_seeds = iter(range(1000))


def _photo(size=(48, 40)):
    """A different picture at every call, so that no two corpus files are exact duplicates."""
    return synthetic_image(1, np.random.default_rng(next(_seeds)), size=max(size)).resize(size)


def _bytes(image, fmt, **kwargs):
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _exif_rotated():
    image = _photo()
    exif = image.getexif()
    exif[0x0112] = 8
    return _bytes(image, "JPEG", exif=exif)


def _png_declaring(width, height):
    """A PNG header claiming a huge canvas: a decompression bomb in 60 bytes."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


GOOD = {
    "rgb.jpg": lambda: _bytes(_photo(), "JPEG"),
    "rgb.jpeg": lambda: _bytes(_photo(), "JPEG", quality=40),
    "progressive.jpg": lambda: _bytes(_photo(), "JPEG", progressive=True),
    "cmyk.jpg": lambda: _bytes(_photo().convert("CMYK"), "JPEG"),
    "exif rotated.jpg": _exif_rotated,
    "rgb.png": lambda: _bytes(_photo(), "PNG"),
    "grey.png": lambda: _bytes(_photo().convert("L"), "PNG"),
    "palette.png": lambda: _bytes(_photo().convert("P"), "PNG"),
    "palette-transparent.png": lambda: _bytes(_photo().convert("P"), "PNG", transparency=0),
    "rgba.png": lambda: _bytes(_photo().convert("RGBA"), "PNG"),
    "grey-alpha.png": lambda: _bytes(_photo().convert("LA"), "PNG"),
    "bilevel.png": lambda: _bytes(_photo().convert("1"), "PNG"),
    "16-bit.png": lambda: _bytes(Image.fromarray(np.full((30, 20), 50000, np.uint16)), "PNG"),
    "one-pixel.png": lambda: _bytes(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"),
    "strip 1000x3.png": lambda: _bytes(Image.new("RGB", (1000, 3), (200, 0, 0)), "PNG"),
    "rgb.webp": lambda: _bytes(_photo(), "WEBP"),
    "rgba.webp": lambda: _bytes(_photo().convert("RGBA"), "WEBP"),
    "rgb.bmp": lambda: _bytes(_photo(), "BMP"),
    "animated.gif": lambda: _bytes(_photo().convert("P"), "GIF", save_all=True, append_images=[_photo((48, 40)).convert("P")]),
    "rgb.tif": lambda: _bytes(_photo(), "TIFF"),
    "rgb.tiff": lambda: _bytes(_photo(), "TIFF", compression="tiff_lzw"),
    "float.tif": lambda: _bytes(Image.fromarray(np.random.default_rng(1).random((20, 20), np.float32)), "TIFF"),
    "png named as.jpg": lambda: _bytes(_photo(), "PNG"),
    "UPPER.JPG": lambda: _bytes(_photo(), "JPEG"),
    "chat-noir-é-猫.jpg": lambda: _bytes(_photo(), "JPEG"),
}

BAD = {  # name -> (content, reason the report counts it under)
    "empty.jpg": (lambda: b"", "empty file"),
    "truncated.jpg": (lambda: _bytes(_photo((200, 200)), "JPEG")[:700], "corrupt or truncated image"),
    "truncated.png": (lambda: _bytes(_photo((200, 200)), "PNG")[:300], "corrupt or truncated image"),
    "only-header.jpg": (lambda: b"\xff\xd8\xff\xe0" + b"\0" * 50, "not a recognised image format"),
    "text.jpg": (lambda: b"just some text\n" * 10, "not a recognised image format"),
    "page.png": (lambda: b"<!doctype html><html><body>Not found</body></html>", "not a recognised image format"),
    "program.jpg": (lambda: b"\x7fELF\x02\x01\x01\0" + bytes(range(256)), "not a recognised image format"),
    "archive.jpg": (lambda: b"PK\x03\x04" + b"\0" * 100, "not a recognised image format"),
    "noise.webp": (lambda: np.random.default_rng(2).bytes(3000), "not a recognised image format"),
    "bomb.png": (lambda: _png_declaring(30000, 30000), "too large, possible decompression bomb"),
}


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    (root / "cat").mkdir(parents=True)
    for name, make in GOOD.items():
        (root / "cat" / name).write_bytes(make())
    for name, (make, _) in BAD.items():
        (root / "cat" / name).write_bytes(make())
    (root / "cat" / "folder.jpg").mkdir()  # a directory where a file was expected
    os.symlink(root / "cat" / "gone.jpg", root / "cat" / "dangling.jpg")
    for i in range(10):  # a few real-looking dogs, so the data set has both classes
        synthetic_image(1, np.random.default_rng(10 + i)).save(root / f"dog.{i}.jpg")
    return root


def test_the_corpus_has_a_picture_of_every_kind_of_name_the_loader_accepts():
    """A suffix added to IMAGE_SUFFIXES comes with a picture here."""
    assert {Path(name).suffix.lower() for name in GOOD} == IMAGE_SUFFIXES


def test_prepare_keeps_the_good_and_counts_the_bad_by_reason(corpus):
    report = json.loads((data.prepare(corpus) / "report.json").read_text())
    skipped = {os.path.basename(f["path"]): f["reason"] for f in report["skipped_files"]}
    for name, (_, reason) in BAD.items():
        assert skipped[name].startswith(reason), (name, skipped[name])
    assert "dangling.jpg" in skipped
    assert report["images"] == len(GOOD) + 10
    expected = {reason for _, reason in BAD.values()}
    assert expected <= set(report["skipped_by_reason"])


def test_predict_answers_every_good_file_and_names_every_bad_one(corpus, tmp_path):
    run_dir = train(config.resolve("tiny", [f"data={corpus}", f"runs_dir={tmp_path / 'runs'}", "name=c"]))
    paths = sorted(str(p) for p in (corpus / "cat").iterdir())
    records = {os.path.basename(r["path"]): r for r in Predictor(run_dir, batch_size=4).predict_paths(paths)}
    assert len(records) == len(GOOD) + len(BAD) + 2
    for name in GOOD:
        assert records[name]["label"] in ("cat", "dog"), records[name]
    for name, (_, reason) in BAD.items():
        assert records[name]["error"] == f"{corpus / 'cat' / name}: " + records[name]["error"].split(": ", 1)[1]
        assert reason in records[name]["error"]
    assert "directory" in records["folder.jpg"]["error"] and "No such file" in records["dangling.jpg"]["error"]
