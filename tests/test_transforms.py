"""The training augmentation against a re-statement of the authors' util/transform.py."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dars.data.transforms import MEAN_COLOUR, Draw, FusedAugment, ReleasedAugment, crop_offset

IGNORE = 255


def released(image: np.ndarray, mask: np.ndarray, d: Draw, crop: int,
             ignore: int = IGNORE) -> tuple[np.ndarray, np.ndarray]:
    """RandScale, RandRotate, RandomGaussianBlur, RandomHorizontalFlip, Crop('rand') of
    CVMI-Lab/DARS util/transform.py with the choices ``d``, written the authors' way: every
    step on the whole image."""
    image = cv2.resize(image, None, fx=d.scale, fy=d.scale, interpolation=cv2.INTER_LINEAR)
    mask = cv2.resize(mask, None, fx=d.scale, fy=d.scale, interpolation=cv2.INTER_NEAREST)
    h, w = mask.shape
    if d.angle is not None:
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), d.angle, 1)
        image = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=MEAN_COLOUR)
        mask = cv2.warpAffine(mask, matrix, (w, h), flags=cv2.INTER_NEAREST,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=ignore)
    if d.blur:
        image = cv2.GaussianBlur(image, (5, 5), 0)
    if d.flip:
        image, mask = cv2.flip(image, 1), cv2.flip(mask, 1)
    pad_h, pad_w = max(crop - h, 0), max(crop - w, 0)
    if pad_h or pad_w:
        borders = (int(pad_h / 2), pad_h - int(pad_h / 2), int(pad_w / 2), pad_w - int(pad_w / 2))
        image = cv2.copyMakeBorder(image, *borders, cv2.BORDER_CONSTANT, value=MEAN_COLOUR)
        mask = cv2.copyMakeBorder(mask, *borders, cv2.BORDER_CONSTANT, value=ignore)
        h, w = mask.shape
    top, left = crop_offset(d.top, h, crop), crop_offset(d.left, w, crop)
    return image[top:top + crop, left:left + crop], mask[top:top + crop, left:left + crop]


def scene(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth image and a blocky 19-class mask with ignore, like a street scene's."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (7, 7), 0)
    mask = rng.integers(0, 19, (max(h // 8, 1), max(w // 8, 1)), dtype=np.uint8)
    mask[0, 0] = IGNORE
    return image, cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)


DRAWS = [  # scale, angle, blur, flip, top, left
    (1.7, 8.3, True, True, 0.31, 0.77),
    (2.6, -9.9, True, False, 0.999, 0.0),
    (0.55, None, False, True, 0.5, 0.5),  # smaller than the crop: centred padding
    (0.61, -4.0, True, True, 0.2, 0.9),  # padded on one side only, rotated and blurred
    (1.0, None, True, False, 0.0, 0.999),
    (3.0, 0.0, False, False, 0.42, 0.13),
]


@pytest.mark.parametrize("draw", DRAWS)
@pytest.mark.parametrize("crop", [45, 29])
def test_matches_the_released_transform(draw: tuple, crop: int) -> None:
    image, mask = scene(48, 96)
    d = Draw(*draw)
    ours = ReleasedAugment((0.5, 3.0), crop, True, IGNORE, 10, True).apply(image, mask, d)
    theirs = released(image, mask, d, crop)
    assert ours[0].shape == (crop, crop, 3) and ours[1].shape == (crop, crop)
    np.testing.assert_array_equal(ours[1], theirs[1])
    assert np.abs(ours[0].astype(int) - theirs[0].astype(int)).max() <= 1


def test_odd_padding_and_flip_match() -> None:
    """Odd padding puts the extra column right of the flipped image, as released."""
    image, mask = scene(21, 30)
    d = Draw(1.0, None, False, True, 0.0, 0.0)
    ours = ReleasedAugment((1.0, 1.0), 33, True, IGNORE).apply(image, mask, d)
    theirs = released(image, mask, d, 33)
    np.testing.assert_array_equal(ours[1], theirs[1])
    np.testing.assert_array_equal(ours[0], theirs[0])
    assert (ours[1][:, 0] == IGNORE).all() and (ours[1][:, -2:] == IGNORE).all()


@pytest.mark.parametrize("draw", DRAWS)
def test_fused_warp_stays_close_to_the_released_transform(draw: tuple) -> None:
    """train.augment: fused differs from the released pixels (one resampling, rounded
    nearest neighbour, blur across the crop's edges) but only slightly: on a scene of 24-pixel
    regions (13 pixels at scale 0.55) a border moved by one pixel changes up to ~8 % of the
    mask, so >= 90 % of it agrees; images within one grey level on average."""
    image, _ = scene(96, 192)
    regions = np.random.default_rng(2).integers(0, 19, (4, 8), dtype=np.uint8)
    mask = cv2.resize(regions, (192, 96), interpolation=cv2.INTER_NEAREST)
    d = Draw(*draw)
    for crop in (45, 97):
        ours = FusedAugment((0.5, 3.0), crop, True, IGNORE, 10, True).apply(image, mask, d)
        theirs = released(image, mask, d, crop)
        assert ours[0].shape == (crop, crop, 3) and ours[1].shape == (crop, crop)
        assert (ours[1] == theirs[1]).mean() >= 0.9
        assert np.abs(ours[0].astype(int) - theirs[0].astype(int)).mean() <= 1


def test_train_augment_fused_selects_the_warp(folder_config: dict, tmp_path: Path) -> None:
    from dars.core.options import TrainOptions
    from dars.engine.train import Trainer

    assert type(Trainer(TrainOptions.from_config(folder_config, 0), tmp_path / "a")
                .labeled.dataset.transform) is ReleasedAugment
    folder_config["train"]["augment"] = "fused"
    assert type(Trainer(TrainOptions.from_config(folder_config, 0), tmp_path / "b")
                .labeled.dataset.transform) is FusedAugment


def test_draw_follows_the_released_probabilities() -> None:
    t = ReleasedAugment((0.5, 2.0), 16, True, IGNORE, rotate=10, blur=True)
    rng = np.random.default_rng(0)
    draws = [t.draw(rng) for _ in range(4000)]
    assert all(0.5 <= d.scale < 2.0 for d in draws)
    angles = [d.angle for d in draws if d.angle is not None]
    assert all(-10 <= a <= 10 for a in angles)
    for share in (len(angles), sum(d.blur for d in draws), sum(d.flip for d in draws)):
        assert math.isclose(share / 4000, 0.5, abs_tol=0.04)


def test_disabled_steps_draw_nothing() -> None:
    t = ReleasedAugment((0.5, 2.0), 16, False, IGNORE)
    d = t.draw(np.random.default_rng(0))
    assert d.angle is None and not d.blur and not d.flip
    rng = np.random.default_rng(0)
    assert [d.scale, d.top, d.left] == [0.5 + 1.5 * rng.random(), rng.random(), rng.random()]


def test_labels_stay_valid_and_corners_become_ignore() -> None:
    image, mask = scene(40, 40)
    mask[mask == IGNORE] = 0
    x, y = ReleasedAugment((1.0, 1.0), 40, False, IGNORE, rotate=10).apply(
        image, mask, Draw(1.0, 10.0, False, False, 0.0, 0.0))
    assert set(np.unique(y).tolist()) <= set(range(19)) | {IGNORE} and y[0, 0] == IGNORE
    assert tuple(x[0, 0]) == MEAN_COLOUR


def test_dataset_item_is_seeded_and_normalised(folder_config: dict) -> None:
    from dars.core.options import DatasetOptions
    from dars.data.dataset import SegmentationDataset, dataset_spec

    spec = dataset_spec(DatasetOptions.from_config(folder_config))
    t = ReleasedAugment((0.5, 1.5), 16, True, IGNORE, rotate=10, blur=True)
    ds = SegmentationDataset(spec, spec.samples("labeled"), t)
    a, b = ds[(1, 7)], ds[(1, 7)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == 1
    assert a[0].shape == (3, 16, 16) and a[0].dtype == torch.float32
    assert a[1].dtype == torch.int64
    image, mask = ds.load(1)
    x, _ = t(image, mask, np.random.default_rng(7))
    expected = (x / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(a[0].permute(1, 2, 0).numpy(), expected, atol=1e-5)
