"""Quality benchmark of the bias factorization (issue 7): does the residual keep the signal
and drop the bias, counts included?

Runs the Snakemake workflow on a `bpflow simulate` genome (preset `benchmark` by default:
8 chromosomes, 18.4 Mb, 3 JASPAR motifs x 1500 sites, a k-mer enzyme bias everywhere,
ChIP-nexus-like stranded footprints, Poisson counts) with two experiments that differ only
in the transformation recipe - `bpflow` (the workflow default: profile part on peaks, counts
part shifted on background) and `bpreveal` (both parts trained on peaks) - and scores both on
the test chromosome against the simulation's truth:

(a) counts: Pearson / Spearman of the combined model's log counts vs observed log(1 + total)
    on the test peaks; the oracle is the noiseless expected total vs observed; the sequence
    ceiling the expected total of the same simulation without its site-strength noise (the
    part of a site's strength its sequence does not set; `noise_free_simulation`) vs observed;
    the counts ratio (Pearson / oracle's) comes with a 95 % paired-bootstrap interval over the
    test peaks (`counts_ratio_interval`: the test set's sampling, not the seed's);
(b) profiles: median JSD and Pearson of the residual's profile vs the true bias-free signal
    (truth/signal.*.bw), and of the combined profile vs the noiseless expected profile
    (truth/expected.*.bw);
(c) footprints: the bias motif and each TF motif inserted into held-out (test) background
    sequences; ratio of the residual's bias-motif profile-response over its mean TF-motif
    response (the truth is 0).

    .venv/bin/python benchmarks/quality.py --workdir /tmp/quality --json quality.json
    .venv/bin/python benchmarks/quality.py --scale 0.3 --combined-epochs 10   # smaller, faster

Prints a markdown table per setting (also written with --markdown).  Targets (issue 17, on
every setting): counts Pearson >= 0.9 x oracle; residual-vs-signal median JSD no worse than the
bpreveal recipe's; footprint ratio <= 0.01; bias model beats the 7-mer table; no stage ends at
its epoch limit while still improving.  `--setting` (repeatable) picks settings of the suite.
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
# Issue 17's targets, on every setting: the residual's JSD to the signal is compared with the
# bpreveal recipe's on the same setting (targets_met); the bias model must beat the 7-mer table
# (qc-bias) and no stage may end at its epoch limit while still improving (the QC's warning).
TARGETS = {"counts-ratio": 0.9, "footprint-ratio": 0.01}
EPOCH_LIMIT_WARNING = "epoch limit"
# The bpreveal recipe's combined stage (BPReveal's documented recipe; also combined_walltime.py's
# joint schedule): joint training from the first step at BPReveal's learning rate, Keras's
# initialisation of the residual's counts, no warm-up, the two branches' counts summed.
BPREVEAL_COMBINED = {
    "counts-schedule": "joint",
    "learning-rate": 0.004,
    "extra": {"init-residual-counts": False, "learning-rate-warmup-epochs": 0},
}
BPREVEAL_COUNTS_COMBINATION = "sum"

# The suite (issue 17): settings that differ in what real data differ in.  "sim": options of
# `bpflow simulate` over the preset's; "exp": experiment keys over the base's; "bed": the bias
# model learns from a background BED the harness writes (bias-source bed) instead of sampled
# background regions.  The depth is the simulation's reads per base at bias 1 on each strand:
# 0.1 gives ~220 reads per 1-kb background window, 0.01 ~22.
SETTINGS = {
    "base": {},
    "weak-bias": {"sim": {"bias-kmer-sd": 0.35}},  # log2 SD ~0.5
    "strong-bias": {"sim": {"bias-kmer-sd": 1.04}},  # log2 SD ~1.5
    "shallow": {"sim": {"depth": 0.01}},
    "few-background": {"exp": {"regions": {"background": {"ratio": 0.5}}}},
    # a short specific random motif and a long random one, bound by sequence (every genome
    # position scoring z >= -1 is a site too: native hits; planted instances score that much),
    # and Klf4 planted as in base.  With planted-only binding a short motif's equally good
    # look-alikes stay unbound and no sequence model can tell which is the site
    # (benchmarks/README.md, other-motifs); short7's ~1,900 native hits at half scale double
    # its sites
    "other-motifs": {
        "motifs": [
            {"name": "short7", "random-length": 7, "random-concentration": 0.02, "native-hits-min-z": -1.0},
            {"name": "long24", "random-length": 24, "native-hits-min-z": -1.0},
            {"name": "Klf4"},
        ]
    },
    "markov": {"sim": {"sequence-model": "markov"}},
    "bed-background": {"bed": True},
}


# --------------------------------------------------------------------------- workflow config


def workflow_config(args, setting: str = "base", background_bed: str | None = None) -> dict:
    """Two experiments on one simulation, differing only in transformation.recipe."""
    from bpflow.simulate import PRESETS

    spec = SETTINGS[setting]
    preset = PRESETS[args.preset]
    options = {}
    sites = [max(1, int(round(m["num-sites"] * args.scale))) for m in preset["motifs"]]
    if args.scale != 1.0:
        options["chromosome-lengths"] = [int(round(n * args.scale)) for n in preset["chromosome-lengths"]]
        options["motifs"] = [{**m, "num-sites": n} for m, n in zip(preset["motifs"], sites)]
        options["splits"] = preset["splits"]
    options.update(spec.get("sim", {}))
    if "motifs" in spec:
        options["motifs"] = [{**entry, "num-sites": n} for entry, n in zip(spec["motifs"], sites)]
    splits = preset["splits"]
    sim = {
        "preset": args.preset,
        "seed": args.seed,
        "name": f"quality-{args.preset}-x{args.scale:g}-s{args.seed}-{setting}",
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
    for key, value in spec.get("exp", {}).items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    # the BED setting's first run makes only the simulation (the BED is drawn from its sites):
    # without a BED yet, the experiments keep sampled background (the same simulation name)
    if spec.get("bed") and background_bed is not None:
        base["bias-source"] = "bed"
        base["background-bed"] = background_bed
        base.pop("regions", None)
    experiments = {}
    for recipe in args.recipes:
        exp = json.loads(json.dumps(base))
        exp["transformation"] = {
            "profile-architecture": {"name": "simple", "types": ["linear", "sigmoid"]},
            "counts-architecture": {"name": "simple", "types": ["linear"]},
            "recipe": recipe,
        }
        if recipe == "bpreveal" and not args.counts_schedule:
            # BPReveal's documented recipe throughout: joint training, Keras's initialisation,
            # the full learning rate from the first step
            for stage in ("bias", "combined"):
                exp["training"][stage]["counts-schedule"] = BPREVEAL_COMBINED["counts-schedule"]
            exp["training"]["combined"]["extra"] = dict(BPREVEAL_COMBINED["extra"])
        if recipe == "bpreveal":
            # BPReveal's documented learning rate (bpflow's recipe takes the workflow's default)
            exp["training"]["combined"]["learning-rate"] = BPREVEAL_COMBINED["learning-rate"]
            for head in exp["heads"]:
                head["counts-combination"] = BPREVEAL_COUNTS_COMBINATION
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


def write_background_bed(sim_dir: Path, path: Path, width: int, per_site: float, seed: int) -> Path:
    """Background windows for bias-source bed: ``width``-bp windows at random positions at least
    2 kb from every planted site (sites.bed), ``per_site`` windows per site on each chromosome."""
    rng = np.random.default_rng(seed)
    truth = json.loads((sim_dir / "truth.json").read_text())
    sites: dict[str, list[int]] = {}
    for line in (sim_dir / "sites.bed").read_text().splitlines():
        chrom, start = line.split("\t")[:2]
        sites.setdefault(chrom, []).append(int(start))
    rows = []
    for chrom, length in truth["chromosomes"].items():
        near = np.sort(np.asarray(sites.get(chrom, [-(10**9)])))
        want = int(round(per_site * len(sites.get(chrom, []))))
        starts = rng.integers(5000, length - 5000 - width, size=20 * want + 10)
        i = np.searchsorted(near, starts)
        gap = np.minimum(
            np.abs(starts - near[np.clip(i - 1, 0, len(near) - 1)]), np.abs(near[np.clip(i, 0, len(near) - 1)] - starts)
        )
        keep = np.unique(starts[gap > 2000 + width])[:want]
        rows += [f"{chrom}\t{s}\t{s + width}\n" for s in keep]
    path.write_text("".join(rows))
    return path


def run_workflow(args, config: dict, workdir: Path, targets: list[str] | None = None) -> float:
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
    if targets is None:
        targets = [
            f"results/{r}/predictions/{m}_peaks_test.h5" for r in args.recipes for m in ("combined", "residual", "bias")
        ]
        targets += [
            f"results/{r}/{f}"
            for r in args.recipes
            for f in ("qc/combined.json", "qc/bias.json", "data/background_test.h5")
        ]
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


def _strands(directory: Path, kind: str) -> list[Path]:
    """A simulation's plus- and minus-strand bigWigs of ``kind`` (``experiment``, ``truth/signal``...)."""
    return [directory / f"{kind}.plus.bw", directory / f"{kind}.minus.bw"]


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


def noise_free_simulation(sim_dir: Path, out_dir: Path) -> Path:
    """The simulation of ``sim_dir`` again with every site's strength at the value its sequence
    gives it (``strength-noise-sd`` 0 for every motif), written to ``out_dir`` once (kept).

    The simulator draws the strength noise whatever its SD, so the same seed gives the same
    genome, sites, bias and footprints; only the strengths lose their noise.  Its expected
    track is the part of the counts the sequence determines: its counts Pearson against the
    observed counts is the *sequence ceiling* (what a perfect sequence model would reach, up to
    the Jensen gap of the log), below the oracle (the noiseless expected track, which knows
    each site's noise)."""
    from bpflow import simulate

    if not (out_dir / "truth.json").is_file():
        resolved = json.loads((sim_dir / "truth.json").read_text())["config"]
        config = {key: value for key, value in resolved.items() if value is not None}  # "preset": null
        for motif in config["motifs"]:
            motif["strength-noise-sd"] = 0.0
        config["output-dir"] = str(out_dir)
        simulate.simulate(config, f"{sim_dir / 'truth.json'} (strength-noise-sd 0)")
    return out_dir


def paired_interval(statistic, arrays, draws: int = 2000, seed: int = 0) -> list[float]:
    """95 % percentile interval of ``statistic(*arrays)`` by a paired bootstrap: each draw
    resamples the peaks with replacement and takes every array's value of a peak together."""
    rng = np.random.default_rng(seed)
    n = len(arrays[0])
    values = np.empty(draws)
    for d in range(draws):
        i = rng.integers(0, n, n)
        values[d] = statistic(*(a[i] for a in arrays))
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]


def counts_ratio_interval(
    predicted: np.ndarray, oracle: np.ndarray, observed: np.ndarray, draws: int = 2000, seed: int = 0
) -> list[float]:
    """95 % interval of Pearson(predicted, observed) / Pearson(oracle, observed) over the test
    peaks (:func:`paired_interval`): how much of the counts ratio is the test set's sampling,
    not the model.  It says nothing of the spread between training seeds."""
    from bpflow.evaluate.measures import pearson

    return paired_interval(lambda p, o, y: pearson(p, y) / pearson(o, y), (predicted, oracle, observed), draws, seed)


def counts_ratio_difference_interval(
    predicted: np.ndarray,
    baseline: np.ndarray,
    oracle: np.ndarray,
    observed: np.ndarray,
    draws: int = 2000,
    seed: int = 0,
) -> list[float]:
    """95 % interval of the counts-ratio difference ``predicted``'s minus ``baseline``'s on the
    same test peaks (paired: both models' errors on a peak go together, so the interval is far
    narrower than either ratio's)."""
    from bpflow.evaluate.measures import pearson

    return paired_interval(
        lambda p, b, o, y: (pearson(p, y) - pearson(b, y)) / pearson(o, y),
        (predicted, baseline, oracle, observed),
        draws,
        seed,
    )


def background_share(prob: np.ndarray, signal: np.ndarray) -> float:
    """The residual's profile mass where the true signal is under 1 (where the bias-only
    background of 1 + signal dominates) over 1 + signal's mass there, the median over windows
    that have such positions (arrays (windows, length, strands); ``prob`` sums to 1 in each
    window).  1: the residual keeps the background the data can identify; under 1: it is
    sharper than that, which lowers its JSD to the signal itself below a perfect residual's
    (the floor) without fitting the data better."""
    off = signal < 1.0
    perfect = (1.0 + signal) / (1.0 + signal).sum(axis=(1, 2), keepdims=True)
    kept = (prob * off).sum(axis=(1, 2))
    identifiable = (perfect * off).sum(axis=(1, 2))
    has = identifiable > 0
    return float(np.median(kept[has] / identifiable[has])) if has.any() else float("nan")


def score_recipe(workdir: Path, recipe: str, sim_dir: Path, truth: dict, num_backgrounds: int) -> dict:
    from bpflow.evaluate import footprints
    from bpflow.evaluate import measures as metrics

    res = workdir / "results" / recipe
    names, chrom, start, stop, comb_logits, comb_lc = _windows(res / "predictions/combined_peaks_test.h5")
    _, _, _, _, res_logits, _ = _windows(res / "predictions/residual_peaks_test.h5")
    _, _, _, _, bias_logits, bias_lc = _windows(res / "predictions/bias_peaks_test.h5")
    observed = _tracks(_strands(sim_dir, "experiment"), names, chrom, start, stop)
    signal = _tracks(_strands(sim_dir, "truth/signal"), names, chrom, start, stop)
    expected = _tracks(_strands(sim_dir, "truth/expected"), names, chrom, start, stop)
    obs_log = np.log1p(observed.sum(axis=(1, 2)))
    oracle_log = np.log1p(expected.sum(axis=(1, 2)))
    out = {"recipe": recipe, "test-peaks": int(len(start))}
    # (a) counts
    out["counts-pearson"] = metrics.pearson(comb_lc, obs_log)
    out["counts-spearman"] = metrics.spearman(comb_lc, obs_log)
    out["oracle-pearson"] = metrics.pearson(oracle_log, obs_log)
    out["oracle-spearman"] = metrics.spearman(oracle_log, obs_log)
    out["bias-counts-pearson"] = metrics.pearson(bias_lc, obs_log)
    # the combined model's reads beyond the bias branch's (qc-combined's measure; with counts-combination
    # sum it is exp(res) / (exp(bias) + exp(res)))
    out["residual-share"] = float(np.median(np.clip(-np.expm1(np.clip(bias_lc - comb_lc, -50, 50)), 0.0, 1.0)))
    out["counts-ratio"] = out["counts-pearson"] / out["oracle-pearson"]
    out["counts-ratio-ci95"] = counts_ratio_interval(comb_lc, oracle_log, obs_log)
    # the sequence ceiling: the expected total with each site's strength at its sequence's value
    noise_free = noise_free_simulation(sim_dir, workdir / "results" / "noise-free" / sim_dir.name)
    ceiling = _tracks(_strands(noise_free, "truth/expected"), names, chrom, start, stop)
    out["sequence-ceiling-pearson"] = metrics.pearson(np.log1p(ceiling.sum(axis=(1, 2))), obs_log)
    out["counts-ratio-ceiling"] = out["counts-pearson"] / out["sequence-ceiling-pearson"]
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
    out["residual-background-share"] = background_share(res_prob[has], signal[has])
    # the bias branch against the true enzyme bias: the residual is only as bias-free as this
    true_bias = _tracks(_strands(sim_dir, "truth/bias"), names, chrom, start, stop)
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
    out["qc-warnings"] = []
    for name in ("bias", "combined"):
        qc_path = res / f"qc/{name}.json"
        if qc_path.is_file():
            report = json.loads(qc_path.read_text())
            out["qc-warnings"] += report["warnings"]
            if name == "bias" and report.get("bias"):
                head = next(iter(report["bias"]["heads"].values()))
                out["bias-vs-kmer"] = head["model-vs-kmer"]
                out["bias-gain"], out["kmer-gain"] = head["gain-model"], head["gain-kmer"]
    for stage in ("bias", "combined"):
        hist = res / f"models/{stage}.history.json"
        if hist.is_file():
            record = json.loads(hist.read_text())
            out[f"{stage}-epochs"] = record["epochs-run"]
            out[f"{stage}-stop"] = record["stop-reason"]
    bench = res / "benchmarks/train_combined.tsv"
    if bench.is_file():
        out["combined-seconds"] = float(bench.read_text().splitlines()[1].split("\t")[0])
    return out


def targets_met(results: list[dict]) -> None:
    """Mark issue 17's targets on each recipe's result: the residual JSD target is "no worse
    than the bpreveal recipe's on the same setting" (met trivially by bpreveal itself)."""
    joint = next((r["residual-jsd"] for r in results if r["recipe"] == "bpreveal"), None)
    for r in results:
        r["targets-met"] = {
            "counts": r["counts-ratio"] >= TARGETS["counts-ratio"],
            "residual-jsd": joint is None or r["residual-jsd"] <= joint,
            "footprint-ratio": r["footprint-ratio"] <= TARGETS["footprint-ratio"],
            # the bias model's profile-loss gain (over a flat profile) at least the k-mer table's;
            # as a gain, not the ratio, which is undefined when the table gains nothing (a weak bias)
            "bias-vs-kmer": r.get("bias-gain", math.nan) >= r.get("kmer-gain", math.nan),
            "converged": not any(EPOCH_LIMIT_WARNING in w for w in r["qc-warnings"]),
        }


def _interval(ci) -> str:
    return "" if not ci else f" [{ci[0]:.2f}, {ci[1]:.2f}]"


def markdown(results: list[dict]) -> str:
    def f(x, d=3):
        return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{d}f}"

    def ok(b):
        return "yes" if b else "**no**"

    rows = [
        "| recipe | test peaks | counts Pearson (oracle; sequence ceiling) | ratio >= 0.9 [95 % interval] | "
        "counts Spearman (oracle) | "
        "bias-only counts Pearson | residual share of counts | residual JSD vs signal (<= bpreveal's; "
        "perfect residual) | residual JSD vs 1 + signal (background share: 1 + signal's = 1) | "
        "residual Pearson vs signal | bias branch JSD vs true bias | combined JSD vs expected | "
        "combined Pearson vs expected | "
        "footprint ratio bias/TF (<= 0.01) | bias model gain / 7-mer table gain (model >= table) | combined epochs (s) | "
        "no epoch-limit stop | QC warnings |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        t = r["targets-met"]
        rows.append(
            f"| {r['recipe']} | {r['test-peaks']} | {f(r['counts-pearson'])} ({f(r['oracle-pearson'])}; "
            f"{f(r.get('sequence-ceiling-pearson'))}) | "
            f"{f(r['counts-ratio'], 2)} {ok(t['counts'])}{_interval(r.get('counts-ratio-ci95'))} | "
            f"{f(r['counts-spearman'])} ({f(r['oracle-spearman'])}) | "
            f"{f(r['bias-counts-pearson'])} | {f(r['residual-share'])} | "
            f"{f(r['residual-jsd'])} {ok(t['residual-jsd'])} "
            f"({f(r['perfect-residual-jsd'])}) | {f(r['residual-jsd-vs-1+signal'])} "
            f"({f(r.get('residual-background-share'), 2)}) | "
            f"{f(r['residual-pearson'])} | {f(r.get('bias-branch-jsd'))} | "
            f"{f(r['combined-jsd'])} | {f(r['combined-pearson'])} | "
            f"{f(r['footprint-ratio'], 4)} {ok(t['footprint-ratio'])} | {f(r.get('bias-gain'), 2)} / "
            f"{f(r.get('kmer-gain'), 2)} {ok(t['bias-vs-kmer'])} | {r.get('combined-epochs')} ({f(r.get('combined-seconds'), 0)}) | "
            f"{ok(t['converged'])} | {len(r['qc-warnings'] or [])} |"
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
        help="counts-phase-learning-rate of the combined model (profile-first; default the workflow's, 0.0008 on its cosine)",
    )
    p.add_argument("--counts-frac", type=float, default=0.1, help="the head's counts-loss-frac-target (every stage)")
    p.add_argument("--num-backgrounds", type=int, default=200, help="backgrounds for the footprints (c)")
    p.add_argument("--cores", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--score-only", action="store_true", help="skip the workflow; score an existing workdir")
    p.add_argument(
        "--setting",
        action="append",
        choices=list(SETTINGS),
        help="a setting of the suite (repeat; each runs in WORKDIR/SETTING); without it the base setting runs "
        "in WORKDIR",
    )
    p.add_argument("--json", help="write the results as JSON")
    p.add_argument("--markdown", help="write the table as markdown")
    args = p.parse_args(argv)

    records = []
    for setting in args.setting or ["base"]:
        workdir = Path(args.workdir) / setting if args.setting else Path(args.workdir)
        config = workflow_config(args, setting)
        sim_name = config["experiments"][args.recipes[0]]["simulate"]["name"]
        sim_dir = workdir / "results" / "simulated" / sim_name
        seconds = None
        if not args.score_only:
            if SETTINGS[setting].get("bed"):
                run_workflow(args, config, workdir, [f"results/simulated/{sim_name}/truth.json"])
                bed = write_background_bed(
                    sim_dir, workdir / "background.bed", args.output_length, args.background_ratio, args.seed
                )
                config = workflow_config(args, setting, str(bed.resolve()))
            seconds = run_workflow(args, config, workdir)
        truth = json.loads((sim_dir / "truth.json").read_text())
        results = [score_recipe(workdir, r, sim_dir, truth, args.num_backgrounds) for r in args.recipes]
        targets_met(results)
        table = markdown(results)
        print(f"\n### {setting}\n\n{table}")
        records.append(
            {"setting": setting, "workflow-seconds": seconds, "config": config, "results": results, "table": table}
        )
    record = {
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_version()}",
        "targets": TARGETS,
        "settings": records,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1, default=float))
    if args.markdown:
        Path(args.markdown).write_text("".join(f"### {r['setting']}\n\n{r['table']}\n\n" for r in records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
