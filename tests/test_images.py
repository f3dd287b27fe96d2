import io
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from catdog.data.images import ImageError, load_image


def _rgb(w=20, h=10, colour=(200, 30, 60)):
    return Image.new("RGB", (w, h), colour)


@pytest.mark.parametrize("fmt, suffix", [
    ("JPEG", ".jpg"), ("PNG", ".png"), ("WEBP", ".webp"), ("BMP", ".bmp"), ("GIF", ".gif"), ("TIFF", ".tif")])
def test_formats(tmp_path, fmt, suffix):
    path = tmp_path / f"image{suffix}"
    _rgb().save(path, format=fmt)
    pixels = load_image(path)
    assert pixels.shape == (10, 20, 3) and pixels.dtype == np.uint8
    assert abs(int(pixels[5, 10, 0]) - 200) < 40  # colour survives (GIF/JPEG are lossy)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "I;16", "1", "RGBA", "LA"])
def test_modes_become_rgb(tmp_path, mode):
    image = _rgb().convert(mode) if mode != "I;16" else Image.fromarray(np.full((10, 20), 40000, np.uint16))
    path = tmp_path / ("x.tif" if mode in ("CMYK", "I;16") else "x.png")
    image.save(path)
    pixels = load_image(path)
    assert pixels.shape == (10, 20, 3)
    if mode == "I;16":
        assert pixels.max() == round(40000 / 257)  # 16-bit range scaled, not clipped or wrapped


def test_transparent_pixels_become_white_not_black(tmp_path):
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    image.putpixel((0, 0), (10, 200, 10, 255))
    image.save(tmp_path / "a.png")
    pixels = load_image(tmp_path / "a.png")
    assert tuple(pixels[3, 3]) == (255, 255, 255) and tuple(pixels[0, 0]) == (10, 200, 10)


def test_exif_orientation_is_applied(tmp_path):
    image = _rgb(30, 10)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    image.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").shape == (30, 10, 3)


def test_resize_and_first_gif_frame(tmp_path):
    frames = [_rgb(50, 40, (255, 0, 0)), _rgb(50, 40, (0, 0, 255))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    pixels = load_image(tmp_path / "a.gif", size=16)
    assert pixels.shape == (16, 16, 3) and pixels[8, 8, 0] > 200 and pixels[8, 8, 2] < 50


def test_bytes_and_unicode_names(tmp_path):
    path = tmp_path / "chat noir é 猫.png"
    _rgb().save(path)
    assert load_image(path).shape == (10, 20, 3)
    assert load_image(path.read_bytes(), size=8).shape == (8, 8, 3)


def _truncated(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(buf, "JPEG")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


@pytest.mark.parametrize("name, payload, reason", [
    ("empty.jpg", b"", "empty file"),
    ("text.jpg", b"hello, I am not a picture\n", "not a recognised image format"),
    ("page.png", b"<html><body>404</body></html>", "not a recognised image format"),
    ("program.jpg", b"\x7fELF\x02\x01\x01" + b"\0" * 100, "not a recognised image format"),
    ("half.jpg", None, "corrupt or truncated"),
])
def test_broken_files_name_file_and_reason(tmp_path, name, payload, reason):
    path = tmp_path / name
    path.write_bytes(_truncated(tmp_path) if payload is None else payload)
    with pytest.raises(ImageError, match=reason) as info:
        load_image(path)
    assert info.value.path == str(path) and str(path) in str(info.value)


def test_missing_directory_and_unreadable(tmp_path):
    with pytest.raises(ImageError, match="No such file"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)


NOBODY = 65534


def _outcome(path) -> tuple:
    try:
        return ("read", load_image(path).shape)
    except ImageError as error:
        return ("ImageError", error.path, error.reason)
    except Exception as error:  # noqa: BLE001 - what escaped is the finding
        return (type(error).__name__, str(error))


def _as_a_user(path) -> tuple:
    """What `load_image(path)` gives a user who may not read the file. Root reads any file, and
    CI runs as root: there a forked child gives root up (setuid to nobody) before reading."""
    if os.geteuid() != 0:
        return _outcome(path)
    assert _outcome(path)[0] == "read"  # root can; this also loads Pillow's PNG plugin before the fork
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, and never return into pytest
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.write(write_end, pickle.dumps(_outcome(path)))
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.read()
    assert os.waitpid(pid, 0)[1] == 0 and answer, "the unprivileged child did not answer"
    return pickle.loads(answer)


def test_an_unreadable_file_is_named_with_its_reason():
    """Runs as root too. Catches PermissionError dropped from load_image's own clause: it would
    then be reported as "corrupt or truncated image ([Errno 13] Permission denied ...)"."""
    folder = Path(tempfile.mkdtemp(prefix="catdog-locked-"))  # pytest's tmp_path is 0700: nobody can't enter
    try:
        folder.chmod(0o755)
        path = folder / "locked.png"
        _rgb().save(path)
        path.chmod(0)
        assert _as_a_user(path) == ("ImageError", str(path), "Permission denied")
    finally:
        shutil.rmtree(folder)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    _rgb(100, 100).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(tmp_path / "big.png")


@settings(max_examples=60, deadline=None, derandomize=True)  # same cases in every CI run
@given(
    width=st.integers(1, 64), height=st.integers(1, 64),
    mode=st.sampled_from(["RGB", "L", "RGBA", "P", "LA", "1"]),
    fmt=st.sampled_from(["PNG", "JPEG", "BMP", "WEBP", "GIF", "TIFF"]),
    size=st.none() | st.integers(1, 48), seed=st.integers(0, 2**16),
)
def test_any_small_image_decodes_to_rgb_uint8(width, height, mode, fmt, size, seed):
    if fmt == "JPEG" and mode in ("RGBA", "P", "LA"):
        mode = "RGB"
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)
    buf = io.BytesIO()
    try:
        Image.fromarray(noise).convert(mode).save(buf, format=fmt)
    except (OSError, KeyError):
        assume(False)  # Pillow cannot write this mode in this format (e.g. LA as BMP)
    pixels = load_image(buf.getvalue(), size=size)
    assert pixels.dtype == np.uint8 and pixels.shape == ((size, size, 3) if size else (height, width, 3))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=2000))
def test_fuzzed_bytes_never_escape_as_other_errors(payload):
    try:
        pixels = load_image(b"\x89PNG\r\n\x1a\n" + payload, size=8)
        assert pixels.shape == (8, 8, 3)
    except ImageError:
        pass
