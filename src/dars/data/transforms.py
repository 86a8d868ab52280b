"""Training augmentation on ``(image, mask)`` tensor pairs, masks padded with ignore.

Each transform takes and returns ``(image (3,H,W) float, mask (H,W) int64)`` so they compose
freely (the torchvision references convention). Randomness comes from torch's global generator,
which the training loop seeds, so a run is reproducible on CPU.

torchvision is imported only by the transforms that use it (rotation, blur): importing it costs
1-7 s on a busy 2-core machine, and every training job imports this module, also those that
augment with neither.
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


class RandomRotate:
    """With probability ``p``, rotate by an angle uniform in [-max_degrees, max_degrees].

    The image keeps its size (corners cut, uncovered area 0 = the mean colour after
    normalisation); the mask is rotated with nearest neighbour and uncovered pixels become
    ``ignore_index`` so the loss never sees invented labels -- as in the authors' semseg code.
    """

    def __init__(self, max_degrees: float, ignore_index: int, p: float = 0.5) -> None:
        self.max_degrees, self.ignore_index, self.p = max_degrees, ignore_index, p

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> Pair:
        angle = self.max_degrees * (2 * float(torch.rand(())) - 1)
        if float(torch.rand(())) >= self.p:
            return image, mask
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        image = TF.rotate(image, angle, interpolation=InterpolationMode.BILINEAR, fill=0.0)
        # grid sampling needs floats; ids <= 255 are exact in float32
        mask = TF.rotate(mask[None].float(), angle, interpolation=InterpolationMode.NEAREST,
                         fill=float(self.ignore_index))[0].long()
        return image, mask


class RandomGaussianBlur:
    """With probability ``p``, blur the image with a 5x5 Gaussian (sigma 1.1, OpenCV's default
    for that kernel, as the authors' ``cv2.GaussianBlur(image, (5, 5), 0)``); mask unchanged."""

    KERNEL, SIGMA = 5, 1.1

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> Pair:
        if float(torch.rand(())) < self.p:
            from torchvision.transforms.v2 import functional as TF

            image = TF.gaussian_blur(image, [self.KERNEL] * 2, [self.SIGMA] * 2)
        return image, mask


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> Pair:
        if float(torch.rand(())) < self.p:
            return image.flip(-1), mask.flip(-1)
        return image, mask


def train_transform(scale: tuple[float, float], crop_size: int, flip: bool,
                    ignore_index: int, rotate: float = 0.0, blur: bool = False) -> Compose:
    """The round's augmentation: random scale in the round's range, optional rotation and
    blur (on the whole scaled image, as the authors do), crop, optional flip.

    Disabled steps are left out rather than drawn and skipped, so enabling none of them keeps
    the random stream -- and a seeded run -- exactly as before they existed.
    """
    steps: list = [RandomScale(*scale)]
    if rotate:
        steps.append(RandomRotate(rotate, ignore_index))
    if blur:
        steps.append(RandomGaussianBlur())
    steps.append(RandomCrop(crop_size, ignore_index))
    if flip:
        steps.append(RandomHorizontalFlip())
    return Compose(steps)
