"""What the workflow plans, stage by stage, on the demo, a teacher-seed comparison and a
progressive one with temperature scaling: the job counts pinned before the comparison's rules
became the main rules run on other run directories (issue 24), so that change kept them."""

from __future__ import annotations

from pathlib import Path

import pytest
from workflow_helpers import REPO, stage_counts

DEMO = REPO / "config" / "config.yaml"
V2_DEMO = REPO / "benchmarks" / "experiments" / "v2_demo.yaml"
V2_LONGTAIL = REPO / "benchmarks" / "experiments" / "v2_longtail.yaml"
# progressive +ts rows, a +ts row at its own alpha, two teachers (one the run's own)
PROGRESSIVE_TS = ("compare={methods: [labeled-only, st, st+ts, dars+ts@0.3], "
                  "progressive: [st+ts, dars], teacher_seeds: [1, 2], seeds: [0, 1]}")
MAIN_RUN = {"build-demo": 1, "histogram": 1, "train --round 0": 1, "evaluate": 3, "infer": 2,
            "pseudo-label": 2, "train": 2, "summary": 1, "report": 1}
SHARED = {"build-demo": 1, "histogram": 1, "compare": 1}


@pytest.mark.parametrize(("configfile", "args", "expected"), [
    (DEMO, ("all",), MAIN_RUN),
    (V2_LONGTAIL, ("all",), MAIN_RUN),
    # the default compare block: 7 methods, 3 of them progressive, the run's own teacher
    (DEMO, ("compare",), {**SHARED, "train --round 0": 1, "calibrate": 1, "evaluate": 11,
                          "infer": 5, "blank-labels": 1, "pseudo-label": 9, "train": 10}),
    # 3 teachers (seed 1 the run's baseline) x 2 student seeds x (6 methods + 2 progressive)
    (V2_LONGTAIL, ("compare",), {**SHARED, "train --round 0": 3, "evaluate": 51, "infer": 15,
                                 "blank-labels": 6, "pseudo-label": 42, "train": 48}),
    (V2_DEMO, ("compare", "--config", PROGRESSIVE_TS),
     {**SHARED, "train --round 0": 2, "calibrate": 6, "evaluate": 26, "infer": 12,
      "blank-labels": 4, "pseudo-label": 24, "train": 28}),
    # the run itself at a fitted T: its untempered rows read a store of its teacher at T = 1
    (V2_DEMO, ("compare", "--config", PROGRESSIVE_TS, "pseudo_label={temperature: auto}"),
     {**SHARED, "train --round 0": 2, "calibrate": 6, "evaluate": 26, "infer": 12,
      "blank-labels": 4, "pseudo-label": 24, "train": 28}),
])
def test_jobs_per_stage(tmp_path: Path, configfile: Path, args: tuple[str, ...],
                        expected: dict[str, int]) -> None:
    assert stage_counts(tmp_path, *args, configfile=configfile) == expected
