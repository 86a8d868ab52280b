"""The demo's ``shapes`` scene: ten long-tailed procedural (shape, texture) classes that a 2-core
teacher still predicts, two per hue in five hues, so colour narrows a pixel down to two classes
and shape or texture must decide. Zipf rank order, thin shapes last: the rarest objects are also
the smallest (at 64 px: background ~57 %, bar ~1 %)."""

from __future__ import annotations

import numpy as np

__all__ = ["SHAPES_CLASSES", "render_objects"]

#: Class names (label id = index, background 0), most frequent object class first.
SHAPES_CLASSES: list[str] = [
    "background", "square", "disc", "diamond", "triangle", "checker",
    "striped-disc", "ring", "frame", "cross", "bar",
]

# Hue (HSV, in [0, 1)) of each object class. The two rarest classes share theirs with a textured
# class: a rare solid class sharing the triangle's hue was mostly labelled triangle (IoU ~0.1).
RED, YELLOW, GREEN, BLUE, MAGENTA = 0.0, 0.15, 0.33, 0.6, 0.83
_HUE: dict[str, float] = {
    "square": BLUE, "triangle": BLUE, "disc": YELLOW, "ring": YELLOW, "diamond": GREEN,
    "frame": GREEN, "striped-disc": RED, "bar": RED, "checker": MAGENTA, "cross": MAGENTA,
}
HUE_JITTER = 0.03
SATURATION_RANGE = (0.55, 1.0)
VALUE_RANGE = (0.55, 1.0)
TEXTURE_DARK = 0.45  # intensity of the dark cells of the checker and the stripes
# Recipe for a 64 px scene; object sides scale with ``size``.
ZIPF_EXPONENT = 0.8
MIN_OBJECTS, MAX_OBJECTS = 4, 7
SIDE_RANGE = (18, 34)
TEXTURE_PERIOD = 6  # px per dark+bright pair at 64 px
PLACEMENT_TRIES = 3
NOISE_STD = 8.0  # sensor noise over the whole image, in uint8 steps


def _shape_mask(name: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pixels inside the shape on a grid ``x, y`` in [-1, 1] (box centred at 0)."""
    r2 = x * x + y * y
    box = np.maximum(np.abs(x), np.abs(y))
    if name in ("square", "checker"):
        return box <= 0.85
    if name in ("disc", "striped-disc"):
        return r2 <= 1.0
    if name == "diamond":
        return np.abs(x) + np.abs(y) <= 1.0
    if name == "triangle":
        return (y <= 0.9) & (np.abs(x) <= (y + 0.95) / 1.9)
    if name == "ring":
        return (r2 <= 1.0) & (r2 >= 0.45**2)
    if name == "frame":
        return (box <= 0.9) & (box >= 0.5)
    if name == "cross":
        return ((np.abs(x) <= 0.32) | (np.abs(y) <= 0.32)) & (box <= 0.95)
    if name == "bar":
        return (np.abs(x) <= 0.95) & (np.abs(y) <= 0.45)
    raise ValueError(f"unknown shape {name!r}")


def _texture(name: str, side: int, period: int) -> np.ndarray:
    """Intensity pattern (side, side) in (0, 1] of a class: flat, checkerboard or stripes."""
    cells = np.arange(side) // max(1, period // 2) % 2
    if name == "checker":
        return np.where((cells[:, None] + cells[None, :]) % 2, TEXTURE_DARK, 1.0)
    if name == "striped-disc":
        return np.broadcast_to(np.where(cells[:, None], TEXTURE_DARK, 1.0), (side, side))
    return np.ones((side, side))


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """One HSV colour (components in [0, 1]) as RGB in [0, 1]."""
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)


def render_objects(rng: np.random.Generator, background: np.ndarray, prior: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """4-7 shapes (classes drawn from ``prior``) pasted on a (3, size, size) float background, as
    RGB uint8 and mask; sensor noise over it all, so no class shows as perfectly flat colour."""
    size = background.shape[-1]
    image = background.copy()
    mask = np.zeros((size, size), dtype=np.uint8)
    lo, hi = (max(6, round(s * size / 64)) for s in SIDE_RANGE)
    period = max(2, round(TEXTURE_PERIOD * size / 64))
    for _ in range(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1)):
        cls = 1 + int(rng.choice(len(prior), p=prior))
        name = SHAPES_CLASSES[cls]
        side = int(rng.integers(lo, hi + 1))
        aspect = rng.uniform(0.8, 1.25)
        grid = np.linspace(-1, 1, side)
        y, x = np.meshgrid(grid, grid * aspect, indexing="ij")
        inside = _shape_mask(name, x, y)
        if rng.random() < 0.5:
            inside = inside[::-1]
        if name == "bar" and rng.random() < 0.5:
            inside = inside.T
        hue = _HUE[name] + rng.uniform(-HUE_JITTER, HUE_JITTER)
        rgb = 255 * _hsv_to_rgb(hue % 1.0, rng.uniform(*SATURATION_RANGE),
                                rng.uniform(*VALUE_RANGE))
        texture = _texture(name, side, period)
        # the least occluding of a few random positions: objects overlap, but most stay whole
        tries = rng.integers(0, size - side + 1, size=(PLACEMENT_TRIES, 2))
        hidden = [np.count_nonzero(mask[y0:y0 + side, x0:x0 + side][inside]) for y0, x0 in tries]
        ty, tx = tries[int(np.argmin(hidden))]
        box = (slice(ty, ty + side), slice(tx, tx + side))
        mask[box][inside] = cls
        for c in range(3):
            image[c][box][inside] = rgb[c] * texture[inside]
    image += rng.normal(0.0, NOISE_STD, image.shape).astype(np.float32)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8).transpose(1, 2, 0).copy(), mask
