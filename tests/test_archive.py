import errno
import io
import re
import zipfile

import numpy as np
import pytest

from catdog.data import archive as archive_module
from catdog.data.archive import ArchiveError, extract_zip


def make_zip(path, entries):
    with zipfile.ZipFile(path, "w") as zf:
        for name, payload in entries.items():
            zf.writestr(name, payload)
    return path


def test_extracts_and_skips_macos_and_hidden_files(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {
        "train/cat.1.jpg": b"x", "train/dog.1.jpg": b"y", "PetImages/Cat/1.jpg": b"z", "a": b"one letter",
        "__MACOSX/train/._cat.1.jpg": b"junk", "__MACOSX/train/cat.2.jpg": b"junk", "train/.DS_Store": b"junk",
    })
    out = extract_zip(archive, tmp_path / "new" / "folders" / "out")  # nested folders are made, in the zip too
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "PetImages/Cat/1.jpg", "a", "train/cat.1.jpg", "train/dog.1.jpg"]


# Absolute names point into tmp_path, so that an archive.py with a guard broken (a mutant) writes there, not to /etc.
@pytest.mark.parametrize("evil, reason", [
    ("../evil.jpg", "path '../evil.jpg' climbs out of the target folder"),
    ("train/../../evil.jpg", "path 'train/../../evil.jpg' climbs out of the target folder"),
    ("..\\evil.jpg", "path '..\\\\evil.jpg' climbs out of the target folder"),  # the message shows repr()
    ("{tmp}/evil.jpg", "absolute path '{tmp}/evil.jpg'"),
    ("{tmp_windows}\\evil.jpg", "absolute path"),  # Windows' root; with \ read as /, an absolute path here too
    ("C:/evil.jpg", "absolute path 'C:/evil.jpg'"),
])
def test_refuses_zip_slip(tmp_path, evil, reason):
    names = dict(tmp=tmp_path, tmp_windows=str(tmp_path).replace("/", "\\"))
    evil, reason = evil.format(**names), reason.format(**names)
    archive = make_zip(tmp_path / "a.zip", {"train/cat.1.jpg": b"x", evil: b"pwned"})
    with pytest.raises(ArchiveError, match=re.escape(f"a.zip: refused, {reason}")):
        extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.jpg").exists()


def test_refuses_more_than_the_total_limit(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"train/cat.1.jpg": b"x" * 600_000, "train/cat.2.jpg": b"y" * 600_000})
    with pytest.raises(ArchiveError, match="more than the limit"):
        extract_zip(archive, tmp_path / "out", max_total_bytes=1_000_000)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_the_limits_are_inclusive(tmp_path):
    """"More than the limit" is refused: exactly the limit, in bytes or entries, is not."""
    archive = make_zip(tmp_path / "a.zip", {f"train/cat.{i}.jpg": b"x" * 100 for i in range(10)})
    out = extract_zip(archive, tmp_path / "out", max_total_bytes=1_000, max_entries=10)
    assert len(list(out.rglob("*.jpg"))) == 10
    with pytest.raises(ArchiveError, match="a.zip: 1000 bytes uncompressed, more than the limit of 999"):
        extract_zip(archive, tmp_path / "out", max_total_bytes=999)


def test_an_inner_zip_counts_against_what_is_already_written(tmp_path):
    """The budget is the disk used at the peak: the outer entries, the inner zip file and its contents."""
    inner = make_zip(tmp_path / "train.zip", {"train/cat.1.jpg": b"x" * 300_000})
    outer = tmp_path / "all.zip"
    with zipfile.ZipFile(outer, "w") as zf:
        zf.writestr("sampleSubmission.csv", b"0" * 500_000)
        zf.write(inner, "train.zip")
    left = 1_000_000 - 500_000 - inner.stat().st_size
    with pytest.raises(ArchiveError, match=rf"all.zip!train.zip: 300000 bytes uncompressed, more than the limit "
                                           rf"of {left}$"):
        extract_zip(outer, tmp_path / "out", max_total_bytes=1_000_000, unpack=("train.zip",))
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def deflated(path, entries):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, payload in entries.items():
            zf.writestr(name, payload)
    return path


def test_refuses_a_ratio_bomb_before_writing(tmp_path):
    archive = deflated(tmp_path / "bomb.zip", {"train/cat.1.jpg": b"x", "train/dog.1.jpg": b"\0" * 5_000_000})
    assert archive.stat().st_size < 50_000  # 5 MB of zeros in a few KB: over 200x
    with pytest.raises(ArchiveError, match=r"dog.1.jpg declares 5000000 bytes .*over 200x"):
        extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_small_files_that_compress_well_are_fine(tmp_path):
    archive = deflated(tmp_path / "a.zip", {"train/notes.txt": b"\0" * 100_000})
    assert (extract_zip(archive, tmp_path / "out") / "train" / "notes.txt").stat().st_size == 100_000


def test_large_files_that_do_not_compress_are_fine(tmp_path):
    """Over RATIO_FLOOR (1 MiB) a file is held to the ratio, and a photo's bytes barely compress."""
    photo = np.random.default_rng(0).bytes(3 * 2**20)
    archive = deflated(tmp_path / "a.zip", {"train/cat.1.jpg": photo})
    assert (extract_zip(archive, tmp_path / "out") / "train" / "cat.1.jpg").read_bytes() == photo


def _lie_about_size(archive, real: int, claimed: int):
    """Rewrites the entry's uncompressed size in both headers: its bytes now run past it."""
    raw = bytearray(archive.read_bytes())
    for at in (raw.index(b"PK\x03\x04") + 22, raw.index(b"PK\x01\x02") + 24):
        assert int.from_bytes(raw[at:at + 4], "little") == real
        raw[at:at + 4] = claimed.to_bytes(4, "little")
    archive.write_bytes(bytes(raw))


def test_refuses_bytes_past_the_declared_size(tmp_path):
    archive = deflated(tmp_path / "liar.zip", {"train/cat.1.jpg": bytes(range(256)) * 8_000})
    _lie_about_size(archive, 2_048_000, 1_000)
    with pytest.raises(ArchiveError, match="cat.1.jpg|corrupt"):
        extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


class TrustingReader(io.BytesIO):
    """What a zip library that believed no header would hand over: every byte there is."""

    reads: list[int] = []

    def read(self, size=-1):
        TrustingReader.reads.append(size)
        return super().read(size)


def test_bytes_past_the_declared_size_are_refused_while_copying(tmp_path, monkeypatch):
    """The guard of `_copy` itself: Python's zipfile stops at the declared size on its own (and
    then fails the CRC, as above), so here the entry's reader hands over all of 5,000 bytes."""
    archive = make_zip(tmp_path / "a.zip", {"train/cat.1.jpg": b"x" * 1_000})
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, member, *args, **kwargs: TrustingReader(b"x" * 5_000))
    monkeypatch.setattr(archive_module, "_CHUNK", 400)
    TrustingReader.reads = []
    with pytest.raises(ArchiveError, match=r"a.zip: refused, train/cat.1.jpg runs past its declared 1000 bytes$"):
        extract_zip(archive, tmp_path / "out")
    assert TrustingReader.reads == [400, 400, 400]  # in chunks: never a whole entry in memory
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_a_leftover_partial_folder_and_an_earlier_extraction_are_replaced(tmp_path):
    """A killed run leaves out.partial behind; a changed zip is extracted over the old tree."""
    (tmp_path / "out.partial" / "train").mkdir(parents=True)
    (tmp_path / "out.partial" / "train" / "cat.9.jpg").write_bytes(b"half")
    (tmp_path / "out" / "train").mkdir(parents=True)
    (tmp_path / "out" / "train" / "dog.7.jpg").write_bytes(b"from the old zip")
    out = extract_zip(make_zip(tmp_path / "a.zip", {"train/cat.1.jpg": b"x"}), tmp_path / "out")
    assert [str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()] == ["train/cat.1.jpg"]
    assert not (tmp_path / "out.partial").exists()


def test_kaggle_download_all_is_unpacked_one_level_deep(tmp_path):
    train = make_zip(tmp_path / "train.zip", {"train/cat.1.jpg": b"x", "train/dog.1.jpg": b"y"})
    test1 = make_zip(tmp_path / "test1.zip", {"test1/1.jpg": b"z"})
    outer = tmp_path / "dogs-vs-cats.zip"
    with zipfile.ZipFile(outer, "w") as zf:
        zf.write(train, "train.zip")
        zf.write(test1, "test1.zip")
        zf.writestr("sampleSubmission.csv", "id,label\n1,0\n")
    out = extract_zip(outer, tmp_path / "out", unpack=("train.zip",), skip=("test1.zip",))
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "sampleSubmission.csv", "train/cat.1.jpg", "train/dog.1.jpg"]


def test_an_inner_zip_is_held_to_the_same_guards(tmp_path):
    train = deflated(tmp_path / "train.zip", {"train/cat.1.jpg": b"\0" * 5_000_000})
    outer = tmp_path / "all.zip"
    with zipfile.ZipFile(outer, "w") as zf:
        zf.write(train, "train.zip")
    with pytest.raises(ArchiveError, match=r"all.zip!train.zip: refused, train/cat.1.jpg declares"):
        extract_zip(outer, tmp_path / "out", unpack=("train.zip",))
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_refuses_too_many_entries(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {f"train/cat.{i}.jpg": b"x" for i in range(11)})
    with pytest.raises(ArchiveError, match="11 entries"):
        extract_zip(archive, tmp_path / "out", max_entries=10)


def test_not_a_zip(tmp_path):
    (tmp_path / "a.zip").write_text("hello")
    with pytest.raises(ArchiveError, match="a.zip: not a readable zip"):
        extract_zip(tmp_path / "a.zip", tmp_path / "out")
    with pytest.raises(ArchiveError, match=f"^{tmp_path}: is a folder, not a zip file$"):
        extract_zip(tmp_path, tmp_path / "out")
    outer = make_zip(tmp_path / "all.zip", {"train.zip": b"hello"})
    with pytest.raises(ArchiveError, match=r"all.zip: train.zip is not a readable zip file \(File is not a zip file\)"):
        extract_zip(outer, tmp_path / "out", unpack=("train.zip",))
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_corrupt_member_leaves_nothing(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"train/cat.1.jpg": b"A" * 1000})
    raw = bytearray(archive.read_bytes())
    at = raw.index(b"A" * 1000)
    raw[at:at + 10] = b"B" * 10  # payload no longer matches its CRC
    archive.write_bytes(bytes(raw))
    with pytest.raises(ArchiveError, match="corrupt"):
        extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_a_destination_that_cannot_be_made_or_written_is_named_not_called_corrupt(tmp_path, monkeypatch):
    archive = make_zip(tmp_path / "a.zip", {"train/cat.1.jpg": b"x" * 1_000})
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(ArchiveError, match=rf"^{tmp_path}/a-file/out: cannot make the folder to extract a.zip into"):
        extract_zip(archive, tmp_path / "a-file" / "out")

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(archive_module, "_copy", full_disk)
    with pytest.raises(ArchiveError, match=rf"^{tmp_path}/out: cannot write the extracted files \(No space left on "
                                           r"device\); nothing was kept$"):
        extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
