"""Batched softmax prediction over a list of images, shared by inference and evaluation.

Images are grouped by size (read from the file headers) and batched within a group, so
variable-size datasets (VOC) batch as well as fixed-size ones and no padding ever reaches the
network. Each batch is predicted whole or by sliding window (:mod:`dars.engine.sliding`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import groupby
from typing import Any

import torch
from torch import nn

from dars.data.dataset import to_tensor
from dars.data.io import image_size, read_image
from dars.data.splits import Sample
from dars.engine.sliding import forward_probs, sliding_probs

LOAD_THREADS = 4  # image decoding (PIL releases the GIL) overlaps across a batch


@dataclass(frozen=True)
class PredictOptions:
    """How a model is applied to an image (the ``infer``/``evaluate`` config sections)."""

    mode: str = "whole"
    crop_size: int | None = None
    stride_ratio: float = 2 / 3
    flip: bool = False
    bf16: bool = False

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> PredictOptions:
        return cls(section["mode"], section["crop_size"], section["stride_ratio"],
                   section["flip"], section["bf16"])


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def size_batches(samples: Sequence[Sample], indices: Sequence[int], batch: int
                 ) -> Iterator[list[int]]:
    """Indices grouped by image size (stable within a size), cut into batches of ``batch``."""
    sizes = {i: image_size(samples[i].image) for i in indices}
    for _, group in groupby(sorted(indices, key=lambda i: sizes[i]), key=lambda i: sizes[i]):
        members = list(group)
        for start in range(0, len(members), batch):
            yield members[start:start + batch]


def bf16_autocast(dev: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when asked; full precision otherwise: on a CPU without bf16
    instructions autocast emulates it (benchmarks/bench_train.py: 4x slower inference, 12x
    slower training than fp32 on the 2-core EPYC of benchmarks/RESULTS.md)."""
    if bf16 and dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.inference_mode()
def predict_probs(model: nn.Module, samples: Sequence[Sample], indices: Sequence[int],
                  batch: int, options: PredictOptions = PredictOptions()
                  ) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(index, probs (C, H, W) float32 on CPU)`` for each requested sample, grouped by
    image size (callers address results by index, not by order)."""
    dev = device()
    model = model.to(dev).eval()
    channels_last = options.bf16 and dev.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    with ThreadPoolExecutor(LOAD_THREADS) as pool:
        for idx in size_batches(samples, indices, batch):
            x = torch.stack(list(pool.map(lambda i: to_tensor(read_image(samples[i].image)),
                                          idx))).to(dev)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with bf16_autocast(dev, options.bf16):
                if options.mode == "sliding":
                    probs = sliding_probs(model, x, options.crop_size, options.stride_ratio,
                                          options.flip)
                else:
                    probs = forward_probs(model, x, options.flip)
            yield from zip(idx, probs.float().cpu(), strict=True)
