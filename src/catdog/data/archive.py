"""Safe zip extraction: no entry may escape the target folder, and nothing can fill the disk.

Refused before anything is written: absolute or `..` paths (zip-slip), more than `max_entries`
entries, more than `max_total_bytes` declared, or an entry declaring more than `MAX_RATIO` times
its compressed size (a zip bomb). Enforced again while copying, since headers can lie: an entry
whose bytes run past its declared size, or the total past its limit, is refused mid-copy.
"""

from __future__ import annotations

import errno
import os
import shutil
import zipfile
from pathlib import Path, PurePosixPath

from catdog.errors import DataError

MAX_TOTAL_BYTES = 16 * 2**30  # far above any cats-and-dogs archive, far below a zip bomb
MAX_ENTRIES = 1_000_000
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}  # a full or read-only disk
MAX_RATIO = 200  # JPEGs barely compress; zeros compress about 1000x
RATIO_FLOOR = 1 << 20  # entries below 1 MiB are not held to the ratio: tiny files compress well
_CHUNK = 1 << 20


class ArchiveError(DataError):
    """An archive that is refused as a whole; `str()` names the archive, the entry and the reason."""


def _member_path(name: str) -> PurePosixPath | None:
    """The relative path to extract `name` to, None for entries we skip, or an error."""
    path = PurePosixPath(name.replace("\\", "/"))
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise ValueError(f"absolute path {name!r}")
    if ".." in path.parts:
        raise ValueError(f"path {name!r} climbs out of the target folder")
    if not path.parts or path.parts[0] == "__MACOSX" or any(p.startswith(".") for p in path.parts):
        return None  # macOS resource forks and hidden files are not data
    return path


def _too_inflated(size: int, compressed: int) -> bool:
    return size > RATIO_FLOOR and size > MAX_RATIO * max(compressed, 1)


def _plan(zf: zipfile.ZipFile, label: str, max_entries: int, budget: int, skip) -> list:
    """(member, relative target) for every entry to write, after checking all of them."""
    members = [m for m in zf.infolist() if not m.is_dir()]
    if len(members) > max_entries:
        raise ArchiveError(f"{label}: {len(members)} entries, more than the limit of {max_entries}")
    plan, declared = [], 0
    for member in members:
        try:
            target = _member_path(member.filename)
        except ValueError as error:
            raise ArchiveError(f"{label}: refused, {error}") from None
        if target is None or (len(target.parts) == 1 and target.name in skip):
            continue
        if _too_inflated(member.file_size, member.compress_size):
            raise ArchiveError(f"{label}: refused, {member.filename} declares {member.file_size} bytes from "
                               f"{member.compress_size} compressed (over {MAX_RATIO}x: a zip bomb?)")
        plan.append((member, target))
        declared += member.file_size
    if declared > budget:
        raise ArchiveError(f"{label}: {declared} bytes uncompressed, more than the limit of {budget}")
    return plan


def _copy(zf: zipfile.ZipFile, member: zipfile.ZipInfo, out_path: Path, label: str, budget: int) -> int:
    """Writes one entry, refusing bytes past its declared size, the ratio or the budget; returns its size."""
    written = 0
    with zf.open(member) as src, open(out_path, "wb") as out:
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            if written > member.file_size:
                raise ArchiveError(f"{label}: refused, {member.filename} runs past its declared "
                                   f"{member.file_size} bytes")
            if written > budget or _too_inflated(written, member.compress_size):
                raise ArchiveError(f"{label}: refused, {member.filename} expands past its limit (a zip bomb?)")
            out.write(chunk)
    return written


def _extract_into(zf, label: str, into: Path, budget: int, max_entries: int, unpack=(), skip=()) -> int:
    """Extracts `zf` under `into`; entries named in `unpack` (top level) are zips unpacked in place."""
    written = 0
    for member, target in _plan(zf, label, max_entries, budget, skip):
        out_path = into.joinpath(*target.parts)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        written += _copy(zf, member, out_path, label, budget - written)
        if len(target.parts) == 1 and target.name in unpack:
            try:
                inner = zipfile.ZipFile(out_path)
            except zipfile.BadZipFile as error:
                raise ArchiveError(f"{label}: {member.filename} is not a readable zip file ({error})") from None
            with inner:  # one level deep: an inner zip's own zips stay files
                written += _extract_into(inner, f"{label}!{member.filename}", out_path.parent,
                                         budget - written, max_entries)
            out_path.unlink()
    return written


def extract_zip(
    archive: str | os.PathLike,
    dest: str | os.PathLike,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    max_entries: int = MAX_ENTRIES,
    unpack: tuple[str, ...] = (),
    skip: tuple[str, ...] = (),
) -> Path:
    """Extracts `archive` into `dest`, all or nothing, and returns `dest`.

    `unpack` names top-level entries that are zips themselves, unpacked in place under the same
    limits (Kaggle's "Download All" file holds `train.zip`); `skip` names top-level entries left
    out. Files go to a sibling `.partial` folder that is renamed into place at the end, so a
    refused, corrupt or interrupted archive leaves no half-extracted tree.
    """
    archive, dest = Path(archive), Path(dest)
    if archive.is_dir():
        raise ArchiveError(f"{archive}: is a folder, not a zip file")
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as error:
        raise ArchiveError(f"{archive}: not a readable zip file ({error})") from None
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with zf:
        try:
            partial.mkdir(parents=True)
        except OSError as error:
            raise ArchiveError(f"{dest}: cannot make the folder to extract {archive.name} into "
                               f"({error.strerror or error})") from None
        try:
            _extract_into(zf, str(archive), partial, max_total_bytes, max_entries, unpack, skip)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as error:
            shutil.rmtree(partial, ignore_errors=True)
            if isinstance(error, OSError) and error.errno in WRITE_ERRORS:  # the destination's fault, not the zip's
                raise ArchiveError(f"{dest}: cannot write the extracted files ({error.strerror}); "
                                   f"nothing was kept") from None
            raise ArchiveError(f"{archive}: corrupt archive ({error})") from None
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
    return dest
