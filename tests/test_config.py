from pathlib import Path

import pytest

from dars import config
from dars.errors import DarsError

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_filled_and_nested_defaults_are_independent() -> None:
    a = config.validate({})
    b = config.validate({})
    assert a["rounds"][1] == {"alpha": 0.5, "beta_min": 0.2, "beta_max": 0.5, "epochs": 2}
    assert a["dataset"]["splits"]["labeled"] == "splits/labeled.txt"
    a["dataset"]["splits"]["labeled"] = "changed"
    assert b["dataset"]["splits"]["labeled"] == "splits/labeled.txt"
    assert config.validate({})["dataset"]["splits"]["labeled"] == "splits/labeled.txt"


def test_round_items_get_defaults() -> None:
    c = config.validate({"rounds": [{"alpha": 0.3}]})
    assert c["rounds"] == [{"alpha": 0.3, "beta_min": 0.0, "beta_max": 0.0, "epochs": 2}]


@pytest.mark.parametrize(
    ("cfg", "culprit"),
    [
        ({"rounds": [{"alpah": 0.2}]}, "rounds.0.alpah (unknown key)"),
        ({"datset": {}}, "datset (unknown key)"),
        ({"rounds": [{"alpha": 0.0}]}, "rounds.0.alpha"),
        ({"rounds": [{"alpha": 1.01}]}, "rounds.0.alpha"),
        ({"rounds": [{"alpha": -0.2}]}, "rounds.0.alpha"),
        ({"rounds": []}, "config key rounds:"),
        ({"rounds": [{"alpha": 0.2, "epochs": -1}]}, "rounds.0.epochs"),
        ({"train": {"lr": "fast"}}, "train.lr"),
        ({"pseudo_label": {"method": "dras"}}, "pseudo_label.method"),
        ({"train": {"scale": [1.0]}}, "train.scale"),
    ],
)
def test_bad_config_names_the_key(cfg: dict, culprit: str) -> None:
    with pytest.raises(DarsError, match="config key") as err:
        config.validate(cfg)
    assert culprit in str(err.value)


def test_alpha_one_is_allowed() -> None:
    assert config.validate({"rounds": [{"alpha": 1.0}]})["rounds"][0]["alpha"] == 1.0


def test_shipped_demo_config_is_valid_and_progressive() -> None:
    c = config.load(REPO / "config" / "config.yaml")
    alphas = [r["alpha"] for r in c["rounds"]]
    assert alphas == sorted(alphas) and len(alphas) == 2
    s_min, s_max = c["train"]["scale"]
    assert config.scale_range(c, 1) == (s_min, s_max)
    lo, hi = config.scale_range(c, 2)
    assert lo == pytest.approx((1 - 0.2) * s_min) and hi == pytest.approx(1.5 * s_max)


def test_json_overrides_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("run: a\nseed: 3\n")
    c = config.load(f, '{"seed": 5}')
    assert (c["run"], c["seed"]) == ("a", 5)


def test_missing_or_broken_config_file(tmp_path: Path) -> None:
    with pytest.raises(DarsError, match="config file not found"):
        config.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(DarsError, match="not valid YAML"):
        config.load(bad)
    with pytest.raises(DarsError, match="not valid JSON"):
        config.load(None, "{nope")
