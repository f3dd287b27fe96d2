"""Fetches Microsoft's public Cats-and-Dogs zip (the one the Keras example uses), safely.

The file is streamed to `<name>.part` with a progress bar, checked (size against the server's
Content-Length, SHA-256 when one is given, and that it opens as a zip), and only then renamed
into place: an interrupted or failed download leaves no half-written file behind, nor a folder
it made for it.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from catdog.console import show_progress
from catdog.errors import DataError
from catdog.home import home

MICROSOFT_URL = (
    "https://download.microsoft.com/download/3/E/1/"
    "3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip"
)
_CHUNK = 1 << 20


class DownloadError(DataError):
    """A download that failed or did not check out; nothing is left at the destination."""


def download(url: str | None = None, dest_dir: str | os.PathLike | None = None,
             sha256: str | None = None, timeout: float = 60.0, progress: bool = True) -> Path:
    """Downloads `url` (default: Microsoft's zip) into `dest_dir` (default `<catdog home>/downloads`); returns the path.

    An existing complete file is kept (and checked against `sha256` when given).
    """
    url = url or MICROSOFT_URL
    dest_dir = Path(dest_dir) if dest_dir else home() / "downloads"
    dest = dest_dir / url.rstrip("/").rsplit("/", 1)[-1]
    if dest.exists() and (sha256 is None or _sha256(dest) == sha256.lower()):
        return dest
    made = [d for d in (dest_dir, *dest_dir.parents) if not d.exists()]  # removed again if nothing arrives
    dest_dir.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            expected = int(response.headers.get("Content-Length") or 0) or None
            digest, size = hashlib.sha256(), 0
            with open(part, "wb") as out, tqdm(total=expected, unit="B", unit_scale=True, desc=dest.name,
                                               disable=not (progress and show_progress())) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
        if expected is not None and size != expected:
            raise DownloadError(f"{url}: got {size} bytes, the server announced {expected}")
        if sha256 and digest.hexdigest() != sha256.lower():
            raise DownloadError(f"{url}: SHA-256 {digest.hexdigest()} does not match {sha256}")
        if dest.suffix == ".zip" and not zipfile.is_zipfile(part):
            raise DownloadError(f"{url}: the downloaded file is not a zip archive")
    except OSError as error:  # URLError, HTTPError, timeouts and disk errors are all OSErrors
        _clean_up(part, made)
        raise DownloadError(f"{url}: download failed ({error})") from None
    except BaseException:
        _clean_up(part, made)
        raise
    part.rename(dest)
    return dest


def _clean_up(part: Path, made: list[Path]) -> None:
    """Removes the partial file and the folders this download made (deepest first), if empty."""
    part.unlink(missing_ok=True)
    for folder in made:
        try:
            folder.rmdir()
        except OSError:  # not empty (something else arrived meanwhile): left as it is
            break


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
