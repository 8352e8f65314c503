"""Contribution scores (issue 14): bpflow's DeepSHAP under TensorFlow and JAX against a reference
implementation, side by side on the same weights, sequences and references.

The model is ChromBPNet-shaped: `bpflow.models.soloModel` with input 2114, output 1000, 64
filters, 8 dilated layers, filter widths 21 / 75, one head with one task (random weights,
seeded).  The reference is tangermeme's `deep_lift_shap` (DeepLIFT rescale on PyTorch) run on a
PyTorch copy of the same network with the same weights; both get the same dinucleotide-shuffled
references (`bpflow.interpret.shuffle.references_for`, 20 per sequence by default) and, for the
profile target, the same softmax weights (the input's: tangermeme gets them as a forward
argument).  Targets: counts (log counts) and profile (BPNet's weighted mean-centred logits).

Each implementation runs in its own process (so the peak memory is its own), on random
genome-like sequences (GC 41 %):

    pip install torch tangermeme            # the reference; not a bpflow dependency
    python benchmarks/contributions.py --workdir /tmp/contrib-bench --regions 32

Prints a table (regions per second per target - bpflow's including its one graph compilation per
target -, whole-process wall time, peak RSS, agreement
with the reference: max |bpflow - reference| / max |reference| over the hypothetical
contributions, and max summation-to-delta error) and writes it with --markdown / --json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IMPLS = ("bpflow-tensorflow", "bpflow-jax", "tangermeme")
TARGETS = ("counts", "profile")
INPUT, OUTPUT, FILTERS, LAYERS, IN_WIDTH, OUT_WIDTH = 2114, 1000, 64, 8, 21, 75


# --------------------------------------------------------------------------- the data


def prepare(workdir: Path, regions: int, references: int, seed: int, filters: int = FILTERS) -> None:
    """The model (random weights) and the sequences / references every implementation reads."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    from bpflow.interpret.shuffle import references_for
    from bpflow.models import soloModel

    keras.utils.set_random_seed(seed)
    model = soloModel(
        INPUT, OUTPUT, filters, LAYERS, IN_WIDTH, OUT_WIDTH, [{"head-name": "h0", "num-tasks": 1}], "chrombpnet"
    )
    model.save(workdir / "model.keras")
    # the reference reads the weights from here, so its process loads no Keras or TensorFlow
    np.savez(
        workdir / "weights.npz",
        **{f"{layer.name}/{i}": w for layer in model.layers for i, w in enumerate(layer.get_weights())},
    )
    rng = np.random.default_rng(seed)
    x = np.eye(4, dtype=np.float32)[rng.choice(4, size=(regions, INPUT), p=[0.295, 0.205, 0.205, 0.295])]
    refs = references_for(x, references, seed)
    np.savez(workdir / "data.npz", x=x, refs=refs)


# --------------------------------------------------------------------------- implementations


def run_bpflow(workdir: Path, batch_size: int) -> dict:
    import keras

    from bpflow.interpret.deepshap import deepshap

    model = keras.saving.load_model(workdir / "model.keras", compile=False)
    data = np.load(workdir / "data.npz")
    x, refs = data["x"], data["refs"]
    out = {}
    for target in TARGETS:
        # one call per target, as the step makes it: its time includes compiling the graph once
        t0 = time.perf_counter()
        result = deepshap(model, x, refs, target, batch_size=batch_size)
        out[target] = {
            "hypothetical": result.hypothetical,
            "delta": result.prediction - result.reference_prediction,
            "seconds": time.perf_counter() - t0,
        }
    return out


def torch_copy(weights_path: Path):
    """A PyTorch module computing what bpflow's soloModel computes, with its weights."""
    import torch
    from torch import nn

    saved = np.load(weights_path)

    def weights(name):
        return saved[f"{name}/0"], saved[f"{name}/1"]

    def conv(name, dilation=1):
        kernel, bias = weights(name)  # (width, in, out), (out,)
        layer = nn.Conv1d(kernel.shape[1], kernel.shape[2], kernel.shape[0], dilation=dilation)
        layer.weight.data = torch.from_numpy(np.ascontiguousarray(kernel.transpose(2, 1, 0)))
        layer.bias.data = torch.from_numpy(bias)
        return layer

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_in = conv("chrombpnet_conv_input")
            self.relu_in = nn.ReLU()
            self.convs = nn.ModuleList([conv(f"chrombpnet_conv_dil{2**i}", 2**i) for i in range(1, LAYERS + 1)])
            # one ReLU module per layer: DeepLIFT hooks keep per-module state
            self.relus = nn.ModuleList([nn.ReLU() for _ in range(LAYERS)])
            self.profile = conv("chrombpnet_profile_h0")
            kernel, bias = weights("chrombpnet_logcounts_h0")
            self.counts = nn.Linear(kernel.shape[0], 1)
            self.counts.weight.data = torch.from_numpy(np.ascontiguousarray(kernel.T))
            self.counts.bias.data = torch.from_numpy(bias)

        def forward(self, x):  # (N, 4, L)
            h = self.relu_in(self.conv_in(x))
            for conv_, relu in zip(self.convs, self.relus):
                c = relu(conv_(h))
                trim = (h.shape[-1] - c.shape[-1]) // 2
                h = c + h[:, :, trim : trim + c.shape[-1]]
            return self.profile(h), self.counts(h.mean(dim=-1))

    class Counts(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)[1]

    class Profile(nn.Module):
        """BPNet's profile target with the softmax weights ``w`` given (the input's)."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x, w):
            logits = self.net(x)[0].flatten(1)
            return ((logits - logits.mean(dim=1, keepdim=True)) * w).sum(dim=1, keepdim=True)

    net = Net().eval()
    return net, Counts(net).eval(), Profile(net).eval()


def run_tangermeme(workdir: Path, batch_size: int, device: str) -> dict:
    import torch
    from tangermeme.deep_lift_shap import deep_lift_shap

    net, counts, profile = torch_copy(workdir / "weights.npz")
    data = np.load(workdir / "data.npz")
    x = torch.from_numpy(data["x"].transpose(0, 2, 1).copy())  # (N, 4, L)
    refs = torch.from_numpy(data["refs"].transpose(0, 1, 3, 2).copy())  # (N, R, 4, L)
    with torch.no_grad():
        weights = torch.softmax(net(x)[0].flatten(1), dim=1)
    out = {}
    for target, module, args in (("counts", counts, None), ("profile", profile, (weights,))):
        kw = {
            "references": refs,
            "hypothetical": True,
            "batch_size": batch_size,
            "device": device,
            "warning_threshold": 1e9,
        }
        t0 = time.perf_counter()
        hyp = deep_lift_shap(module, x, args=args, **kw)
        t1 = time.perf_counter()
        module.to("cpu")  # the targets for the summation check, on the CPU whatever the device
        with torch.no_grad():
            f_x = module(x, *(args or ())).numpy()[:, 0]
            f_ref = np.stack(
                [module(refs[:, r], *(args or ())).numpy()[:, 0] for r in range(refs.shape[1])],
                axis=1,
            ).mean(axis=1)
        out[target] = {
            "hypothetical": hyp.numpy().transpose(0, 2, 1),
            "delta": f_x - f_ref,
            "seconds": t1 - t0,
        }
    return out


def child(impl: str, workdir: Path, batch_size: int, device: str) -> None:
    t0 = time.perf_counter()
    out = run_tangermeme(workdir, batch_size, device) if impl == "tangermeme" else run_bpflow(workdir, batch_size)
    arrays, record = {}, {"impl": impl, "targets": {}}
    for target, r in out.items():
        arrays[f"{target}_hypothetical"] = r.pop("hypothetical")
        arrays[f"{target}_delta"] = r.pop("delta")
        record["targets"][target] = r
    record["in-process-seconds"] = time.perf_counter() - t0
    record["peak-rss-mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    record["peak-device-mb"] = device_peak_mb(impl, device)
    np.savez(workdir / f"{impl}.npz", **arrays)
    (workdir / f"{impl}.json").write_text(json.dumps(record, indent=1))


def device_peak_mb(impl: str, device: str) -> float | None:
    """Peak accelerator memory of this process (None on a CPU)."""
    if impl == "tangermeme":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    from train_throughput import device_peak_mb  # benchmarks/ is this script's directory

    return device_peak_mb()


# --------------------------------------------------------------------------- the comparison


def launch(impl: str, workdir: Path, batch_size: int, device: str) -> dict:
    env = dict(os.environ)
    if impl.startswith("bpflow-"):
        env["KERAS_BACKEND"] = impl.removeprefix("bpflow-")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", impl, "--workdir", str(workdir)]
    cmd += ["--batch-size", str(batch_size), "--reference-device", device]
    print(f"running {impl} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    record = json.loads((workdir / f"{impl}.json").read_text())
    record["process-seconds"] = time.perf_counter() - t0
    # a run stopped later (a device's time limit) still shows what each child took
    print(f"{impl} finished in {record['process-seconds']:.0f} s", file=sys.stderr, flush=True)
    record["arrays"] = dict(np.load(workdir / f"{impl}.npz"))
    return record


def compare(records: dict, workdir: Path) -> list[dict]:
    data = np.load(workdir / "data.npz")
    x = data["x"]
    ref = records.get("tangermeme")
    rows = []
    for impl, rec in records.items():
        row = {
            "impl": impl,
            "process-seconds": rec["process-seconds"],
            "peak-rss-mb": rec["peak-rss-mb"],
            "peak-device-mb": rec.get("peak-device-mb"),
        }
        for target in TARGETS:
            t = rec["targets"][target]
            hyp, delta = rec["arrays"][f"{target}_hypothetical"], rec["arrays"][f"{target}_delta"]
            row[f"{target}-regions-per-second"] = len(x) / t["seconds"]
            total = (hyp * x).sum(axis=(1, 2))
            row[f"{target}-delta-error"] = float(np.max(np.abs(total - delta) / np.maximum(1.0, np.abs(delta))))
            if ref is not None and impl != "tangermeme":
                other = ref["arrays"][f"{target}_hypothetical"]
                row[f"{target}-vs-reference"] = float(np.max(np.abs(hyp - other)) / np.max(np.abs(other)))
        rows.append(row)
    return rows


def markdown(rows: list[dict], args) -> str:
    lines = [
        f"{args.regions} regions, {args.references} references, batch size {args.batch_size} sequences "
        f"(tangermeme: {args.reference_batch_size} sequence-reference pairs)",
        "",
        "| implementation | counts regions/s | profile regions/s | process wall time (s) | peak RSS (MB) "
        "| peak device (MB) | counts: max rel. difference to reference | profile: max rel. difference "
        "| max summation-to-delta error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        diff = [f"{r[f'{t}-vs-reference']:.1e}" if f"{t}-vs-reference" in r else "-" for t in TARGETS]
        err = max(r[f"{t}-delta-error"] for t in TARGETS)
        device = "-" if r.get("peak-device-mb") is None else f"{r['peak-device-mb']:.0f}"
        lines.append(
            f"| {r['impl']} | {r['counts-regions-per-second']:.2f} | {r['profile-regions-per-second']:.2f} "
            f"| {r['process-seconds']:.0f} | {r['peak-rss-mb']:.0f} | {device} "
            f"| {diff[0]} | {diff[1]} | {err:.1e} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="contributions-bench")
    p.add_argument("--regions", type=int, default=32)
    p.add_argument("--references", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8, help="bpflow: sequences per batch (x references rows)")
    p.add_argument(
        "--reference-batch-size", type=int, default=32, help="tangermeme: sequence-reference pairs per batch"
    )
    p.add_argument("--reference-device", default="cpu", help="tangermeme's torch device (cpu, cuda)")
    p.add_argument(
        "--filters", type=int, default=FILTERS, help=f"filters per layer ({FILTERS}; 512: ChromBPNet's main model)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    p.add_argument("--json")
    p.add_argument("--markdown")
    p.add_argument("--child", choices=IMPLS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    workdir = Path(args.workdir)
    if args.child:
        child(args.child, workdir, args.batch_size, args.reference_device)
        return 0
    workdir.mkdir(parents=True, exist_ok=True)
    prepare(workdir, args.regions, args.references, args.seed, args.filters)
    records = {}
    for impl in args.impls:
        batch = args.reference_batch_size if impl == "tangermeme" else args.batch_size
        records[impl] = launch(impl, workdir, batch, args.reference_device)
    rows = compare(records, workdir)
    table = markdown(rows, args)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table)
    if args.json:
        record = {
            "command": " ".join(["contributions.py"] + (argv if argv is not None else sys.argv[1:])),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}",
            "rows": rows,
        }
        Path(args.json).write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
