"""The HTML report: its figures and tables, and `snakemake --report` on the tiny run."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from workflow_helpers import shared_tiny_run, snakemake

from dars.core.constants import IGNORE
from dars.reporting.render import html_table
from dars.reporting.run_report import palette, report_files

SECTIONS = {"1. Run", "2. Metrics", "3. Training", "4. Pseudo labels"}


def test_report_files_one_per_round_for_pseudo_label_figures() -> None:
    files = report_files(3)
    assert files["examples"] == ["round1/examples.png", "round2/examples.png",
                                 "round3/examples.png"]
    assert files["config"] == ["config.html"] and files["training"] == ["training.svg"]


def test_html_table_formats_and_escapes() -> None:
    df = pd.DataFrame({"name": ["<a&b>", "c"], "threshold": [np.inf, 0.123456],
                       "precision": [np.nan, 1.0]})
    out = html_table(df, "T")
    assert "&lt;a&amp;b&gt;" in out and "∞" in out and "0.1235" in out and "–" in out


def test_palette_shows_ignore_white_and_classes_distinct() -> None:
    colors = palette(19)
    assert tuple(colors[IGNORE]) == (255, 255, 255)
    assert len({tuple(c) for c in colors[:19]}) == 19


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def report(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("report") / "report.html"
    snakemake(tiny_run, "--report", str(out))
    text = out.read_text()

    def js_object(name: str) -> dict:
        match = re.search(rf"^\s*var {name} = (\{{.*\}});\s*$", text, re.M)
        assert match, f"no `var {name}` in the report"
        return json.loads(match.group(1))

    return {"text": text, "results": js_object("results"),
            "categories": js_object("categories")}


@pytest.mark.slow
def test_report_has_every_section_and_embeds_every_file(tiny_run: Path, report: dict) -> None:
    results, categories = report["results"], report["categories"]
    assert set(categories) == SECTIONS
    assert set(categories["4. Pseudo labels"]) == {"round 1", "round 2"}
    expected = {f"results/tiny/report/{f}" for fs in report_files(2).values() for f in fs}
    assert expected <= set(results)
    mimes = {".svg": "image/svg+xml", ".png": "image/png", ".html": "text/html"}
    for path, entry in results.items():
        assert entry["caption"].strip(), f"{path} has no caption"
        assert entry["mime_type"] == mimes[Path(path).suffix]
        prefix, _, payload = entry["data_uri"].partition(";base64,")
        assert prefix.startswith(f"data:{entry['mime_type']};"), path
        assert base64.b64decode(payload) == (tiny_run / path).read_bytes(), path
    # the run's description, rendered from workflow/report/workflow.rst
    assert "DARS self-training run" in report["text"] and "tiny" in report["text"]


@pytest.mark.slow
def test_report_tables_and_figures_show_the_run(tiny_run: Path) -> None:
    res = tiny_run / "results" / "tiny"
    names = pd.read_csv(res / "label_histogram.csv")["name"].tolist()
    metrics = (res / "report" / "metrics.html").read_text()
    for r in (0, 1, 2):
        miou = json.loads((res / f"round{r}" / "metrics.json").read_text())["miou"]
        assert f"<td>{miou:.4g}</td>" in metrics
    assert all(n in metrics for n in names) and "round 2" in metrics
    for s in (1, 2):
        table = (res / "report" / f"round{s}" / "thresholds.html").read_text()
        kept = pd.read_csv(res / f"round{s}" / "thresholds.csv")["kept"]
        assert all(n in table for n in names)
        assert all(f"<td>{k}</td>" in table for k in kept)
        svg = (res / "report" / f"round{s}" / "class_distribution.svg").read_text()
        assert "labeled set" in svg and "pseudo labels" in svg
        with Image.open(res / "report" / f"round{s}" / "examples.png") as im:
            assert im.width > 500 and im.height > 4 * 150  # 4 rows of image | pred | label
    training = (res / "report" / "training.svg").read_text()
    assert "round 0 labeled" in training and "round 2 pseudo" in training
    assert "learning rate" in training
