"""The one image loader: any file Pillow can read -> RGB uint8 pixels, or an `ImageError`.

Data preparation, the training pipeline, prediction and the web server all decode through
`load_image`, so a picture is seen the same way everywhere.

    >>> pixels = load_image("cat.1.jpg", size=128)   # (128, 128, 3) uint8
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from catdog.data import remote

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

# Transparent pixels become this colour, not black: a cut-out pet on black is a different picture.
BACKGROUND = (255, 255, 255)


class ImageError(Exception):
    """A file that cannot be used as an image; `str()` names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def is_image_name(path: str | os.PathLike) -> bool:
    name = Path(path).name
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale (Pillow widens some to 32-bit "I"): map 0..65535 onto 0..255.
        array = np.asarray(image, dtype=np.float64)
        if array.size and array.max() > 255:
            array = array / 257.0
        image = Image.fromarray(np.rint(array).clip(0, 255).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        image = Image.alpha_composite(canvas, rgba)
    return image.convert("RGB")


def _open(source: str | os.PathLike | bytes) -> Image.Image:
    if isinstance(source, str) and remote.is_uri(source):  # s3://, gs://, file://: read through fsspec
        uri, source = source, remote.read_bytes(source)
        if not source:
            raise ImageError(uri, "empty file (0 bytes)")
    if isinstance(source, bytes):
        return Image.open(io.BytesIO(source))
    if os.path.isdir(source):
        raise ImageError(source, "is a directory, not an image file")
    if os.path.getsize(source) == 0:
        raise ImageError(source, "empty file (0 bytes)")
    return Image.open(source)


def load_image(source: str | os.PathLike | bytes, size: int | None = None, name: str | None = None) -> np.ndarray:
    """Decodes `source` (a path, a URI fsspec reads, or the file's bytes) to an (H, W, 3) uint8 array.

    EXIF orientation is applied, the first frame of an animation is used, alpha is composited
    on white, and any mode (grey, palette, CMYK, 16-bit) becomes RGB. With `size`, the image is
    resized (antialiased, aspect ratio not kept) to `size` x `size`. Every failure is an
    `ImageError` naming the file (or `name`) and the reason.
    """
    label = name or (source if not isinstance(source, bytes) else "<bytes>")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _open(source) as image:
                if size and image.format == "JPEG":
                    image.draft("RGB", (size, size))  # decode at reduced scale: much faster
                image.seek(0)
                image = ImageOps.exif_transpose(image)
                image = _to_rgb(image)
                if size:
                    image = image.resize((size, size), Image.Resampling.BILINEAR)
                return np.asarray(image, dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(label, f"too large, possible decompression bomb ({error})") from None
    except UnidentifiedImageError:
        raise ImageError(label, "not a recognised image format") from None
    except (FileNotFoundError, PermissionError, IsADirectoryError) as error:
        raise ImageError(label, error.strerror or str(error)) from None
    except ImportError as error:  # a URI, without fsspec or its protocol's package
        raise ImageError(label, str(error)) from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, KeyError) as error:
        # Pillow signals truncated or corrupt data with any of these.
        reason = str(error) or type(error).__name__
        raise ImageError(label, f"corrupt or truncated image ({reason})") from None


def thumbnail(pixels: np.ndarray, side: int) -> np.ndarray:
    """`pixels` shrunk to fit within `side` x `side`, keeping the aspect ratio (never enlarged)."""
    image = Image.fromarray(np.asarray(pixels))
    image.thumbnail((side, side))
    return np.asarray(image)
