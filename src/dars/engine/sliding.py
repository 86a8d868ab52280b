"""Whole-image and sliding-window softmax, with optional horizontal-flip averaging.

The paper evaluates at full resolution with windows of the training crop size at stride 2/3,
averaging the softmax where windows overlap (the authors' semseg ``scale_process``). A network
trained on 361x361 crops sees the same context size at test time that way, and a 1024x2048
Cityscapes image never has to fit in one forward pass.

Windows never exceed the image: a side shorter than the crop is covered by one window of that
side's length (no padding), so when the crop covers the image, sliding mode is exactly
whole-image mode.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Window offsets along one side: every ``stride``, the last one flush with the end."""
    if size <= crop:
        return [0]
    count = math.ceil((size - crop) / stride) + 1
    return [min(i * stride, size - crop) for i in range(count)]


def forward_probs(model: nn.Module, x: Tensor, flip: bool) -> Tensor:
    """Softmax (B, C, h, w) in float32; with ``flip``, averaged with the mirrored prediction."""
    probs = model(x)["out"].float().softmax(dim=1)
    if flip:
        probs = (probs + model(x.flip(-1))["out"].float().softmax(dim=1).flip(-1)) / 2
    return probs


def sliding_probs(model: nn.Module, x: Tensor, crop: int, stride_ratio: float,
                  flip: bool) -> Tensor:
    """Softmax of a batch of equally sized images from overlapping ``crop`` windows."""
    b, _, h, w = x.shape
    stride = max(1, math.ceil(crop * stride_ratio))
    ch, cw = min(crop, h), min(crop, w)
    total: Tensor | None = None
    count = torch.zeros(1, 1, h, w, device=x.device)
    for top in window_starts(h, crop, stride):
        for left in window_starts(w, crop, stride):
            window = (..., slice(top, top + ch), slice(left, left + cw))
            probs = forward_probs(model, x[window], flip)
            if total is None:
                total = torch.zeros(b, probs.shape[1], h, w, device=x.device)
            total[window] += probs
            count[window] += 1
    assert total is not None  # at least one window always exists
    return total / count
