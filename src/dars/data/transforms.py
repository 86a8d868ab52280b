"""Training augmentation: the released pipeline (the authors' util/transform.py) on uint8
images with OpenCV. It works on the whole image; :class:`ReleasedAugment` gives the same pixels
(tests/test_transforms.py) working only where the crop needs it (at scale 3 on a 1024 x 2048
image the whole image is ~226 MB of work per sample). The loader seeds the ``Generator`` per
sample, so no worker, rank or resume changes a sample's augmentation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# The released padding colour: the ImageNet mean in 0..255 (normalises to ~0), rounded to uint8.
MEAN_COLOUR = (124, 116, 104)
BLUR_KERNEL = 5
BLUR_MARGIN = BLUR_KERNEL // 2  # pixels beyond the crop that the blur reads


@dataclass(frozen=True)
class Draw:
    """The random choices of one sample, in the released order. ``top``/``left`` are fractions
    in [0, 1) placing the crop in the scaled, rotated, flipped and padded image
    (:func:`crop_offset`), so they can be drawn before that image's size is known."""

    scale: float
    angle: float | None  # degrees; None = not rotated
    blur: bool
    flip: bool
    top: float
    left: float


def crop_offset(fraction: float, side: int, crop: int) -> int:
    return math.floor(fraction * (side - crop + 1))


class ReleasedAugment:
    """scale -> rotate (p 0.5) -> blur (5 x 5, p 0.5) -> flip (p 0.5) -> centred pad -> random
    crop of a uint8 (H, W, 3) RGB image and (H, W) mask. Disabled steps draw nothing."""

    def __init__(self, scale: tuple[float, float], crop_size: int, flip: bool,
                 ignore_index: int, rotate: float = 0.0, blur: bool = False) -> None:
        self.scale, self.crop, self.flip = scale, crop_size, flip
        self.ignore, self.rotate, self.blur = ignore_index, rotate, blur

    def draw(self, rng: np.random.Generator) -> Draw:
        s_min, s_max = self.scale
        scale = s_min + (s_max - s_min) * rng.random()
        angle = None
        if self.rotate and rng.random() < 0.5:
            angle = self.rotate * (2 * rng.random() - 1)
        blur = bool(self.blur and rng.random() < 0.5)
        flip = bool(self.flip and rng.random() < 0.5)
        return Draw(scale, angle, blur, flip, rng.random(), rng.random())

    def __call__(self, image: np.ndarray, mask: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return self.apply(image, mask, self.draw(rng))

    def apply(self, image: np.ndarray, mask: np.ndarray,
              d: Draw) -> tuple[np.ndarray, np.ndarray]:
        """The crop the released transform gives for the choices ``d``."""
        c = self.crop
        # by factor, as released: a target size would resample at size / old size instead
        image = cv2.resize(image, None, fx=d.scale, fy=d.scale, interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(mask, None, fx=d.scale, fy=d.scale, interpolation=cv2.INTER_NEAREST)
        h, w = mask.shape
        top, left = self._origin(d, h, w)
        if d.flip:  # the window in the unflipped image
            left = w - left - c
        rows = slice(max(top, 0), min(top + c, h))
        cols = slice(max(left, 0), min(left + c, w))
        if d.angle is not None:
            matrix = cv2.getRotationMatrix2D((w / 2, h / 2), d.angle, 1)
            # only up to what the crop (and its blur margin) reads: same pixels, less work
            size = (min(w, cols.stop + BLUR_MARGIN), min(h, rows.stop + BLUR_MARGIN))
            image = cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=MEAN_COLOUR)
            mask = cv2.warpAffine(mask, matrix, size, flags=cv2.INTER_NEAREST,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=self.ignore)
        image = _blur_window(image, rows, cols, h, w) if d.blur else image[rows, cols]
        mask = mask[rows, cols]
        if d.flip:
            image, mask = image[:, ::-1], mask[:, ::-1]
        return self._place(image, mask, rows.start - top, (left + c - cols.stop) if d.flip
                           else cols.start - left)

    def _origin(self, d: Draw, h: int, w: int) -> tuple[int, int]:
        """Where the crop starts in the scaled (h, w) image, flipped if ``d.flip``: its offset
        in the padded image minus the padding's top/left half (negative when padded)."""
        ph, pw = max(self.crop - h, 0), max(self.crop - w, 0)
        return (crop_offset(d.top, h + ph, self.crop) - ph // 2,
                crop_offset(d.left, w + pw, self.crop) - pw // 2)

    def _place(self, image: np.ndarray, mask: np.ndarray, y: int,
               x: int) -> tuple[np.ndarray, np.ndarray]:
        """The window at (y, x) of a crop-sized canvas of padding (mean colour / ignore)."""
        c = self.crop
        if image.shape[:2] == (c, c):
            return np.ascontiguousarray(image), np.ascontiguousarray(mask)
        out_image = np.empty((c, c, 3), np.uint8)
        out_image[:] = MEAN_COLOUR
        out_mask = np.full((c, c), self.ignore, np.uint8)
        hh, ww = mask.shape
        out_image[y:y + hh, x:x + ww] = image
        out_mask[y:y + hh, x:x + ww] = mask
        return out_image, out_mask


class FusedAugment(ReleasedAugment):
    """The released draws as one ``cv2.warpAffine`` from the decoded image to the crop (no scaled
    or rotated whole image). Not the released pixels (tests/test_transforms.py bounds the gap):
    the image is resampled once (slightly sharper), the mask's nearest neighbour rounds where
    ``resize`` floors (borders may move a scaled pixel); blur reads real pixels at crop edges."""

    def apply(self, image: np.ndarray, mask: np.ndarray,
              d: Draw) -> tuple[np.ndarray, np.ndarray]:
        c, m = self.crop, BLUR_MARGIN if d.blur else 0
        h0, w0 = mask.shape
        h, w = round(h0 * d.scale), round(w0 * d.scale)  # cv2.resize's size for fx = fy = s
        top, left = self._origin(d, h, w)
        # source pixel -> scaled (half-pixel centres, as cv2.resize with fx = fy = s) ->
        # rotated -> flipped -> crop coordinates, as one 3 x 3 matrix
        s = d.scale
        matrix = np.array([[s, 0, (s - 1) / 2], [0, s, (s - 1) / 2], [0, 0, 1]])
        if d.angle is not None:
            rotation = cv2.getRotationMatrix2D((w / 2, h / 2), d.angle, 1)
            matrix = np.vstack([rotation, [0, 0, 1]]) @ matrix
        if d.flip:
            matrix = np.array([[-1, 0, w - 1], [0, 1, 0], [0, 0, 1]]) @ matrix
        matrix = np.array([[1, 0, -left], [0, 1, -top], [0, 0, 1]]) @ matrix
        mask = cv2.warpAffine(mask, matrix[:2], (c, c), flags=cv2.INTER_NEAREST,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=self.ignore)
        matrix[:2, 2] += m  # the image with the blur's margin around the crop
        image = cv2.warpAffine(image, matrix[:2], (c + 2 * m, c + 2 * m),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=MEAN_COLOUR)
        if d.blur:
            image = cv2.GaussianBlur(image, (BLUR_KERNEL, BLUR_KERNEL), 0)[m:m + c, m:m + c]
        return np.ascontiguousarray(image), mask


def _blur_window(image: np.ndarray, rows: slice, cols: slice, h: int, w: int) -> np.ndarray:
    """``cv2.GaussianBlur(image, (5, 5), 0)[rows, cols]`` from the window and its margin, cut
    at the image's edges, where OpenCV's reflected border stands in for it as on the whole image."""
    r0, c0 = max(rows.start - BLUR_MARGIN, 0), max(cols.start - BLUR_MARGIN, 0)
    r1, c1 = min(rows.stop + BLUR_MARGIN, h), min(cols.stop + BLUR_MARGIN, w)
    blurred = cv2.GaussianBlur(image[r0:r1, c0:c1], (BLUR_KERNEL, BLUR_KERNEL), 0)
    return blurred[rows.start - r0:rows.stop - r0, cols.start - c0:cols.stop - c0]


def train_transform(scale: tuple[float, float], crop_size: int, flip: bool,
                    ignore_index: int, rotate: float = 0.0, blur: bool = False,
                    fused: bool = False) -> ReleasedAugment:
    """:class:`ReleasedAugment`, or :class:`FusedAugment` (``train.augment: fused``)."""
    kind = FusedAugment if fused else ReleasedAugment
    return kind(scale, crop_size, flip, ignore_index, rotate, blur)
