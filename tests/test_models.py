"""PSPNet / DeepLabv2 on dilated ResNets: shapes, aux head, output stride, pretrained files,
head learning-rate groups. Tiny inputs, no pretrained weights needed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import resnet50

from dars.core import config as config_mod
from dars.core.errors import DarsError
from dars.core.options import ModelOptions
from dars.models import build_model
from dars.models.backbone import ResNetBackbone, load_pretrained, lr_groups

REPO = Path(__file__).resolve().parents[1]

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


# -- the released DeepLabv2 (CVMI-Lab/DARS 0cfe09a, model/deeplabv2.py, tool/train.py) -----------


@pytest.fixture(scope="module")
def released_deeplabv2() -> tuple[torch.nn.Module, dict]:
    """The model of config/cityscapes_1-8_crop361_deeplabv2.yaml (without its weights file)."""
    cfg = config_mod.load(REPO / "config" / "cityscapes_1-8_crop361_deeplabv2.yaml")
    torch.manual_seed(3)
    return build_model(ModelOptions.from_config(cfg).params(), 19), cfg


def _released_aspp(branches: torch.nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    """Classifier_Module.forward as released (deeplabv2.py:131-135), with the branches built
    for rates 6, 12, 18, 24: the ``return`` sits inside the loop."""
    out = branches[0](x)
    for i in range(len(branches) - 1):
        out += branches[i + 1](x)
        return out


def test_released_deeplabv2_aspp_sums_what_the_released_forward_sums(
        released_deeplabv2: tuple[torch.nn.Module, dict]) -> None:
    model, _ = released_deeplabv2
    torch.manual_seed(4)
    released = torch.nn.ModuleList(
        torch.nn.Conv2d(2048, 19, 3, padding=r, dilation=r) for r in (6, 12, 18, 24))
    with torch.no_grad():  # ours holds the branches the released forward reaches
        for ours, theirs in zip(model.aspp.branches, released, strict=False):
            ours.weight.copy_(theirs.weight)
            ours.bias.copy_(theirs.bias)
        x = torch.randn(1, 2048, 13, 13)
        assert torch.allclose(model.aspp(x), _released_aspp(released, x), atol=1e-5)


def test_released_deeplabv2_parameter_groups(
        released_deeplabv2: tuple[torch.nn.Module, dict]) -> None:
    """tool/train.py:193-202: groups conv1, bn1, layer1, layer2, layer3 at base lr, layer4 and
    layer5 (the ASPP) at 10x (index_split = 5 of pretrained_layers + new_layers)."""
    model, cfg = released_deeplabv2
    (slow, one), (fast, ten) = lr_groups(model, cfg["train"]["head_lr_mult"],
                                         cfg["train"]["head_lr_stages"])
    assert (one, ten) == (1.0, 10.0)
    bb = model.backbone
    released = [[bb.conv1, bb.bn1, bb.layer1, bb.layer2, bb.layer3], [bb.layer4, model.aspp]]
    assert [{id(p) for p in group} for group in (slow, fast)] == [
        {id(p) for m in modules for p in m.parameters()} for modules in released]


def test_released_deeplabv2_batchnorm_scale_and_shift_are_frozen_not_its_statistics(
        released_deeplabv2: tuple[torch.nn.Module, dict]) -> None:
    """deeplabv2.py:79-91, 148, 176 set requires_grad = False on every BatchNorm parameter;
    freeze_batchnorm (deeplabv2.py:290) is never called, so train mode still normalises with
    the batch and updates the running statistics."""
    model, _ = released_deeplabv2
    norms = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 1 + 3 * 33 + 4  # stem, 33 bottlenecks, 4 downsample branches
    assert not any(p.requires_grad for m in norms for p in m.parameters())
    convs = [m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.weight.requires_grad for m in convs)
    stats = [m.running_mean.clone() for m in norms]
    model.train()(torch.randn(2, 3, 41, 41))["out"].sum().backward()
    assert all(m.weight.grad is None and m.bias.grad is None for m in norms)
    assert all(not torch.equal(m.running_mean, s) for m, s in zip(norms, stats, strict=True))
    model.zero_grad()


def test_released_deeplabv2_stride_and_pool_positions(
        released_deeplabv2: tuple[torch.nn.Module, dict]) -> None:
    """deeplabv2.py:77, 151: layer2 downsamples in its 1x1 conv, the stem pool rounds up: a
    68-pixel input is 34 after conv1, ceil((34 + 2 - 3) / 2) + 1 = 18 after the pool, 9 after
    layer2 (torchvision: 17 and 9)."""
    model, _ = released_deeplabv2
    bb = model.backbone
    first = bb.layer2[0]
    assert (first.conv1.stride, first.conv2.stride) == ((2, 2), (1, 1))
    x = torch.randn(1, 3, 68, 68)
    with torch.no_grad():
        pooled = bb.maxpool(bb.relu(bb.bn1(bb.conv1(x))))
        assert pooled.shape[-1] == 18
        assert bb.layer2(bb.layer1(pooled)).shape[-1] == 9
        assert bb.layer3[0].conv1.stride == (1, 1)


def test_torchvision_resnet101_loads_into_the_released_deeplabv2(tmp_path: Path) -> None:
    """resnet101-5d3b4d8f.pth format (torchvision, 7x7 stem): every tensor lands, none left."""
    torch.manual_seed(5)
    from torchvision.models import resnet101

    reference = resnet101()
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 2)
    state = reference.state_dict()
    torch.save(state, tmp_path / "resnet101-5d3b4d8f.pth")
    cfg = config_mod.load(REPO / "config" / "cityscapes_1-8_crop361_deeplabv2.yaml")
    model_config = {**ModelOptions.from_config(cfg).params(),
                    "pretrained": str(tmp_path / "resnet101-5d3b4d8f.pth")}
    model = build_model(model_config, 19)
    load_pretrained(model, model_config)  # strict: no missing, no unexpected key
    loaded = model.backbone.state_dict()
    expected = {k for k in state if not k.startswith("fc.")}
    assert set(loaded) == expected
    assert all(torch.equal(loaded[k], state[k]) for k in expected)
