"""Stage options (dars.core.options): built from the validated config, holding exactly what a
stage's outputs depend on, and rebuilt equal from their params (what the rules pass)."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from dars.cli import main
from dars.core import config
from dars.core.errors import DarsError
from dars.core.options import (
    CalibrateOptions,
    DatasetOptions,
    EvaluateOptions,
    InferOptions,
    Options,
    TrainOptions,
)
from dars.data.demo import DemoOptions
from dars.reporting.run_report import ReportOptions

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "config").glob("*.yaml"))
# every stage's options type, built from one config (training: of every configured round)
PER_RUN: list[type[Options]] = [DemoOptions, DatasetOptions, InferOptions, EvaluateOptions,
                                CalibrateOptions]


def every_options(cfg: dict) -> dict[str, Options]:
    """Every stage's options of ``cfg`` by name (training once per round)."""
    found: dict[str, Options] = {cls.__name__: cls.from_config(cfg) for cls in PER_RUN}
    for r in range(len(cfg["rounds"]) + 1):
        found[f"TrainOptions:{r}"] = TrainOptions.from_config(cfg, r)
    return found


def changed(cfg: dict, section: str, key: str, value: Any) -> dict:
    """A copy of the validated ``cfg`` with ``section.key`` set (``section`` "" = top level)."""
    out = copy.deepcopy(cfg)
    (out[section] if section else out)[key] = value
    return config.validate(out)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_params_round_trip_to_equal_options(path: Path) -> None:
    """What a rule passes rebuilds the very options the stage would have built itself."""
    cfg = config.load(path)
    for name, options in {**every_options(cfg),
                          "ReportOptions": ReportOptions.from_config(cfg)}.items():
        text = options.to_json()
        assert json.loads(text) == options.params(), name  # plain JSON data
        assert type(options).from_json(text) == options, name
        assert type(options).from_params(json.loads(text)) == options, name


# (section, key, value): keys that change how fast something runs, never what it computes
RUNTIME = [("train", "num_workers", 7), ("train", "tensorboard", True),
           ("dataset", "image_pattern", "images/{name}.jpg"),
           ("dataset", "mask_pattern", "masks/{name}.png"), ("", "gpus", 2), ("", "shards", 3),
           ("resources", "gpu_rules", {"cpus_per_task": 16})]


@pytest.mark.parametrize(("section", "key", "value"), RUNTIME)
def test_runtime_keys_are_in_no_stage_options(section: str, key: str, value: Any) -> None:
    cfg = config.load(REPO / "config" / "config.yaml")
    before, after = every_options(cfg), every_options(changed(cfg, section, key, value))
    assert {n: o.params() for n, o in after.items()} == {n: o.params() for n, o in
                                                         before.items()}


@pytest.mark.parametrize(("section", "key", "value", "reaches"), [
    # training reads no evaluation, inference or pseudo-label key
    ("evaluate", "tail_classes", ["t-shirt"], {"EvaluateOptions"}),
    ("evaluate", "batch_size", 3, {"EvaluateOptions"}),
    ("pseudo_label", "method", "cbst", set()),  # a CLI argument of thresholding, not config
    ("dataset", "pixels_per_image", 187500, set()),  # only thresholding's n_j reads it
    # calibration predicts as inference does, but writes no store
    ("infer", "images_per_chunk", 4, {"InferOptions"}),
    ("infer", "batch_size", 4, {"InferOptions", "CalibrateOptions"}),
    ("pseudo_label", "calibration_split", "labeled", {"CalibrateOptions"}),
    ("demo", "size", 48, {"DemoOptions"}),
    ("model", "width", 16, {"TrainOptions:0", "TrainOptions:1", "TrainOptions:2"}),
    ("train", "epochs", 5, {"TrainOptions:0", "TrainOptions:1", "TrainOptions:2"}),
    # round 2's settings reach round 2's training only (its alpha: no training at all)
    ("rounds", None, [{"alpha": 0.2, "epochs": 2}, {"alpha": 0.4, "beta_min": 0.2,
                                                    "beta_max": 0.5, "epochs": 2}], set()),
    ("rounds", None, [{"alpha": 0.2, "epochs": 2}, {"alpha": 0.5, "beta_min": 0.1,
                                                    "beta_max": 0.5, "epochs": 2}],
     {"TrainOptions:2"}),
    ("rounds", None, [{"alpha": 0.2, "epochs": 2}, {"alpha": 0.5, "beta_min": 0.2,
                                                    "beta_max": 0.5, "epochs": 3}],
     {"TrainOptions:2"}),
])
def test_a_key_reaches_exactly_the_stages_that_read_it(section: str, key: str | None,
                                                       value: Any, reaches: set[str]) -> None:
    cfg = config.load(REPO / "config" / "config.yaml")
    if key is None:
        new = config.validate({**copy.deepcopy(cfg), section: value})
    else:
        new = changed(cfg, section, key, value)
    before, after = every_options(cfg), every_options(new)
    assert {n for n in before if before[n].params() != after[n].params()} == reaches


def test_seed_override_of_the_comparison_changes_only_the_seed() -> None:
    cfg = config.load(REPO / "config" / "config.yaml")
    options = TrainOptions.from_config(cfg, 1)
    other = dataclasses.replace(options, seed=7)
    assert TrainOptions.from_json(other.to_json()) == other
    assert {k for k, v in other.params().items() if options.params()[k] != v} == {"seed"}


def test_options_are_frozen() -> None:
    options = DatasetOptions.from_config(config.validate({}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.root = "elsewhere"  # type: ignore[misc]


@pytest.mark.parametrize(("text", "message"), [
    ("{", "--options-json is not valid JSON"),
    ("[1]", "DatasetOptions: expected a JSON object"),
    ('{"name": "demo"}', r"DatasetOptions: missing keys \['classes', 'ignore_index', 'root', "
                         r"'splits'\], unknown keys \[\]"),
])
def test_bad_options_json_is_one_dars_error(text: str, message: str) -> None:
    with pytest.raises(DarsError, match=message) as err:
        DatasetOptions.from_json(text)
    assert "\n" not in str(err.value)


def test_an_unknown_nested_key_is_named() -> None:
    params = DatasetOptions.from_config(config.validate({})).params()
    params["splits"]["test"] = "splits/test.txt"
    with pytest.raises(DarsError, match=r"SplitFiles: missing keys \[\], unknown keys \['test'\]"):
        DatasetOptions.from_params(params)


def test_a_round_that_is_not_configured_is_refused() -> None:
    with pytest.raises(DarsError, match="round 3 is not configured"):
        TrainOptions.from_config(config.validate({}), 3)


def test_cli_takes_options_or_a_config_not_both(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config.validate({})
    out = str(tmp_path / "hist.csv")
    js = DatasetOptions.from_config(cfg).to_json()
    assert main(["histogram", "--options-json", js, "--config-json", "{}", "--out", out]) == 2
    assert "not both" in capsys.readouterr().err
    train = ["train", "--options-json", TrainOptions.from_config(cfg, 1).to_json(),
             "--state-dir", str(tmp_path), "--out", out, "--log-csv", out]
    assert main([*train, "--round", "2"]) == 2
    assert "--round 2, but --options-json is round 1's" in capsys.readouterr().err
