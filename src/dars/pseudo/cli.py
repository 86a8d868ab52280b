"""``dars pseudo-label``: parse arguments, call the stage.

``add_subcommands`` registers it on the main parser's subparsers and sets ``handler`` to a
handler taking the parsed namespace, which the main CLI calls.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dars.pseudo.stage import (
    PseudoLabelOptions,
    mask_reader,
    pseudo_label,
)
from dars.pseudo.thresholds import METHODS, SAMPLINGS
from dars.sharding import parse_shard


def temperature_arg(text: str) -> float:
    """``--temperature``: a number, or the json of ``dars calibrate`` (``temperature: auto``)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return float(json.loads(Path(text).read_text())["temperature"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a number nor a calibration json with a temperature: {exc}"
        ) from exc


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``pseudo-label``."""
    pseudo = subparsers.add_parser(
        "pseudo-label",
        help="thresholds (DARS, DA, ST, CBST) and pseudo-label PNGs from a probability store",
        description="Compute per-class thresholds from the confidence histograms and the "
                    "labeled class distribution, then write one pseudo-label PNG per image "
                    "(255 = ignore).")
    pseudo.add_argument("--store", required=True, help="probs.zarr of the teacher")
    pseudo.add_argument("--temperature", type=temperature_arg, default=None, metavar="T|FILE",
                        help="the temperature T the store must have been inferred at (a "
                             "number or the json `dars calibrate` wrote); inference applies "
                             "T, this stage only checks it (default: the store's)")
    pseudo.add_argument("--shard", type=parse_shard, default=None, metavar="i/N",
                        help="process only shard i of N (contiguous image ranges)")
    pseudo.add_argument("--threads", type=int, default=None,
                        help="worker threads of both passes (default: available cores)")
    pseudo.add_argument("--label-hist", required=True, help="label_histogram.csv of the "
                        "labeled split (class,name,pixels,ratio)")
    pseudo.add_argument("--labels-out", required=True, help="directory of <image_id>.png")
    pseudo.add_argument("--thresholds-out", help="thresholds.csv")
    pseudo.add_argument("--stats-out", help="pseudo_stats.csv")
    pseudo.add_argument("--summary-out", help="summary.json")
    pseudo.add_argument("--alpha", type=float, required=True,
                        help="fraction of unlabeled pixels to pseudo-label, in (0, 1]")
    pseudo.add_argument("--method", choices=METHODS, default="dars",
                        help="dars: aligned thresholds + sampling; da: aligned thresholds; "
                             "st: one global threshold; cbst: top alpha of each predicted class")
    pseudo.add_argument("--sampling", choices=SAMPLINGS, default="paper",
                        help="dars only: paper = keep each selected pixel with n_j/ñ_j; "
                             "ties = keep all above t_j, sample among ties")
    pseudo.add_argument("--seed", type=int, default=0,
                        help="sampling seed (combined with each image id)")
    pseudo.add_argument("--threshold", type=float, default=None,
                        help="st only: fixed confidence threshold instead of alpha")
    pseudo.add_argument("--true-masks", default=None,
                        help="directory of <image_id>.png true masks, for precision")
    pseudo.set_defaults(handler=pseudo_label_command)


def pseudo_label_command(args: argparse.Namespace) -> None:
    options = PseudoLabelOptions(alpha=args.alpha, method=args.method, sampling=args.sampling,
                                 temperature=args.temperature, seed=args.seed,
                                 fixed_threshold=args.threshold)
    pseudo_label(args.store, args.label_hist, args.labels_out, options,
                 thresholds_out=args.thresholds_out, stats_out=args.stats_out,
                 summary_out=args.summary_out, shard=args.shard,
                 true_mask=mask_reader(args.true_masks) if args.true_masks else None,
                 threads=args.threads)
