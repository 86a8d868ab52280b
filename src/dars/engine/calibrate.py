"""calibrate: fit the temperature T of temperature scaling by minimal NLL on a bounded random
sample of labeled pixels, of the logits inference divides by T (:func:`predict_logits`)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dars.core.constants import IGNORE
from dars.core.errors import DarsError
from dars.core.options import CalibrateOptions
from dars.data.dataset import dataset_spec
from dars.data.images import read_mask
from dars.engine.predict import predict_logits
from dars.models import load_model
from dars.store.artifacts import write_json

log = logging.getLogger(__name__)

T_RANGE = (0.05, 20.0)


def fit_temperature(logits: torch.Tensor, target: torch.Tensor) -> float:
    """argmin_T NLL(softmax(logits / T), target), golden-section search on log T (the NLL is
    unimodal in T: no learning rate). Rows of ``logits`` (N, C) may be shifted (log-probs work)."""
    if target.numel() == 0:
        raise DarsError("no labeled pixel to calibrate the temperature on")

    def nll(log_t: float) -> float:
        return F.cross_entropy(logits / math.exp(log_t), target).item()

    lo, hi = math.log(T_RANGE[0]), math.log(T_RANGE[1])
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(a), nll(b)
    while hi - lo > 1e-4:
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(b)
    return math.exp((lo + hi) / 2)


def calibrate(options: CalibrateOptions, model_path: Path, out: Path,
              max_pixels: int = 2_000_000, seed: int = 0) -> float:
    """Fit T for ``model_path`` on up to ``max_pixels`` labeled pixels of the split; write json."""
    spec = dataset_spec(options.dataset)
    split = options.split
    samples = spec.samples(split)
    model = load_model(model_path, spec.num_classes)
    rng = np.random.default_rng(seed)
    per_image = max(1, max_pixels // len(samples))
    picked, targets = [], []
    for index, image_logits in predict_logits(model, samples, range(len(samples)),
                                              options.batch_size, options.predict):
        mask = read_mask(samples[index].mask, spec.num_classes, spec.ignore_index).reshape(-1)
        valid = np.flatnonzero(mask != IGNORE)
        pick = rng.choice(valid, size=min(per_image, valid.size), replace=False)
        picked.append(image_logits.reshape(spec.num_classes, -1)[:, torch.from_numpy(pick)].T)
        targets.append(torch.from_numpy(mask[pick].astype(np.int64)))
    logits, target = torch.cat(picked), torch.cat(targets)
    t = fit_temperature(logits, target)
    before = F.cross_entropy(logits, target).item()
    after = F.cross_entropy(logits / t, target).item()
    write_json({"temperature": t, "split": split, "pixels": int(target.numel()),
                "nll_before": before, "nll_after": after}, out)
    log.info("temperature %.3f fitted on %d %s pixels (NLL %.4f -> %.4f)", t, target.numel(),
             split, before, after)
    return t
