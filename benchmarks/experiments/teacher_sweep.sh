#!/usr/bin/env bash
# The teacher sweep of protocol version 2 (docs/EXPERIMENTS.md): the run's baseline (one seed,
# the config's) trained for each epoch count given, each as its own run
# (results/<run>_sweep_e<E>/round0/metrics.json), one core, then their validation mIoU.
#   benchmarks/experiments/teacher_sweep.sh benchmarks/experiments/v2_demo.yaml 25 50 100 200
set -euo pipefail
config=$1; shift
run=$(python -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['run'])" "$config")
for e in "$@"; do
  snakemake "results/${run}_sweep_e$e/round0/metrics.json" --cores 1 --configfile "$config" \
    --config "run=${run}_sweep_e$e" "train={epochs: $e}" "rounds=[{alpha: 0.2, epochs: $e}]" \
    > "logs/${run}_sweep_e$e.snakemake.log" 2>&1
done
echo "epochs,miou,tail_miou,train_s"
for e in "$@"; do
  python - "results/${run}_sweep_e$e/round0/metrics.json" "logs/${run}_sweep_e$e/round0/train.benchmark.tsv" "$e" <<'PY'
import csv, json, sys
m = json.load(open(sys.argv[1]))
s = next(csv.DictReader(open(sys.argv[2]), delimiter="\t"))["s"]
print(f"{sys.argv[3]},{m['miou']:.4f},{m['tail_miou']:.4f},{float(s):.0f}")
PY
done
