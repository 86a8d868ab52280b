"""Method ``fixed``: one confidence threshold tau for every class, in a run and in a comparison."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from workflow_helpers import snakemake

from dars.core import config as dars_config
from dars.core.errors import DarsError
from dars.pseudo.stage import pseudo_label
from dars.pseudo.thresholds import PseudoLabelOptions, compute_thresholds
from dars.stats.counting import confidence_histogram
from dars.store.probstore import ProbStoreWriter


def _pixels(seed: int = 0, n: int = 4000, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pred = rng.integers(0, classes, n).astype(np.uint8)
    conf = rng.choice(np.linspace(0.3, 1.0, 15), n).astype(np.float16)  # many ties
    return pred, conf


@pytest.mark.parametrize("tau", [0.0, 0.5, 0.9, 0.95, 1.0])
@pytest.mark.parametrize("alpha", [0.1, 0.6])
def test_fixed_keeps_every_pixel_at_or_above_tau_whatever_alpha(tau: float, alpha: float
                                                                ) -> None:
    pred, conf = _pixels()
    ratios = np.full(4, 0.25)
    th = compute_thresholds(confidence_histogram(pred, conf, 4), ratios, alpha, "fixed",
                            settings={"tau": tau})
    kept = [np.count_nonzero((pred == j) & (conf.astype(float) >= tau)) for j in range(4)]
    np.testing.assert_array_equal(th.selected, kept)
    np.testing.assert_array_equal(th.expected_kept, kept)  # no sampling
    assert np.all(th.keep_above == 1) and np.all(th.keep_at == 1)


def test_fixed_needs_its_tau_in_the_unit_interval() -> None:
    hist = confidence_histogram(*_pixels(), 4)
    with pytest.raises(DarsError, match="reads the settings"):
        compute_thresholds(hist, np.full(4, 0.25), 0.2, "fixed")
    with pytest.raises(DarsError, match="tau must be in"):
        compute_thresholds(hist, np.full(4, 0.25), 0.2, "fixed", settings={"tau": 1.5})
    with pytest.raises(DarsError, match="tau"):
        dars_config.validate({"pseudo_label": {"method": "fixed", "tau": 1.5}})


def test_tau_is_an_option_of_fixed_only() -> None:
    """A change of tau reruns the fixed pseudo labels and nothing of the other methods."""
    config = dars_config.validate({"pseudo_label": {"method": "fixed", "tau": 0.8}})
    options = PseudoLabelOptions.from_config(config)
    assert json.loads(options.to_json())["tau"] == 0.8
    assert PseudoLabelOptions.from_json(options.to_json()) == options
    assert "tau" not in json.loads(PseudoLabelOptions.from_config(config, method="dars")
                                   .to_json())


def test_the_stage_labels_with_fixed(tmp_path: Path) -> None:
    pred, conf = _pixels(n=2 * 20 * 20)
    writer = ProbStoreWriter(tmp_path / "probs.zarr", ["a", "b"], [(20, 20)] * 2,
                             ["c0", "c1", "c2", "c3"])
    for i in range(2):
        part = slice(i * 400, (i + 1) * 400)
        writer.write_prediction(i, pred[part].reshape(20, 20), conf[part].reshape(20, 20))
    writer.finalize()
    hist = tmp_path / "label_histogram.csv"
    pd.DataFrame({"class": range(4), "name": [f"c{j}" for j in range(4)], "pixels": 1,
                  "ratio": 0.25}).to_csv(hist, index=False)
    options = PseudoLabelOptions(alpha=0.2, method="fixed", settings=(("tau", 0.8),))
    summary = pseudo_label(tmp_path / "probs.zarr", hist, tmp_path / "labels", options)
    assert summary["kept_pixels"] == np.count_nonzero(conf.astype(float) >= 0.8)
    assert (summary["method"], summary["tau"]) == ("fixed", 0.8)


def test_fixed_in_a_run_and_in_the_comparison(tmp_path: Path) -> None:
    text = snakemake(tmp_path, "-n", "-p", "all", "compare", "--config",
                     "pseudo_label={method: fixed, tau: 0.8}",
                     "compare={methods: [fixed, fixed+ts, dars], progressive: [fixed], "
                     "seeds: [0]}").stdout
    options = {m[2]: json.loads(m[1]) for m in re.finditer(
        r"dars pseudo-label --options-json '(\{.*?\})' .*?--labels-out (\S+)", text)}
    fixed = [f"results/tiny/round{s}/pseudo_labels" for s in (1, 2)] + [
        f"results/tiny/compare/teacher1/{m}/seed0/round{s}/pseudo_labels"
        for m, s in (("fixed", 1), ("fixed", 2), ("fixed+ts", 1))]
    assert {f: (o["method"], o.get("tau")) for f, o in options.items() if f in fixed} == {
        f: ("fixed", 0.8) for f in fixed}
    dars = "results/tiny/compare/teacher1/dars/seed0/round1/pseudo_labels"
    assert options[dars]["method"] == "dars" and "tau" not in options[dars]
