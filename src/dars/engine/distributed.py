"""Multi-GPU training through ``torchrun`` (DDP + SyncBN), and the single-process default.

Without torchrun's variables every helper is a no-op (one code path). ``train.batch_size`` stays
the global batch (``batch_size / world_size`` per rank), so the lr schedule does not depend on
the GPU count; SyncBatchNorm as a per-GPU batch of 2 gives useless batch statistics."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

log = logging.getLogger(__name__)

#: How long a rank waits at a collective: rank 0 validates alone (train.evaluate_every) while the
#: others wait at the epoch's barrier; a full Cityscapes validation outlasts the default 10 min.
WAIT = timedelta(hours=2)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")
    distributed: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints and logs; the others only compute."""
        return self.rank == 0


def setup() -> World:
    """Join the process group when launched by torchrun, else describe a single process."""
    cuda = torch.cuda.is_available()
    if "WORLD_SIZE" not in os.environ:
        return World(device=torch.device("cuda" if cuda else "cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=WAIT)
    world = World(dist.get_rank(), dist.get_world_size(),
                  torch.device("cuda", local_rank) if cuda else torch.device("cpu"), True)
    log.info("rank %d of %d on %s", world.rank, world.size, world.device)
    return world


def wrap(model: nn.Module, world: World, sync_bn: bool = True) -> nn.Module:
    """DDP with SyncBN unless ``sync_bn`` is false (released DeepLabv2: per-GPU statistics)."""
    if not world.distributed:
        return model
    if sync_bn and world.size > 1 and world.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [world.device.index] if world.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(module: nn.Module) -> nn.Module:
    """The plain model inside a DDP wrapper (its state_dict has no ``module.`` prefix)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


def mean(value: torch.Tensor, world: World) -> torch.Tensor:
    """Mean of a scalar over ranks, so every rank logs and checks the same loss."""
    if not world.distributed:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / world.size


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def teardown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
