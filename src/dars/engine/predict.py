"""Batched softmax prediction over a list of images, shared by inference and evaluation.

Images of equal size are batched together (the demo, Cityscapes); differently sized ones (VOC)
form their own batches, so no padding ever reaches the network.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from dars.data.dataset import to_tensor
from dars.data.io import read_image
from dars.data.splits import Sample


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _groups(samples: Sequence[Sample], indices: Sequence[int], batch: int
            ) -> Iterator[tuple[list[int], torch.Tensor]]:
    pending: list[int] = []
    images: list[torch.Tensor] = []
    for i in indices:
        x = to_tensor(read_image(samples[i].image))
        if images and (x.shape != images[0].shape or len(images) == batch):
            yield pending, torch.stack(images)
            pending, images = [], []
        pending.append(i)
        images.append(x)
    if images:
        yield pending, torch.stack(images)


@torch.inference_mode()
def predict_probs(model: nn.Module, samples: Sequence[Sample], indices: Sequence[int],
                  batch: int) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(index, probs (C, H, W) float32 on CPU)`` for each requested sample, in order."""
    dev = device()
    model = model.to(dev).eval()
    for idx, x in _groups(samples, indices, batch):
        probs = model(x.to(dev))["out"].float().softmax(dim=1).cpu()
        yield from zip(idx, probs, strict=True)
