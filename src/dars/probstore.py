"""The teacher's predictions on the unlabeled pool, as one chunked zarr v3 store.

Layout (one chunk per image, so shards and resumed jobs write disjoint chunks)::

    probs.zarr/
      confidence  (N, H, W)    float16  max softmax probability
      prediction  (N, H, W)    uint8    argmax class; PAD (255) outside the image
      probs       (N, C, H, W) float16  full class probabilities (optional, needed for TS)
      shapes      (N, 2)       int32    real (h, w) of each image
      written     (N,)         uint8    1 once image i is fully written (resume marker)
      attrs: image_ids, class_names, num_classes, complete, format_version, job

Images of different sizes are padded to the largest (H, W); padded pixels carry prediction
PAD, so every consumer that skips ``prediction == PAD`` handles variable sizes for free, and the
padding compresses to almost nothing. The store is built at ``<path>.partial`` and renamed onto
``<path>`` once complete, so a store at the final path is always whole.

Sharded inference (``shards: N``) fills one partial store from N jobs in three steps: one job
creates the layout (:class:`ProbStoreWriter` with ``shapes``), N jobs open it (``shapes=None``)
and each writes only its own images -- their chunks, ``written`` markers included, are separate
files, so concurrent writers never touch the same file -- and one job finalizes it. Only the
first step ever creates or deletes the store, so the N writers need no lock (which cluster file
systems do not always provide).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from dars.atomic import remove_path
from dars.errors import DarsError
from dars.shards import shard_range

PAD = 255
FORMAT_VERSION = 1


def partial_path(path: str | os.PathLike[str]) -> Path:
    """Where an unfinished store lives until it is complete."""
    p = Path(path)
    return p.with_name(p.name + ".partial")


@dataclass(frozen=True)
class Block:
    """A run of consecutive images read in one go (padded to the store's (H, W))."""

    indices: np.ndarray  # (B,) image indices in the store
    confidence: np.ndarray  # (B, H, W) float16
    prediction: np.ndarray  # (B, H, W) uint8, PAD outside each image
    probs: np.ndarray | None  # (B, C, H, W) float16, when requested


class ProbStoreWriter:
    """Creates (or resumes) the partial store and writes one image at a time."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        image_ids: Sequence[str],
        shapes: Sequence[tuple[int, int]] | None,
        class_names: Sequence[str],
        store_probs: bool = True,
        job: str = "",
    ) -> None:
        """``job`` identifies what produces the probabilities (e.g. a hash of the teacher and
        the inference options): a leftover partial store of another job is never resumed.

        With ``shapes`` (the real (h, w) of every image) a missing or foreign partial store is
        (re)created. Without (``None``) the partial store of this job must exist already: the
        shard and finalize steps of sharded inference only ever open it, never create or delete
        it under another running shard.
        """
        self.final = Path(path)
        self.path = partial_path(path)
        self.num_classes = len(class_names)
        ids = list(image_ids)
        if self.path.exists() and self._matches(ids, class_names, store_probs, job):
            self.group = zarr.open_group(str(self.path), mode="r+")
        elif shapes is None:
            raise DarsError(f"{self.path}: no unfinished store of this inference job (teacher "
                            "and infer options) to add to; create it first (`dars infer "
                            "--init-store`, the infer_init rule)")
        else:
            remove_path(self.path)
            self.group = self._create(ids, np.asarray(shapes, dtype=np.int32).reshape(-1, 2),
                                      list(class_names), store_probs, job)
        self.image_ids = ids
        self.store_probs = store_probs
        self.shapes: np.ndarray = self.group["shapes"][:]

    def _matches(self, ids: list[str], class_names: Sequence[str], store_probs: bool,
                 job: str) -> bool:
        """A leftover partial store is reused only if it was started for the same job."""
        try:
            group = zarr.open_group(str(self.path), mode="r")
            attrs = group.attrs.asdict()
        except Exception:  # noqa: BLE001 - any unreadable leftover is simply rebuilt
            return False
        return (
            attrs.get("image_ids") == ids
            and attrs.get("class_names") == list(class_names)
            and attrs.get("store_probs") == store_probs
            and attrs.get("job", "") == job
        )

    def _create(
        self, ids: list[str], shapes: np.ndarray, names: list[str], store_probs: bool,
        job: str = "",
    ) -> zarr.Group:
        n = len(ids)
        h, w = (int(v) for v in shapes.max(axis=0)) if n else (1, 1)
        group = zarr.open_group(str(self.path), mode="w", zarr_format=3)
        group.create_array("confidence", shape=(n, h, w), chunks=(1, h, w), dtype="float16",
                           fill_value=0)
        group.create_array("prediction", shape=(n, h, w), chunks=(1, h, w), dtype="uint8",
                           fill_value=PAD)
        if store_probs:
            c = len(names)
            group.create_array("probs", shape=(n, c, h, w), chunks=(1, c, h, w),
                               dtype="float16", fill_value=0)
        group.create_array("shapes", shape=(n, 2), chunks=(max(n, 1), 2), dtype="int32")
        group.create_array("written", shape=(n,), chunks=(1,), dtype="uint8", fill_value=0)
        if n:
            group["shapes"][:] = shapes
        group.attrs.update(
            {
                "image_ids": ids,
                "class_names": names,
                "num_classes": len(names),
                "store_probs": store_probs,
                "complete": False,
                "format_version": FORMAT_VERSION,
                "job": job,
            }
        )
        return group

    def pending(self, indices: range | None = None) -> list[int]:
        """Indices of images not yet written (all of them for a fresh store), among all images
        or the contiguous ``indices`` (a shard: reads only that shard's markers)."""
        indices = range(len(self.image_ids)) if indices is None else indices
        written = self.group["written"][indices.start:indices.stop]
        return [indices.start + int(i) for i in np.flatnonzero(written == 0)]

    def write(self, index: int, probs: np.ndarray) -> None:
        """Store the (C, h, w) probabilities of image ``index``; marks it written last."""
        c, h, w = probs.shape
        if c != self.num_classes:
            raise DarsError(f"model predicts {c} classes but the store expects {self.num_classes}")
        if (h, w) != tuple(self.shapes[index]):
            raise DarsError(f"image {index}: prediction {h}x{w} != recorded size "
                            f"{self.shapes[index]}")
        H, W = self.group["confidence"].shape[1:]
        conf = np.zeros((H, W), np.float16)
        pred = np.full((H, W), PAD, np.uint8)
        conf[:h, :w] = probs.max(axis=0)
        pred[:h, :w] = probs.argmax(axis=0)
        self.group["confidence"][index] = conf
        self.group["prediction"][index] = pred
        if self.store_probs:
            full = np.zeros((c, H, W), np.float16)
            full[:, :h, :w] = probs
            self.group["probs"][index] = full
        self.group["written"][index] = 1

    def finalize(self) -> None:
        """Check every image was written, mark complete and move to the final path."""
        missing = self.pending()
        if missing:
            names = ", ".join(self.image_ids[i] for i in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise DarsError(f"{self.path}: {len(missing)} of {len(self.image_ids)} images not "
                            f"written: {names}{more} (an inference job or shard has not "
                            "finished: run it, then finalize again)")
        self.group.attrs["complete"] = True
        remove_path(self.final)
        os.replace(self.path, self.final)


class ProbStore:
    """Read access to a complete store; refuses partial or foreign stores."""

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
            raise DarsError(f"{self.path} is not a readable zarr store: {exc}") from exc
        if attrs.get("format_version") != FORMAT_VERSION:
            raise DarsError(f"{self.path}: not a dars probability store (format_version missing)")
        if not attrs.get("complete"):
            raise DarsError(f"{self.path}: store is incomplete (inference was interrupted)")
        self.image_ids: list[str] = list(attrs["image_ids"])
        self.class_names: list[str] = list(attrs["class_names"])
        self.num_classes: int = int(attrs["num_classes"])
        self.has_probs: bool = bool(attrs["store_probs"])
        self.shapes: np.ndarray = self.group["shapes"][:] if self.image_ids else np.zeros((0, 2))

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def num_pixels(self) -> int:
        """Real (unpadded) pixel count P over all images."""
        return int(np.prod(self.shapes, axis=1).sum()) if len(self) else 0

    def check_classes(self, num_classes: int) -> None:
        """Fail clearly when the store and the configured dataset disagree on C."""
        if self.num_classes != num_classes:
            raise DarsError(
                f"{self.path}: store has {self.num_classes} classes but the config/histogram "
                f"has {num_classes}"
            )

    def blocks(
        self, indices: Sequence[int] | None = None, block: int = 64, probs: bool = False
    ) -> Iterator[Block]:
        """Yield consecutive runs of images (at most ``block`` each) from ``indices``.

        Reading contiguous slices lets zarr fetch and decode many chunks concurrently, which is
        what keeps the streaming passes fast on stores of small images.
        """
        if probs and not self.has_probs:
            raise DarsError(f"{self.path}: store was written without probabilities "
                            "(infer.store_probs: false); temperature scaling needs them")
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64)
        start = 0
        while start < len(idx):
            stop = start + 1
            while stop < len(idx) and stop - start < block and idx[stop] == idx[stop - 1] + 1:
                stop += 1
            lo, hi = int(idx[start]), int(idx[stop - 1]) + 1
            yield Block(
                indices=idx[start:stop],
                confidence=self.group["confidence"][lo:hi],
                prediction=self.group["prediction"][lo:hi],
                probs=self.group["probs"][lo:hi] if probs else None,
            )
            start = stop

    def shard(self, index: int, count: int) -> list[int]:
        """Image indices of shard ``index`` of ``count`` (contiguous, balanced)."""
        return list(shard_range(index, count, len(self)))
