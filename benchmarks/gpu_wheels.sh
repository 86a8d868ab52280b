#!/usr/bin/env bash
# The wheels benchmarks/gpu_check.py needs beyond the GPU machine's own packages, into the
# git-ignored wheels/ that the device run carries (issue 20, item 5).
#
# The machine has torch, torchvision, numpy, pandas, pillow, pyyaml, tqdm, pytest,
# opencv-python-headless, attrs and typing-extensions, and no network; the real Trainer's config
# import needs jsonschema, which needs referencing, jsonschema-specifications and rpds-py (a
# compiled wheel: built for the machine's Python). attrs and typing-extensions come along in case
# the machine's are too old (pip keeps installed ones that satisfy). Versions are the project's
# lock (requirements/lock-x86_64.txt). Nothing on the check's path needs zarr; snakemake is not
# needed and not brought.
#
#   benchmarks/gpu_wheels.sh                   # Python 3.12 (seen on the H100/H200 machines, 2026-11)
#   PYTHON_VERSION=3.11 benchmarks/gpu_wheels.sh
#   EXTRA="opencv-python-headless" benchmarks/gpu_wheels.sh   # also the lock's OpenCV (~60 MB)
#
# Then, on the device, with carry: ["wheels"]:
#   python3 -m pip install -q --no-index --find-links wheels jsonschema \
#     && PYTHONPATH=src python3 benchmarks/gpu_check.py --out $OUT/gpu_check.json
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
DEST=${DEST:-wheels}
LOCK=requirements/lock-x86_64.txt
PACKAGES="jsonschema jsonschema-specifications referencing rpds-py attrs typing-extensions ${EXTRA:-}"

pins=()
for name in $PACKAGES; do
  # the lock spells names with - or _: match either, case-insensitively
  pattern=$(echo "$name" | sed 's/[-_]/[-_]/g')
  pin=$(grep -i -m1 -E "^${pattern}==" "$LOCK" | sed 's/ .*//' || true)
  pins+=("${pin:-$name}")
done

mkdir -p "$DEST"
python3 -m pip download --no-deps --only-binary=:all: --implementation cp \
  --python-version "$PYTHON_VERSION" \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$DEST" "${pins[@]}"
echo "wheels for Python $PYTHON_VERSION in $DEST/ ($(du -sh "$DEST" | cut -f1)); carry it: \"$DEST\""
