"""The one-line summary every `dars` stage ends its log with."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from dars.cli import main
from dars.jobs import stage_log


def test_summary_line_text() -> None:
    line = stage_log.summary_line("infer", 10.0, 812 * 2**20, None)
    assert line == "stage infer: 10.0 s, peak RSS 812 MiB"
    line = stage_log.summary_line("train", 2.0, 3 * 2**30, 2**29)
    assert line == "stage train: 2.0 s, peak RSS 3.0 GiB, peak GPU 512 MiB"


def test_every_cli_stage_logs_a_summary(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                        ) -> None:
    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps({"round": 0, "miou": 0.5, "pixel_accuracy": 0.9}))
    with caplog.at_level(logging.INFO, logger="dars.stage"):
        assert main(["summary", "--metrics", str(metrics), "--out", str(tmp_path / "s.csv")]) == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "dars.stage"]
    assert lines[0].startswith("stage summary: ") and "peak RSS" in lines[0]
