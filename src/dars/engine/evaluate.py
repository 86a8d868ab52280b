"""evaluate: val confusion matrix -> per-class IoU, mIoU, tail mIoU, predicted as ``evaluate``
says (released: sliding crop, flip, probabilities averaged, resized to the mask, argmax)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from dars.core.errors import DarsError
from dars.core.options import EvaluateOptions
from dars.data.dataset import DatasetSpec, dataset_spec
from dars.data.images import read_mask
from dars.data.splits import Sample
from dars.engine.predict import device, predict_classes
from dars.models import checkpoint, load_model
from dars.store.artifacts import write_csv, write_json

log = logging.getLogger(__name__)


def confusion_matrix(target: torch.Tensor, pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) counts, rows = ground truth, columns = prediction; ignore pixels dropped."""
    keep = target < num_classes
    idx = target[keep].long() * num_classes + pred[keep].long()
    return torch.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU; NaN for a class absent from both ground truth and prediction."""
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def val_confusion(model: nn.Module, spec: DatasetSpec, samples: list[Sample],
                  options: EvaluateOptions) -> np.ndarray:
    """(C, C) confusion matrix of ``model`` on the val ``samples`` (checkpoints and training)."""
    c = spec.num_classes
    cm = torch.zeros(c, c, dtype=torch.int64, device=device())  # counted where predicted
    for index, pred in tqdm(predict_classes(model, samples, range(len(samples)),
                                            options.batch_size, options.predict),
                            total=len(samples), desc="evaluate", mininterval=2, unit="img"):
        target = torch.from_numpy(read_mask(samples[index].mask, c, spec.ignore_index))
        if target.shape != pred.shape:
            raise DarsError(f"mask {samples[index].mask} size differs from its image")
        cm += confusion_matrix(target.to(pred.device, non_blocking=True), pred, c)
    return cm.cpu().numpy()


def best_validation(history: list[dict], last_epoch: int, last_miou: float) -> dict:
    """Best of the history's ``val_miou`` and the final mIoU, with its epoch (earlier on a tie)."""
    scored = [(row["epoch"], row["val_miou"]) for row in history
              if not math.isnan(row.get("val_miou", math.nan))]
    epoch, miou = max([*scored, (last_epoch, last_miou)], key=lambda em: (em[1], -em[0]))
    return {"best_miou": float(miou), "best_epoch": int(epoch)}


def evaluate(options: EvaluateOptions, model_path: Path, metrics_csv: Path, summary_json: Path,
             round_index: int) -> dict:
    """Write a round's per-class and summary val metrics (last state) and its best validation."""
    spec = dataset_spec(options.dataset)
    unknown = sorted(set(options.tail_classes) - set(spec.classes))
    if unknown:  # checked first: a typo must not cost a full evaluation pass
        raise DarsError(f"evaluate.tail_classes names unknown classes: {unknown}")
    tail_idx = [spec.classes.index(n) for n in options.tail_classes]
    samples = spec.samples("val")
    state = checkpoint.load(model_path)
    cm = val_confusion(load_model(model_path, spec.num_classes, state), spec, samples, options)
    iou = iou_from_confusion(cm)
    miou = float(np.nanmean(iou))
    last_epoch = int(state.get("epoch", 0))
    summary = {
        "round": round_index, "miou": miou, "epoch": last_epoch,
        **best_validation(state.get("history", []), last_epoch, miou),
        "tail_miou": float(np.nanmean(iou[tail_idx])) if tail_idx else None,
        "pixel_accuracy": float(np.diag(cm).sum() / max(cm.sum(), 1)),
        "images": len(samples),
    }
    write_csv(pd.DataFrame({"class": range(spec.num_classes), "name": spec.classes, "iou": iou,
                            "gt_pixels": cm.sum(1), "pred_pixels": cm.sum(0)}), metrics_csv)
    write_json(summary, summary_json)
    log.info("round %d: mIoU %.4f", round_index, summary["miou"])
    return summary
