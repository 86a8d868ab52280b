"""PSPNet / DeepLabv2 on dilated ResNets: shapes, aux head, output stride, pretrained files,
head learning-rate groups. Tiny inputs, no pretrained weights needed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import resnet50

from dars.errors import DarsError
from dars.models import build_model
from dars.models.backbone import ResNetBackbone, load_pretrained, lr_groups

X = torch.randn(2, 3, 33, 33)


@pytest.fixture(scope="module")
def pspnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model({"name": "pspnet", "backbone": None, "deep_stem": False}, 5)


def test_pspnet_shapes_and_aux_head_only_in_training(pspnet: torch.nn.Module) -> None:
    pspnet.train()
    out = pspnet(X)
    assert set(out) == {"out", "aux"}
    assert out["out"].shape == out["aux"].shape == (2, 5, 33, 33)
    pspnet.eval()
    with torch.no_grad():
        assert set(pspnet(X[:1])) == {"out"}


def test_deeplabv2_resnet101_has_aspp_and_no_aux() -> None:
    model = build_model({"name": "deeplabv2", "backbone": None, "deep_stem": False}, 4)
    assert len(model.backbone.layer3) == 23  # ResNet-101
    assert [b.dilation for b in model.aspp.branches] == [(r, r) for r in (6, 12, 18, 24)]
    out = model.train()(X)
    assert set(out) == {"out"} and out["out"].shape == (2, 4, 33, 33)


def test_backbone_output_stride_8_and_dilation_in_every_block(pspnet: torch.nn.Module) -> None:
    c3, c4 = pspnet.backbone(X)
    assert c3.shape[-2:] == c4.shape[-2:] == (5, 5)  # 33 = 8 * 4 + 1
    for layer, d in ((pspnet.backbone.layer3, 2), (pspnet.backbone.layer4, 4)):
        assert all(block.conv2.dilation == (d, d) and block.conv2.stride == (1, 1)
                   for block in layer)


def test_head_parameters_get_ten_times_the_lr(pspnet: torch.nn.Module) -> None:
    (backbone, one), (head, ten) = lr_groups(pspnet, 10.0)
    assert (one, ten) == (1.0, 10.0)
    assert {id(p) for p in backbone} == {id(p) for p in pspnet.backbone.parameters()}
    assert {id(p) for p in head} == {id(p) for n, p in pspnet.named_parameters()
                                    if not n.startswith("backbone.")}
    tiny = build_model({"name": "tiny", "width": 8}, 3)
    assert [m for _, m in lr_groups(tiny, 10.0)] == [1.0]


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_torchvision_weights_load_wrapped_or_prefixed(tmp_path: Path) -> None:
    torch.manual_seed(1)
    reference = resnet50().state_dict()  # includes fc.*, dropped on load
    wrapped = {"state_dict": {f"module.{k}": v for k, v in reference.items()}}
    torch.save(wrapped, tmp_path / "r50.pth")
    model = build_model({"name": "pspnet", "backbone": "resnet50", "deep_stem": False}, 3)
    load_pretrained(model, {"name": "pspnet", "pretrained": str(tmp_path / "r50.pth")})
    loaded = model.backbone.state_dict()
    assert all(torch.equal(loaded[k], reference[k]) for k in loaded)


def test_deep_stem_weights_load_and_formats_are_checked(tmp_path: Path) -> None:
    torch.manual_seed(2)
    source = ResNetBackbone("resnet50", deep_stem=True)
    state = {**source.state_dict(), "fc.weight": torch.zeros(1000, 2048)}
    torch.save(state, tmp_path / "resnet50_v2.pth")
    target = ResNetBackbone("resnet50", deep_stem=True)
    target.load_pretrained(tmp_path / "resnet50_v2.pth")
    assert _same(source, target)
    with pytest.raises(DarsError, match="deep .* stem; set model.deep_stem: true"):
        ResNetBackbone("resnet50").load_pretrained(tmp_path / "resnet50_v2.pth")
    with pytest.raises(DarsError, match="does not fit this backbone"):
        ResNetBackbone("resnet101", deep_stem=True).load_pretrained(tmp_path / "resnet50_v2.pth")
    torch.save({"encoder.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(DarsError, match="not a ResNet state dict in torchvision or semseg"):
        target.load_pretrained(tmp_path / "other.pth")
    with pytest.raises(DarsError, match="model.pretrained: file not found"):
        target.load_pretrained(tmp_path / "missing.pth")


def test_pretrained_on_a_model_without_backbone_is_refused() -> None:
    tiny = build_model({"name": "tiny", "width": 8}, 3)
    with pytest.raises(DarsError, match="model 'tiny' has no pretrained backbone"):
        load_pretrained(tiny, {"name": "tiny", "pretrained": "x.pth"})
    load_pretrained(tiny, {"name": "tiny", "pretrained": None})  # nothing to do
