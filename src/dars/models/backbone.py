"""Dilated ResNet backbones (output stride 8); ImageNet weights from a local file only.

torchvision's ResNets with ``replace_stride_with_dilation`` and two details of the authors'
semseg reference: dilation 2/4 in every 3x3 conv of layer3/layer4, the first block's included,
and its three-conv ``deep_stem`` (``resnet50_v2.pth``). The released DeepLabv2's Caffe-style
ResNet (deeplabv2.py, from AdvSemiSeg) needs ``stride_in_1x1`` (:77), ``ceil_mode_pool`` (:151)
and ``frozen_bn_affine`` (:79-91; statistics still update: ``freeze_batchnorm`` is never called)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor, nn

from dars.core.errors import DarsError
from dars.models.checkpoint import load_weights_only

log = logging.getLogger(__name__)

DEPTHS = ("resnet50", "resnet101", "resnet152")
FEATURE_CHANNELS = (1024, 2048)  # layer3, layer4 of a Bottleneck ResNet


def conv_bn_relu(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """3x3 convolution (no bias: BatchNorm follows), BatchNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ResNetBackbone(nn.Module):
    """ResNet trunk at output stride 8; ``forward`` returns (layer3, layer4) features.
    Attribute names follow the torchvision/semseg state dicts, so weights load unrenamed."""

    def __init__(self, depth: str = "resnet50", deep_stem: bool = False,
                 frozen_bn_affine: bool = False, stride_in_1x1: bool = False,
                 ceil_mode_pool: bool = False) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise DarsError(f"model.backbone {depth!r} is not supported; use one of "
                            f"{list(DEPTHS)}")
        # imported here: torchvision takes seconds to import and the tiny model never needs it
        from torchvision.models import resnet

        net = getattr(resnet, depth)(weights=None,
                                     replace_stride_with_dilation=[False, True, True])
        for layer, dilation in ((net.layer3, 2), (net.layer4, 4)):
            first = layer[0].conv2
            first.dilation, first.padding = (dilation, dilation), (dilation, dilation)
        if stride_in_1x1:
            for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
                first = layer[0]
                first.conv1.stride, first.conv2.stride = first.conv2.stride, (1, 1)
        net.maxpool.ceil_mode = ceil_mode_pool
        self.deep_stem = deep_stem
        if deep_stem:
            self.conv1, self.bn1, _ = conv_bn_relu(3, 64, stride=2)
            self.conv2, self.bn2, _ = conv_bn_relu(64, 64)
            self.conv3, self.bn3, _ = conv_bn_relu(64, 128)
            # layer1 now receives 128 channels instead of 64
            net.layer1[0].conv1 = nn.Conv2d(128, 64, 1, bias=False)
            net.layer1[0].downsample[0] = nn.Conv2d(128, 256, 1, bias=False)
        else:
            self.conv1, self.bn1 = net.conv1, net.bn1
        self.relu, self.maxpool = nn.ReLU(inplace=True), net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1, net.layer2, net.layer3, net.layer4)
        if frozen_bn_affine:
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.weight.requires_grad_(False)
                    module.bias.requires_grad_(False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        if self.deep_stem:
            x = self.relu(self.bn2(self.conv2(x)))
            x = self.relu(self.bn3(self.conv3(x)))
        x = self.layer2(self.layer1(self.maxpool(x)))
        c3 = self.layer3(x)
        return c3, self.layer4(c3)

    def load_pretrained(self, path: str | Path) -> None:
        """Load ImageNet weights from ``path``; every backbone tensor must be in the file."""
        state = _read_state_dict(Path(path))
        has_deep_stem = "conv3.weight" in state
        if has_deep_stem != self.deep_stem:
            kind = "a deep (3-conv, semseg)" if has_deep_stem else "a torchvision 7x7"
            raise DarsError(f"model.pretrained {path} has {kind} stem; set model.deep_stem: "
                            f"{str(has_deep_stem).lower()}")
        try:
            self.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise DarsError(f"model.pretrained {path} does not fit this backbone (wrong ResNet "
                            f"depth?): {str(exc).splitlines()[1].strip()}") from exc
        log.info("loaded ImageNet backbone weights from %s", path)


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """The backbone tensors of a pretrained file, unwrapped and without the classifier."""
    obj = load_weights_only(path, "model.pretrained")
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    state = {k.removeprefix("module."): v for k, v in obj.items()} if isinstance(obj, dict) else {}
    if "layer1.0.conv1.weight" not in state:
        raise DarsError(f"model.pretrained {path} is not a ResNet state dict in torchvision or "
                        "semseg format (expected keys like 'conv1.weight', "
                        "'layer1.0.conv1.weight')")
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def lr_groups(model: nn.Module, head_mult: float, fast_stages: Sequence[str] = ()
              ) -> list[tuple[list[nn.Parameter], float]]:
    """(parameters, lr multiplier): pretrained backbone 1x, the rest and ``fast_stages`` (the
    released DeepLabv2's layer4, tool/train.py:193-202) ``head_mult`` (the authors' 10x: new
    layers must move much further). A model without a ``backbone``: one group at 1x."""
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        return [(list(model.parameters()), 1.0)]
    fast = {id(p) for stage in fast_stages for p in getattr(backbone, stage).parameters()}
    slow = [p for p in backbone.parameters() if id(p) not in fast]
    own = {id(p) for p in slow}
    head = [p for p in model.parameters() if id(p) not in own]
    return [(slow, 1.0), (head, head_mult)]


def load_pretrained(model: nn.Module, model_config: dict) -> None:
    """Load ``model.pretrained`` (if set) into the model's backbone; refuse models without one
    rather than silently training from scratch."""
    path = model_config.get("pretrained")
    if not path:
        return
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, ResNetBackbone):
        raise DarsError(f"model.pretrained is set but model {model_config['name']!r} has no "
                        "pretrained backbone")
    backbone.load_pretrained(path)
