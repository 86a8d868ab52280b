"""Training DataLoaders: per-sample augmentation seeds, persistent workers, workers per job.

Workers persist for the round (a round-0 epoch can be 23 steps), so their RNG runs on across
epochs and cannot seed an augmentation that resumes bit for bit: :class:`SeededSampler` gives
each sample a seed from (run seed, epoch, index), independent of worker and rank counts too."""

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
    """A :class:`DistributedSampler` yielding ``(index, seed)`` (:func:`sample_seed`)."""

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in super().__iter__():
            yield index, sample_seed(self.seed, self.epoch, index)


def split_workers(total: int, ranks: int, loaders: int) -> list[int]:
    """Workers of each of a rank's ``loaders``, the job's ``total`` split evenly over ``ranks``
    and loaders (a student's pseudo-labeled half first, then its labeled half)."""
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
    """One OpenCV thread per process: workers are the parallelism (OpenCV's pool would oversubscribe
    the cores), and a worker forked after that pool ran hangs (its threads are not forked)."""
    import cv2

    cv2.setNumThreads(1)


def _init_worker(_: int) -> None:
    """Also in the worker (a spawned one does not inherit it). Workers ignore SIGTERM, which
    SLURM sends every process, so the main one can finish its step and save; they end with it."""
    _one_opencv_thread()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
