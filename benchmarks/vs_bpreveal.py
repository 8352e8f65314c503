"""bpflow and BPReveal 5.2.2 side by side on the same files, whole processes (issue 16).

What a new user compares: the same configs, the same inputs, both tools run one after the
other on one machine, each as the command a user types.  Measured per run: wall seconds, CPU
seconds (user + system of the process and its children) and peak resident memory (the
process's maximum RSS), from ``os.wait4``.  Runs alternate (peer, bpflow, peer, bpflow, ...)
so that a machine shared with other work slows both alike: read the ratios.

Workloads (synthetic, no N bases: BPReveal crashes on them):

* ``prepare``: prepare-data of 20,000 and 100,000 output-length regions (input 2114, output
  1000, max-jitter 128, reverse complement, two stranded bigWigs), the same JSON for both
  (bpflow reads BPReveal's keys; bpflow runs with ``--threads 2``, as the workflow's data jobs);
* ``train``: train-solo (bpflow ``train-bias``) of the ChromBPNet shape (64 filters x 8
  layers, input/output filter widths 21/75, 2114 -> 1000) on one 2,000-sample HDF5 (1,000
  regions with their reverse complements, written once by bpflow) for ``--epochs`` epochs,
  batch 64, the same JSON for both;
* ``predict``: 1,000 regions to one profile bigWig per task, each tool with its own model of
  the ``train`` workload (run it first in the same workdir): BPReveal's makePredictions then
  predictToBigwig per task, against bpflow's predict then predictions-to-bigwig; the two
  processes' seconds add up, the peak memory is the largest.

Set-up of the peer (its own virtual environment; BPReveal 5.2.2 needs Python 3.12 and numpy
< 2.3)::

    ~/.pyenv/versions/3.12.1/bin/python -m venv /work/peer/bpreveal-venv
    /work/peer/bpreveal-venv/bin/pip install "bpreveal==5.2.2" "numpy<2.3"

Run (results: a table on stdout, ``--json``)::

    .venv/bin/python benchmarks/vs_bpreveal.py --peer-bin /work/peer/bpreveal-venv/bin \\
        --workdir /tmp/vs --json vs.json              # prepare 20k + 100k, train, predict
    .venv/bin/python benchmarks/vs_bpreveal.py ... --only prepare --regions 20000
    .venv/bin/python benchmarks/vs_bpreveal.py ... --only predict   # after a train run there
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

INPUT, OUTPUT, JITTER = 2114, 1000, 128
ROOT = Path(__file__).resolve().parent.parent


def generate(workdir: Path, genome_size: int, num_regions: int) -> dict:
    """prepare_data.py's synthetic inputs without N runs (BPReveal crashes on N); the regions
    as (chromosome, start) rows."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from prepare_data import generate as generate_inputs

    inputs = generate_inputs(workdir, genome_size, num_regions, gaps=False)
    rows = [line.split("\t")[:2] for line in Path(inputs["regions"]).read_text().splitlines()]
    return {**inputs, "regions": [(c, int(s)) for c, s in rows]}


def write_bed(path: Path, rows) -> str:
    path.write_text("".join(f"{c}\t{s}\t{s + OUTPUT}\n" for c, s in rows))
    return str(path)


def measure(cmd: list[str], log: Path) -> dict:
    """Run a whole process; its wall seconds, CPU seconds and peak RSS."""
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {code}); see {log}")
    return {
        "wall-s": round(wall, 2),
        "cpu-s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak-rss-mb": round(usage.ru_maxrss / 1024, 1),
    }


def same_arrays(a: str, b: str, block: int = 2048) -> bool:
    """Both files hold the same ``sequence`` and ``head_0`` (read in blocks of samples)."""
    import h5py

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        for key in ("sequence", "head_0"):
            if fa[key].shape != fb[key].shape:
                return False
            for i in range(0, fa[key].shape[0], block):
                if not np.array_equal(fa[key][i : i + block], fb[key][i : i + block]):
                    return False
    return True


def prepare_config(inputs: dict, bed: str, output: str) -> dict:
    return {
        "genome": inputs["genome"],
        "input-length": INPUT,
        "output-length": OUTPUT,
        "max-jitter": JITTER,
        "regions": bed,
        "output-h5": output,
        "reverse-complement": True,
        "heads": [{"bigwig-files": inputs["bigwigs"], "revcomp-task-order": "auto"}],
        "verbosity": "WARNING",
    }


def solo_config(train: str, val: str, prefix: str, epochs: int) -> dict:
    return {
        "settings": {
            "output-prefix": prefix,
            "epochs": epochs,
            "max-jitter": JITTER,
            "early-stopping-patience": epochs + 1,
            "batch-size": 64,
            "learning-rate": 0.004,
            "learning-rate-plateau-patience": epochs + 1,
            "architecture": {
                "architecture-name": "bpnet",
                "input-length": INPUT,
                "output-length": OUTPUT,
                "model-name": "solo",
                "model-args": "",
                "filters": 64,
                "layers": 8,
                "input-filter-width": 21,
                "output-filter-width": 75,
            },
        },
        "train-data": train,
        "val-data": val,
        "heads": [{"head-name": "solo", "num-tasks": 2, "profile-loss-weight": 1, "counts-loss-weight": 10}],
        "verbosity": "INFO",
    }


def alternate(name: str, commands: dict[str, list[list[str]]], workdir: Path, repeat: int) -> list[dict]:
    """Each tool's commands (one after the other: their wall and CPU seconds add up, the
    peak memory is the largest), the tools alternating, ``repeat`` times."""
    rows = []
    for r in range(repeat):
        for tool in ("bpreveal", "bpflow"):
            runs = [measure(cmd, workdir / f"{name}.{tool}.{r}.{k}.log") for k, cmd in enumerate(commands[tool])]
            row = {
                "work": name,
                "tool": tool,
                "run": r + 1,
                "wall-s": round(sum(x["wall-s"] for x in runs), 2),
                "cpu-s": round(sum(x["cpu-s"] for x in runs), 2),
                "peak-rss-mb": max(x["peak-rss-mb"] for x in runs),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def predict_commands(workdir: Path, peer: Path, bpflow: list[str], genome: str, bed: str) -> dict:
    """Prediction of the BED's regions to one profile bigWig per task with each tool's own
    trained solo model (the ``train`` workload's): BPReveal's makePredictions then
    predictToBigwig per task; bpflow's predict then predictions-to-bigwig."""
    peer_cfg = workdir / "predict.bpreveal.json"
    peer_h5 = str(workdir / "pred.bpreveal.h5")
    peer_cfg.write_text(
        json.dumps(
            {
                "settings": {
                    "output-h5": peer_h5,
                    "batch-size": 64,
                    "genome": genome,
                    "heads": 1,
                    "architecture": {
                        "input-length": INPUT,
                        "output-length": OUTPUT,
                        "model-file": str(workdir / "solo_bpreveal.keras"),
                    },
                },
                "bed-file": bed,
                "num-threads": 2,
                "verbosity": "WARNING",
            }
        )
    )
    own_cfg, own_bw = workdir / "predict.bpflow.json", workdir / "bigwig.bpflow.json"
    own_h5 = str(workdir / "pred.bpflow.h5")
    own_cfg.write_text(
        json.dumps(
            {"model-file": str(workdir / "solo_bpflow.keras"), "genome": genome, "regions": bed, "output-h5": own_h5}
        )
    )
    own_bw.write_text(json.dumps({"h5": own_h5, "mode": "profile", "output-prefix": str(workdir / "pred.bpflow")}))
    peer_bw = [
        [str(peer / "predictToBigwig"), "--h5", peer_h5, "--bw", str(workdir / f"pred.bpreveal.{t}.bw")]
        + ["--head-id", "0", "--task-id", str(t), "--mode", "profile", "--threads", "2"]
        for t in (0, 1)
    ]
    return {
        "bpreveal": [[str(peer / "makePredictions"), str(peer_cfg)], *peer_bw],
        "bpflow": [
            bpflow + ["predict", str(own_cfg), "--threads", "2"],
            bpflow + ["predictions-to-bigwig", str(own_bw), "--threads", "2"],
        ],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer-bin", required=True, help="bin/ of the virtual environment with bpreveal 5.2.2")
    p.add_argument("--workdir", default="/tmp/vs_bpreveal")
    p.add_argument("--regions", type=int, nargs="+", default=[20000, 100000])
    p.add_argument("--only", choices=["prepare", "train", "predict"], help="one workload only")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeat", type=int, default=1, help="alternating runs per tool and workload")
    p.add_argument("--genome-size", type=int, default=50_000_000)
    p.add_argument("--json")
    args = p.parse_args()

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    bpflow = [str(Path(sys.executable).with_name("bpflow"))]
    peer = Path(args.peer_bin)
    inputs = generate(workdir, args.genome_size, max(args.regions + [1200]))
    rows: list[dict] = []
    if args.only in (None, "prepare"):
        for n in args.regions:
            picked = sorted(np.random.default_rng(n).choice(len(inputs["regions"]), n, replace=False))
            bed = write_bed(workdir / f"regions{n}.bed", [inputs["regions"][i] for i in picked])
            cmds = {}
            for tool in ("bpreveal", "bpflow"):
                path = workdir / f"prepare{n}.{tool}.json"
                path.write_text(json.dumps(prepare_config(inputs, bed, str(workdir / f"data{n}.{tool}.h5"))))
                cmds[tool] = [
                    [str(peer / "prepareTrainingData"), str(path)]
                    if tool == "bpreveal"
                    else bpflow + ["prepare-data", str(path), "--threads", "2"]
                ]
            rows += alternate(f"prepare-data {n}", cmds, workdir, args.repeat)
            same = same_arrays(*(str(workdir / f"data{n}.{tool}.h5") for tool in ("bpreveal", "bpflow")))
            print(f"prepare-data {n}: the two files hold the same arrays: {same}", flush=True)
    if args.only in (None, "train"):
        files = {}
        for split, lo, hi in (("train", 0, 1000), ("val", 1000, 1200)):
            bed = write_bed(workdir / f"{split}.bed", inputs["regions"][lo:hi])
            cfg = workdir / f"data_{split}.json"
            cfg.write_text(json.dumps(prepare_config(inputs, bed, str(workdir / f"{split}.h5"))))
            measure(bpflow + ["prepare-data", str(cfg)], workdir / f"data_{split}.log")
            files[split] = str(workdir / f"{split}.h5")
        cmds = {}
        for tool in ("bpreveal", "bpflow"):
            path = workdir / f"solo.{tool}.json"
            path.write_text(
                json.dumps(solo_config(files["train"], files["val"], str(workdir / f"solo_{tool}"), args.epochs))
            )
            cmds[tool] = [
                [str(peer / "trainSoloModel"), str(path)]
                if tool == "bpreveal"
                else bpflow + ["train-bias", str(path), "--threads", "2"]
            ]
        rows += alternate(f"train-solo {args.epochs} epochs", cmds, workdir, args.repeat)
    if args.only in (None, "predict"):
        bed = write_bed(workdir / "predict.bed", inputs["regions"][:1000])
        cmds = predict_commands(workdir, peer, bpflow, inputs["genome"], bed)
        rows += alternate("predict 1000 regions to bigWig", cmds, workdir, args.repeat)

    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()}")
    print("| work | run | BPReveal wall / CPU s / peak MB | bpflow wall / CPU s / peak MB | wall ratio |")
    print("|---|---|---|---|---|")
    for peer_row, own in zip(rows[0::2], rows[1::2]):
        fmt = "{wall-s} / {cpu-s} / {peak-rss-mb}"
        ratio = peer_row["wall-s"] / own["wall-s"]
        print(f"| {own['work']} | {own['run']} | {fmt.format(**peer_row)} | {fmt.format(**own)} | {ratio:.2f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "machine": platform.uname()._asdict()}, indent=1))


if __name__ == "__main__":
    main()
