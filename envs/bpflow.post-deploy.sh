#!/usr/bin/env bash
# Run by Snakemake inside the freshly created envs/bpflow.yaml environment, in Snakemake's
# working directory: install bpflow from this checkout (dependencies come from the env file).
set -euo pipefail
if [ ! -f pyproject.toml ] || ! grep -q '^name = "bpflow"' pyproject.toml; then
    echo "bpflow post-deploy: run Snakemake from the bpflow repository root" >&2
    exit 1
fi
python -m pip install --no-deps .
