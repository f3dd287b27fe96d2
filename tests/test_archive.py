import zipfile

import pytest

from catdog.data.archive import ArchiveError, extract_zip


def make_zip(path, entries):
    with zipfile.ZipFile(path, "w") as zf:
        for name, payload in entries.items():
            zf.writestr(name, payload)
    return path


def test_extracts_and_skips_macos_and_hidden_files(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {
        "train/cat.1.jpg": b"x", "train/dog.1.jpg": b"y",
        "__MACOSX/train/._cat.1.jpg": b"junk", "train/.DS_Store": b"junk",
    })
    out = extract_zip(archive, tmp_path / "out")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "train/cat.1.jpg", "train/dog.1.jpg"]


@pytest.mark.parametrize("evil", ["../evil.jpg", "train/../../evil.jpg", "/etc/evil.jpg", "C:/evil.jpg", "..\\evil.jpg"])
def test_refuses_zip_slip(tmp_path, evil):
    archive = make_zip(tmp_path / "a.zip", {"train/cat.1.jpg": b"x", evil: b"pwned"})
    with pytest.raises(ArchiveError, match="refused"):
        extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.jpg").exists()


def test_refuses_more_than_the_total_limit(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"train/cat.1.jpg": b"x" * 600_000, "train/cat.2.jpg": b"y" * 600_000})
    with pytest.raises(ArchiveError, match="more than the limit"):
        extract_zip(archive, tmp_path / "out", max_total_bytes=1_000_000)
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
    with pytest.raises(ArchiveError, match="not a readable zip"):
        extract_zip(tmp_path / "a.zip", tmp_path / "out")


def test_corrupt_member_leaves_nothing(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"train/cat.1.jpg": b"A" * 1000})
    raw = bytearray(archive.read_bytes())
    at = raw.index(b"A" * 1000)
    raw[at:at + 10] = b"B" * 10  # payload no longer matches its CRC
    archive.write_bytes(bytes(raw))
    with pytest.raises(ArchiveError, match="corrupt"):
        extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
