"""A tiny U-Net-like network: the CPU demo's teacher (DeepLab-class is too slow on 2 cores).

Three stride-2 stages and a dilated residual context block at 1/8 (receptive field ~150 px)
recognise the object, a skip-connected decoder at 1/4 and 1/2 localises it. Logits at 1/2,
upsampled: a full-resolution stage cost a third more time per step for no better mIoU (sizing)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dars.models.backbone import conv_bn_relu


class Residual(nn.Module):
    """x + f(x): lets the dilated context convolutions stack without hurting optimisation."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _resize_as(x: Tensor, ref: Tensor) -> Tensor:
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


class TinySegNet(nn.Module):
    """``width``: channels at 1/2 res (32: ~0.73 M parameters); sides divisible by 8 align skips."""

    def __init__(self, num_classes: int, width: int = 32) -> None:
        super().__init__()
        w = width
        self.stem = conv_bn_relu(3, w // 2)
        self.enc1 = nn.Sequential(conv_bn_relu(w // 2, w, stride=2), conv_bn_relu(w, w))
        self.enc2 = nn.Sequential(conv_bn_relu(w, 2 * w, stride=2), conv_bn_relu(2 * w, 2 * w))
        self.enc3 = nn.Sequential(conv_bn_relu(2 * w, 4 * w, stride=2), conv_bn_relu(4 * w, 4 * w))
        self.context = nn.Sequential(
            *(Residual(conv_bn_relu(4 * w, 4 * w, dilation=d)) for d in (2, 4)))
        self.dec2 = conv_bn_relu(4 * w + 2 * w, 2 * w)  # 1/4: context + enc2 skip
        self.dec1 = conv_bn_relu(2 * w + w, w)  # 1/2: dec2 + enc1 skip
        self.classifier = nn.Conv2d(w, num_classes, 1)
        # oneDNN runs these small convs ~2x faster channels-last on CPU (2 cores, batch 16 at
        # 64 px: ~130 vs ~250 ms a step); survives .to(device), load_state_dict; harmless on GPU.
        self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = x.contiguous(memory_format=torch.channels_last)
        f1 = self.enc1(self.stem(x))
        f2 = self.enc2(f1)
        f3 = self.context(self.enc3(f2))
        d2 = self.dec2(torch.cat([_resize_as(f3, f2), f2], 1))
        d1 = self.dec1(torch.cat([_resize_as(d2, f1), f1], 1))
        return {"out": _resize_as(self.classifier(d1), x)}
