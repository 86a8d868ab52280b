"""Tiny Cityscapes and PASCAL VOC trees in their real on-disk layouts, written by the tests.

No real dataset can be downloaded here, so tests build miniature copies with the same file
names, id spaces and quirks (raw Cityscapes label ids, VOC palette masks of odd and varying
sizes with a 255 boundary, official split-file lines). The per-stage tests
(``test_datasets.py``) and the whole-workflow runs (``test_paper_layouts_workflow.py``) share
these writers so both exercise exactly the same layouts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

# raw Cityscapes ids drawn in fixtures: mapped ones and some without a train id (0, 4, 9, 30)
RAW_IDS = np.array([7, 8, 11, 21, 23, 24, 26, 33, 0, 4, 9, 30], np.uint8)

VOC_PALETTE = [v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)]
VOC_SIZES = [(37, 45), (45, 37), (29, 41), (37, 45), (41, 29), (33, 33), (45, 37), (29, 41),
             (37, 45), (41, 29)]


def write_mask(path: Path, mask: np.ndarray) -> None:
    """Write a uint8 index mask as a single-channel PNG (as the datasets store theirs)."""
    Image.fromarray(mask.astype(np.uint8), mode="L").save(path)


def blocks(rng: np.random.Generator, values: np.ndarray, h: int, w: int) -> np.ndarray:
    """A mask of 4x4 cell blocks of the given values, cropped to (h, w).

    Blocks rather than i.i.d. pixels so that a tiny network can learn something and sliding
    windows and crops see coherent regions.
    """
    cells = rng.choice(values, size=(h // 4 + 1, w // 4 + 1))
    return np.kron(cells, np.ones((4, 4), np.uint8))[:h, :w].astype(np.uint8)


def write_cityscapes(root: Path, frames: dict[str, dict[str, int]],
                     size: tuple[int, int] = (32, 64), seed: int = 0) -> Path:
    """leftImg8bit/<split>/<city>/<frame>_leftImg8bit.png + gtFine ..._gtFine_labelIds.png.

    ``frames`` maps split → city → number of frames. Only the raw ``labelIds`` masks are
    written (as downloaded), so every reader must go through the labelIds → trainIds mapping;
    the image's red channel follows the raw id, which makes the labels learnable.
    """
    rng = np.random.default_rng(seed)
    h, w = size
    for split, cities in frames.items():
        for city, n in cities.items():
            img_dir = root / "leftImg8bit" / split / city
            gt_dir = root / "gtFine" / split / city
            img_dir.mkdir(parents=True, exist_ok=True)
            gt_dir.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                stem = f"{city}_{i:06d}_000019"
                ids = blocks(rng, RAW_IDS, h, w)
                image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
                image[..., 0] = ids * 7  # colour follows the label: learnable
                Image.fromarray(image).save(img_dir / f"{stem}_leftImg8bit.png")
                write_mask(gt_dir / f"{stem}_gtFine_labelIds.png", ids)
    return root


def cityscapes_split_lines(root: Path, split: str) -> list[str]:
    """Split lines of every frame of ``split``, as the official DARS files write them.

    The official files name ``*_gtFine_labelTrainIds.png``, which the fixtures deliberately do
    not contain: reading them must fall back to the raw ``*_gtFine_labelIds.png``.
    """
    lines = []
    for img in sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png")):
        rel = img.relative_to(root).as_posix()
        mask = rel.replace("leftImg8bit/", "gtFine/", 1).replace(
            "_leftImg8bit.png", "_gtFine_labelTrainIds.png")
        lines.append(f"{rel} {mask}")
    return lines


def write_split(path: Path, lines: Sequence[str]) -> Path:
    """A split file: one ``image_relpath mask_relpath`` line each, newline-terminated."""
    path.write_text("\n".join(lines) + "\n")
    return path


def write_voc(root: Path, seed: int = 0) -> Path:
    """JPEGImages/*.jpg of odd, varying sizes; SegmentationClassAug/*.png palette masks with a
    255 boundary; an extra image without mask (as in the real JPEGImages).

    Split files ``labeled.txt`` (4 images), ``unlabeled.txt`` (4) and ``val.txt`` (2) are
    written in the root, with the trailing blank of the official lines.
    """
    rng = np.random.default_rng(seed)
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClassAug").mkdir()
    for i, (h, w) in enumerate(VOC_SIZES):
        mask = blocks(rng, np.array([0, 0, 1, 7, 15, 20], np.uint8), h, w)
        mask[0, :] = 255
        image = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
        image[..., 1] += mask.astype(np.uint8) * 8
        Image.fromarray(image).save(root / "JPEGImages" / f"2007_{i:06d}.jpg", quality=95)
        png = Image.fromarray(mask, mode="P")
        png.putpalette(VOC_PALETTE)
        png.save(root / "SegmentationClassAug" / f"2007_{i:06d}.png")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "JPEGImages" / "2012_nomask.jpg")
    lines = [f"JPEGImages/2007_{i:06d}.jpg SegmentationClassAug/2007_{i:06d}.png "
             for i in range(len(VOC_SIZES))]  # trailing blank as in the official files
    write_split(root / "val.txt", lines[8:])
    write_split(root / "labeled.txt", lines[:4])
    write_split(root / "unlabeled.txt", lines[4:8])
    return root
