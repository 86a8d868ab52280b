"""Training augmentation on ``(image, mask)`` tensor pairs, masks padded with ignore.

Each transform takes and returns ``(image (3,H,W) float, mask (H,W) int64)`` so they compose
freely (the torchvision references convention). Randomness comes from torch's global generator,
which the training loop seeds, so a run is reproducible on CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Pair = tuple[torch.Tensor, torch.Tensor]


class Compose:
    def __init__(self, transforms: list) -> None:
        self.transforms = transforms

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> Pair:
        for t in self.transforms:
            image, mask = t(image, mask)
        return image, mask


class RandomScale:
    """Resize by a factor drawn uniformly from [s_min, s_max] (bilinear image, nearest mask)."""

    def __init__(self, s_min: float, s_max: float) -> None:
        self.s_min, self.s_max = s_min, s_max

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> Pair:
        s = self.s_min + (self.s_max - self.s_min) * float(torch.rand(()))
        h, w = mask.shape
        size = (max(1, round(h * s)), max(1, round(w * s)))
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].long()
        return image, mask


class RandomCrop:
    """Square crop of ``size``; smaller images are padded (image 0, mask ``ignore_index``)."""

    def __init__(self, size: int, ignore_index: int) -> None:
        self.size, self.ignore_index = size, ignore_index

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> Pair:
        h, w = mask.shape
        ph, pw = max(self.size - h, 0), max(self.size - w, 0)
        if ph or pw:
            image = F.pad(image, (0, pw, 0, ph), value=0.0)
            mask = F.pad(mask, (0, pw, 0, ph), value=self.ignore_index)
            h, w = mask.shape
        top = int(torch.randint(0, h - self.size + 1, ()))
        left = int(torch.randint(0, w - self.size + 1, ()))
        window = (slice(top, top + self.size), slice(left, left + self.size))
        return image[(slice(None), *window)], mask[window]


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> Pair:
        if float(torch.rand(())) < self.p:
            return image.flip(-1), mask.flip(-1)
        return image, mask


def train_transform(scale: tuple[float, float], crop_size: int, flip: bool,
                    ignore_index: int) -> Compose:
    """The round's augmentation: random scale in the round's range, crop, optional flip."""
    steps: list = [RandomScale(*scale), RandomCrop(crop_size, ignore_index)]
    if flip:
        steps.append(RandomHorizontalFlip())
    return Compose(steps)
