"""Reading images out of a request, with the limits enforced while the body streams in.

A request carries images either as multipart/form-data (field `file`, repeatable) or as a raw
body (any other content type; its name from the `X-Filename` header, in UTF-8 or as RFC 8187's
`UTF-8''%-encoded` ext-value). Everything stays in memory and is bounded: a declared
Content-Length over the limit is refused before any of the body is read, a part that grows past
`max_bytes` or a file past `max_files` is refused as soon as it arrives (413), not after the
whole body has been read. The client's file name is only ever echoed back as a label, never
used as a path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from fastapi import HTTPException, Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

FIELD = "file"
MULTIPART_OVERHEAD = 16 * 1024  # headers and boundaries a well-formed part adds to its file


@dataclass(frozen=True)
class Upload:
    name: str  # the client's file name, cleaned: a label, never a path
    data: bytes


def client_name(raw: str | bytes | None, default: str = "upload") -> str:
    """The last component of a client-supplied file name, printable and at most 200 characters.

    Bytes are read as UTF-8, else as latin-1. Control characters (C0, DEL and C1) are dropped.
    """
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raw = raw.decode("latin-1")  # HTTP's historical charset: every byte is a character
    name = re.split(r"[/\\]", raw or "")[-1]
    name = re.sub(r"[\x00-\x1f\x7f-\x9f]", "", name).strip()[:200]
    return name or default


# RFC 8187's ext-value, as in `filename*=UTF-8''chat-%F0%9F%90%B1.jpg`: charset, optional language, %-encoded
EXT_VALUE = re.compile(r"(?i)(utf-8|iso-8859-1)'[^']*'(.*)")


def _header_name(value: str | None) -> str | bytes | None:
    """A file name from a header (X-Filename): an RFC 8187 ext-value decoded, else the header's raw bytes.

    ASGI servers hand header values over as latin-1 text; encoding it back gives the bytes the
    client sent (UTF-8 from curl or a browser), which `client_name` decodes.
    """
    if value is None:
        return None
    if ext := EXT_VALUE.fullmatch(value):
        return unquote(ext[2], encoding=ext[1], errors="replace")
    return value.encode("latin-1")


def _too_large(what: str, limit: int) -> HTTPException:
    return HTTPException(413, f"{what} is larger than the limit of {limit:,} bytes")


async def read_uploads(request: Request, max_bytes: int, max_files: int) -> list[Upload]:
    """The images in `request`, or an HTTPException (413 too big / too many, 422 none or malformed)."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    multipart = content_type == b"multipart/form-data"
    body_limit = max_files * (max_bytes + MULTIPART_OVERHEAD) if multipart else max_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > body_limit:
        raise _too_large("the request body", body_limit)  # before reading a byte of it
    if not multipart:
        return [await _read_raw(request, max_bytes)]
    if b"boundary" not in options:
        raise HTTPException(422, "multipart/form-data without a boundary")
    parts = _Parts(max_bytes, max_files)
    try:
        parser = MultipartParser(options[b"boundary"], parts.callbacks())
    except FormParserError as error:  # a boundary python-multipart refuses (over 256 characters)
        raise HTTPException(422, f"malformed multipart Content-Type ({error})") from None
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > body_limit:
            raise _too_large("the request body", body_limit)
        try:
            parser.write(chunk)
        except HTTPException:
            raise
        except Exception as error:  # python-multipart's parse errors: a malformed body
            raise HTTPException(422, f"malformed multipart body ({error})") from None
    if not parts.uploads:
        raise HTTPException(422, f"no image in the request: send multipart field '{FIELD}' or a raw image body")
    return parts.uploads


async def _read_raw(request: Request, max_bytes: int) -> Upload:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large("the image", max_bytes)
        chunks.append(chunk)
    if not size:
        raise HTTPException(422, f"empty request body: send multipart field '{FIELD}' or a raw image body")
    return Upload(client_name(_header_name(request.headers.get("x-filename"))), b"".join(chunks))


class _Parts:
    """python-multipart callbacks collecting the `file` parts, with the per-file limits."""

    def __init__(self, max_bytes: int, max_files: int):
        self.max_bytes, self.max_files = max_bytes, max_files
        self.uploads: list[Upload] = []
        self._header, self._value, self._disposition = b"", b"", b""
        self._data: list[bytes] | None = None
        self._size = 0

    def callbacks(self) -> dict:
        return dict(on_part_begin=self._begin, on_header_field=self._field, on_header_value=self._value_part,
                    on_header_end=self._header_end, on_headers_finished=self._headers_done,
                    on_part_data=self._part_data, on_part_end=self._end)

    def _begin(self):
        self._disposition, self._data, self._size = b"", None, 0

    def _field(self, data, start, end):
        self._header += data[start:end]

    def _value_part(self, data, start, end):
        self._value += data[start:end]

    def _header_end(self):
        if self._header.strip().lower() == b"content-disposition":
            self._disposition = self._value
        self._header, self._value = b"", b""

    def _headers_done(self):
        _, options = parse_options_header(self._disposition)
        if options.get(b"name") != FIELD.encode():
            return  # other fields are ignored (and bounded by the body limit)
        if len(self.uploads) >= self.max_files:
            raise HTTPException(413, f"too many files: at most {self.max_files} per request")
        self._data = []
        self._name = client_name(options.get(b"filename"), default=f"upload-{len(self.uploads) + 1}")

    def _part_data(self, data, start, end):
        if self._data is None:
            return
        self._size += end - start
        if self._size > self.max_bytes:
            raise _too_large(f"file {self._name!r}", self.max_bytes)
        self._data.append(bytes(data[start:end]))

    def _end(self):
        if self._data is not None:
            self.uploads.append(Upload(self._name, b"".join(self._data)))
            self._data = None
