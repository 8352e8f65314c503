"""Quality benchmark of the bias factorization (issue 7): does the residual keep the signal
and drop the bias, counts included?

Runs the Snakemake workflow on a `bpflow simulate` genome (preset `benchmark` by default:
8 chromosomes, 18.4 Mb, 3 JASPAR motifs x 1500 sites, a k-mer enzyme bias everywhere,
ChIP-nexus-like stranded footprints, Poisson counts) with two experiments that differ only
in the transformation recipe - `bpflow` (the workflow default: profile part on peaks, counts
part shifted on background) and `bpreveal` (both parts trained on peaks) - and scores both on
the test chromosome against the simulation's truth:

(a) counts: Pearson / Spearman of the combined model's log counts vs observed log(1 + total)
    on the test peaks; the oracle is the noiseless expected total vs observed;
(b) profiles: median JSD and Pearson of the residual's profile vs the true bias-free signal
    (truth/signal.*.bw), and of the combined profile vs the noiseless expected profile
    (truth/expected.*.bw);
(c) footprints: the bias motif and each TF motif inserted into held-out (test) background
    sequences; ratio of the residual's bias-motif profile-response over its mean TF-motif
    response (the truth is 0).

    .venv/bin/python benchmarks/quality.py --workdir /tmp/quality --json quality.json
    .venv/bin/python benchmarks/quality.py --scale 0.3 --combined-epochs 10   # smaller, faster

Prints a markdown table (also written with --markdown).  Targets: counts Pearson >= 0.9 x
oracle, residual-vs-truth median JSD <= 0.08, footprint ratio <= 0.02.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ("bpflow", "bpreveal")
TARGETS = {"counts-ratio": 0.9, "residual-jsd": 0.08, "footprint-ratio": 0.02}


# --------------------------------------------------------------------------- workflow config


def workflow_config(args) -> dict:
    """Two experiments on one simulation, differing only in transformation.recipe."""
    from bpflow.simulate import PRESETS

    preset = PRESETS[args.preset]
    options = {}
    if args.scale != 1.0:
        options["chromosome-lengths"] = [int(round(n * args.scale)) for n in preset["chromosome-lengths"]]
        options["motifs"] = [
            {**m, "num-sites": max(1, int(round(m["num-sites"] * args.scale)))} for m in preset["motifs"]
        ]
        options["splits"] = preset["splits"]
    splits = preset["splits"]
    sim = {
        "preset": args.preset,
        "seed": args.seed,
        "name": f"quality-{args.preset}-x{args.scale:g}-s{args.seed}",
        "options": options,
    }
    base = {
        "simulate": sim,
        "heads": [
            {
                "head-name": "nexus",
                "profile-loss-weight": 1,
                "counts-loss-frac-target": args.counts_frac,
                "use-bias-counts": True,
            }
        ],
        "bias-source": "background",
        "regions": {"background": {"ratio": args.background_ratio}},
        "splits": splits,
        "output-length": args.output_length,
        "max-jitter": args.max_jitter,
        "bias-architecture": {
            "filters": args.bias_filters,
            "layers": args.bias_layers,
            "input-filter-width": 11,
            "output-filter-width": 25,
        },
        "residual-architecture": {
            "filters": args.residual_filters,
            "layers": args.residual_layers,
            "input-filter-width": 15,
            "output-filter-width": 25,
        },
        "footprints": {"num-backgrounds": 50},
        "training": {
            "seed": args.seed,
            "bias": {
                "epochs": args.bias_epochs,
                "batch-size": 64,
                "learning-rate": 0.004,
                "early-stopping-patience": 5,
                "learning-rate-plateau-patience": 2,
            },
            "transformation": {
                "epochs": args.transformation_epochs,
                "batch-size": 64,
                "learning-rate": 0.02,
                "early-stopping-patience": 3,
                "learning-rate-plateau-patience": 2,
            },
            "combined": {
                "epochs": args.combined_epochs,
                "batch-size": 64,
                "learning-rate": 0.004,
                "early-stopping-patience": args.combined_patience,
                "learning-rate-plateau-patience": args.combined_plateau_patience,
            },
        },
    }
    if args.counts_schedule:
        for stage in ("bias", "combined"):
            base["training"][stage]["counts-schedule"] = args.counts_schedule
    if args.combined_counts_phase_lr:
        base["training"]["combined"]["counts-phase-learning-rate"] = args.combined_counts_phase_lr
    experiments = {}
    for recipe in args.recipes:
        exp = json.loads(json.dumps(base))
        exp["transformation"] = {
            "profile-architecture": {"name": "simple", "types": ["linear", "sigmoid"]},
            "counts-architecture": {"name": "simple", "types": ["linear"]},
            "recipe": recipe,
        }
        if recipe == "bpreveal" and not args.counts_schedule:
            # BPReveal's documented recipe throughout: joint training, Keras's initialisation
            for stage in ("bias", "combined"):
                exp["training"][stage]["counts-schedule"] = "joint"
            exp["training"]["combined"]["extra"] = {"init-residual-counts": False}
        experiments[recipe] = exp
    threads = max(1, args.cores)
    return {
        "experiments": experiments,
        "evaluate": True,
        "verbosity": "INFO",
        "resources": {
            "simulate": {"threads": 1},
            "data": {"threads": threads, "mem-mb": 4000},
            "training": {"threads": threads, "mem-mb": 8000, "runtime": 600, "gpu": 1},
            "evaluation": {"threads": threads, "mem-mb": 8000, "runtime": 120, "gpu": 0},
        },
    }


def run_workflow(args, config: dict) -> float:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cfg_path = workdir / "quality-config.json"
    cfg_path.write_text(json.dumps(config, indent=1))
    snakemake = Path(sys.executable).with_name("snakemake")
    cmd = [
        str(snakemake),
        "-s",
        str(ROOT / "Snakefile"),
        "-d",
        str(workdir),
        "--configfile",
        str(cfg_path),
        "--cores",
        str(args.cores),
        "--resources",
        "gpu=1",
    ]
    targets = [
        f"results/{r}/predictions/{m}_peaks_test.h5" for r in args.recipes for m in ("combined", "residual", "bias")
    ]
    targets += [f"results/{r}/{f}" for r in args.recipes for f in ("qc/combined.json", "data/background_test.h5")]
    print("running:", " ".join(cmd), "...", file=sys.stderr)
    t0 = time.monotonic()
    with open(workdir / "snakemake.log", "w") as log:
        env = {**os.environ, "PATH": f"{snakemake.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        rc = subprocess.call(cmd[:1] + targets + cmd[1:], stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env)
    if rc:
        raise SystemExit(f"snakemake failed (exit {rc}); see {workdir / 'snakemake.log'}")
    return time.monotonic() - t0


# --------------------------------------------------------------------------- scoring


def _windows(pred_h5):
    """Forward samples of a prediction file: (chrom names, chrom idx, start, stop, logits, logcounts)."""
    import h5py

    from bpflow.formats.coords import read_coords, read_strands

    with h5py.File(pred_h5, "r") as f:
        coords = read_coords(f, str(pred_h5))
        reverse = read_strands(f, str(pred_h5))
        keep = np.ones(len(coords.start), bool) if reverse is None else ~reverse
        logits = f["head_0/logits"][...][keep]
        logcounts = f["head_0/logcounts"][...].reshape(-1)[keep]
    return coords.chrom_names, coords.chrom[keep], coords.start[keep], coords.stop[keep], logits, logcounts


def _tracks(paths, names, chrom, start, stop) -> np.ndarray:
    """(N, length, len(paths)) values of bigWigs over the windows (missing = 0)."""
    import pyBigWig

    n, length = len(start), int(stop[0] - start[0])
    out = np.zeros((n, length, len(paths)))
    for t, path in enumerate(paths):
        with pyBigWig.open(str(path)) as bw:
            for i in range(n):
                out[i, :, t] = np.nan_to_num(bw.values(names[chrom[i]], int(start[i]), int(stop[i]), numpy=True))
    return out


def score_recipe(workdir: Path, recipe: str, sim_dir: Path, truth: dict, num_backgrounds: int) -> dict:
    from bpflow.evaluate import footprints
    from bpflow.evaluate import measures as metrics

    res = workdir / "results" / recipe
    names, chrom, start, stop, comb_logits, comb_lc = _windows(res / "predictions/combined_peaks_test.h5")
    _, _, _, _, res_logits, res_lc = _windows(res / "predictions/residual_peaks_test.h5")
    _, _, _, _, bias_logits, bias_lc = _windows(res / "predictions/bias_peaks_test.h5")
    observed = _tracks([sim_dir / "experiment.plus.bw", sim_dir / "experiment.minus.bw"], names, chrom, start, stop)
    signal = _tracks([sim_dir / "truth/signal.plus.bw", sim_dir / "truth/signal.minus.bw"], names, chrom, start, stop)
    expected = _tracks(
        [sim_dir / "truth/expected.plus.bw", sim_dir / "truth/expected.minus.bw"], names, chrom, start, stop
    )
    obs_log = np.log1p(observed.sum(axis=(1, 2)))
    out = {"recipe": recipe, "test-peaks": int(len(start))}
    # (a) counts
    out["counts-pearson"] = metrics.pearson(comb_lc, obs_log)
    out["counts-spearman"] = metrics.spearman(comb_lc, obs_log)
    out["oracle-pearson"] = metrics.pearson(np.log1p(expected.sum(axis=(1, 2))), obs_log)
    out["oracle-spearman"] = metrics.spearman(np.log1p(expected.sum(axis=(1, 2))), obs_log)
    out["bias-counts-pearson"] = metrics.pearson(bias_lc, obs_log)
    out["residual-share"] = float(np.median(1.0 / (1.0 + np.exp(np.clip(bias_lc - res_lc, -50, 50)))))
    out["counts-ratio"] = out["counts-pearson"] / out["oracle-pearson"]
    # (b) profiles
    has = signal.sum(axis=(1, 2)) > 0
    res_prob = metrics.softmax_joint(res_logits)
    comb_prob = metrics.softmax_joint(comb_logits)
    out["residual-jsd"] = float(np.nanmedian(metrics.jensen_shannon_distance(signal[has], res_prob[has])))
    out["residual-pearson"] = float(np.nanmedian(metrics.profile_pearson(signal[has], res_prob[has])))
    # the floor: with observed = bias x (1 + signal) the bias-free profile a residual can
    # identify is 1 + signal (its logits add to the bias's), not signal itself
    out["perfect-residual-jsd"] = float(np.nanmedian(metrics.jensen_shannon_distance(signal[has], 1.0 + signal[has])))
    out["residual-jsd-vs-1+signal"] = float(
        np.nanmedian(metrics.jensen_shannon_distance(1.0 + signal[has], res_prob[has]))
    )
    # the bias branch against the true enzyme bias: the residual is only as bias-free as this
    true_bias = _tracks([sim_dir / "truth/bias.plus.bw", sim_dir / "truth/bias.minus.bw"], names, chrom, start, stop)
    out["bias-branch-jsd"] = float(
        np.nanmedian(metrics.jensen_shannon_distance(true_bias, metrics.softmax_joint(bias_logits)))
    )
    out["combined-jsd"] = float(np.nanmedian(metrics.jensen_shannon_distance(expected, comb_prob)))
    out["combined-pearson"] = float(np.nanmedian(metrics.profile_pearson(expected, comb_prob)))
    out["observed-jsd"] = float(np.nanmedian(metrics.jensen_shannon_distance(observed, comb_prob)))
    out["oracle-observed-jsd"] = float(np.nanmedian(metrics.jensen_shannon_distance(observed, expected)))
    # (c) footprints on held-out background sequences
    tf = {m["name"]: np.asarray(m["probabilities"]) for m in truth["motifs"]}
    motifs = {**tf, "bias": truth["bias"]["motif"]}
    table = footprints.footprints_from_files(
        {"residual": res / "models/residual.keras", "bias": res / "models/transformation.keras"},
        res / "data/background_test.h5",
        motifs,
        num=num_backgrounds,
        seed=0,
        orientations=("forward", "reverse"),
        include_profiles=False,
    )
    out["footprint-ratio"] = footprints.response_ratio(table, "residual", ["bias"], list(tf))
    rh = next(iter(table["models"]["residual"]["heads"].values()))
    bh = next(iter(table["models"]["bias"]["heads"].values()))
    out["residual-tf-response"] = float(np.mean([rh[m]["profile-response"] for m in tf]))
    out["residual-bias-response"] = float(rh["bias"]["profile-response"])
    out["bias-model-bias-response"] = float(bh["bias"]["profile-response"])
    out["bias-model-tf-response"] = float(np.mean([bh[m]["profile-response"] for m in tf]))
    qc_path = res / "qc/combined.json"
    out["qc-warnings"] = json.loads(qc_path.read_text())["warnings"] if qc_path.is_file() else None
    out["targets-met"] = {
        "counts": out["counts-ratio"] >= TARGETS["counts-ratio"],
        "residual-jsd": out["residual-jsd"] <= TARGETS["residual-jsd"],
        "footprint-ratio": out["footprint-ratio"] <= TARGETS["footprint-ratio"],
    }
    return out


def markdown(results: list[dict]) -> str:
    def f(x, d=3):
        return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{d}f}"

    def ok(b):
        return "yes" if b else "**no**"

    rows = [
        "| recipe | test peaks | counts Pearson (oracle) | ratio >= 0.9 | counts Spearman (oracle) | "
        "bias-only counts Pearson | residual share of counts | residual JSD vs signal (<= 0.08; "
        "perfect residual) | residual JSD vs 1 + signal | "
        "residual Pearson vs signal | bias branch JSD vs true bias | combined JSD vs expected | "
        "combined Pearson vs expected | "
        "footprint ratio bias/TF (<= 0.02) | QC warnings |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        t = r["targets-met"]
        rows.append(
            f"| {r['recipe']} | {r['test-peaks']} | {f(r['counts-pearson'])} ({f(r['oracle-pearson'])}) | "
            f"{f(r['counts-ratio'], 2)} {ok(t['counts'])} | {f(r['counts-spearman'])} ({f(r['oracle-spearman'])}) | "
            f"{f(r['bias-counts-pearson'])} | {f(r['residual-share'])} | "
            f"{f(r['residual-jsd'])} {ok(t['residual-jsd'])} "
            f"({f(r['perfect-residual-jsd'])}) | {f(r['residual-jsd-vs-1+signal'])} | "
            f"{f(r['residual-pearson'])} | {f(r.get('bias-branch-jsd'))} | "
            f"{f(r['combined-jsd'])} | {f(r['combined-pearson'])} | "
            f"{f(r['footprint-ratio'], 4)} {ok(t['footprint-ratio'])} | {len(r['qc-warnings'] or [])} |"
        )
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default="quality-run", help="Snakemake working directory (results/ go here)")
    p.add_argument("--preset", default="benchmark", choices=["ci", "demo", "benchmark"])
    p.add_argument(
        "--scale", type=float, default=1.0, help="scale the preset's chromosome lengths and motif sites (1.0 = as is)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    p.add_argument(
        "--background-ratio",
        type=float,
        default=3.0,
        help="background windows per peak (regions.background.ratio): the bias model's data",
    )
    p.add_argument("--output-length", type=int, default=200)
    p.add_argument(
        "--max-jitter",
        type=int,
        default=64,
        help="training jitter of every dataset (64: residual JSD to the signal 0.077 vs 0.081 with 32, "
        "seed 0; benchmarks/README.md)",
    )
    p.add_argument("--bias-filters", type=int, default=16)
    p.add_argument("--bias-layers", type=int, default=3)
    p.add_argument("--residual-filters", type=int, default=32)
    p.add_argument(
        "--residual-layers",
        type=int,
        default=7,
        help="7: the receptive field (+-273 bp) covers the 200-bp output and the footprints' flanks",
    )
    p.add_argument("--bias-epochs", type=int, default=20)
    p.add_argument("--transformation-epochs", type=int, default=10)
    p.add_argument("--combined-epochs", type=int, default=60)
    p.add_argument("--combined-patience", type=int, default=10, help="early-stopping-patience of the combined model")
    p.add_argument(
        "--combined-plateau-patience", type=int, default=5, help="learning-rate-plateau-patience of the combined model"
    )
    p.add_argument(
        "--counts-schedule",
        choices=["joint", "profile-first"],
        help="settings/counts-schedule of the bias and combined models of both recipes (default: the "
        "workflow's for recipe bpflow; joint, without init-residual-counts, for bpreveal)",
    )
    p.add_argument(
        "--combined-counts-phase-lr",
        type=float,
        help="counts-phase-learning-rate of the combined model (profile-first; default lr / 10)",
    )
    p.add_argument("--counts-frac", type=float, default=0.1, help="the head's counts-loss-frac-target (every stage)")
    p.add_argument("--num-backgrounds", type=int, default=200, help="backgrounds for the footprints (c)")
    p.add_argument("--cores", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--score-only", action="store_true", help="skip the workflow; score an existing workdir")
    p.add_argument("--json", help="write the results as JSON")
    p.add_argument("--markdown", help="write the table as markdown")
    args = p.parse_args(argv)

    config = workflow_config(args)
    seconds = None if args.score_only else run_workflow(args, config)
    workdir = Path(args.workdir)
    sim_name = config["experiments"][args.recipes[0]]["simulate"]["name"]
    sim_dir = workdir / "results" / "simulated" / sim_name
    truth = json.loads((sim_dir / "truth.json").read_text())
    results = [score_recipe(workdir, r, sim_dir, truth, args.num_backgrounds) for r in args.recipes]
    table = markdown(results)
    print(table)
    record = {
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_version()}",
        "workflow-seconds": seconds,
        "config": config,
        "targets": TARGETS,
        "results": results,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1, default=float))
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
