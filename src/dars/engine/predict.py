"""Batched prediction over a list of images, shared by inference, calibration and evaluation.

Images are batched by size (read from the headers): variable-size datasets (VOC) need no
padding. The released protocol (``gen_pseudo_label_utils.py`` ``first_forward``,
``validate_full_size.py`` ``test``, single scale): resize the long side to ``base_size``
(bilinear commutes with the normalisation), average scores over windows and flip
(:mod:`dars.engine.sliding`), resize back to the full image (bilinear, half-pixel centres),
divide logits by T, softmax (float16 as released, more ties at 1.0; float32 here)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import groupby

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dars.core.options import PredictOptions
from dars.data.dataset import to_tensor
from dars.data.images import image_size, read_image
from dars.data.splits import Sample
from dars.engine.precision import use_bf16
from dars.engine.sliding import forward_scores, sliding_scores

LOAD_THREADS = 4  # decoding (OpenCV, Pillow) releases the GIL: a batch decodes in parallel
MIN_PROB = 1e-12  # float32 probabilities underflow to 0; log(0) would make an NLL infinite


def scaled_size(h: int, w: int, base_size: int | tuple[int, int] | None) -> tuple[int, int]:
    """The size the network sees: native (None), (H, W) as given, or the long side scaled to
    ``base_size`` and the short side rounded as released (Python ``round``: half to even)."""
    if base_size is None:
        return h, w
    if isinstance(base_size, tuple):
        return base_size
    if h > w:
        return base_size, round(base_size / h * w)
    return round(base_size / w * h), base_size


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def size_batches(samples: Sequence[Sample], indices: Sequence[int], batch: int
                 ) -> Iterator[list[int]]:
    """Indices grouped by image size (stable within a size), cut into batches of ``batch``."""
    sizes = {i: image_size(samples[i].image) for i in indices}
    for _, group in groupby(sorted(indices, key=lambda i: sizes[i]), key=lambda i: sizes[i]):
        members = list(group)
        for start in range(0, len(members), batch):
            yield members[start:start + batch]


def bf16_autocast(dev: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast when asked and ``dev`` computes bf16 natively (:func:`use_bf16`)."""
    if use_bf16(bf16, dev):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_probs(scores: Tensor, average: str, temperature: float = 1.0) -> Tensor:
    """softmax(logits / T) of averaged logits, or p^(1/T) renormalised of averaged probabilities."""
    if average == "probs" and temperature == 1.0:
        return scores  # already the softmax (no log/exp round trip)
    return to_logits(scores, average).div(temperature).softmax(dim=1)


def to_logits(scores: Tensor, average: str) -> Tensor:
    """Logits whose softmax is the prediction: averaged logits, or log averaged probabilities."""
    return scores.clamp_min(MIN_PROB).log() if average == "probs" else scores


def _scores(model: nn.Module, x: Tensor, options: PredictOptions) -> Tensor:
    """A batch's averaged scores at the size of ``x``, computed at ``base_size``, resized back."""
    h, w = x.shape[-2:]
    size = scaled_size(h, w, options.base_size)
    if size != (h, w):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    with bf16_autocast(x.device, options.bf16):
        if options.mode == "sliding":
            scores = sliding_scores(model, x, options.crop_size, options.stride_ratio,
                                    options.flip, options.average)
        else:
            scores = forward_scores(model, x, options.flip, options.average)
    if size != (h, w):
        scores = F.interpolate(scores.float(), size=(h, w), mode="bilinear", align_corners=False)
    return scores.float()


def _inputs(samples: Sequence[Sample], batches: Iterator[list[int]], dev: torch.device
            ) -> Iterator[tuple[list[int], Tensor]]:
    """``(indices, normalised images (B, 3, H, W))`` per batch, decoded one batch ahead by
    threads (a process holding a CUDA context must not fork worker processes)."""
    def load(idx: list[int]) -> Tensor:
        x = torch.stack([to_tensor(read_image(samples[i].image)) for i in idx])
        return x.pin_memory() if dev.type == "cuda" else x

    with ThreadPoolExecutor(LOAD_THREADS) as pool:
        loads = ((idx, pool.submit(load, idx)) for idx in batches)
        ahead = next(loads, None)
        while ahead is not None:  # the next batch is submitted before this one is yielded
            (idx, future), ahead = ahead, next(loads, None)
            yield idx, future.result().to(dev, non_blocking=True)


@torch.inference_mode()
def _predict(model: nn.Module, samples: Sequence[Sample], indices: Sequence[int], batch: int,
             options: PredictOptions, finish: Callable[[Tensor], tuple[Tensor, ...]]
             ) -> Iterator[tuple]:
    """Yield ``(index, *finish(scores))``; ``finish`` runs on device on full-size float32 scores."""
    dev = device()
    model = model.to(dev).eval()
    channels_last = options.bf16 and dev.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    for idx, x in _inputs(samples, size_batches(samples, indices, batch), dev):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        yield from zip(idx, *finish(_scores(model, x, options)), strict=True)


def predict_scores(model: nn.Module, samples: Sequence[Sample], indices: Sequence[int],
                   batch: int, options: PredictOptions = PredictOptions()
                   ) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(index, averaged logits or probabilities (C, H, W))``: argmax-ready, no softmax."""
    return _predict(model, samples, indices, batch, options, lambda s: (s.cpu(),))


def predict_probs(model: nn.Module, samples: Sequence[Sample], indices: Sequence[int],
                  batch: int, options: PredictOptions = PredictOptions(),
                  temperature: float = 1.0) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(index, softmax(logits / temperature) (C, H, W))`` at full image size."""
    return _predict(model, samples, indices, batch, options,
                    lambda s: (to_probs(s, options.average, temperature).cpu(),))


def predict_logits(model: nn.Module, samples: Sequence[Sample], indices: Sequence[int],
                   batch: int, options: PredictOptions = PredictOptions()
                   ) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(index, logits (C, H, W))`` whose softmax :func:`predict_probs` yields at T = 1:
    what temperature scaling divides by T, hence what calibration fits T on."""
    return _predict(model, samples, indices, batch, options,
                    lambda s: (to_logits(s, options.average).cpu(),))


def predict_labels(model: nn.Module, samples: Sequence[Sample], indices: Sequence[int],
                   batch: int, options: PredictOptions = PredictOptions(),
                   temperature: float = 1.0) -> Iterator[tuple[int, Tensor, Tensor]]:
    """Yield ``(index, argmax (H, W) uint8, max probability (H, W) float16)`` of
    :func:`predict_probs`' softmax, computed on the device so only these bytes reach the host
    (not C x H x W float32: 159 MB for a 19-class Cityscapes image). The argmax is the first
    maximal class and float16 rounds to nearest even, both as numpy."""
    def finish(scores: Tensor) -> tuple[Tensor, Tensor]:
        confidence, prediction = to_probs(scores, options.average, temperature).max(dim=1)
        return prediction.to(torch.uint8).cpu(), confidence.half().cpu()

    return _predict(model, samples, indices, batch, options, finish)


def predict_classes(model: nn.Module, samples: Sequence[Sample], indices: Sequence[int],
                    batch: int, options: PredictOptions = PredictOptions()
                    ) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(index, argmax (H, W) int64)``, left on the device for the confusion matrix."""
    return _predict(model, samples, indices, batch, options, lambda s: (s.argmax(dim=1),))
