"""The teacher's predictions on the unlabeled pool, as one chunked, checksummed zarr v3 store.

Layout (format 2)::

    probs.zarr/
      confidence  (N, H, W)    float16  max softmax probability at the store's temperature
      prediction  (N, H, W)    uint8    argmax class; PAD (255) outside the image
      shapes      (N, 2)       int32    real (h, w) of each image
      written     (N,)         uint8    1 once the chunk holding image i is written (resume)
      histogram   (K, C, 15361) int32   confidence histogram of each of the K chunks' images
      manifest.json                     every file of the store with its size (finalize)
      attrs: image_ids, class_names, num_classes, temperature, images_per_chunk, complete,
             format_version, job

Images are padded to the largest (H, W); a chunk file of about :data:`CHUNK_BYTES` raw makes
O(N / chunk) files. A chunk's crc32c makes damage fail to decode rather than read as data; the
manifest catches a missing chunk (zarr would read the fill value).

The store is built at ``<path>.partial`` and renamed once complete. Of the N jobs of sharded
inference only the first creates or deletes it, and each writes only its own chunks, so no lock
is needed (cluster file systems do not always provide one).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ZstdCodec

from dars.core.constants import NUM_BINS, PAD
from dars.core.errors import DarsError
from dars.stats.counting import valid_histogram
from dars.store.artifacts import (
    MANIFEST,
    check_files,
    file_entry,
    read_manifest,
    remove_path,
    write_manifest,
)

FORMAT_VERSION = 2
CHUNK_BYTES = 32 << 20  # raw confidence + prediction bytes aimed at per chunk file
MAX_IMAGES_PER_CHUNK = 256  # bounds the work a killed job loses and a resume redoes
_BUFFER_BYTES = 1 << 30  # pending images held for incomplete chunks before writing them early
ARRAYS = ("confidence", "prediction", "shapes", "written", "histogram")
# What thresholding reads (confidence, prediction) is LZ4: it decodes ~4x faster than zstd
# level 3 (1.2 against 4.8 ns a pixel for both arrays) for ~30 % more bytes, still ~1-1.5 B/px.
_FAST = BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle")
_SMALL = ZstdCodec(level=3)


def partial_path(path: str | os.PathLike[str]) -> Path:
    """Where an unfinished store lives until it is complete."""
    p = Path(path)
    return p.with_name(p.name + ".partial")


def images_per_chunk(height: int, width: int) -> int:
    """Images per chunk file for (H, W) images: about CHUNK_BYTES, 1..MAX_IMAGES_PER_CHUNK."""
    return int(max(1, min(MAX_IMAGES_PER_CHUNK, CHUNK_BYTES // max(1, 3 * height * width))))


def _regenerate(store: Path) -> str:
    return (f"delete {store} and rerun inference (`snakemake` regenerates it, "
            "or `dars infer`)")


@dataclass(frozen=True)
class Block:
    """A run of consecutive images read in one go (padded to the store's (H, W))."""

    indices: np.ndarray  # (B,) image indices in the store
    confidence: np.ndarray  # (B, H, W) float16
    prediction: np.ndarray  # (B, H, W) uint8, PAD outside each image


class ProbStoreWriter:
    """Creates (or resumes) the partial store and writes one image at a time; a chunk file is
    written (then marked in ``written``) once all its images are in, by one job."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        image_ids: Sequence[str],
        shapes: Sequence[tuple[int, int]] | None,
        class_names: Sequence[str],
        job: str = "",
        temperature: float = 1.0,
        images_per_chunk: int | None = None,
    ) -> None:
        """``job`` names what produces the values: another job's partial store is never resumed.
        With ``shapes`` (each image's real (h, w)) a missing or foreign one is (re)created;
        without, this job's must exist (shard and finalize steps never delete it under a shard)."""
        self.final = Path(path)
        self.path = partial_path(path)
        self.num_classes = len(class_names)
        ids = list(image_ids)
        if self.path.exists() and self._matches(ids, class_names, job):
            self.group = zarr.open_group(str(self.path), mode="r+")
        elif shapes is None:
            raise DarsError(f"{self.path}: no unfinished store of this inference job (teacher, "
                            "infer options and temperature) to add to; create it first "
                            "(`dars infer --init-store`, the infer_init rule)")
        else:
            remove_path(self.path)
            self.group = self._create(ids, np.asarray(shapes, dtype=np.int32).reshape(-1, 2),
                                      list(class_names), job, temperature, images_per_chunk)
        self.image_ids = ids
        self.shapes: np.ndarray = self.group["shapes"][:]
        self.per_chunk = int(self.group.attrs["images_per_chunk"])
        self._written: np.ndarray = self.group["written"][:]  # this job's view; own chunks
        self._pending: dict[int, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
        self._early: dict[int, set[int]] = {}  # images of a chunk already written early

    def _matches(self, ids: list[str], class_names: Sequence[str], job: str) -> bool:
        """A leftover partial store is reused only if it was started for the same job."""
        try:
            group = zarr.open_group(str(self.path), mode="r")
            attrs = group.attrs.asdict()
        except Exception:  # noqa: BLE001 - any unreadable leftover is simply rebuilt
            return False
        return (
            attrs.get("format_version") == FORMAT_VERSION
            and attrs.get("image_ids") == ids
            and attrs.get("class_names") == list(class_names)
            and attrs.get("job", "") == job
        )

    def _create(self, ids: list[str], shapes: np.ndarray, names: list[str], job: str,
                temperature: float, per_chunk: int | None) -> zarr.Group:
        n = len(ids)
        h, w = (int(v) for v in shapes.max(axis=0)) if n else (1, 1)
        per = per_chunk or images_per_chunk(h, w)
        group = zarr.open_group(str(self.path), mode="w", zarr_format=3)

        def array(name: str, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: str,
                  fill: int | None = 0, codec: BloscCodec | ZstdCodec = _FAST) -> None:
            group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill,
                               serializer=BytesCodec(), compressors=[codec, Crc32cCodec()],
                               config={"write_empty_chunks": True})

        array("confidence", (n, h, w), (per, h, w), "float16")
        array("prediction", (n, h, w), (per, h, w), "uint8", PAD)
        array("shapes", (n, 2), (max(n, 1), 2), "int32")
        array("written", (n,), (per,), "uint8")
        array("histogram", (-(-n // per), len(names), NUM_BINS), (1, len(names), NUM_BINS),
              "int32", codec=_SMALL)
        if n:
            group["shapes"][:] = shapes
        group.attrs.update(dict(image_ids=ids, class_names=names, num_classes=len(names),
                                temperature=float(temperature), images_per_chunk=per,
                                complete=False, format_version=FORMAT_VERSION, job=job))
        return group

    def chunk_range(self, chunk: int) -> range:
        """Image indices of chunk ``chunk`` of the per-chunk arrays."""
        return range(chunk * self.per_chunk,
                     min((chunk + 1) * self.per_chunk, len(self.image_ids)))

    def pending(self, indices: range | None = None) -> list[int]:
        """Indices of images not yet written, among all or the contiguous ``indices`` (a
        shard: reads only its markers)."""
        indices = range(len(self.image_ids)) if indices is None else indices
        written = self.group["written"][indices.start:indices.stop]
        return [indices.start + int(i) for i in np.flatnonzero(written == 0)]

    def write_prediction(self, index: int, prediction: np.ndarray, confidence: np.ndarray
                         ) -> None:
        """Take image ``index``'s (h, w) argmax and max probability; an image written before (a
        resumed batch) is ignored: it holds these very values already."""
        h, w = prediction.shape
        if (h, w) != tuple(self.shapes[index]) or confidence.shape != (h, w):
            raise DarsError(f"image {index}: prediction {h}x{w} != recorded size "
                            f"{self.shapes[index]}")
        chunk = index // self.per_chunk
        if self._written[index]:
            return
        H, W = self.group["confidence"].shape[1:]
        conf = np.zeros((H, W), np.float16)
        pred = np.full((H, W), PAD, np.uint8)
        conf[:h, :w] = confidence
        pred[:h, :w] = prediction
        self._pending.setdefault(chunk, {})[index] = (conf, pred)
        if len(self._pending[chunk]) + len(self._early.get(chunk, ())) == \
                len(self.chunk_range(chunk)):
            self._write_chunk(chunk)
        elif sum(map(len, self._pending.values())) * 3 * H * W > _BUFFER_BYTES:
            # images come out of order (VOC: by size)
            self._write_early(max(self._pending, key=lambda k: len(self._pending[k])))

    def _write_chunk(self, chunk: int) -> None:
        images = self.chunk_range(chunk)
        span = slice(images.start, images.stop)
        if chunk in self._early:  # some images are in the file already: merge
            self._write_early(chunk)
            del self._early[chunk]
            confidence, prediction = self.group["confidence"][span], self.group["prediction"][span]
        else:
            rows = self._pending.pop(chunk)
            confidence = np.stack([rows[i][0] for i in images])
            prediction = np.stack([rows[i][1] for i in images])
            self.group["confidence"][span] = confidence
            self.group["prediction"][span] = prediction
        self.group["histogram"][chunk] = valid_histogram(prediction, confidence,
                                                         self.num_classes, threads=1
                                                         ).astype(np.int32)
        self.group["written"][span] = 1  # last: the resume marker
        self._written[span] = 1

    def _write_early(self, chunk: int) -> None:
        """Write the images collected for an incomplete chunk (re-encoding the chunk file)."""
        rows = self._pending.pop(chunk)
        for index, (conf, pred) in rows.items():
            self.group["confidence"][index] = conf
            self.group["prediction"][index] = pred
        self._early.setdefault(chunk, set()).update(rows)

    def close(self, own: range) -> None:
        """After a job's images of ``own``: every chunk it started must be complete."""
        left = sorted(set(self._pending) | set(self._early))
        if left:
            raise DarsError(f"{self.path}: images of chunk(s) {left} were never predicted "
                            f"(the job's range {own.start}..{own.stop - 1} must start and end "
                            "at chunk boundaries)")

    def finalize(self) -> None:
        """Check every image and chunk was written, then mark, manifest and move the store."""
        missing = self.pending()
        if missing:
            names = ", ".join(self.image_ids[i] for i in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise DarsError(f"{self.path}: {len(missing)} of {len(self.image_ids)} images not "
                            f"written: {names}{more} (an inference job or shard has not "
                            "finished: run it, then finalize again)")
        expected = expected_chunks({name: self.group[name] for name in ARRAYS})
        absent = [f for f in expected if not (self.path / f).is_file()]
        if absent:
            raise DarsError(f"{self.path}: chunk files {absent[:3]} are missing although their "
                            f"images are marked written; {_regenerate(self.final)}")
        self.group.attrs["complete"] = True
        # sizes catch a missing or truncated chunk (chunks have a crc32c); digests guard metadata
        write_manifest(self.path, {p.relative_to(self.path).as_posix():
                                   file_entry(p, p.name == "zarr.json")
                                   for p in sorted(self.path.rglob("*"))
                                   if p.is_file() and p.name != MANIFEST})
        remove_path(self.final)
        os.replace(self.path, self.final)


def expected_chunks(arrays: dict[str, zarr.Array]) -> list[str]:
    """Relative paths of every chunk file the arrays (by name) must have (default v3 keys)."""
    return sorted("/".join([name, "c", *map(str, key)]) for name, arr in arrays.items()
                  for key in np.ndindex(*arr.cdata_shape))


class ProbStore:
    """Read access to a complete store; a partial, foreign or damaged one is one DarsError
    naming the array, the images and what to delete."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            hint = (" (an unfinished one exists: rerun inference)"
                    if partial_path(path).exists() else "")
            raise DarsError(f"probability store not found: {self.path}{hint}")
        try:
            self.group = zarr.open_group(str(self.path), mode="r")
            attrs = self.group.attrs.asdict()
        except Exception as exc:  # noqa: BLE001
            raise DarsError(f"{self.path} is not a readable zarr store: {exc}; "
                            f"{_regenerate(self.path)}") from exc
        if attrs.get("format_version") != FORMAT_VERSION:
            raise DarsError(f"{self.path}: not a dars probability store of format "
                            f"{FORMAT_VERSION}; {_regenerate(self.path)}")
        if not attrs.get("complete"):
            raise DarsError(f"{self.path}: store is incomplete (inference was interrupted)")
        self.image_ids: list[str] = list(attrs["image_ids"])
        self.class_names: list[str] = list(attrs["class_names"])
        self.num_classes: int = int(attrs["num_classes"])
        self.temperature: float = float(attrs["temperature"])
        self.per_chunk: int = int(attrs["images_per_chunk"])
        self.arrays: dict[str, zarr.Array] = self._verify()
        self._last: tuple[tuple[int, int], Block] | None = None  # see blocks()
        self.shapes: np.ndarray = (self._read("shapes", 0, len(self)) if self.image_ids
                                   else np.zeros((0, 2)))

    def __len__(self) -> int:
        return len(self.image_ids)

    def _describe(self, rel: str) -> str:
        """A file of the store for error messages: its array and the images it holds."""
        array, *parts = rel.split("/")
        images, ids = "all images", self.image_ids
        if array != "shapes" and len(parts) >= 2 and parts[1].isdigit():
            lo = int(parts[1]) * self.per_chunk
            hi = min(lo + self.per_chunk, len(self)) - 1
            images = ("no image" if lo >= len(self) else f"image {ids[lo]!r}" if lo == hi
                      else f"images {ids[lo]!r}..{ids[hi]!r}")
        return f"array {array!r}, file {rel} ({images})"

    def _verify(self) -> dict[str, zarr.Array]:
        """Check the manifest's files are whole and that it lists every chunk; return the arrays,
        opened once (a group look-up costs ~1 ms, as much as decoding a chunk of small images)."""
        remedy = _regenerate(self.path)
        files = read_manifest(self.path, remedy)
        check_files(self.path, files, remedy, self._describe)
        listed = [name for name in ARRAYS if f"{name}/zarr.json" in files]
        unlisted = sorted(set(ARRAYS) - {"histogram"} - set(listed))
        if unlisted:
            raise DarsError(f"{self.path}: array {unlisted[0]!r} is not in the manifest; {remedy}")
        arrays = {name: self.group[name] for name in listed}
        absent = sorted(set(expected_chunks(arrays)) - set(files))
        if absent:
            raise DarsError(f"{self.path}: {self._describe(absent[0])} is not in the manifest; "
                            f"{remedy}")
        return arrays

    def _read(self, array: str, lo: int, hi: int) -> np.ndarray:
        """``array[lo:hi]``, a chunk that fails its checksum or decoding as one DarsError."""
        try:
            return self.arrays[array][lo:hi]
        except Exception as exc:  # noqa: BLE001 - zarr/numcodecs raise many types
            per = self.arrays[array].chunks[0]
            bad = lo // per
            for chunk in range(lo // per, (hi - 1) // per + 1):  # find the damaged chunk
                try:
                    self.arrays[array][chunk * per:(chunk + 1) * per]
                except Exception:  # noqa: BLE001
                    bad = chunk
                    break
            rel = "/".join([array, "c", str(bad)] + ["0"] * (self.arrays[array].ndim - 1))
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            if "checksum" in reason.lower():
                reason = "its crc32c checksum does not match its bytes"
            raise DarsError(f"{self.path}: {self._describe(rel)} is corrupt ({reason}); "
                            f"{_regenerate(self.path)}") from None

    def histogram(self) -> np.ndarray | None:
        """The (C, NUM_BINS) int64 histogram of every image, summed from inference's per-chunk
        rows; None without rows or when they miss pixels (invalid ones are left out): then
        :func:`dars.pseudo.confidence_hist.store_histogram` counts, and names the image."""
        if "histogram" not in self.arrays:
            return None
        rows = self._read("histogram", 0, self.arrays["histogram"].shape[0])
        hist = rows.sum(axis=0, dtype=np.int64)
        return hist if int(hist.sum()) == self.num_pixels else None

    def prediction(self, index: int) -> np.ndarray:
        """The (padded) prediction of one image, checked like every read."""
        return self._read("prediction", index, index + 1)[0]

    @property
    def num_pixels(self) -> int:
        """Real (unpadded) pixel count P over all images."""
        return int(np.prod(self.shapes, axis=1).sum()) if len(self) else 0

    def check_temperature(self, temperature: float | None) -> None:
        """A stage asked for T must get a store written at T (inference applies it)."""
        if temperature is not None and float(temperature) != self.temperature:
            raise DarsError(f"{self.path} was written at temperature {self.temperature:g}, "
                            f"this stage asks for {float(temperature):g}; infer again with "
                            f"`dars infer --temperature {float(temperature):g}` (the workflow "
                            "passes pseudo_label.temperature to inference)")

    def blocks(self, indices: range | None = None, block: int = 64) -> Iterator[Block]:
        """Yield the images of ``indices`` (default: all) in runs of at most ``block``: zarr
        decodes a slice's chunks concurrently. The last block is kept, so a second pass over a
        one-block store reads nothing again; blocks are shared, read-only."""
        indices = range(len(self)) if indices is None else indices
        for lo in range(indices.start, indices.stop, block):
            hi = min(lo + block, indices.stop)
            if self._last is None or self._last[0] != (lo, hi):
                self._last = (lo, hi), Block(np.arange(lo, hi), self._read("confidence", lo, hi),
                                             self._read("prediction", lo, hi))
            yield self._last[1]
