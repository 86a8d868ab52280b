"""The released inference protocol (docs/METHOD.md, "Released inference"), checked against
values worked out by hand: base-size resize and back, mean-colour padding, window positions,
logit (not probability) averaging over windows and flip, temperature on logits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from fake_datasets import cityscapes_split_lines, write_cityscapes, write_split, write_voc
from PIL import Image
from torch import nn

from dars.core import config
from dars.core.options import CalibrateOptions, EvaluateOptions, InferOptions
from dars.data.splits import Sample
from dars.engine import calibrate as calibrate_mod
from dars.engine import evaluate as evaluate_mod
from dars.engine import infer as infer_mod
from dars.engine.predict import PredictOptions, predict_probs, predict_scores
from dars.engine.sliding import forward_scores, sliding_scores, window_starts, window_stride
from dars.models import build_model, checkpoint
from dars.store.probstore import ProbStore

SCHEMA_STRIDE = config.validate({})["infer"]["stride_ratio"]  # the default the configs use


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def _image(tmp_path: Path, h: int, w: int) -> list[Sample]:
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(tmp_path / "im.png")
    return [Sample("im", tmp_path / "im.png", None)]


# -- fake models with known logits ----------------------------------------------------------
class ColumnLogits(nn.Module):
    """Two classes: logit 0 = the column index within the input, logit 1 = 0. Not mirror
    symmetric, so flip averaging changes it; blind to pixel values."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, h, w = x.shape
        col = torch.arange(w, dtype=torch.float32).expand(b, 1, h, w)
        return {"out": torch.cat([col, torch.zeros_like(col)], dim=1)}


class PerCallLogits(nn.Module):
    """Two classes, the same logits at every pixel: [values[k], 0] on the k-th call."""

    def __init__(self, values: list[float]) -> None:
        super().__init__()
        self.values, self.calls = values, 0

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        v = self.values[self.calls]
        self.calls += 1
        out = torch.zeros(x.shape[0], 2, *x.shape[-2:])
        out[:, 0] = v
        return {"out": out}


class ConstantLogits(nn.Module):
    """The same logit vector at every pixel (survives any averaging and resizing)."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.logits = torch.tensor(logits)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, h, w = x.shape
        return {"out": self.logits.view(1, -1, 1, 1).expand(b, -1, h, w).clone()}


class Recording(nn.Module):
    """A real (tiny) network that records the shape of every input it is given."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.net = build_model({"name": "tiny", "width": 8}, num_classes)
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.shapes.append(tuple(x.shape))
        return self.net(x)


class Corners(nn.Module):
    """Records each window's input (the image content tells where it was cut)."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.inputs.append(x.clone())
        return {"out": torch.zeros(x.shape[0], 2, *x.shape[-2:])}


# -- windows ------------------------------------------------------------------------------
@pytest.mark.parametrize(("crop", "stride"), [(361, 241), (713, 476), (321, 214)])
def test_window_stride_is_ceil_two_thirds_of_the_crop(crop: int, stride: int) -> None:
    """ceil(2/3 crop): 240.67 -> 241, 475.33 -> 476, and 321 x 2/3 = 214 exactly (the config's
    0.6666667 must not push it to 215)."""
    assert window_stride(crop, SCHEMA_STRIDE) == stride


def _window_origins(h: int, w: int, crop: int) -> list[tuple[int, int]]:
    """Top-left corners of the windows the model is given, read from coordinate images."""
    rows = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1).expand(1, 1, h, w)
    cols = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w).expand(1, 1, h, w)
    x = torch.cat([rows, cols, torch.zeros_like(rows)], dim=1)
    model = Corners()
    sliding_scores(model, x, crop, SCHEMA_STRIDE, flip=False)
    assert all(t.shape[-2:] == (crop, crop) for t in model.inputs)
    return [(int(t[0, 0, 0, 0]), int(t[0, 1, 0, 0])) for t in model.inputs]


def test_released_windows_on_cityscapes_at_base_size_1024() -> None:
    """512 x 1024 at crop 361, stride 241: rows ceil(151/241)+1 = 2 windows at 0, 151 (flush);
    columns ceil(663/241)+1 = 4 at 0, 241, 482, 663 (flush)."""
    assert window_starts(512, 361, 241) == [0, 151]
    assert window_starts(1024, 361, 241) == [0, 241, 482, 663]
    assert _window_origins(512, 1024, 361) == [(r, c) for r in (0, 151)
                                               for c in (0, 241, 482, 663)]


def test_released_windows_on_cityscapes_native_at_crop_713() -> None:
    """1024 x 2048, stride 476: rows 0, 311; columns 0, 476, 952, 1335."""
    assert window_starts(1024, 713, 476) == [0, 311]
    assert window_starts(2048, 713, 476) == [0, 476, 952, 1335]


def test_a_side_shorter_than_the_crop_is_padded_with_the_mean_colour() -> None:
    """VOC at base size 400: 300 x 400 at crop 321. Rows are padded by 21 = 10 above + 11
    below with 0 (the mean colour after normalisation); columns get windows at 0 and 79."""
    x = torch.rand(1, 3, 300, 400) + 1  # never 0: padding is recognisable
    model = Corners()
    out = sliding_scores(model, x, 321, SCHEMA_STRIDE, flip=False)
    assert out.shape[-2:] == (300, 400)
    assert len(model.inputs) == 2
    for seen, left in zip(model.inputs, (0, 79), strict=True):
        assert seen.shape[-2:] == (321, 321)
        assert (seen[..., :10, :] == 0).all() and (seen[..., 310:, :] == 0).all()
        assert torch.equal(seen[..., 10:310, :], x[..., left:left + 321])


@torch.no_grad()
def test_padding_matches_a_forward_of_the_mean_padded_image() -> None:
    """crop 65 on 20 x 28: the network sees the image padded 22/23 rows and 18/19 columns."""
    torch.manual_seed(0)
    tiny = build_model({"name": "tiny", "width": 8}, 4).eval()
    x = torch.randn(2, 3, 20, 28)
    padded = F.pad(x, (18, 19, 22, 23), value=0.0)
    expected = forward_scores(tiny, padded, flip=True)[..., 22:42, 18:46]
    assert torch.allclose(sliding_scores(tiny, x, 65, SCHEMA_STRIDE, flip=True), expected,
                          atol=1e-6)


@torch.no_grad()
def test_sliding_equals_whole_for_a_pointwise_model() -> None:
    """Windows only change context; a 1x1 convolution has none, so any windowing agrees."""
    torch.manual_seed(0)
    point = nn.Conv2d(3, 4, 1)

    class Pointwise(nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"out": point(x)}

    x = torch.randn(2, 3, 20, 28)
    for average in ("logits", "probs"):
        whole = forward_scores(Pointwise(), x, True, average)
        for crop in (8, 13):
            assert torch.allclose(sliding_scores(Pointwise(), x, crop, SCHEMA_STRIDE, True,
                                                 average), whole, atol=1e-6)


# -- what is averaged ---------------------------------------------------------------------
def test_two_windows_average_logits_not_probabilities(tmp_path: Path) -> None:
    """A 1 x 3 image, crop 2, stride 1: windows at columns 0-1 and 1-2. The model gives logits
    [0.5, 0] in the first and [2.5, 0] in the second, so the middle column averages to [1.5, 0]:
    p = sigmoid(1.5) = 0.8176, where averaging probabilities would give
    (sigmoid(0.5) + sigmoid(2.5)) / 2 = 0.7733. The outer columns see one window each."""
    samples = _image(tmp_path, 1, 3)
    options = PredictOptions(mode="sliding", crop_size=2, stride_ratio=0.5)
    # the 1-row image is padded to 2 rows; the windows keep their row-major order
    (_, probs), = predict_probs(PerCallLogits([0.5, 2.5]), samples, [0], 1, options)
    assert probs[0, 0].tolist() == pytest.approx([sigmoid(0.5), sigmoid(1.5), sigmoid(2.5)],
                                                 abs=1e-6)
    assert probs[0, 0, 1].item() != pytest.approx((sigmoid(0.5) + sigmoid(2.5)) / 2, abs=1e-3)
    released_val = PredictOptions(mode="sliding", crop_size=2, stride_ratio=0.5,
                                  average="probs")
    (_, probs), = predict_probs(PerCallLogits([0.5, 2.5]), samples, [0], 1, released_val)
    assert probs[0, 0, 1].item() == pytest.approx((sigmoid(0.5) + sigmoid(2.5)) / 2, abs=1e-6)


def test_flip_averages_logits(tmp_path: Path) -> None:
    """ColumnLogits on a 3-wide image: direct logit 0 = 0, 1, 2; mirrored and flipped back
    2, 1, 0. The logit average is 1 everywhere (p = sigmoid(1)); a probability average would
    give (sigmoid(0) + sigmoid(2)) / 2 = 0.6904 at the ends."""
    samples = _image(tmp_path, 2, 3)
    (_, probs), = predict_probs(ColumnLogits(), samples, [0], 1, PredictOptions(flip=True))
    assert torch.allclose(probs[0], torch.full((2, 3), sigmoid(1.0)), atol=1e-6)
    (_, probs), = predict_probs(ColumnLogits(), samples, [0], 1,
                                PredictOptions(flip=True, average="probs"))
    ends = (sigmoid(0.0) + sigmoid(2.0)) / 2
    assert probs[0, 0].tolist() == pytest.approx([ends, sigmoid(1.0), ends], abs=1e-6)


def test_scores_are_resized_back_bilinearly(tmp_path: Path) -> None:
    """A 2 x 4 image at base size 2 is seen as 1 x 2 (long side 4 -> 2, short 2 -> 1). The
    ColumnLogits there, [0, 1], resized back to 4 columns with half-pixel centres (sources
    -0.25, 0.25, 0.75, 1.25, clamped) are 0, 0.25, 0.75, 1 (cv2 INTER_LINEAR)."""
    samples = _image(tmp_path, 2, 4)
    (_, scores), = predict_scores(ColumnLogits(), samples, [0], 1, PredictOptions(base_size=2))
    assert scores.shape == (2, 2, 4)
    assert torch.allclose(scores[0], torch.tensor([[0, 0.25, 0.75, 1.0]] * 2))


# -- temperature --------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [1.0, 1.27, 0.5])
def test_temperature_divides_the_logits(tmp_path: Path, temperature: float) -> None:
    """p_c = exp(z_c / T) / sum_k exp(z_k / T), computed here term by term, for z = (2, 0.5, -1)
    through base-size resize, sliding windows and flip (constant logits survive all three)."""
    z = [2.0, 0.5, -1.0]
    e = [math.exp(v / temperature) for v in z]
    expected = [v / sum(e) for v in e]
    samples = _image(tmp_path, 30, 40)
    options = PredictOptions(mode="sliding", crop_size=12, flip=True, base_size=20)
    (_, probs), = predict_probs(ConstantLogits(z), samples, [0], 1, options, temperature)
    assert probs.shape == (3, 30, 40)
    for c in range(3):
        assert torch.allclose(probs[c], torch.full((30, 40), expected[c]), atol=1e-6)


def test_infer_stores_the_temperature_scaled_softmax(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """infer(..., temperature=T) writes max/argmax of softmax(z / T); a store of another T is
    another job (not resumed)."""
    root = write_voc(tmp_path / "voc")
    cfg = config.validate({"dataset": {"name": "voc", "root": str(root), "splits": {
        "labeled": "labeled.txt", "unlabeled": "unlabeled.txt", "val": "val.txt"}},
        "infer": {"base_size": 20, "flip": True}})
    z = [0.0] * 21
    z[7], z[15] = 1.0, 0.6
    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(b"fingerprinted, never loaded")
    monkeypatch.setattr(infer_mod, "_load_teacher", lambda *_: ConstantLogits(z))
    t = 0.5
    expected = math.exp(1.0 / t) / (math.exp(1.0 / t) + math.exp(0.6 / t) + 19)
    options = InferOptions.from_config(cfg)
    infer_mod.infer(options, teacher, tmp_path / "probs.zarr", temperature=t)
    store = ProbStore(tmp_path / "probs.zarr")
    for block in store.blocks():
        for i, conf, pred in zip(block.indices, block.confidence, block.prediction, strict=True):
            h, w = store.shapes[i]
            assert np.allclose(conf[:h, :w].astype(np.float64), expected, atol=1e-3)
            assert (pred[:h, :w] == 7).all()
    assert infer_mod.job_fingerprint(teacher, options, t) != infer_mod.job_fingerprint(
        teacher, options, 1.0)


# -- full size out, resized in ------------------------------------------------------------
@pytest.mark.parametrize("dataset", ["cityscapes", "voc"])
def test_store_and_metrics_are_full_size_while_the_model_sees_the_base_size(
        dataset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cityscapes 32 x 64 at base size 32 is seen as 16 x 32; VOC unlabeled images
    41x29, 33x33, 45x37, 29x41 at base size 20 as 20x14, 20x20, 20x16, 14x20 (short side
    round(20 * short / long)). The store keeps the native sizes and the confusion matrix
    counts every labeled pixel of the full-size masks."""
    if dataset == "cityscapes":
        root = write_cityscapes(tmp_path / "cs", {"train": {"aachen": 4}, "val": {"ulm": 2}})
        write_split(root / "u.txt", cityscapes_split_lines(root, "train"))
        write_split(root / "v.txt", cityscapes_split_lines(root, "val"))
        splits = {"labeled": "u.txt", "unlabeled": "u.txt", "val": "v.txt"}
        base, seen_unlabeled = 32, {(16, 32)}
        native = [(32, 64)] * 4
    else:
        root = write_voc(tmp_path / "voc")
        splits = {"labeled": "labeled.txt", "unlabeled": "unlabeled.txt", "val": "val.txt"}
        base, seen_unlabeled = 20, {(20, 14), (20, 20), (20, 16), (14, 20)}
        native = [(41, 29), (33, 33), (45, 37), (29, 41)]
    cfg = config.validate({"dataset": {"name": dataset, "root": str(root), "splits": splits},
                           "infer": {"base_size": base, "flip": True, "batch_size": 2},
                           "evaluate": {"base_size": base, "flip": True}})
    classes = 19 if dataset == "cityscapes" else 21
    model = Recording(classes).eval()
    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(b"fingerprinted, never loaded")
    monkeypatch.setattr(infer_mod, "_load_teacher", lambda *_: model)
    infer_mod.infer(InferOptions.from_config(cfg), teacher, tmp_path / "probs.zarr")
    assert {s[-2:] for s in model.shapes} == seen_unlabeled
    assert [tuple(s) for s in ProbStore(tmp_path / "probs.zarr").shapes] == native

    model.shapes.clear()
    monkeypatch.setattr(checkpoint, "load", lambda *_: {"epoch": 1, "history": []})
    monkeypatch.setattr(evaluate_mod, "load_model", lambda *_: model)
    summary = evaluate_mod.evaluate(EvaluateOptions.from_config(cfg), teacher, tmp_path / "m.csv",
                                    tmp_path / "m.json", 0)
    val = sorted(root.glob("gtFine/val/*/*_labelIds.png") if dataset == "cityscapes"
                 else [root / "SegmentationClassAug" / f"2007_{i:06d}.png" for i in (8, 9)])
    if dataset == "cityscapes":
        labeled = sum(int(np.isin(np.array(Image.open(p)), [7, 8, 11, 21, 23, 24, 26, 33]).sum())
                      for p in val)
        assert {s[-2:] for s in model.shapes} == {(16, 32)}
    else:  # val images 37x45 and 41x29
        labeled = sum(int((np.array(Image.open(p)) != 255).sum()) for p in val)
        assert {s[-2:] for s in model.shapes} == {(16, 20), (20, 14)}
    metrics = pd.read_csv(tmp_path / "m.csv")
    assert metrics["gt_pixels"].sum() == labeled == metrics["pred_pixels"].sum()
    assert json.loads((tmp_path / "m.json").read_text()) == summary


def test_calibrate_fits_t_on_the_full_size_logits(folder_config: dict, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Logits (a, 0, 0) at every pixel, a on the most frequent class (frequency q): the NLL
    is minimal where exp(a/T) / (exp(a/T) + 2) = q, i.e. T = a / log(2q / (1 - q)). a is chosen
    so that T = 1.5; all 4 x 16 x 16 full-size val pixels count although the network sees 8 x 8."""
    masks = np.stack([np.array(Image.open(p)) for p in
                      sorted((Path(folder_config["dataset"]["root"]) / "masks").glob("*.png"))[8:]])
    counts = np.bincount(masks.ravel(), minlength=3)
    top = int(counts.argmax())
    q = counts[top] / counts.sum()
    a = 1.5 * math.log(2 * q / (1 - q))
    z = [0.0, 0.0, 0.0]
    z[top] = a
    folder_config["infer"].update(base_size=8, mode="sliding", crop_size=6, flip=True)
    model = tmp_path / "m.pt"
    monkeypatch.setattr(calibrate_mod, "load_model", lambda *_: ConstantLogits(z))
    t = calibrate_mod.calibrate(CalibrateOptions.from_config(folder_config), model,
                                tmp_path / "t.json")
    assert t == pytest.approx(1.5, rel=1e-3)
    assert json.loads((tmp_path / "t.json").read_text())["pixels"] == 4 * 16 * 16
