"""Inputs named by URI (`s3://bucket/a.jpg`, `gs://...`, `file:///...`), read and listed through fsspec.

    >>> is_uri("s3://bucket/photos/")        # True; "photos/" and "/abs/a.jpg" are local paths
    >>> list_files("s3://bucket/photos/")    # every file under it, sorted; a glob's matches; None for a file
    >>> read_bytes("s3://bucket/a.jpg")      # the file's bytes, or FileNotFoundError / IsADirectoryError

fsspec comes with `catdog[ray]` (or `pip install fsspec`); a protocol's own package (s3fs,
gcsfs, adlfs) is the user's to install, with its credentials. Nothing here is imported by a
plain `catdog predict` of local files.
"""

from __future__ import annotations

import errno
import os
import re

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(text: str | os.PathLike) -> bool:
    """`scheme://...` that is not a local path (a folder literally named "x:" is left alone)."""
    return isinstance(text, str) and bool(_SCHEME.match(text)) and not os.path.exists(text)


def _filesystem(uri: str):
    try:
        from fsspec.core import url_to_fs
    except ImportError:
        raise ImportError("reading a URI needs fsspec: pip install 'catdog[ray]' (and s3fs, gcsfs, ... "
                          "for its protocol)") from None
    try:
        return url_to_fs(uri)
    except (ImportError, ValueError) as error:  # "Install s3fs to access S3", "Protocol not known"
        raise ImportError(" ".join(str(error).split())) from None


def read_bytes(uri: str) -> bytes:
    """The bytes of the file at `uri`; OSError with the usual strerror for a missing file or a folder."""
    fs, path = _filesystem(uri)
    try:
        if fs.isdir(path):
            raise IsADirectoryError(errno.EISDIR, "is a directory, not an image file", uri)
        return fs.cat_file(path)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), uri) from None


def list_files(uri: str) -> list[str] | None:
    """Every file under a folder URI (recursively) or matching a glob, as URIs, sorted; None otherwise.

    None too where it cannot be listed (no fsspec, no such bucket): the input is then reported
    as its own error, as a local path would be.
    """
    try:
        fs, path = _filesystem(uri)
        if fs.isdir(path):
            found = fs.find(path)
        elif any(c in path for c in "*?["):
            found = [p for p in fs.glob(path) if fs.isfile(p)]
        else:
            return None
    except (ImportError, OSError):
        return None
    return sorted(fs.unstrip_protocol(p) for p in found)
