"""``dars histogram``: class pixel counts and ratios r_j of the labeled masks, to which DARS
aligns the pseudo labels (n_j = α·P·r_j), from the data (the release hard-codes them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from dars.core.constants import IGNORE
from dars.core.errors import DarsError
from dars.core.options import DatasetOptions
from dars.data.dataset import dataset_spec
from dars.data.images import read_mask
from dars.store.artifacts import write_csv


def label_histogram(options: DatasetOptions, out: Path, split: str = "labeled") -> pd.DataFrame:
    """Count labeled pixels per class (ignore excluded) and write ``class,name,pixels,ratio``;
    it depends on the dataset's options alone."""
    spec = dataset_spec(options)
    counts = np.zeros(spec.num_classes, dtype=np.int64)
    for sample in tqdm(spec.samples(split), desc="histogram", mininterval=2, unit="img"):
        mask = read_mask(sample.mask, spec.num_classes, spec.ignore_index)
        counts += np.bincount(mask[mask != IGNORE], minlength=spec.num_classes)
    total = int(counts.sum())
    if total == 0:
        raise DarsError(f"the {split} masks contain no labeled pixel")
    df = pd.DataFrame({"class": np.arange(spec.num_classes), "name": spec.classes,
                       "pixels": counts, "ratio": counts / total})
    write_csv(df, out)
    return df
