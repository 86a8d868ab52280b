"""The CUDA paths (bf16 autocast, channels_last, GPU inference), checked against the CPU.

Marked ``cuda`` and skipped without a GPU; ``benchmarks/gpu_check.py`` runs them with
``pytest -m cuda`` on the GPU machine, which has torch but not zarr or jsonschema -- so this
file imports only modules free of both (no ``dars.core.config``, no ``dars.engine.train``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import CLASSES, write_folder_dataset

from dars.data.dataset import to_tensor
from dars.data.images import read_image
from dars.data.splits import read_split
from dars.engine.predict import PredictOptions, bf16_autocast, predict_probs
from dars.engine.sliding import sliding_scores
from dars.models import build_model

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
CUDA = torch.device("cuda")


@pytest.mark.parametrize(("bf16", "atol"), [(False, 2e-3), (True, 3e-2)])
def test_predict_probs_on_cuda_matches_the_cpu(tmp_path: Path, bf16: bool, atol: float) -> None:
    """GPU inference (fp32, or bf16 + channels_last) gives the CPU's sliding-window softmax;
    atol covers TF32 convolutions (on by default in cuDNN) and bf16's 8-bit mantissa."""
    root = write_folder_dataset(tmp_path / "data", size=40)
    samples = read_split(root, "splits/val.txt") + read_split(root, "splits/labeled.txt")
    torch.manual_seed(0)
    model = build_model({"name": "tiny", "width": 8}, len(CLASSES)).eval()
    with torch.inference_mode():
        expected = {i: sliding_scores(model, to_tensor(read_image(s.image))[None], 24, 2 / 3,
                                      True)[0].softmax(0) for i, s in enumerate(samples)}
    options = PredictOptions(mode="sliding", crop_size=24, stride_ratio=2 / 3, flip=True,
                             bf16=bf16)
    got = dict(predict_probs(model, samples, range(len(samples)), 2, options))
    assert sorted(got) == list(range(len(samples)))
    assert next(model.parameters()).is_cuda
    for i, probs in got.items():
        assert probs.device.type == "cpu" and probs.dtype == torch.float32
        torch.testing.assert_close(probs, expected[i], atol=atol, rtol=0)
        torch.testing.assert_close(probs.sum(0), torch.ones(probs.shape[1:]), atol=1e-3, rtol=0)


def test_bf16_channels_last_training_step_matches_fp32() -> None:
    """PSPNet-R50 on CUDA: the bf16 + channels_last loss and gradients agree with fp32 on the
    same weights and batch."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 65, 65, device=CUDA)
    y = torch.randint(0, 5, (2, 65, 65), device=CUDA)
    losses, grads = {}, {}
    for fast in (False, True):
        torch.manual_seed(0)
        model = build_model({"name": "pspnet", "backbone": "resnet50"}, 5).to(CUDA).train()
        inp = x
        if fast:
            model = model.to(memory_format=torch.channels_last)
            inp = x.contiguous(memory_format=torch.channels_last)
        torch.manual_seed(1)  # same dropout masks in both settings
        with bf16_autocast(CUDA, fast):
            out = model(inp)
            loss = F.cross_entropy(out["out"].float(), y) + 0.4 * F.cross_entropy(
                out["aux"].float(), y)
        loss.backward()
        losses[fast] = loss.item()
        grads[fast] = model.cls[-1].weight.grad.detach().float().clone()
        assert out["out"].dtype == (torch.bfloat16 if fast else torch.float32)
    assert losses[True] == pytest.approx(losses[False], rel=2e-2)
    cos = F.cosine_similarity(grads[True].flatten(), grads[False].flatten(), dim=0)
    assert cos > 0.95
