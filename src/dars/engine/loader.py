"""Training DataLoaders: per-sample augmentation seeds, persistent workers, workers per job.

Workers persist for the whole round (a round-0 epoch can be 23 steps long), so they keep their
RNG across epochs and cannot seed an augmentation that resumes bit for bit:
:class:`SeededSampler` hands every sample its own seed from (run seed, epoch, index), which
also makes it independent of the worker and rank counts.
"""

from __future__ import annotations

import hashlib
import signal
from collections.abc import Iterator

from torch.utils.data import DataLoader, Dataset, DistributedSampler

from dars.core.errors import DarsError
from dars.engine import distributed


def sample_seed(*parts: int) -> int:
    """A 63-bit seed from integers (run seed, epoch, index...): independent streams."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class SeededSampler(DistributedSampler):
    """A :class:`DistributedSampler` that yields ``(index, seed)``; the seed depends only on
    (run seed, epoch set by ``set_epoch``, index)."""

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in super().__iter__():
            yield index, sample_seed(self.seed, self.epoch, index)


def split_workers(total: int, ranks: int, loaders: int) -> list[int]:
    """Worker processes of each of a rank's ``loaders`` when the job has ``total`` for
    ``ranks`` ranks: every rank's share split as evenly as the loaders allow (a student's
    pseudo-labeled half first, then its labeled half)."""
    per_rank = total // ranks
    return [per_rank // loaders + (i < per_rank % loaders) for i in range(loaders)]


def train_loader(dataset: Dataset, batch: int, workers: int, world: distributed.World,
                 seed: int) -> DataLoader:
    """Shuffled batches of this rank's share; ``batch`` is the batch over all ranks."""
    if len(dataset) < batch:
        raise DarsError(f"split has {len(dataset)} images, fewer than one batch of {batch}")
    _one_opencv_thread()  # before any worker is forked
    sampler = SeededSampler(dataset, num_replicas=world.size, rank=world.rank, shuffle=True,
                            seed=seed, drop_last=True)
    return DataLoader(dataset, batch_size=batch // world.size, sampler=sampler, drop_last=True,
                      num_workers=workers, persistent_workers=workers > 0,
                      pin_memory=world.device.type == "cuda",
                      worker_init_fn=_init_worker if workers else None)


def _one_opencv_thread() -> None:
    """Augment with one OpenCV thread per process: the workers are the parallelism (OpenCV's
    own pool would oversubscribe the job's cores), and a worker forked from a process whose
    OpenCV pool has run hangs at its first OpenCV call (the pool's threads are not forked)."""
    import cv2

    cv2.setNumThreads(1)


def _init_worker(_: int) -> None:
    """Also in the worker (a spawned one does not inherit the setting). Workers ignore
    SIGTERM: they outlive a SIGTERM sent to the whole job (SLURM signals every process), so the
    main process can finish its step and save; they end with it."""
    _one_opencv_thread()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
