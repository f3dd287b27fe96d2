import zipfile

import pytest

from catdog.archive import ArchiveError, extract_zip


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


def test_refuses_zip_bomb_by_declared_size(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("train/cat.1.jpg", b"\0" * 5_000_000)  # compresses to a few KB
    assert archive.stat().st_size < 50_000
    with pytest.raises(ArchiveError, match="more than the limit"):
        extract_zip(archive, tmp_path / "out", max_total_bytes=1_000_000)
    assert not (tmp_path / "out").exists()


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
