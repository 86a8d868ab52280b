import math

import pytest
import torch
import torch.nn.functional as F

from dars.core.errors import DarsError
from dars.core.options import TrainOptions
from dars.engine.calibrate import fit_temperature


def test_recovers_the_temperature_that_generated_the_labels() -> None:
    """Labels sampled from softmax(z / 2) are best explained by T = 2 (up to sampling noise)."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(200_000, 5, generator=g) * 3
    target = torch.multinomial(F.softmax(z / 2.0, dim=1), 1, generator=g).squeeze(1)
    t = fit_temperature(F.log_softmax(z, dim=1), target)
    assert t == pytest.approx(2.0, rel=0.03)


def test_optimum_beats_neighbours() -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(5000, 3, generator=g) * 4
    noisy = torch.rand(5000, generator=g) < 0.3  # 70 % of labels agree with the argmax
    target = torch.where(noisy, torch.randint(0, 3, (5000,), generator=g), z.argmax(1))
    t = fit_temperature(z, target)
    nll = [F.cross_entropy(z / (t * f), target).item() for f in (0.9, 1.0, 1.1)]
    assert nll[1] <= min(nll[0], nll[2])
    assert math.isfinite(t)


def test_empty_input_is_an_error() -> None:
    with pytest.raises(DarsError, match="no labeled pixel"):
        fit_temperature(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))


def test_cli_fits_and_writes_json(folder_config: dict, tmp_path) -> None:
    import json

    import yaml

    from dars.cli import main
    from dars.engine.train import Trainer

    folder_config["train"]["epochs"] = 3
    model = tmp_path / "model.pt"
    trainer = Trainer(TrainOptions.from_config(folder_config, 0), tmp_path / "state")
    trainer.run(model, tmp_path / "log.csv")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(folder_config))
    out = tmp_path / "t.json"
    assert main(["calibrate", "--config", str(cfg), "--model", str(model), "--out", str(out)]) == 0
    fit = json.loads(out.read_text())
    assert 0.05 < fit["temperature"] < 20 and fit["nll_after"] <= fit["nll_before"] + 1e-6
    assert fit["pixels"] == 4 * 16 * 16  # the val split: 4 fully labeled 16x16 images
