"""Deterministic generator of the embedded demo segmentation dataset.

No street-scene data can be shipped, so the demo pastes Fashion-MNIST items onto crops of
public-domain photos (``assets/``). Object classes follow a Zipf prior: long-tailed (background
~61 %, the two rarest ~2.7 % each), yet each common enough for a small teacher to predict (a
steeper prior made the 2-core teacher miss the tail). ``scene="shapes"``: :mod:`dars.data.shapes`.
Each scene has its own ``default_rng([seed, split, index])``: a build is byte-identical for the
same arguments, and a scene does not change with ``num_train``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from dars.core.config import Config
from dars.core.options import Options
from dars.data import shapes
from dars.data.images import png_bytes
from dars.data.shapes import SHAPES_CLASSES
from dars.store.artifacts import atomic_path

__all__ = ["DEMO_CLASSES", "SCENE_CLASSES", "DemoOptions", "build_demo", "class_prior"]

log = logging.getLogger(__name__)

ASSET_DIR = Path(__file__).resolve().parent / "assets"

#: Original Fashion-MNIST label id of every object class the assets contain.
FASHION_IDS: dict[str, int] = {"t-shirt": 0, "trouser": 1, "dress": 3, "sneaker": 7, "bag": 8}

#: Class names (index = label id, background 0) in Zipf rank order, thin or small classes last
#: so they are also the rarest in pixels. Look-alikes (pullover, coat, shirt, sandal, ankle boot)
#: are left out: a small CNN never learned them, which would leave DARS nothing to align.
DEMO_CLASSES: list[str] = ["background", "t-shirt", "dress", "bag", "sneaker", "trouser"]

#: Class list of each scene kind (``demo.scene``).
SCENE_CLASSES: dict[str, list[str]] = {"fashion": DEMO_CLASSES, "shapes": SHAPES_CLASSES}

#: Renders one scene (RGB uint8 image, uint8 mask) from its own random stream.
Renderer = Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]

# Scene recipe. Sizes are for a 64 px scene and scale with ``size``; at 64 px the objects
# (25-45 px) are close to Fashion-MNIST's native 28 px, so larger scenes add compute only.
ZIPF_EXPONENT = 1.0
MIN_OBJECTS, MAX_OBJECTS = 2, 5
SCALE_RANGE = (0.9, 1.6)  # object side = 28 px * scale * size / 64
MASK_THRESHOLD = 24  # Fashion-MNIST intensity above which a pixel belongs to the object
BRIGHTNESS_RANGE = (0.6, 1.4)
# A crop of ``size`` px at zoom z shows ``size / z`` px of the photo; precomputed once.
BACKGROUND_ZOOMS = (1.0, 0.8, 0.65, 0.5)

_SPLIT_CODE = {"train": 0, "val": 1, "labeled": 2}
# Random positions an object tries, taking the least occluding: most objects stay recognisable.
PLACEMENT_TRIES = 3

_SCENE_DRAWS = 9  # uniforms per scene, then _OBJECT_DRAWS per object slot
_OBJECT_DRAWS = 8 + 2 * PLACEMENT_TRIES


@lru_cache(maxsize=1)
def _load_objects() -> dict[str, dict[int, np.ndarray]]:
    """Fashion-MNIST items per split ("train"/"test") and original label id."""
    with np.load(ASSET_DIR / "fashion_mnist.npz") as f:
        objects = {part: {label: f[f"{part}_images"][f[f"{part}_labels"] == label]
                          for label in FASHION_IDS.values()} for part in ("train", "test")}
    for part, pool in objects.items():
        for name, label in FASHION_IDS.items():
            if len(pool[label]) == 0:
                raise RuntimeError(f"demo asset has no {part} items of {name!r} (label {label})")
    return objects


@lru_cache(maxsize=4)
def _background_pyramid(size: int) -> tuple[np.ndarray, ...]:
    """Every background photo at every zoom level, channel-first uint8, sides >= ``size``."""
    with np.load(ASSET_DIR / "backgrounds.npz") as f:
        photos = [f[name] for name in sorted(f.files)]
    levels = []
    for photo in photos:
        h, w = photo.shape[:2]
        for z in BACKGROUND_ZOOMS:
            f = max(z, size / min(h, w))
            img = Image.fromarray(photo).resize((max(size, round(w * f)), max(size, round(h * f))),
                                                Image.BILINEAR)
            levels.append(np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1)))
    return tuple(levels)


@lru_cache(maxsize=256)
def _resize_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) bilinear interpolation matrix (half-pixel centres, edges clamped):
    ``A @ obj @ A.T`` is several times cheaper than a PIL round trip for a 28 px object."""
    pos = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, src - 1)
    frac = (pos - lo).astype(np.float32)
    a = np.zeros((dst, src), dtype=np.float32)
    np.add.at(a, (np.arange(dst), lo), 1 - frac)
    np.add.at(a, (np.arange(dst), hi), frac)
    return a


def class_prior(num_object_classes: int, exponent: float) -> np.ndarray:
    """Zipf-like probability that a pasted object has object class rank 1..K."""
    w = 1.0 / np.arange(1, num_object_classes + 1, dtype=np.float64) ** exponent
    return w / w.sum()


def _uniform_int(u: float, n: int) -> int:
    """Map a uniform in [0, 1) to an integer in [0, n)."""
    return min(int(u * n), n - 1)


def _background(u: np.ndarray, size: int) -> np.ndarray:
    """(3, size, size) float32 background from 8 uniforms: random photo, zoom, crop, flip, tint."""
    levels = _background_pyramid(size)
    bg = levels[_uniform_int(u[0], len(levels))]
    h, w = bg.shape[1:]
    y, x = _uniform_int(u[1], h - size + 1), _uniform_int(u[2], w - size + 1)
    crop = bg[:, y : y + size, x : x + size]
    if u[3] < 0.5:
        crop = crop[:, :, ::-1]
    lo, hi = BRIGHTNESS_RANGE
    gain = (lo + (hi - lo) * u[4]) * (0.85 + 0.3 * u[5:8])
    return crop * gain.astype(np.float32)[:, None, None]


def _render_scene(rng: np.random.Generator, objects: dict[int, np.ndarray], classes: list[str],
                  size: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene, RGB uint8 (size, size, 3) and mask: a background, then 2-5 objects scaled,
    flipped, tinted, pasted where brighter than ``MASK_THRESHOLD``. One vector of uniforms (far
    cheaper than many ``rng`` calls); objects coloured once at the end (channel-major numpy)."""
    u = rng.random(_SCENE_DRAWS + _OBJECT_DRAWS * MAX_OBJECTS)
    background = _background(u[:8], size)

    cdf = np.cumsum(class_prior(len(classes) - 1, ZIPF_EXPONENT))
    n = MIN_OBJECTS + _uniform_int(u[8], MAX_OBJECTS - MIN_OBJECTS + 1)
    mask = np.zeros((size, size), dtype=np.uint8)
    owner = np.zeros((size, size), dtype=np.intp)
    intensity = np.zeros((size, size), dtype=np.float32)
    colours = np.zeros((n + 1, 3), dtype=np.float32)
    for i in range(n):
        v = u[_SCENE_DRAWS + _OBJECT_DRAWS * i : _SCENE_DRAWS + _OBJECT_DRAWS * (i + 1)]
        cls = 1 + min(int(np.searchsorted(cdf, v[0], side="right")), len(classes) - 2)
        items = objects[FASHION_IDS[classes[cls]]]
        obj = items[_uniform_int(v[1], len(items))].astype(np.float32)
        scale = SCALE_RANGE[0] + (SCALE_RANGE[1] - SCALE_RANGE[0]) * v[2]
        side = int(min(size, max(8, round(28 * scale * size / 64))))
        if side != 28:
            a = _resize_matrix(28, side)
            obj = a @ obj @ a.T
        if v[3] < 0.5:
            obj = obj[:, ::-1]
        # Tint: random hue, brightest channel in [0.6, 1] so the object stays visible.
        colour = v[4:7] * ((0.6 + 0.4 * v[7]) / max(float(v[4:7].max()), 1e-6))
        colours[i + 1] = colour
        m = obj > MASK_THRESHOLD
        best = -1
        for t in range(PLACEMENT_TRIES):
            ty = _uniform_int(v[8 + 2 * t], size - side + 1)
            tx = _uniform_int(v[9 + 2 * t], size - side + 1)
            hidden = int(np.count_nonzero(owner[ty : ty + side, tx : tx + side][m])) if i else 0
            if best < 0 or hidden < best:
                best, oy, ox = hidden, ty, tx
        box = (slice(oy, oy + side), slice(ox, ox + side))
        mask[box][m] = cls
        owner[box][m] = i + 1
        intensity[box][m] = obj[m]

    image = np.empty((size, size, 3), dtype=np.uint8)
    is_object = owner > 0
    for c in range(3):
        plane = np.where(is_object, np.take(colours[:, c], owner) * intensity, background[c])
        image[:, :, c] = np.clip(plane + 0.5, 0, 255)
    return image, mask


def _scene_renderer(scene: str, part: str, size: int) -> Renderer:
    """The function rendering one scene of kind ``scene``; ``part`` ("train"/"test") picks
    the Fashion-MNIST items (shapes' splits differ by their random streams only)."""
    if scene == "fashion":
        objects = _load_objects()[part]
        return lambda rng: _render_scene(rng, objects, DEMO_CLASSES, size)
    prior = class_prior(len(SHAPES_CLASSES) - 1, shapes.ZIPF_EXPONENT)
    return lambda rng: shapes.render_objects(rng, _background(rng.random(8), size), prior)


def _write_split(root: Path, prefix: str, count: int, scene: str, size: int, seed: int
                 ) -> tuple[list[str], np.ndarray]:
    """Render ``count`` scenes to images/ and masks/; return split lines and class pixel counts."""
    render = _scene_renderer(scene, "test" if prefix == "val" else "train", size)
    counts = np.zeros(len(SCENE_CLASSES[scene]), dtype=np.int64)
    lines = []
    for i in range(count):
        image, mask = render(np.random.default_rng([seed, _SPLIT_CODE[prefix], i]))
        name = f"{prefix}_{i:05d}.png"
        (root / "images" / name).write_bytes(png_bytes(image))
        (root / "masks" / name).write_bytes(png_bytes(mask))
        counts += np.bincount(mask.ravel(), minlength=len(counts))
        lines.append(f"images/{name} masks/{name}")
    return lines, counts


@dataclass(frozen=True)
class DemoOptions(Options):
    """The ``demo`` section: everything the generated files depend on (see :func:`build_demo`)."""

    num_train: int
    num_val: int
    size: int
    labeled_fraction: float
    seed: int
    scene: str

    @classmethod
    def from_config(cls, config: Config) -> DemoOptions:
        return cls(**config["demo"])


def build_demo(root: Path, options: DemoOptions) -> None:
    """Build the demo dataset atomically: images/, masks/, splits/{labeled,unlabeled,val}.txt,
    classes.txt. Validation scenes use only Fashion-MNIST test items, so they never share an
    object with training; a random ``labeled_fraction`` of the training scenes is labeled."""
    num_train, num_val, size = options.num_train, options.num_val, options.size
    labeled_fraction, seed, scene = options.labeled_fraction, options.seed, options.scene
    if num_train < 2 or num_val < 1 or size < 32 or not 0.0 < labeled_fraction < 1.0:
        raise ValueError("build_demo needs num_train >= 2, num_val >= 1, size >= 32, "
                         f"0 < labeled_fraction < 1; got {num_train=}, {num_val=}, {size=}, "
                         f"{labeled_fraction=}")
    if scene not in SCENE_CLASSES:
        raise ValueError(f"demo scene {scene!r} is not one of {sorted(SCENE_CLASSES)}")
    classes = SCENE_CLASSES[scene]
    num_labeled = min(num_train - 1, max(1, round(num_train * labeled_fraction)))
    order = np.random.default_rng([seed, _SPLIT_CODE["labeled"]]).permutation(num_train)
    is_labeled = np.isin(np.arange(num_train), order[:num_labeled])
    with atomic_path(root) as tmp:
        for sub in ("images", "masks", "splits"):
            (tmp / sub).mkdir(parents=True)
        train, train_counts = _write_split(tmp, "train", num_train, scene, size, seed)
        val, val_counts = _write_split(tmp, "val", num_val, scene, size, seed)
        train = np.array(train)
        for name, lines in (("labeled", train[is_labeled]), ("unlabeled", train[~is_labeled]),
                            ("val", val)):
            (tmp / "splits" / f"{name}.txt").write_text("\n".join(lines) + "\n")
        (tmp / "classes.txt").write_text("\n".join(classes) + "\n")
    log.info("demo dataset (%s scene) at %s: %d labeled, %d unlabeled, %d val scenes of %dx%d px",
             scene, root, num_labeled, num_train - num_labeled, num_val, size, size)
    for split, counts in (("train", train_counts), ("val", val_counts)):
        fractions = counts / max(int(counts.sum()), 1)
        log.info("%s class pixel fractions: %s", split,
                 ", ".join(f"{k}={v:.4f}" for k, v in zip(classes, fractions, strict=True)))
