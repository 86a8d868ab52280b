"""infer-probabilities: the teacher's softmax on the unlabeled pool into a zarr store.

Resumable: images already marked written in a leftover ``.partial`` store of the same job (same
teacher file, same ``infer`` options) are skipped, and the store only appears at its final path
once every image is in it. A batch that was only partly written is predicted again whole: CPU
and GPU kernels may round differently for another batch size, and the resumed store must equal
an uninterrupted one bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from dars.config import Config
from dars.data.dataset import dataset_spec
from dars.data.io import image_size
from dars.data.splits import Sample
from dars.engine import checkpoint
from dars.engine.predict import PredictOptions, predict_probs, size_batches
from dars.probstore import ProbStoreWriter

log = logging.getLogger(__name__)


def job_fingerprint(model_path: Path, infer_config: dict) -> str:
    """Hash of the teacher file and the inference options: what the stored values depend on."""
    digest = hashlib.sha256(json.dumps(infer_config, sort_keys=True).encode())
    with open(model_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:32]


def batches_to_redo(samples: Sequence[Sample], pending: Sequence[int], batch: int) -> list[int]:
    """Every image of the batches (as an uninterrupted run forms them) holding a pending one."""
    todo = set(pending)
    if len(todo) == len(samples):
        return list(range(len(samples)))
    return sorted(i for b in size_batches(samples, range(len(samples)), batch)
                  if todo.intersection(b) for i in b)


def infer(config: Config, model_path: Path, out: Path) -> None:
    """Predict every unlabeled image with the teacher and store confidences/probabilities."""
    spec = dataset_spec(config)
    samples = spec.samples("unlabeled", require_masks=False)
    model = checkpoint.load_model(model_path, spec.num_classes)
    writer = ProbStoreWriter(out, [s.id for s in samples], [image_size(s.image) for s in samples],
                             spec.classes, store_probs=config["infer"]["store_probs"],
                             job=job_fingerprint(model_path, config["infer"]))
    pending = writer.pending()
    todo = batches_to_redo(samples, pending, config["infer"]["batch_size"])
    if len(pending) < len(samples):
        log.info("resuming: %d of %d images already written; predicting %d (%d of them again, "
                 "to keep partly written batches whole)", len(samples) - len(pending),
                 len(samples), len(todo), len(todo) - len(pending))
    t0 = time.perf_counter()
    options = PredictOptions.from_config(config["infer"])
    for index, probs in tqdm(predict_probs(model, samples, todo, config["infer"]["batch_size"],
                                           options),
                             total=len(todo), desc="infer", mininterval=2, unit="img"):
        writer.write(index, probs.numpy())
    writer.finalize()
    seconds = time.perf_counter() - t0
    log.info("inferred %d images in %.1f s (%.1f img/s)", len(todo), seconds,
             len(todo) / max(seconds, 1e-9))
