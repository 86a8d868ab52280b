"""What inference and evaluation take from the device: the same values as the host path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from dars.data.splits import Sample
from dars.engine.evaluate import confusion_matrix
from dars.engine.predict import (
    PredictOptions,
    predict_classes,
    predict_labels,
    predict_probs,
    predict_scores,
)
from dars.models import build_model


class TiedLogits(nn.Module):
    """Three classes, logits [1, 1, 0] left of the middle and [0, 1, 1] right of it: the
    argmax is a tie everywhere, which the first maximal class breaks."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, h, w = x.shape
        out = torch.zeros(b, 3, h, w)
        out[:, :2, :, : w // 2] = 1
        out[:, 1:, :, w // 2:] = 1
        return {"out": out}


def _images(tmp_path: Path) -> list[Sample]:
    """Seven noisy images of two sizes: batches of 2 leave a partial batch in each size."""
    rng = np.random.default_rng(0)
    samples = []
    for i, (h, w) in enumerate([(20, 28)] * 4 + [(17, 23)] * 3):
        path = tmp_path / f"im{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        samples.append(Sample(f"im{i}", path, None))
    return samples


MODELS = {"tiny": lambda: build_model({"name": "tiny", "width": 8}, 5), "tied": TiedLogits}
OPTIONS = [PredictOptions(), PredictOptions(mode="sliding", crop_size=12, flip=True,
                                            average="probs", base_size=24)]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("options", OPTIONS)
def test_stored_labels_equal_those_of_the_host_probabilities(tmp_path: Path, name: str,
                                                             options: PredictOptions) -> None:
    """Argmax and float16 confidence computed on the device equal numpy's argmax / max of
    the float32 probabilities cast as the store casts them."""
    torch.manual_seed(0)
    model, samples = MODELS[name](), _images(tmp_path)
    indices = range(len(samples))
    host = dict(predict_probs(model, samples, indices, 2, options, temperature=1.3))
    seen = []
    for index, pred, conf in predict_labels(model, samples, indices, 2, options,
                                            temperature=1.3):
        p = host[index].numpy()
        assert pred.dtype == torch.uint8 and conf.dtype == torch.float16
        np.testing.assert_array_equal(pred.numpy(), p.argmax(axis=0))
        np.testing.assert_array_equal(conf.numpy(), p.max(axis=0).astype(np.float16))
        seen.append(index)
    assert sorted(seen) == list(indices)


def test_ties_go_to_the_first_class(tmp_path: Path) -> None:
    samples = _images(tmp_path)[:1]
    (_, pred, _), = predict_labels(TiedLogits(), samples, [0], 1)
    assert (pred[:, :14] == 0).all() and (pred[:, 14:] == 1).all()


@pytest.mark.parametrize("name", MODELS)
def test_confusion_on_the_device_equals_the_host_one(tmp_path: Path, name: str) -> None:
    torch.manual_seed(0)
    model, samples = MODELS[name](), _images(tmp_path)
    rng = np.random.default_rng(1)
    targets = {i: torch.from_numpy(rng.integers(0, 6, Image.open(s.image).size[::-1])
                                   .astype(np.uint8)) for i, s in enumerate(samples)}
    indices, options = range(len(samples)), OPTIONS[1]
    host = sum(confusion_matrix(targets[i], s.argmax(0), 5)
               for i, s in predict_scores(model, samples, indices, 3, options))
    device = sum(confusion_matrix(targets[i].to(p.device), p, 5)
                 for i, p in predict_classes(model, samples, indices, 3, options))
    assert torch.equal(device.cpu(), host) and int(host.sum()) > 0
