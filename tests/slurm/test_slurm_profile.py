"""The SLURM profile against a real single-node SLURM (tests/slurm/run_slurm_test.sh).

Needs root and apt-get (it installs slurm-wlm and munge and starts their daemons), so it runs
only when BPFLOW_TEST_SLURM=1:  sudo BPFLOW_TEST_SLURM=1 .venv/bin/python -m pytest tests/slurm
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "run_slurm_test.sh"


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("BPFLOW_TEST_SLURM") != "1",
    reason="set BPFLOW_TEST_SLURM=1 (needs root and apt-get) to run the SLURM test",
)
def test_slurm_profile_submits_gpu_jobs_with_one_gpu():
    env = dict(os.environ, BPFLOW_VENV=str(Path(sys.executable).parent.parent))
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "OK: training jobs ran with --gpus=1, data jobs without a GPU" in proc.stdout
    for rule in ("train_bias", "fit_transformation", "train_combined"):
        assert any(rule in line and "gpus=1" in line for line in proc.stdout.splitlines()), rule
    assert any("dataset" in line and "gpus=0" in line for line in proc.stdout.splitlines())
