"""The ``dars`` command: one subcommand per pipeline stage.

Each Snakemake rule is a thin shell around one, so a stage can be debugged without Snakemake:
rules pass ``--options-json``; by hand ``--config``/``--config-json`` is simpler. Values that
only change a stage's speed (``--threads``, ``--workers``) are arguments of their own. Multi-GPU
training: ``torchrun --nproc_per_node=N -m dars.cli train ...``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from dars.core.errors import DarsError
from dars.core.options import (
    CalibrateOptions,
    DatasetOptions,
    EvaluateOptions,
    InferOptions,
    TrainOptions,
    add_options_args,
    config_of,
    options_of,
    temperature_arg,
)
from dars.data.demo import DemoOptions
from dars.jobs.stage_log import stage_summary

log = logging.getLogger("dars")
Handler = Callable[[argparse.Namespace], None]


def parse_shard(text: str) -> tuple[int, int]:
    """``--shard i/N`` -> (i, N) with 0 <= i < N."""
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise argparse.ArgumentTypeError(f"shard must look like i/N with 0 <= i < N, got {text!r}")
    return int(match[1]), int(match[2])


def _threads(n: int) -> None:
    # torch imported on use: thresholding, summaries and reports skip its seconds of import
    import torch

    torch.set_num_threads(max(1, n or os.cpu_count() or 1))


def cmd_build_demo(args: argparse.Namespace) -> None:
    from dars.data.demo import build_demo

    build_demo(Path(args.out), options_of(args, DemoOptions))


def cmd_train(args: argparse.Namespace) -> None:
    import torch

    from dars.engine.train import Trainer
    from dars.jobs.gpu_slots import default_workers

    _threads(args.threads)
    options = options_of(args, TrainOptions, round_index=args.round)
    if args.round != options.round:  # --options-json is for one round
        raise DarsError(f"--round {args.round}, but --options-json is round {options.round}'s")
    by_hand = {} if args.options_json is not None else config_of(args)["train"]
    workers = args.workers if args.workers is not None else by_hand.get("num_workers")
    if workers is None:  # the cores but one per GPU; 0 without a GPU
        workers = default_workers(len(os.sched_getaffinity(0)), torch.cuda.device_count())
    tensorboard = (bool(args.tensorboard) if args.tensorboard is not None
                   else by_hand.get("tensorboard", False))
    trainer = Trainer(options, Path(args.state_dir), init=args.init and Path(args.init),
                      pseudo_dir=args.pseudo and Path(args.pseudo), num_workers=workers,
                      tensorboard=tensorboard)
    trainer.run(Path(args.out), Path(args.log_csv))


def cmd_infer(args: argparse.Namespace) -> None:
    from dars.engine import infer

    _threads(args.threads)
    options, model, out = options_of(args, InferOptions), Path(args.model), Path(args.out)
    t = args.temperature
    if args.init_store:
        infer.init_store(options, model, out, temperature=t)
    elif args.shard:
        infer.infer_shard(options, model, out, args.shard, temperature=t)
    elif args.finalize:
        infer.finalize_store(options, model, out, temperature=t)
    else:
        infer.infer(options, model, out, temperature=t)


def cmd_histogram(args: argparse.Namespace) -> None:
    from dars.pseudo.label_histogram import label_histogram

    label_histogram(options_of(args, DatasetOptions), Path(args.out))


def cmd_pseudo_label(args: argparse.Namespace) -> None:
    from dars.data.dataset import dataset_spec
    from dars.pseudo.stage import mask_reader, pseudo_label
    from dars.pseudo.thresholds import PseudoLabelOptions

    options = options_of(args, PseudoLabelOptions, round_index=args.round)
    true_mask = None
    if args.dataset_json is not None:
        spec = dataset_spec(DatasetOptions.from_json(args.dataset_json))
        masks = spec.listed_masks("unlabeled")
        if masks is None:
            log.info("the unlabeled split lists no mask for some image: no precision")
        else:
            true_mask = mask_reader(masks, spec.num_classes, spec.ignore_index)
    pseudo_label(args.store, args.label_hist, args.labels_out, options,
                 thresholds_out=args.thresholds_out, stats_out=args.stats_out,
                 summary_out=args.summary_out, true_mask=true_mask,
                 temperature=args.temperature, threads=args.threads)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from dars.engine.evaluate import evaluate

    _threads(args.threads)
    evaluate(options_of(args, EvaluateOptions), Path(args.model), Path(args.metrics),
             Path(args.summary), args.round)


def cmd_split(args: argparse.Namespace) -> None:
    from dars.data.draw_split import make_split

    # by hand: the config's patterns unless given
    ds = {} if args.options_json is not None else config_of(args)["dataset"]
    make_split(options_of(args, DatasetOptions), args.labeled, args.seed,
               Path(args.out_labeled), Path(args.out_unlabeled),
               args.image_pattern or ds.get("image_pattern"),
               args.mask_pattern or ds.get("mask_pattern"))


def cmd_calibrate(args: argparse.Namespace) -> None:
    from dars.engine.calibrate import calibrate

    _threads(args.threads)
    calibrate(options_of(args, CalibrateOptions), Path(args.model), Path(args.out),
              max_pixels=args.max_pixels)


def cmd_summary(args: argparse.Namespace) -> None:
    from dars.reporting.summary import summarise

    print(summarise(args.metrics, args.pseudo_summaries, Path(args.out)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dars", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Handler, help_: str, config: bool = True,
            threads: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        if config:
            add_options_args(p)
        if threads:
            p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all)")
        p.set_defaults(handler=handler)
        return p

    p = add("build-demo", cmd_build_demo, "build the embedded demo dataset")
    p.add_argument("--out", required=True, help="dataset root to create")

    p = add("train", cmd_train, "train the baseline (round 0) or a student round", threads=True)
    p.add_argument("--round", type=int, default=0, help="0 = baseline on labeled data")
    p.add_argument("--init", help="teacher checkpoint a student starts from")
    p.add_argument("--pseudo", help="directory of pseudo-label PNGs (<image_id>.png)")
    p.add_argument("--out", required=True, help="final checkpoint (model.pt)")
    p.add_argument("--log-csv", required=True, help="per-epoch training log")
    p.add_argument("--state-dir", required=True, help="where last.pt is kept for resuming")
    p.add_argument("--workers", type=int,
                   help="DataLoader worker processes of the job (default: train.num_workers of "
                        "--config, else the cores but one per GPU; 0 without a GPU)")
    p.add_argument("--tensorboard", type=int, choices=(0, 1),
                   help="1 = write TensorBoard scalars to STATE_DIR/tensorboard (default: "
                        "train.tensorboard of --config, else 0)")

    p = add("infer", cmd_infer, "teacher probabilities on the unlabeled pool → zarr",
            threads=True)
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True, help="probs.zarr to create")
    p.add_argument("--temperature", type=temperature_arg, default=1.0, metavar="T|FILE",
                   help="temperature scaling: store softmax(logits / T); a number (1: none) or "
                        "the temperature.json `dars calibrate` wrote for this teacher")
    sharded = p.add_mutually_exclusive_group()  # the three steps of sharded inference
    sharded.add_argument("--init-store", action="store_true",
                         help="only create the unfinished store (<out>.partial) for the shards")
    sharded.add_argument("--shard", type=parse_shard, metavar="i/N",
                         help="only predict shard i of N (contiguous image range) into it")
    sharded.add_argument("--finalize", action="store_true",
                         help="check every shard's images are in and move the store to --out")

    p = add("pseudo-label", cmd_pseudo_label, "thresholds (DARS, DA, ST, CBST) and one "
            "pseudo-label PNG per image (255 = ignore) from a probability store", threads=True)
    p.add_argument("--round", type=int, default=1,
                   help="the student round whose alpha applies (with --config)")
    p.add_argument("--store", required=True, help="probs.zarr of the teacher")
    p.add_argument("--label-hist", required=True, help="label_histogram.csv of the labeled "
                   "split (class,name,pixels,ratio)")
    p.add_argument("--temperature", type=temperature_arg, default=None, metavar="T|FILE",
                   help="the temperature T the store must have been inferred at (a number or "
                        "the json `dars calibrate` wrote); inference applies T, this stage "
                        "only checks it (default: the store's)")
    p.add_argument("--dataset-json", help="the dataset options (JSON, as the rules pass them): "
                   "when its unlabeled split lists a mask for every image, the pseudo labels' "
                   "precision against them")
    p.add_argument("--labels-out", required=True, help="directory of <image_id>.png")
    p.add_argument("--thresholds-out", help="thresholds.csv")
    p.add_argument("--stats-out", help="pseudo_stats.csv")
    p.add_argument("--summary-out", help="summary.json")

    p = add("histogram", cmd_histogram, "class pixel counts/ratios of the labeled masks → csv")
    p.add_argument("--out", required=True)

    p = add("evaluate", cmd_evaluate, "per-class IoU and mIoU on the val split", threads=True)
    p.add_argument("--model", required=True)
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--metrics", required=True, help="per-class csv")
    p.add_argument("--summary", required=True, help="summary json")

    p = add("split", cmd_split, "seeded labeled/unlabeled split of the training images")
    p.add_argument("--labeled", required=True,
                   help="labeled images: a fraction (1/8, 0.25) or a count (1464)")
    p.add_argument("--seed", type=int, required=True, help="same seed, same split")
    p.add_argument("--out-labeled", required=True, help="labeled split file to write")
    p.add_argument("--out-unlabeled", required=True, help="unlabeled split file to write")
    p.add_argument("--image-pattern",
                   help="where the images are (default: dataset.image_pattern of --config, "
                        "else the dataset's own)")
    p.add_argument("--mask-pattern", help="each image's mask, with the image pattern's fields "
                   "(default: dataset.mask_pattern of --config, else the dataset's own)")

    p = add("calibrate", cmd_calibrate, "fit the temperature T of temperature scaling (NLL)",
            threads=True)
    p.add_argument("--model", required=True, help="checkpoint to calibrate")
    p.add_argument("--max-pixels", type=int, default=2_000_000, help="random pixel sample")
    p.add_argument("--out", required=True, help="json with the fitted temperature")

    p = add("summary", cmd_summary, "table of mIoU (and pseudo-label KL) per round",
            config=False)
    p.add_argument("--metrics", nargs="+", required=True, help="metrics json per round")
    p.add_argument("--pseudo-summaries", nargs="*", default=[], help="pseudo-label summary json")
    p.add_argument("--out", required=True, help="summary csv")

    from dars.compare import control
    from dars.compare import stage as compare
    from dars.jobs import gpu_slots
    from dars.reporting import run_report

    run_report.add_arguments(add("report", run_report.report_command, "figures and tables of "
                                 "the HTML report from a finished run directory"))
    compare.add_arguments(add("compare", compare.compare_command, "tables and plots of the "
                              "method comparison (Table 4/5, Fig. 1/3)", config=False))
    control.add_arguments(add("blank-labels", control.blank_labels_command, "the labeled-only "
                              "control: all-ignore pseudo labels + stats", config=False))
    gpu_slots.add_arguments(add("gpu-run", gpu_slots.gpu_run_command, "run a command on its own "
                                "GPUs (CUDA_VISIBLE_DEVICES from file locks)", config=False))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        with stage_summary(args.command):
            args.handler(args)
    except DarsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk outside dars.store.artifacts (e.g. zarr's chunks)
        from dars.store.artifacts import DISK_ERRNOS

        if exc.errno not in DISK_ERRNOS:
            raise
        print(f"error: cannot write {exc.filename or 'an output'}: {exc.strerror} (free space "
              "and rerun; finished work is kept)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
