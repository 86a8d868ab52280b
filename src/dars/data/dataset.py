"""Segmentation datasets over split files: datasets differ only in their
:class:`~dars.data.definitions.DatasetDefinition` and splits only in where masks come from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from dars.core.constants import IGNORE
from dars.core.errors import DarsError
from dars.core.options import DatasetOptions
from dars.data.definitions import DatasetDefinition, get_definition
from dars.data.images import read_image, read_mask
from dars.data.splits import Sample, read_split
from dars.store.artifacts import MANIFEST, check_files, read_manifest

Transform = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


@dataclass(frozen=True)
class DatasetSpec:
    """What the stages need to know about a dataset, resolved once from its options."""

    root: Path
    classes: list[str]
    ignore_index: int
    splits: dict[str, str]
    definition: DatasetDefinition = field(default_factory=lambda: get_definition("folder"))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def samples(self, split: str, require_masks: bool = True) -> list[Sample]:
        return read_split(self.root, self.splits[split], require_masks=require_masks,
                          resolve_mask=self.definition.resolve_mask)

    def listed_masks(self, split: str) -> dict[str, Path] | None:
        """image id -> mask of a split that lists one for every image, else None: the truth
        pseudo-label precision is measured against (training never reads the unlabeled's)."""
        samples = self.samples(split, require_masks=False)
        if not samples or any(s.mask is None for s in samples):
            return None
        return {s.id: s.mask for s in samples}


def dataset_spec(options: DatasetOptions) -> DatasetSpec:
    """Resolve the options: classes from the definition, else the config, else classes.txt."""
    definition = get_definition(options.name)
    # a dataset whose files fix classes/ignore value must not be contradicted by the config
    if definition.classes and options.classes and options.classes != definition.classes:
        raise DarsError(f"dataset.classes: {definition.name} defines its "
                        f"{len(definition.classes)} classes {list(definition.classes)}; "
                        "leave dataset.classes empty")
    if definition.ignore_index is not None and options.ignore_index != definition.ignore_index:
        raise DarsError(f"dataset.ignore_index: {definition.name} masks use "
                        f"{definition.ignore_index} for 'no label', config says "
                        f"{options.ignore_index}")
    root = Path(options.root)
    if not root.is_dir():
        raise DarsError(f"dataset root not found: {root} (dataset.root)")
    classes = list(definition.classes or options.classes)
    if not classes:
        names = root / "classes.txt"
        if not names.is_file():
            raise DarsError(f"dataset.classes is empty and {names} does not exist")
        classes = [c.strip() for c in names.read_text().splitlines() if c.strip()]
    if not 1 < len(classes) <= 255:
        raise DarsError(f"dataset needs 2..255 classes, got {len(classes)}")
    if options.ignore_index < len(classes):
        raise DarsError(f"dataset.ignore_index {options.ignore_index} collides with a class "
                        "index")
    return DatasetSpec(root, classes, options.ignore_index, options.splits.params(), definition)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) → normalised float (3, H, W)."""
    x = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float().div_(255)
    return (x - MEAN) / STD


def check_label_dir(directory: Path) -> None:
    """Every PNG a pseudo-label directory's manifest lists is whole, checked before training
    starts, not epochs later in a loader worker (folders made by hand have none)."""
    if (directory / MANIFEST).is_file():
        remedy = (f"delete {directory} and rerun the pseudo-label stage (`snakemake` "
                  "regenerates it)")
        check_files(directory, read_manifest(directory, remedy), remedy,
                    lambda rel: f"pseudo label {directory / rel}")


class SegmentationDataset(Dataset):
    """A split's images with masks from the split file or ``mask_dir/<id>.png`` (pseudo labels)
    as ``(image, mask, index)`` tensors; a key ``(index, seed)`` (from
    :class:`dars.engine.loader.SeededSampler`) fixes the augmentation in any worker."""

    def __init__(self, spec: DatasetSpec, samples: list[Sample],
                 transform: Transform | None = None, mask_dir: Path | None = None) -> None:
        self.spec = spec
        self.samples = samples
        self.transform = transform
        self.mask_dir = mask_dir
        if mask_dir is not None:
            check_label_dir(mask_dir)
            missing = [s.id for s in samples if not (mask_dir / f"{s.id}.png").is_file()]
            if missing:
                raise DarsError(f"pseudo labels missing in {mask_dir} for {len(missing)} "
                                f"images (e.g. {missing[0]})")

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw uint8 image (H, W, 3) and mask (H, W), checked to have the same size."""
        s = self.samples[index]
        image = read_image(s.image)
        if self.mask_dir is not None:  # pseudo labels: written by the pipeline, with its IGNORE
            path, ignore = self.mask_dir / f"{s.id}.png", IGNORE
        elif s.mask is None:
            raise DarsError(f"image {s.image} has no mask in its split file")
        else:
            path, ignore = s.mask, self.spec.ignore_index
        mask = read_mask(path, self.spec.num_classes, ignore)
        if mask.shape != image.shape[:2]:
            raise DarsError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but image "
                            f"{s.image} is {image.shape[1]}x{image.shape[0]}")
        return image, mask

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        image, mask = self.load(index)
        if self.transform is not None:
            if seed is None:
                seed = int(torch.randint(2**63 - 1, ()))
            image, mask = self.transform(image, mask, np.random.default_rng(seed))
        return to_tensor(image), torch.from_numpy(mask.astype(np.int64)), index
