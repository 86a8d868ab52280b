"""DeepLabv2 (Chen et al., TPAMI 2017) on a dilated ResNet: the paper's comparison model.

ASPP classifier: one 3x3 conv on layer4 per dilation rate, each giving class scores, summed; no
auxiliary head. Paper rates 6, 12, 18, 24; released model sums the first two (``aspp_rates``)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from dars.models.backbone import FEATURE_CHANNELS, ResNetBackbone
from dars.models.pspnet import upsample_logits

RATES = (6, 12, 18, 24)


class ASPPClassifier(nn.Module):
    def __init__(self, channels: int, num_classes: int, rates: Sequence[int] = RATES) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(channels, num_classes, 3, padding=r, dilation=r) for r in rates)
        for conv in self.branches:  # the reference initialisation: N(0, 0.01), zero bias
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        return sum(branch(x) for branch in self.branches)


class DeepLabV2(nn.Module):
    """``forward`` returns ``{"out": logits}`` at input resolution."""

    def __init__(self, num_classes: int, depth: str = "resnet101",
                 aspp_rates: Sequence[int] = RATES, **backbone_options: bool) -> None:
        super().__init__()
        self.backbone = ResNetBackbone(depth, **backbone_options)
        self.aspp = ASPPClassifier(FEATURE_CHANNELS[1], num_classes, aspp_rates)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        _, c4 = self.backbone(x)
        return {"out": upsample_logits(self.aspp(c4), x.shape[-2:])}
