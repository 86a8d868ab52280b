"""infer-probabilities: the teacher's softmax on the unlabeled pool into a zarr store.

Resumable: images already marked written in a leftover ``.partial`` store of the same job are
skipped, and the store only appears at its final path once every image is in it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from dars.config import Config
from dars.data.dataset import dataset_spec
from dars.engine import checkpoint
from dars.engine.predict import predict_probs
from dars.errors import DarsError
from dars.probstore import ProbStoreWriter

log = logging.getLogger(__name__)


def image_shape(path: Path) -> tuple[int, int]:
    """(h, w) from the image header without decoding the pixels."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except OSError as exc:
        raise DarsError(f"cannot read image {path}: {exc}") from exc
    return h, w


def infer(config: Config, model_path: Path, out: Path) -> None:
    """Predict every unlabeled image with the teacher and store confidences/probabilities."""
    spec = dataset_spec(config)
    samples = spec.samples("unlabeled", require_masks=False)
    model = checkpoint.load_model(model_path, spec.num_classes)
    writer = ProbStoreWriter(out, [s.id for s in samples], [image_shape(s.image) for s in samples],
                             spec.classes, store_probs=config["infer"]["store_probs"])
    todo = writer.pending()
    if len(todo) < len(samples):
        log.info("resuming: %d of %d images already written", len(samples) - len(todo),
                 len(samples))
    t0 = time.perf_counter()
    for index, probs in tqdm(predict_probs(model, samples, todo, config["infer"]["batch_size"]),
                             total=len(todo), desc="infer", mininterval=2, unit="img"):
        writer.write(index, probs.numpy())
    writer.finalize()
    seconds = time.perf_counter() - t0
    log.info("inferred %d images in %.1f s (%.1f img/s)", len(todo), seconds,
             len(todo) / max(seconds, 1e-9))
