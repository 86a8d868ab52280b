# Two commands for a new user:  `make demo` (pipeline end to end) and `make test`.
# Both create ./.venv on first use and are idempotent.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all
ARCH := $(shell uname -m)
# One torch / torchvision pair on every architecture, so x86_64 and aarch64 run the same library
# code. PyPI's torchvision only works beside the torch build it was compiled against, so the two
# are pinned together (see "Installation details" in README.md). Both architectures have wheels
# of this pair (CUDA builds, which run on CPU-only machines too). x86_64 is resolved and tested
# (requirements/lock-x86_64.txt); aarch64 is not yet: pip resolves markers for the machine it
# runs on, so its lock must be made there (`make lock`), and torch 2.14.1 needs
# nvidia-cudnn-cu13, whose aarch64 wheels the mirror this was written on does not carry.
TORCH_PAIR := torch==2.14.1 torchvision==0.29.1
# Every other package at the version the suite ran with: written by `make lock` (pip's resolution
# for this architecture, as on a fresh machine) and installed with `pip -c`. An architecture
# without a lock file installs the newest versions pyproject.toml allows, and says so.
LOCK := requirements/lock-$(ARCH).txt
CONSTRAINTS := $(if $(wildcard $(LOCK)),-c $(LOCK))
RUN_ENV := PATH="$(abspath $(BIN)):$$PATH"

.PHONY: install lock demo test test-fast test-slurm lint gpu-wheels clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(wildcard $(LOCK))
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(if $(CONSTRAINTS),,@echo "no $(LOCK): installing unlocked versions (run make lock to pin them)")
	$(BIN)/python -m pip install --quiet $(CONSTRAINTS) $(TORCH_PAIR)
	$(BIN)/python -m pip install --quiet $(CONSTRAINTS) -e '.[workflow,test]'
	touch $@

# requirements/lock-<arch>.txt: what pip resolves for the torch pair and the project on a fresh
# machine of this architecture (nothing is installed; about a minute).
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	mkdir -p requirements
	$(BIN)/python -m pip install --quiet --dry-run --ignore-installed \
	  --report $(LOCK).report.json $(TORCH_PAIR) -e '.[workflow,test]'
	$(BIN)/python scripts/lock.py $(LOCK).report.json $(LOCK)
	rm $(LOCK).report.json

demo: install
	$(RUN_ENV) snakemake --cores $(CORES) --configfile config/config.yaml
	@echo "== mIoU per round (results/demo/summary.csv) =="
	@cat logs/demo/summary.log

test: install
	$(RUN_ENV) python -m pytest

test-fast: install
	$(RUN_ENV) python -m pytest -m "not slow"

# The tiny workflow on a real one-node SLURM cluster (munge, slurmctld, slurmd from Debian)
# through profiles/slurm. As root with apt-get: installs the packages if missing and must
# pass; elsewhere the test skips with the reason. Daemons are stopped by PID afterwards.
SLURM_PACKAGES := slurmctld slurmd slurm-client munge
test-slurm: install
	@start=$$(date +%s); \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  export DARS_REQUIRE_SLURM=1; \
	  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null \
	     || ! command -v sbatch >/dev/null; then \
	    echo "installing $(SLURM_PACKAGES)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(SLURM_PACKAGES) >/dev/null \
	    || { apt-get update -q >/dev/null && \
	         DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(SLURM_PACKAGES) >/dev/null; }; \
	  fi; \
	fi; \
	$(RUN_ENV) python -m pytest -m slurm -s -p no:cacheprovider tests/test_slurm.py; rc=$$?; \
	echo "test-slurm finished in $$(( $$(date +%s) - start )) s"; exit $$rc

# ruff, snakefmt and snakemake --lint (less the one lint answered by design, see the script)
lint: install
	$(RUN_ENV) ruff check src tests benchmarks scripts
	$(RUN_ENV) snakefmt --check workflow
	$(RUN_ENV) python scripts/lint_workflow.py --configfile config/config.yaml

# The wheels the GPU check needs beyond the GPU machine's packages (jsonschema and its
# dependencies), into the git-ignored wheels/ that the device run carries; PYTHON_VERSION=3.x
# for a machine whose Python is not 3.12 (see benchmarks/gpu_wheels.sh).
gpu-wheels:
	benchmarks/gpu_wheels.sh

clean:
	rm -rf results logs .snakemake data/demo
