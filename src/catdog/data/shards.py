"""TFRecord shards of a prepared split: pictures read as a few large files, from any filesystem
TensorFlow reads (a local disk, a shared mount, gs://, s3:// with its plug-in).

    catdog prepare --data train.zip --shards /shared/shards --image-size 224
    catdog train --preset lite0 --data train.zip shards=/shared/shards

`write` puts every picture of the manifest, in its order, into shards of one split each
(`train-00003-of-00018.tfrecord`), resized by the project's loader to `image_size` and
re-encoded as JPEG (about 20 KB at 224 px), with its label and manifest path. `shards.json`,
written last, lists each split's files with their counts and first and last paths, beside the
data's content hash and split settings: `check` refuses shards made from other data, another
split or another size before a run starts, and `ShardSet.locate` finds the files holding a list
of examples (a whole split, or the files a worker of many reads).

Reading decodes in-graph (`tf.io.decode_jpeg`) and shuffles in bounded memory: the files in a
seeded order, records interleaved from several, then a seeded buffer of encoded pictures.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catdog.data.images import load_image
from catdog.data.prepare import SPLITS, Example, load_split, read_report
from catdog.errors import DataError

INDEX = "shards.json"
FORMAT = "catdog-shards/1"
QUALITY = 95  # JPEG quality, colour at full resolution (4:4:4): ~21 KB and 0.9/255 mean error at 224 px
INTERLEAVE = 8  # shards read at once when shuffling
SHUFFLE_BUFFER = 4096  # encoded pictures (~80 MB at 224 px) mixed after the interleave


def _join(folder: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{name}"


def _rows_sha256(rows: Sequence[tuple[str, str]]) -> str:
    """The hash of a split's (path, label) rows, in order: the shards' and the manifest's must agree."""
    return hashlib.sha256("".join(f"{path}\t{label}\n" for path, label in rows).encode()).hexdigest()


def _encode(path: Path, image_size: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(load_image(path, size=image_size)).save(out, "JPEG", quality=QUALITY, subsampling=0)
    return out.getvalue()


def _record(jpeg: bytes, label: int, path: str) -> bytes:
    import tensorflow as tf

    feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
               "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
               "path": tf.train.Feature(bytes_list=tf.train.BytesList(value=[path.encode()]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write(work: str | os.PathLike, out: str, image_size: int, per_shard: int = 1024, progress=None) -> dict:
    """Writes the split of `prepare`'s work folder as shards under `out`; returns the index.

    `progress(n)` is called as pictures are written. `shards.json` is removed first and written
    last, so a folder without it holds no usable shards, and it lists this write's files alone.
    """
    import tensorflow as tf

    from catdog.config import ConfigError, parse_value

    parse_value("image_size", image_size)  # the range a run's image_size may take
    if per_shard < 1:
        raise ConfigError(f"--shard-size: expected 1 or more pictures a shard, got {per_shard}")
    report = read_report(work)
    tf.io.gfile.makedirs(out)
    if tf.io.gfile.exists(_join(out, INDEX)):
        tf.io.gfile.remove(_join(out, INDEX))
    index = {"format": FORMAT, "image_size": image_size, "quality": QUALITY, "content_sha256": report["content_sha256"],
             "settings": report["settings"], "splits": {}}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for split in SPLITS:
            examples, rows = _split(work, report, split)
            starts = range(0, len(examples), per_shard)
            files = []
            for number, at in enumerate(starts):
                name, part = f"{split}-{number:05d}-of-{len(starts):05d}.tfrecord", slice(at, at + per_shard)
                size = _write_file(_join(out, name), examples[part], rows[part], image_size, pool, progress)
                files.append({"file": name, "count": len(rows[part]), "first": rows[part][0][0],
                              "last": rows[part][-1][0], "bytes": size})
            index["splits"][split] = {"files": files, "rows_sha256": _rows_sha256(rows)}
    with tf.io.gfile.GFile(_join(out, INDEX), "w") as f:
        f.write(json.dumps(index, indent=1) + "\n")
    _index.cache_clear()
    return index


def _split(work: str | os.PathLike, report: dict, split: str) -> tuple[list[Example], list[tuple[str, int]]]:
    """A split's examples in the manifest's order, and their (manifest path, label) rows."""
    examples = load_split(Path(work) / "manifest.csv", Path(report["root"]), split)
    return examples, [(Path(e.path).relative_to(report["root"]).as_posix(), e.label) for e in examples]


def _write_file(path: str, examples, rows, image_size: int, pool, progress) -> int:
    """One shard: the pictures encoded in parallel, written in order; returns its size in bytes."""
    import tensorflow as tf

    with tf.io.TFRecordWriter(path) as writer:
        for (name, label), jpeg in zip(rows, pool.map(lambda e: _encode(e.path, image_size), examples)):
            writer.write(_record(jpeg, label, name))
            if progress:
                progress(1)
    return tf.io.gfile.stat(path).length


@functools.lru_cache(maxsize=8)
def _index(folder: str) -> dict:
    import tensorflow as tf

    path = _join(folder, INDEX)
    if not tf.io.gfile.exists(path):
        raise DataError(f"shards={folder}: no {INDEX} (write the shards with `catdog prepare --shards {folder}`)")
    with tf.io.gfile.GFile(path) as f:
        index = json.loads(f.read())
    if index.get("format") != FORMAT:
        raise DataError(f"{path}: format {index.get('format')!r}, expected {FORMAT!r}")
    return index


def check(folder: str, work: str | os.PathLike, image_size: int) -> dict:
    """The shards' index, checked to hold `prepare`'s split of the run's data at `image_size`."""
    index, report = _index(folder), read_report(work)
    again = f"write them again: catdog prepare --data {report['settings']['source']} --shards {folder}"
    # The pictures' content hash and each split's rows decide; where the source lies does not.
    if index["content_sha256"] != report["content_sha256"]:
        raise DataError(f"shards={folder}: made from other pictures than {report['settings']['source']}; {again}")
    if index["image_size"] != image_size:
        raise DataError(f"shards={folder}: pictures of {index['image_size']} px, this run trains at "
                        f"{image_size} px; {again} --image-size {image_size}")
    for split in SPLITS:
        if index["splits"][split]["rows_sha256"] != _rows_sha256(_split(work, report, split)[1]):
            raise DataError(f"shards={folder}: its {split} split is not the manifest's; {again}")
    for entry in (e for split in SPLITS for e in index["splits"][split]["files"]):
        _check_file(_join(folder, entry["file"]), entry["bytes"], again)
    return index


def _check_file(path: str, size: int, again: str) -> None:
    """A shard missing or of another size (a copy cut short) fails here, before any step."""
    import tensorflow as tf

    if not tf.io.gfile.exists(path):
        raise DataError(f"{path}: missing from the shards; {again}")
    if (found := tf.io.gfile.stat(path).length) != size:
        raise DataError(f"{path}: {found:,} bytes, shards.json says {size:,} (cut short or changed?); {again}")


@dataclass(frozen=True)
class ShardSet:
    """The shard files holding some examples, in order, and how to read them as pixels."""

    files: tuple[str, ...]
    counts: tuple[int, ...]
    image_size: int

    @classmethod
    def locate(cls, folder: str, examples: Sequence[Example]) -> ShardSet:
        """The files that hold exactly `examples`, in their order: a whole split, or some of its
        files back to back (a worker's share). Anything else, a `max_images` sample say, is refused."""
        index = _index(folder)
        split = examples[0].split if examples else "train"
        chosen, at = [], 0
        for entry in index["splits"][split]["files"]:
            end = at + entry["count"]
            if end <= len(examples) and _names(examples[at], entry["first"]) and _names(examples[end - 1],
                                                                                       entry["last"]):
                chosen.append(entry)
                at = end
        if at != len(examples) or not chosen:
            raise DataError(f"shards={folder}: its {split} files do not hold these {len(examples)} pictures "
                            f"(shards hold whole splits: leave max_images=0)")
        return cls(tuple(_join(folder, e["file"]) for e in chosen), tuple(e["count"] for e in chosen),
                   index["image_size"])

    def __len__(self) -> int:
        return sum(self.counts)

    def in_order(self):
        """(uint8 pixels, float32 label) of every picture, in the files' order."""
        import tensorflow as tf

        return self._decoded(tf.data.TFRecordDataset(list(self.files)))

    def shuffled(self, seed: int, reshuffle: bool):
        """Every picture once, in an order drawn from `seed` (or anew each pass, with `reshuffle`).
        Memory: INTERLEAVE file buffers and SHUFFLE_BUFFER encoded pictures, whatever the count."""
        import tensorflow as tf

        files = tf.data.Dataset.from_tensor_slices(list(self.files))
        files = files.shuffle(len(self.files), seed=seed, reshuffle_each_iteration=reshuffle)
        records = files.interleave(tf.data.TFRecordDataset, cycle_length=min(INTERLEAVE, len(self.files)),
                                   num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        records = records.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=reshuffle)
        return self._decoded(records)

    def _decoded(self, records):
        import tensorflow as tf

        spec = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}
        size = self.image_size

        def decode(record):
            parsed = tf.io.parse_single_example(record, spec)
            pixels = tf.io.decode_jpeg(parsed["image"], channels=3, dct_method="INTEGER_ACCURATE")  # as Pillow
            pixels.set_shape((size, size, 3))  # written at this size (`check`)
            return pixels, tf.cast(parsed["label"], tf.float32)

        # deterministic: the records' order stays (a seeded shuffle's, or the files')
        return records.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _names(example: Example, relative: str) -> bool:
    """Whether `example` is the picture at `relative` in the manifest (its path ends with it)."""
    path = Path(example.path).as_posix()
    return path == relative or path.endswith("/" + relative)


def share(folder: str, examples: Sequence[Example], worker: int, workers: int) -> list[Example]:
    """The examples in files worker, worker + workers, ... of a whole split's: one worker's share
    when files are dealt out in turn (what tf.data's AutoShardPolicy.FILE does)."""
    counts = [e["count"] for e in _index(folder)["splits"][examples[0].split]["files"]]
    starts = np.cumsum([0, *counts])
    return [ex for i in range(worker, len(counts), workers) for ex in examples[starts[i]:starts[i + 1]]]
