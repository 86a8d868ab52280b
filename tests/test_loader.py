"""Training loaders: seeds per sample, workers per job, the same batches with any workers."""

from __future__ import annotations

import pytest
import torch

from dars.core.options import DatasetOptions
from dars.data.dataset import SegmentationDataset, dataset_spec
from dars.data.transforms import train_transform
from dars.engine import distributed
from dars.engine.loader import (
    SeededSampler,
    sample_seed,
    split_workers,
    train_loader,
)
from dars.jobs.gpu_slots import default_workers


@pytest.mark.parametrize(("total", "ranks", "loaders", "expected"), [
    (8, 1, 1, [8]), (8, 1, 2, [4, 4]), (7, 1, 2, [4, 3]), (16, 4, 2, [2, 2]),
    (9, 2, 1, [4]), (1, 1, 2, [1, 0]), (0, 2, 2, [0, 0]),
])
def test_workers_are_shared_by_ranks_and_halves(total: int, ranks: int, loaders: int,
                                                expected: list[int]) -> None:
    assert split_workers(total, ranks, loaders) == expected


def test_default_workers_use_the_job_cores_on_gpus_only() -> None:
    assert default_workers(16, 1) == 15
    assert default_workers(16, 4) == 12
    assert default_workers(8, 0) == 0
    assert default_workers(1, 2) == 0


def test_sampler_seeds_depend_on_epoch_and_index_only() -> None:
    data = list(range(10))
    one = SeededSampler(data, num_replicas=1, rank=0, seed=3)
    halves = [SeededSampler(data, num_replicas=2, rank=r, seed=3) for r in (0, 1)]
    for s in (one, *halves):
        s.set_epoch(2)
    pairs = dict(one)
    assert sorted(pairs) == data and all(pairs[i] == sample_seed(3, 2, i) for i in data)
    assert dict(halves[0]) | dict(halves[1]) == pairs  # the same seeds on 1 rank or 2
    one.set_epoch(3)
    assert all(dict(one)[i] != pairs[i] for i in data)


def _epochs(loader: torch.utils.data.DataLoader, epochs: int) -> list[torch.Tensor]:
    out = []
    for e in range(epochs):
        loader.sampler.set_epoch(e)
        out += [t for x, y, i in loader for t in (x, y, i)]
    return out


def test_workers_change_nothing_in_the_batches(folder_config: dict) -> None:
    """0 workers, and 2 persistent ones over two epochs, give bit-identical batches."""
    spec = dataset_spec(DatasetOptions.from_config(folder_config))
    ds = SegmentationDataset(spec, spec.samples("labeled"),
                             train_transform((0.5, 1.5), 16, True, 255, rotate=10, blur=True))
    world = distributed.World(rank=0, size=1, device=torch.device("cpu"))
    inline = _epochs(train_loader(ds, 2, 0, world, seed=5), 2)
    loader = train_loader(ds, 2, 2, world, seed=5)
    assert loader.persistent_workers
    pooled = _epochs(loader, 2)
    assert len(inline) == len(pooled) and all(
        torch.equal(a, b) for a, b in zip(inline, pooled, strict=True))
