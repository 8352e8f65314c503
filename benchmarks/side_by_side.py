"""bpflow and BPReveal trained on the same HDF5 files, scored against a simulation's truth.

Issue 17's side-by-side run (benchmarks/README.md, "quality", "Side by side with BPReveal").
The workflow writes the datasets (and bpflow's own models) of one experiment; BPReveal 5.2.2,
in its own virtual environment, trains on the very same files with the same architecture,
batch size, learning rates, epochs and patience; both are scored on the test peaks.

    # 1. bpflow: the workflow, one experiment (datasets + bpflow's bias, transformation, combined)
    snakemake --cores 2 --configfile cmp.yaml
    # 2. the peer's configs, then its three stages (python 3.12 venv with bpreveal 5.2.2)
    python benchmarks/side_by_side.py peer-configs --data results/cmp/data --out peer ...
    trainSoloModel peer/solo.json; trainTransformationModel peer/transformation.json
    trainCombinedModel peer/combined.json
    # 3. predictions on the forward-strand test peaks (peer: run with the peer's python)
    PEER_PYTHON benchmarks/side_by_side.py predict --peer peer/combined results/cmp/data peer.npz
    python benchmarks/side_by_side.py predict results/cmp/models/combined bpflow.npz
    # 4. scores against results/simulated/<simulation>/truth
    python benchmarks/side_by_side.py score results/simulated/demo-seed3 results/cmp/data peer.npz bpflow.npz

Scores (per forward-strand test peak, medians): counts Pearson of the combined model's log
counts with log(1 + observed) over the output window divided by the oracle's (log(1 +
expected)); the residual's JSD to the true signal, and to 1 + signal (what a residual can
identify when observed = bias x (1 + signal)); the combined model's JSD to the expected profile.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import h5py
import numpy as np


def peer_configs(args) -> None:
    """BPReveal's JSON configs for solo, transformation and combined on the workflow's files."""
    from bpflow.lengths import needed_input_length

    heads = [
        {
            "head-name": args.head,
            "num-tasks": args.num_tasks,
            "profile-loss-weight": 1,
            "counts-loss-frac-target": 0.1,
        }
    ]
    out, data = Path(args.out), Path(args.data)
    out.mkdir(parents=True, exist_ok=True)

    def settings(prefix, epochs, lr, patience, plateau, **extra):
        return {
            "output-prefix": str(out / prefix),
            "epochs": epochs,
            "max-jitter": args.max_jitter,
            "early-stopping-patience": patience,
            "batch-size": args.batch_size,
            "learning-rate": lr,
            "learning-rate-plateau-patience": plateau,
            **extra,
        }

    def arch(name, filters, layers, in_width, out_width):
        return {
            "architecture-name": "bpnet",
            "input-length": needed_input_length(args.output_length, layers, in_width, out_width),
            "output-length": args.output_length,
            "model-name": name,
            "filters": filters,
            "layers": layers,
            "input-filter-width": in_width,
            "output-filter-width": out_width,
            "model-args": "",
        }

    bias_arch = arch("solo", args.bias_filters, args.bias_layers, 11, 25)
    res_arch = arch("residual", args.residual_filters, args.residual_layers, 15, 25)
    configs = {
        "solo": {
            "settings": settings(
                "bias", args.bias_epochs, 0.004, args.patience[0], args.plateau_patience[0], architecture=bias_arch
            ),
            "train-data": str(data / "bias-background_train.h5"),
            "val-data": str(data / "bias-background_val.h5"),
            "heads": heads,
            "verbosity": "INFO",
        },
        "transformation": {
            "settings": settings(
                "transformation",
                args.transformation_epochs,
                0.02,
                args.patience[1],
                args.plateau_patience[1],
                **{
                    "solo-model-file": str(out / "bias.keras"),
                    "input-length": bias_arch["input-length"],
                    "output-length": args.output_length,
                    # BPReveal 5.2.2 crashes on "simple" with one type (shared/spec): two types;
                    # for the counts too (with one, its loss callback finds no counts loss by
                    # name: "The loss didn't match any regex", Keras 3.15 / TF 2.21)
                    "profile-architecture": {"name": "simple", "types": ["linear", "sigmoid"]},
                    "counts-architecture": {"name": "simple", "types": ["linear", "sigmoid"]},
                },
            ),
            "train-data": str(data / "bias-peaks_train.h5"),
            "val-data": str(data / "bias-peaks_val.h5"),
            "heads": [dict(h, **{"counts-loss-weight": 10}) for h in heads],
            "verbosity": "INFO",
        },
        "combined": {
            "settings": settings(
                "combined",
                args.combined_epochs,
                0.004,
                args.patience[2],
                args.plateau_patience[2],
                architecture=res_arch,
                **{"transformation-model": {"transformation-model-file": str(out / "transformation.keras")}},
            ),
            "train-data": str(data / "peaks_train.h5"),
            "val-data": str(data / "peaks_val.h5"),
            "heads": [dict(h, **{"use-bias-counts": True}) for h in heads],
            "verbosity": "INFO",
        },
    }
    for name, config in configs.items():
        (out / f"{name}.json").write_text(json.dumps(config, indent=1))
        print(out / f"{name}.json")


def _forward_test_sequences(data: Path) -> np.ndarray:
    with h5py.File(Path(data) / "peaks_test.h5", "r") as f:
        keep = f["coords_strand"][:] == b"+"
        return f["sequence"][:][keep].astype(np.float32)


def predict(args) -> None:
    """Residual and combined logits and log counts on the forward-strand test peaks."""
    if args.peer:
        from bpreveal.utils import loadModel as load
    else:
        import keras

        import bpflow  # noqa: F401  (registers bpflow's layers)

        load = keras.saving.load_model
    seq = _forward_test_sequences(args.data)
    out = {}
    for name in ("residual", "combined"):
        model = load(f"{args.prefix}_{name}.keras")
        length = model.inputs[0].shape[1]
        a = (seq.shape[1] - length) // 2
        pred = model.predict(seq[:, a : a + length], batch_size=64, verbose=0)
        out[f"{name}_logits"] = np.asarray(pred[0])
        out[f"{name}_logcounts"] = np.asarray(pred[1]).reshape(-1)
    np.savez(args.npz, **out)


def score(args) -> None:
    import pyBigWig

    from bpflow.evaluate import measures as M

    with h5py.File(Path(args.data) / "peaks_test.h5", "r") as f:
        keep = f["coords_strand"][:] == b"+"
        names = [n.decode() if isinstance(n, bytes) else n for n in f["chrom_names"][:]]
        chrom, start, stop = (f[k][:][keep] for k in ("coords_chrom", "coords_start", "coords_stop"))

    def tracks(kind):
        out = np.zeros((len(start), int(stop[0] - start[0]), 2))
        for t, strand in enumerate(("plus", "minus")):
            with pyBigWig.open(f"{args.simulation}/{kind}.{strand}.bw") as bw:
                for i in range(len(start)):
                    values = bw.values(names[chrom[i]], int(start[i]), int(stop[i]), numpy=True)
                    out[i, :, t] = np.nan_to_num(values)
        return out

    signal, expected, observed = tracks("truth/signal"), tracks("truth/expected"), tracks("experiment")
    observed_log = np.log1p(observed.sum(axis=(1, 2)))
    oracle = M.pearson(np.log1p(expected.sum(axis=(1, 2))), observed_log)
    has = signal.sum(axis=(1, 2)) > 0

    def jsd(truth, pred):
        return round(float(np.nanmedian(M.jensen_shannon_distance(truth, pred))), 4)

    for npz in args.npz:
        d = np.load(npz)
        residual = M.softmax_joint(d["residual_logits"])
        combined = M.softmax_joint(d["combined_logits"])
        row = {
            "peaks": int(keep.sum()),
            "counts/oracle": round(M.pearson(d["combined_logcounts"], observed_log) / oracle, 3),
            "residual-jsd-signal": jsd(signal[has], residual[has]),
            "residual-jsd-1+signal": jsd(1 + signal[has], residual[has]),
            "combined-jsd-expected": jsd(expected, combined),
            "floor": jsd(signal[has], 1 + signal[has]),
        }
        print(npz, json.dumps(row))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("peer-configs", help="BPReveal configs on the workflow's datasets")
    p.add_argument("--data", required=True, help="the experiment's data folder (results/<exp>/data)")
    p.add_argument("--out", default="peer")
    p.add_argument("--head", default="nexus")
    p.add_argument("--num-tasks", type=int, default=2)
    p.add_argument("--output-length", type=int, default=1000)
    p.add_argument("--max-jitter", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--bias-filters", type=int, default=16)
    p.add_argument("--bias-layers", type=int, default=4)
    p.add_argument("--residual-filters", type=int, default=32)
    p.add_argument("--residual-layers", type=int, default=6)
    p.add_argument("--bias-epochs", type=int, default=30)
    p.add_argument("--transformation-epochs", type=int, default=20)
    p.add_argument("--combined-epochs", type=int, default=40)
    p.add_argument(
        "--patience", type=int, nargs=3, default=[5, 3, 5], help="early stopping: solo, transformation, combined"
    )
    p.add_argument(
        "--plateau-patience",
        type=int,
        nargs=3,
        default=[3, 2, 3],
        help="learning-rate plateau: solo, transformation, combined",
    )
    p.set_defaults(func=peer_configs)
    p = sub.add_parser("predict", help="residual and combined outputs on the forward test peaks")
    p.add_argument("--peer", action="store_true", help="load with BPReveal (run with the peer's python)")
    p.add_argument("prefix", help="models PREFIX_residual.keras and PREFIX_combined.keras")
    p.add_argument("data")
    p.add_argument("npz")
    p.set_defaults(func=predict)
    p = sub.add_parser("score", help="score prediction files against the simulation's truth")
    p.add_argument("simulation", help="results/simulated/<name>")
    p.add_argument("data")
    p.add_argument("npz", nargs="+")
    p.set_defaults(func=score)
    args = parser.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
