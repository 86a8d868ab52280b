"""PSPNet (Zhao et al., CVPR 2017) on a dilated ResNet: the paper's main model.

Pyramid pooling over bins 1, 2, 3, 6 (each to 2048/4 channels), a 3x3 fusion conv to 512 and
a 1x1 classifier; an auxiliary FCN head on layer3 (weight 0.4, :func:`dars.engine.train.seg_loss`)
regularises training only. Logits are upsampled with ``align_corners=True`` as in the reference,
hence its crop sizes 8k+1 (361, 713, 321)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dars.models.backbone import FEATURE_CHANNELS, ResNetBackbone, conv_bn_relu

BINS = (1, 2, 3, 6)
DROPOUT = 0.1


def upsample(x: Tensor, size: torch.Size) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def upsample_logits(logits: Tensor, size: torch.Size) -> Tensor:
    """Logits to the input size in float32, also under bf16 autocast: the 8x upsampled map is
    what the loss and the confidences are computed from, and bf16 keeps 3 significant digits."""
    with torch.autocast(logits.device.type, enabled=False):
        return upsample(logits.float(), size)


def _classifier(cin: int, mid: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(*conv_bn_relu(cin, mid), nn.Dropout2d(DROPOUT),
                         nn.Conv2d(mid, num_classes, 1))


class PyramidPooling(nn.Module):
    """Concatenate the features with their average-pooled summaries at several grid sizes."""

    def __init__(self, channels: int, bins: tuple[int, ...] = BINS) -> None:
        super().__init__()
        reduced = channels // len(bins)
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(channels, reduced, 1, bias=False),
                          nn.BatchNorm2d(reduced), nn.ReLU(inplace=True))
            for b in bins)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, *(upsample(stage(x), x.shape[-2:]) for stage in self.stages)], 1)


class PSPNet(nn.Module):
    """``aux_head=False`` builds no aux head: its gradient-less parameters fail DDP at step 2."""

    def __init__(self, num_classes: int, depth: str = "resnet50", aux_head: bool = True,
                 **backbone_options: bool) -> None:
        super().__init__()
        c3, c4 = FEATURE_CHANNELS
        self.backbone = ResNetBackbone(depth, **backbone_options)
        self.ppm = PyramidPooling(c4)
        self.cls = _classifier(2 * c4, 512, num_classes)
        self.aux = _classifier(c3, 256, num_classes) if aux_head else None

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        size = x.shape[-2:]
        c3, c4 = self.backbone(x)
        out = {"out": upsample_logits(self.cls(self.ppm(c4)), size)}
        if self.training and self.aux is not None:
            out["aux"] = upsample_logits(self.aux(c3), size)
        return out
