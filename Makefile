# Two commands for a new user:  `make demo` (pipeline end to end) and `make test`.
# Both create ./.venv on first use and are idempotent.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all
ARCH := $(shell uname -m)
# PyPI's torchvision only works beside the torch build it was compiled against, so both are
# pinned as a matching pair (see "Installation" in README.md).
ifeq ($(ARCH),aarch64)
TORCH_PAIR ?= torch==2.9.1 torchvision==0.24.1
else
TORCH_PAIR ?= torch==2.14.1 torchvision==0.29.1
endif
RUN_ENV := PATH="$(abspath $(BIN)):$$PATH"

.PHONY: install demo test test-fast test-slurm lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_PAIR)
	$(BIN)/python -m pip install --quiet -e '.[workflow,test]'
	touch $@

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

clean:
	rm -rf results logs .snakemake data/demo
