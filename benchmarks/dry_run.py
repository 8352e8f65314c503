"""Benchmark: how long ``snakemake -n`` takes to plan a config with many experiments.

    .venv/bin/python benchmarks/dry_run.py                      # 30 experiments, 3 repeats
    .venv/bin/python benchmarks/dry_run.py --groups 30 --repeat 3   # 90 experiments

The config has ``--groups`` groups of three experiments each, like a lab's config with many
runs: a simulated experiment with sampled background, a simulated one with a control
experiment for the bias (both ``simulate: {preset: ci}``, one seed per group) and a user
experiment with its own FASTA, peaks, bigWigs and background BED (empty files: a dry run
only plans).  The defaults are config/ci.yaml's, ``evaluate: true``.  Each repeat is a fresh
``snakemake -n`` process (Python start-up included, as a user sees it); the script reports
the fastest and the median wall time and the number of jobs planned.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def ci_defaults() -> dict:
    """config/ci.yaml's data, architecture and training keys: small defaults for every experiment."""
    ci = yaml.safe_load((REPO / "config" / "ci.yaml").read_text())["experiments"]["ci"]
    return {
        k: copy.deepcopy(ci[k])
        for k in ("splits", "output-length", "max-jitter", "bias-architecture", "residual-architecture", "training")
    }


def empty_user_inputs(workdir: Path) -> dict:
    """Empty stand-ins for a user's FASTA, peaks, bigWigs and background BED (a dry run only
    checks that they exist): name -> path as a string."""
    user = workdir / "user"
    user.mkdir(exist_ok=True)
    out = {}
    for name in ("genome.fa", "peaks.bed", "plus.bw", "minus.bw", "background.bed"):
        (user / name).write_text("")
        out[name] = str(user / name)
    return out


def many_experiment_config(workdir: Path, groups: int) -> dict:
    f = empty_user_inputs(workdir)
    user_experiment = {
        "genome": f["genome.fa"],
        "peaks": f["peaks.bed"],
        "heads": [{"head-name": "chip", "bigwigs": [f["plus.bw"], f["minus.bw"]]}],
        "bias-source": "bed",
        "background-bed": f["background.bed"],
    }
    experiments = {}
    for i in range(groups):
        experiments[f"a{i}"] = {"simulate": {"preset": "ci", "seed": i}, "heads": [{"head-name": "nexus"}]}
        experiments[f"b{i}"] = {
            "simulate": {"preset": "ci", "seed": i},
            "heads": [{"head-name": "nexus"}],
            "bias-source": "control",
        }
        experiments[f"c{i}"] = copy.deepcopy(user_experiment)
    return {"defaults": ci_defaults(), "experiments": experiments, "evaluate": True}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=10, help="groups of three experiments (10)")
    parser.add_argument("--repeat", type=int, default=3, help="dry runs to time (3)")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bpflow-dry-run-") as tmp:
        workdir = Path(tmp)
        cfgfile = workdir / "many.yaml"
        cfgfile.write_text(yaml.safe_dump(many_experiment_config(workdir, args.groups)))
        cmd = [str(SNAKEMAKE), "-n", "--configfile", str(cfgfile), "-d", str(workdir), "-s", str(REPO / "Snakefile")]
        times = []
        for _ in range(args.repeat):
            start = time.monotonic()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            times.append(time.monotonic() - start)
            if proc.returncode != 0:
                sys.exit(f"dry_run: snakemake -n failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    match = re.search(r"^total\s+(\d+)", proc.stdout, flags=re.M)
    result = {
        "experiments": 3 * args.groups,
        "jobs": int(match.group(1)) if match else None,
        "fastest_s": round(min(times), 2),
        "median_s": round(statistics.median(times), 2),
    }
    print(
        f"{result['experiments']} experiments, {result['jobs']} jobs planned: "
        f"fastest {result['fastest_s']:.2f} s, median {result['median_s']:.2f} s of {args.repeat}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
