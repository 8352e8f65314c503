"""Paired recipe experiments on the combined stage (issue 17): retrain only the combined model of
a finished `quality.py` working directory under changed settings, from the same bias model and
transformation, and score it beside the default with quality.py's measures.

A setting's run costs ~15 min on a 2-core box, its combined stage ~6 min; training on the
CPU is deterministic given the seed, so a variant that changes only the counts phase repeats the
profile phase bit for bit, and the difference between the two rows is the change's alone (the
default's own seed-to-seed spread is measured with the variant ``{"seed": 1}``).

    .venv/bin/python benchmarks/quality.py --workdir /work/suite --scale 0.5 --setting base --recipes bpflow
    .venv/bin/python benchmarks/combined_variants.py /work/suite/base seed1 '{"seed": 1}'
    .venv/bin/python benchmarks/combined_variants.py /work/suite/base --table

A variant NAME writes results/NAME/ (its train and predict configs, models, predictions, log,
score.json) beside results/bpflow/, whose data, bias predictions and transformation it links
(``--base bpreveal``: a variant of the BPReveal-style recipe's run instead, e.g. its own second
seed, from its own bias model and transformation).
The JSON object is merged into the combined stage's ``settings``; its key ``"heads"`` (an
object) is merged into every head instead, e.g. ``'{"heads": {"counts-loss-frac-target": 0.3}}'``.
``--table`` prints every scored variant of the working directory as a markdown table;
``--difference BASELINE RUN...`` each run's counts ratio minus BASELINE's on the same test peaks
with its paired-bootstrap 95 % interval (which of two recipes counts better beyond the test
set's sampling; the seed's spread is another matter).

    .venv/bin/python benchmarks/combined_variants.py /work/suite/base --difference seed1 variant
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402

BASE = "bpflow"
NUM_BACKGROUNDS = 200  # footprint backgrounds, quality.py's --num-backgrounds default
SHARED = ("data/background_test.h5", "predictions/bias_peaks_test.h5", "qc/bias.json", "models/transformation.keras")
COLUMNS = (
    ("counts-ratio", "counts / oracle", 3),
    ("residual-jsd", "residual JSD vs signal", 3),
    ("residual-jsd-vs-1+signal", "vs 1 + signal", 3),
    ("combined-jsd", "combined JSD vs expected", 3),
    ("footprint-ratio", "footprint ratio", 4),
)


def _bpflow() -> str:
    return str(Path(sys.executable).with_name("bpflow"))


def variant_config(config: dict, name: str, patch: dict) -> dict:
    """The default's train-combined config with ``patch`` merged into its settings (its key
    "heads", an object, into every head instead) and its outputs moved to results/NAME/models
    (its data, transformation and seed stay)."""
    out = json.loads(json.dumps(config))
    prefix = f"results/{name}/models"
    out["settings"].update(
        {
            "output-prefix": f"{prefix}/combined",
            "combined-model-file": f"{prefix}/combined.keras",
            "residual-model-file": f"{prefix}/residual.keras",
            **{key: value for key, value in patch.items() if key != "heads"},
        }
    )
    for head in out["heads"]:
        head.update(patch.get("heads", {}))
    return out


def stale(output: Path, source: Path) -> bool:
    """Whether ``output`` (a prediction) is missing or older than ``source`` (its model)."""
    return not output.is_file() or output.stat().st_mtime < source.stat().st_mtime


def run_variant(workdir: Path, name: str, patch: dict, threads: int, base: str = BASE) -> dict:
    """Train, predict and score variant ``name`` of ``workdir`` (of its run ``results/base``);
    returns its score record.

    Training always goes through ``bpflow train-combined``, whose fingerprint of the config
    (defaults filled in) and inputs reuses a finished run and retrains one made under other
    settings or another default; predictions are redone when older than their model."""
    src, dst = workdir / "results" / base, workdir / "results" / name
    for sub in ("configs", "models", "predictions", "qc", "logs", "data"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
    for rel in SHARED:
        if (src / rel).exists() and not (dst / rel).exists():
            (dst / rel).symlink_to((src / rel).resolve())
    config = variant_config(json.loads((src / "configs/train_combined.json").read_text()), name, patch)
    train_config = dst / "configs/train_combined.json"
    train_config.write_text(json.dumps(config, indent=1))
    options = ["--threads", str(threads)]
    with open(dst / "logs/train_combined.log", "a") as log:  # a reused run adds one line
        subprocess.run(
            [_bpflow(), "train-combined", str(train_config.relative_to(workdir)), *options],
            cwd=workdir,
            check=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    for model in ("combined", "residual"):
        model_file = config["settings"][f"{model}-model-file"]
        predict = json.loads((src / f"configs/predict_{model}_peaks.json").read_text())
        predict["model-file"] = model_file
        predict["output-h5"] = f"results/{name}/predictions/{model}_peaks_test.h5"
        path = dst / f"configs/predict_{model}_peaks.json"
        path.write_text(json.dumps(predict, indent=1))
        if stale(workdir / predict["output-h5"], workdir / model_file):
            subprocess.run(
                [_bpflow(), "predict", str(path.relative_to(workdir)), *options],
                cwd=workdir,
                check=True,
                capture_output=True,
            )
    return score(workdir, name, patch, base)


def training_warnings(history_path: Path) -> list[str]:
    """The QC's training warnings of a variant's combined stage ("still improving" at its
    epoch limit): a variant has no qc/combined.json of its own (score_recipe reads the linked
    qc/bias.json only), so this part of the combined QC is read from its history."""
    from bpflow.evaluate import qc

    return qc.all_warnings({"training": qc.training_qc({"combined": str(history_path)})})


def simulation(workdir: Path) -> Path:
    """The simulation directory of a quality.py working directory."""
    qcfg = json.loads((workdir / "quality-config.json").read_text())
    return workdir / "results/simulated" / qcfg["experiments"][BASE]["simulate"]["name"]


def score(workdir: Path, name: str, patch: dict, base: str = BASE) -> dict:
    sim_dir = simulation(workdir)
    truth = json.loads((sim_dir / "truth.json").read_text())
    record = quality.score_recipe(workdir, name, sim_dir, truth, NUM_BACKGROUNDS)
    history_path = workdir / "results" / name / "models/combined.history.json"
    history = json.loads(history_path.read_text())
    record["qc-warnings"] += training_warnings(history_path)
    record.update(
        {
            "settings-patch": patch,
            "base": base,
            "train-seconds": history["wall-seconds"],
            "combined-epochs": history["epochs-run"],
            "combined-stop": history["stop-reason"],
            "phases": history.get("phases"),
        }
    )
    (workdir / "results" / name / "score.json").write_text(json.dumps(record, indent=1, default=float))
    return record


def _phase_cells(record: dict) -> list[str]:
    phases = {p["phase"]: p for p in record.get("phases") or []}
    profile, counts = phases.get("profile"), phases.get("counts")
    cells = [f"{profile['best-val-loss']:.1f} ({profile['best-epoch']} / {profile['epochs-run']})" if profile else ""]
    cells.append(f"{counts['best-epoch']} / {counts['epochs-run']}" if counts and counts["epochs-run"] else "no epochs")
    return cells


def table(workdir: Path) -> str:
    """Markdown rows of the default (scored afresh) and every scored variant of ``workdir``."""
    rows = [
        "| variant | settings | "
        + " | ".join(c[1] for c in COLUMNS)
        + " | profile phase: best val loss (best / run epochs) | counts phase: best / run |",
        "|---" * (len(COLUMNS) + 4) + "|",
    ]
    base = score(workdir, BASE, {})
    variants = []
    for path in sorted((workdir / "results").glob("*/score.json")):
        if path.parent.name == BASE:
            continue
        record = json.loads(path.read_text())
        if "recipe" not in record:  # written by another script (the third session's first draft)
            print(f"{path}: not a score record of this script, skipped", file=sys.stderr)
            continue
        variants.append(record)
    for r in [base, *variants]:
        cells = [f"{r[key]:.{digits}f}" for key, _, digits in COLUMNS]
        patch = json.dumps(r.get("settings-patch") or {}) if r["recipe"] != BASE else "quality.py's run"
        start = "" if r.get("base", BASE) == BASE else f"{r['base']} + "
        rows.append(f"| {r['recipe']} | {start}`{patch}` | " + " | ".join(cells + _phase_cells(r)) + " |")
    return "\n".join(rows)


def differences(workdir: Path, baseline: str, names: list[str]) -> str:
    """Markdown rows: each run's counts ratio minus ``baseline``'s on the same test peaks, with
    the paired 95 % interval (quality.counts_ratio_difference_interval) - the test set's
    sampling of the difference; a second seed measures the rest."""
    from bpflow.evaluate.measures import pearson

    sim_dir = simulation(workdir)

    def counts(name):
        path = workdir / "results" / name / "predictions/combined_peaks_test.h5"
        if not path.is_file():
            raise SystemExit(f"{path}: no test predictions (run the variant first)")
        names_, chrom, start, stop, _, logcounts = quality._windows(path)
        return (names_, chrom, start, stop), logcounts

    windows, base = counts(baseline)

    def total(kind):
        return np.log1p(quality._tracks(quality._strands(sim_dir, kind), *windows).sum(axis=(1, 2)))

    observed, oracle = total("experiment"), total("truth/expected")
    r_oracle, r_base = pearson(oracle, observed), pearson(base, observed)
    rows = [f"| run | counts / oracle | minus {baseline}'s [95 % interval] |", "|---|---|---|"]
    for name in names:
        other, predicted = counts(name)
        if not all(np.array_equal(a, b) for a, b in zip(other[1:], windows[1:])):
            raise SystemExit(f"{name}: its test windows are not {baseline}'s")
        r = pearson(predicted, observed)
        ratio, diff = r / r_oracle, (r - r_base) / r_oracle
        lo, hi = quality.counts_ratio_difference_interval(predicted, base, oracle, observed)
        rows.append(f"| {name} | {ratio:.4f} | {diff:+.4f} [{lo:+.4f}, {hi:+.4f}] |")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("workdir", type=Path, help="a quality.py setting's working directory (with results/bpflow)")
    p.add_argument("name", nargs="?", help="the variant's name (results/NAME)")
    p.add_argument(
        "settings", nargs="?", help='JSON object merged into the combined stage\'s settings ("heads": into every head)'
    )
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument(
        "--base", default=BASE, help="the recipe's run a variant starts from (results/BASE; default %(default)s)"
    )
    p.add_argument("--table", action="store_true", help="print the default and every scored variant")
    p.add_argument(
        "--difference",
        nargs="+",
        metavar="RUN",
        help="BASELINE RUN...: each run's counts ratio minus BASELINE's on the same test peaks, with its paired interval",
    )
    args = p.parse_args(argv)
    workdir = args.workdir.resolve()
    if not (workdir / "results" / BASE / "configs/train_combined.json").is_file():
        p.error(f"{workdir}: no results/{BASE}/configs/train_combined.json (run quality.py there first)")
    if args.name:
        if args.name in (BASE, args.base) or args.settings is None:
            p.error(f"give a variant name other than {args.base!r} and its settings as a JSON object")
        if not (workdir / "results" / args.base / "configs/train_combined.json").is_file():
            p.error(f"{workdir}: no results/{args.base}/configs/train_combined.json")
        patch = json.loads(args.settings)
        if not isinstance(patch, dict):
            p.error("settings: a JSON object")
        record = run_variant(workdir, args.name, patch, args.threads, args.base)
        print(json.dumps({k: record.get(k) for k, _, _ in COLUMNS}, default=float))
    if args.table:
        print(table(workdir))
    if args.difference:
        print(differences(workdir, args.difference[0], args.difference[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
