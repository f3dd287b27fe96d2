"""Safe zip extraction: no entry may escape the target folder, and size and count are bounded."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path, PurePosixPath

MAX_TOTAL_BYTES = 16 * 2**30  # far above any cats-and-dogs archive, far below a zip bomb
MAX_ENTRIES = 1_000_000
_CHUNK = 1 << 20


class ArchiveError(Exception):
    """An archive that is refused as a whole; `str()` names the archive and the reason."""


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


def extract_zip(
    archive: str | os.PathLike,
    dest: str | os.PathLike,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    max_entries: int = MAX_ENTRIES,
) -> Path:
    """Extracts `archive` into `dest`, all or nothing, and returns `dest`.

    The whole archive is checked before anything is written: an entry with an absolute path
    or `..` (zip-slip), more than `max_entries` entries, or more than `max_total_bytes`
    uncompressed bytes (zip bomb) refuses it with an `ArchiveError`. Sizes are enforced again
    while copying, since an archive's headers can lie. Files go to a sibling `.partial` folder
    that is renamed into place at the end, so an interrupted run leaves no half-extracted tree.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as error:
        raise ArchiveError(f"{archive}: not a readable zip file ({error})") from None
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if len(members) > max_entries:
            raise ArchiveError(f"{archive}: {len(members)} entries, more than the limit of {max_entries}")
        plan, declared = [], 0
        for member in members:
            try:
                target = _member_path(member.filename)
            except ValueError as error:
                raise ArchiveError(f"{archive}: refused, {error}") from None
            if target is not None:
                plan.append((member, target))
                declared += member.file_size
        if declared > max_total_bytes:
            raise ArchiveError(f"{archive}: {declared} bytes uncompressed, more than the limit of {max_total_bytes}")

        partial = dest.with_name(dest.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        written = 0
        try:
            for member, target in plan:
                out_path = partial.joinpath(*target.parts)
                out_path.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(out_path, "wb") as out:
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        if written > max_total_bytes:
                            raise ArchiveError(f"{archive}: expands past {max_total_bytes} bytes (zip bomb?)")
                        out.write(chunk)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as error:
            shutil.rmtree(partial, ignore_errors=True)
            raise ArchiveError(f"{archive}: corrupt archive ({error})") from None
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    shutil.rmtree(dest, ignore_errors=True)
    partial.mkdir(parents=True, exist_ok=True)
    partial.rename(dest)
    return dest
