"""Whole-image and sliding-window scores with optional horizontal-flip averaging, as released.

Every detail follows the authors' semseg ``scale_process``/``net_process``: the padding
(:func:`pad_to_crop`), the windows (:func:`window_starts`, :func:`window_stride`), the sum
divided by the per-pixel window count. A window and its mirror are averaged as **logits** for
pseudo-labels, as **probabilities** for validation (``infer``/``evaluate`` ``average``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Window offsets along one side of length ``size >= crop``: every ``stride``, the last one
    flush with the end (released: ``s = min(i * stride + crop, size) - crop``)."""
    count = math.ceil((size - crop) / stride) + 1
    return [min(i * stride, size - crop) for i in range(count)]


def window_stride(crop: int, stride_ratio: float) -> int:
    """``ceil(crop * stride_ratio)`` as released (``int(np.ceil(crop_h * stride_rate))`` with
    ``stride_rate = 2/3``). The product is rounded to 4 decimals first so that the config's
    0.6666667 gives what 2/3 gives: 321 x 2/3 = 214 exactly, 321 x 0.6666667 = 214.00001."""
    return max(1, math.ceil(round(crop * stride_ratio, 4)))


def pad_to_crop(x: Tensor, crop: int) -> tuple[Tensor, int, int]:
    """``x`` padded with 0 (a normalised image's mean colour) to at least ``crop`` per side,
    ``pad // 2`` before; returns the padded batch and the (top, left) pad."""
    h, w = x.shape[-2:]
    ph, pw = max(crop - h, 0), max(crop - w, 0)
    top, left = ph // 2, pw // 2
    if ph or pw:
        x = F.pad(x, (left, pw - left, top, ph - top), value=0.0)
    return x, top, left


def forward_scores(model: nn.Module, x: Tensor, flip: bool, average: str = "logits") -> Tensor:
    """Logits or softmax (``average``) of ``x``, with ``flip`` averaged with the mirror's."""
    def scores(batch: Tensor) -> Tensor:
        out = model(batch)["out"].float()
        return out.softmax(dim=1) if average == "probs" else out

    result = scores(x)
    if flip:
        result = (result + scores(x.flip(-1)).flip(-1)) / 2
    return result


def sliding_scores(model: nn.Module, x: Tensor, crop: int, stride_ratio: float, flip: bool,
                   average: str = "logits") -> Tensor:
    """Scores of a batch of equally sized images averaged over overlapping ``crop`` windows."""
    b, _, h, w = x.shape
    x, top, left = pad_to_crop(x, crop)
    ph, pw = x.shape[-2:]
    stride = window_stride(crop, stride_ratio)
    total: Tensor | None = None
    count = torch.zeros(1, 1, ph, pw, device=x.device)
    for y in window_starts(ph, crop, stride):
        for x0 in window_starts(pw, crop, stride):
            window = (..., slice(y, y + crop), slice(x0, x0 + crop))
            scores = forward_scores(model, x[window], flip, average)
            if total is None:
                total = torch.zeros(b, scores.shape[1], ph, pw, device=x.device)
            total[window] += scores
            count[window] += 1
    assert total is not None  # at least one window always exists
    return (total / count)[..., top:top + h, left:left + w]
