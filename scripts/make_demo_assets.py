"""Rebuild the two small asset files the embedded demo dataset is generated from.

The demo (``dars build-demo``) must run offline with only the project's own dependencies, so the
real-image pieces it pastes together are shipped inside the package:

* ``src/dars/data/assets/fashion_mnist.npz`` - a per-class subset of Fashion-MNIST (real 28x28
  grayscale product photos; Zalando, MIT/Expat licence), train and test items kept apart so that
  validation scenes never reuse a training object.
* ``src/dars/data/assets/backgrounds.npz`` - a few public-domain / CC0 photos bundled with
  scikit-image, downscaled so the whole asset stays small.

This script is *not* part of the runtime (scikit-image is no project dependency). Reproduce::

    apt-get install -y dataset-fashion-mnist          # /usr/share/datasets/fashion-mnist/*.gz
    python3 -m venv /tmp/assetenv
    /tmp/assetenv/bin/pip install scikit-image numpy  # tested: scikit-image 0.26.0, numpy 2.x
    /tmp/assetenv/bin/python scripts/make_demo_assets.py

The subset is chosen deterministically (first N items of each class in file order), so rerunning
gives the same arrays.
"""

from __future__ import annotations

import argparse
import gzip
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger("make_demo_assets")

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
ASSET_DIR = Path(__file__).resolve().parents[1] / "src" / "dars" / "data" / "assets"

# Original Fashion-MNIST label ids kept for the demo: 0 t-shirt/top, 1 trouser, 3 dress,
# 7 sneaker, 8 bag (must cover dars.data.demo.FASHION_IDS). The look-alikes pullover (2),
# coat (4) and shirt (6) are dropped: a small CNN cannot tell them from t-shirt at this size;
# sandal (5) and ankle boot (9) are dropped because the demo teacher confused them with sneaker
# and bag and then never predicted them, which would leave DARS nothing to align.
KEEP_LABELS = (0, 1, 3, 7, 8)
TRAIN_PER_CLASS = 600
TEST_PER_CLASS = 150

# skimage.data loaders that ship with the wheel (no download) and carry PD/CC0 terms.
BACKGROUNDS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "camera",
    "brick",
    "grass",
    "gravel",
)
SHORT_SIDE = 192


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (the MNIST container format) into a uint8 array."""
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def take_per_class(
    images: np.ndarray, labels: np.ndarray, per_class: int
) -> tuple[np.ndarray, np.ndarray]:
    """First ``per_class`` items of each kept label, in file order (deterministic)."""
    idx = np.concatenate([np.flatnonzero(labels == k)[:per_class] for k in KEEP_LABELS])
    idx.sort()
    return np.ascontiguousarray(images[idx]), np.ascontiguousarray(labels[idx])


def make_fashion(out: Path) -> None:
    """Write the Fashion-MNIST subset (uint8 images, original label ids)."""
    tr_x = read_idx(FASHION_DIR / "train-images-idx3-ubyte.gz")
    tr_y = read_idx(FASHION_DIR / "train-labels-idx1-ubyte.gz")
    te_x = read_idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz")
    te_y = read_idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz")
    train_images, train_labels = take_per_class(tr_x, tr_y, TRAIN_PER_CLASS)
    test_images, test_labels = take_per_class(te_x, te_y, TEST_PER_CLASS)
    np.savez_compressed(
        out,
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
    )
    log.info(
        "%s: %d train, %d test items, %d bytes",
        out,
        len(train_labels),
        len(test_labels),
        out.stat().st_size,
    )


def downscale(img: np.ndarray, short_side: int) -> np.ndarray:
    """Anti-aliased downscale so the shorter side is ``short_side`` (uint8 out)."""
    from skimage.transform import resize

    h, w = img.shape[:2]
    f = short_side / min(h, w)
    shape = (round(h * f), round(w * f)) + img.shape[2:]
    return (resize(img, shape, anti_aliasing=True, preserve_range=True) + 0.5).astype(np.uint8)


def make_backgrounds(out: Path) -> None:
    """Write one uint8 RGB array per photo, keyed by its skimage.data name.

    Grayscale photos are replicated to three channels here so the runtime needs no special case.
    """
    import skimage.data

    arrays = {}
    for name in BACKGROUNDS:
        img = getattr(skimage.data, name)()
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        arrays[name] = downscale(img[:, :, :3], SHORT_SIDE)
        log.info("%s: %s", name, arrays[name].shape)
    np.savez_compressed(out, **arrays)
    log.info("%s: %d bytes", out, out.stat().st_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=ASSET_DIR)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    make_fashion(args.out_dir / "fashion_mnist.npz")
    make_backgrounds(args.out_dir / "backgrounds.npz")


if __name__ == "__main__":
    main()
