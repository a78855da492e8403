#!/usr/bin/env bash
# Snakemake runs this once inside the env of envs/train.yaml, right after creating it
# (snakemake --use-conda, or --conda-create-envs-only). It installs the workflow's own package,
# brainssl, from the workflow's source tree, editable and without dependencies (the env file
# lists them all), so the env's jobs import the code of the workflow that created it.
# BRAINSSL_WORKFLOW_DIR is set by workflow/rules/common.smk when Snakemake parses the workflow.
set -euo pipefail
root="${BRAINSSL_WORKFLOW_DIR:?is set by workflow/rules/common.smk: create the env through snakemake --use-conda}"
python -m pip install --disable-pip-version-check --no-deps -e "$root"
