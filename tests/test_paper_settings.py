"""docs/PAPER_SETTINGS.md is generated, current, and shows no unlisted difference."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _script():  # noqa: ANN202 -- the module of scripts/paper_settings.py
    spec = importlib.util.spec_from_file_location("paper_settings",
                                                  REPO / "scripts" / "paper_settings.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_paper_settings_doc_is_current_and_every_difference_intended(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert _script().main(["--check"]) == 0, capsys.readouterr().err


def _new_problems(old: str, new: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                  ) -> set[str]:
    """What --check reports beyond today once the released file says ``new`` for ``old``."""
    script = _script()
    _, before = script.build()
    released = tmp_path / "released.yaml"
    released.write_text(script.RELEASED.read_text().replace(old, new))
    monkeypatch.setattr(script, "RELEASED", released)
    _, problems = script.build()
    return set(problems) - set(before)


def test_a_changed_setting_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _new_problems("base_lr: 0.002", "base_lr: 0.003", tmp_path, monkeypatch) == {
        "cityscapes_1-8_crop361_deeplabv2: base_lr: released 0.003, ours 0.002"}


def test_an_intended_difference_of_one_config_is_not_intended_in_another(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The released round 1 of 1/4 crop 361 ran on 4 GPUs (intended there); the same change
    in 1/4 crop 713's row is reported, with the value read from its {value, source} entry."""
    assert _new_problems("gpus: {value: [8, 8, 8]", "gpus: {value: [8, 4, 8]", tmp_path,
                         monkeypatch) == {
        "cityscapes_1-4_crop713: gpus: released 8, 4, 8, ours 8, 8, 8"}
