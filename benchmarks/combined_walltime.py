"""Wall time of the combined stage, bpflow's default schedule against the joint schedule
(BPReveal's recipe: issue 17's target "combined-stage wall time at the same epoch limit no more
than the joint schedule's") and, optionally, against BPReveal's own combined stage, on the same
files, one after the other, whole process.

Two steps, so that the measurement can run where the suite's working directories are not (the
device machine of benchmarks/gpu.sh):

    # here: copy a finished quality.py setting's inputs of the combined stage (6 MB at half scale)
    .venv/bin/python benchmarks/combined_walltime.py pack /work/suite/other-motifs \\
        benchmarks/gpu-data/other-motifs
    # anywhere: train the combined stage with each recipe and time it
    .venv/bin/python benchmarks/combined_walltime.py run benchmarks/gpu-data/other-motifs \\
        --workdir /tmp/cw --threads 2 --json cw.json

``pack`` copies the training and validation peaks, the transformation model, the peer's
combined config and transformation when the setting has them (``peer/``), and the default's
train-combined config (brought to the workflow's current phases: the counts phase on a cosine
from 0.0008, the profile phase's patience after its first halving - for suite builds made before
those defaults).  ``run``
writes each recipe's config into ``--workdir`` and runs it (``bpflow train-combined``, or the
peer's ``trainCombinedModel``):

- ``default``: the packed config (profile-first; the profile phase, then the counts phase);
- ``joint``: the same with the joint schedule of quality.py's ``bpreveal`` recipe: profile and
  counts trained together from the first step at BPReveal's learning rate 0.004, no warm-up,
  Keras's initialisation of the residual's counts, BPReveal's summed counts.

The two bpflow recipes start from the same transformation (the ``bpreveal`` recipe of
quality.py fits its own on peaks; the stage's cost does not depend on it) with the same
architecture, data, batch size, seed and epoch limit (``--epochs`` and ``--seed`` set both
recipes' instead of the packed config's).

- ``peer`` (with ``--peer-bin``, the bin directory of a BPReveal 5.2.2 venv; benchmarks/
  vs_bpreveal.py has its set-up): BPReveal's own ``trainCombinedModel`` on the same peaks,
  from its own transformation and with its own config, as ``side_by_side.py peer-configs``
  writes them into the setting's ``peer/`` (its bias model and transformation trained there
  first; ``pack`` copies both when present), the epoch limit the same.  It runs with glibc's
  heap tuned as bpflow tunes its own (``GLIBC_TUNABLES`` from ``bpflow.allocator.SETTINGS``;
  without it BPReveal ran 2.5x slower on the suite's box, benchmarks/README.md, tenth session).

Reported per recipe: the process's wall time (start-up, data loading, compilation and saving
included), the history's training seconds, epochs run, the median epoch, and the stop reason
(for the peer, whose history has neither: the epochs, the epoch whose weights Keras restored,
whether early stopping ended the run, and the process's seconds an epoch).

    .venv/bin/python benchmarks/combined_walltime.py run benchmarks/gpu-data/base --workdir /tmp/cw \
        --recipes default joint peer --peer-bin /work/peer/bpreveal-venv/bin --json cw.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import combined_variants  # noqa: E402
import quality  # noqa: E402

from bpflow import allocator  # noqa: E402
from bpflow.train.settings import PROFILE_FIRST_KEYS  # noqa: E402

FILES = {"train": "peaks_train.h5", "val": "peaks_val.h5", "transformation": "transformation.keras"}
# the peer's own combined config and transformation: a setting's peer/ (side_by_side.py) name ->
# the packed name (copied when both are there)
PEER_CONFIG, PEER_TRANSFORMATION = "peer_combined.json", "peer_transformation.keras"
PEER_FILES = {"combined.json": PEER_CONFIG, "transformation.keras": PEER_TRANSFORMATION}
# the workflow's defaults of the combined stage's phases (workflow/rules/common.smk): the counts
# phase on a cosine from 0.0008 since the twelfth session, the profile phase's patience after
# its first halving since the eighteenth
CURRENT_PHASES = {
    "counts-phase-learning-rate": 0.0008,
    "counts-phase-schedule": "cosine",
    "profile-phase-patience-after-halving": 2,
}
# quality.py's bpreveal recipe for the combined stage, as step-config keys (its "extra" keys go
# into the settings, as the workflow's step_configs do), in combined_variants' patch form
JOINT_PATCH = {
    **{k: v for k, v in quality.BPREVEAL_COMBINED.items() if k != "extra"},
    **quality.BPREVEAL_COMBINED["extra"],
    "heads": {"counts-combination": quality.BPREVEAL_COUNTS_COMBINATION},
}
BPFLOW_RECIPES = ("default", "joint")
RECIPES = (*BPFLOW_RECIPES, "peer")
# glibc's tunables for the heap bpflow.allocator sets by mallopt in its own processes
TUNABLE_NAMES = {
    allocator.M_ARENA_MAX: "arena_max",
    allocator.M_MMAP_MAX: "mmap_max",
    allocator.M_TRIM_THRESHOLD: "trim_threshold",
    allocator.M_TOP_PAD: "top_pad",
}


def glibc_tunables() -> str:
    """``GLIBC_TUNABLES`` that give a process bpflow's heap settings (bpflow.allocator)."""
    return ":".join(f"glibc.malloc.{TUNABLE_NAMES[param]}={value}" for param, value in allocator.SETTINGS)


def packed_config(config: dict) -> dict:
    """The default's train-combined config with relative input paths (the packed files) and the
    workflow's current phases (:data:`CURRENT_PHASES`)."""
    out = json.loads(json.dumps(config))
    out["train-data"], out["val-data"] = FILES["train"], FILES["val"]
    s = out["settings"]
    s["transformation-model"] = {"transformation-model-file": FILES["transformation"]}
    s.update(CURRENT_PHASES)
    return out


def recipe_config(
    packed: dict, recipe: str, data_dir: Path, epochs: int | None = None, seed: int | None = None
) -> dict:
    """``recipe``'s train-combined config: its inputs in ``data_dir`` (absolute), its outputs in
    ``results/<recipe>/models`` of the working directory (combined_variants' layout);
    ``epochs`` and ``seed`` (the same for every recipe) replace the packed epoch limit and
    seed."""
    if recipe not in BPFLOW_RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; one of {', '.join(BPFLOW_RECIPES)}")
    patch = {} if epochs is None else {"epochs": epochs}
    if seed is not None:
        patch["seed"] = seed
    if recipe == "joint":
        packed = json.loads(json.dumps(packed))
        for key in PROFILE_FIRST_KEYS:
            packed["settings"].pop(key, None)
        patch.update(JOINT_PATCH)
    return _packed_inputs(combined_variants.variant_config(packed, recipe, patch), data_dir, FILES["transformation"])


def _packed_inputs(config: dict, data_dir: Path, transformation: str) -> dict:
    """``config`` reading the packed peaks and the packed ``transformation`` of ``data_dir``
    (absolute paths, so that a run's working directory can be anywhere)."""
    data_dir = data_dir.resolve()
    config["train-data"], config["val-data"] = str(data_dir / FILES["train"]), str(data_dir / FILES["val"])
    config["settings"]["transformation-model"] = {"transformation-model-file": str(data_dir / transformation)}
    return config


def peer_config(config: dict, data_dir: Path, workdir: Path, epochs: int | None = None) -> dict:
    """The peer's packed combined config on the packed peaks and its packed transformation
    (absolute paths), its outputs in ``results/peer/models`` of ``workdir``; ``epochs`` as
    for :func:`recipe_config`."""
    out = _packed_inputs(json.loads(json.dumps(config)), data_dir, PEER_TRANSFORMATION)
    s = out["settings"]
    s["output-prefix"] = str(workdir.resolve() / "results" / "peer" / "models" / "combined")
    if epochs is not None:
        s["epochs"] = epochs
    return out


def pack(workdir: Path, dest: Path) -> None:
    src = workdir / "results" / "bpflow"
    dest.mkdir(parents=True, exist_ok=True)
    for name in FILES.values():
        found = src / ("models" if name.endswith(".keras") else "data") / name
        if not found.is_file():
            raise SystemExit(f"{found}: missing (a finished quality.py setting is needed)")
        shutil.copyfile(found, dest / name)
    config = json.loads((src / "configs/train_combined.json").read_text())
    (dest / "train_combined.json").write_text(json.dumps(packed_config(config), indent=1))
    peer = [(workdir / "peer" / name, dest / packed) for name, packed in PEER_FILES.items()]
    if all(found.is_file() for found, _ in peer):
        for found, packed in peer:
            shutil.copyfile(found, packed)
    else:
        print(f"{workdir / 'peer'}: no peer combined.json and transformation.keras; the peer recipe cannot run")
    size = sum(p.stat().st_size for p in dest.iterdir()) / 2**20
    print(f"packed {dest} ({size:.1f} MiB)")


def summary(recipe: str, wall: float, history: dict) -> dict:
    """One recipe's row: whole-process seconds beside what the history says."""
    seconds = [float(x) for x in history.get("history", {}).get("seconds", [])]
    return {
        "recipe": recipe,
        "process-seconds": round(wall, 1),
        "train-seconds": None if history.get("wall-seconds") is None else round(history["wall-seconds"], 1),
        "epochs-run": history.get("epochs-run"),
        "best-epoch": history.get("best-epoch"),
        "median-epoch-seconds": round(statistics.median(seconds), 2) if seconds else None,
        "first-epoch-seconds": round(seconds[0], 2) if seconds else None,
        "stop-reason": history.get("stop-reason"),
    }


def peer_summary(wall: float, history: dict, epochs: int, log: str) -> dict:
    """The peer's row from its Keras history (per-epoch lists, no seconds) and its log: Keras's
    early stopping names the epoch whose weights it restored, which need not be the lowest
    ``val_loss`` of the history (the counts loss weight changes from epoch to epoch)."""
    run = len(history["val_loss"])
    restored = re.search(r"Restoring model weights from the end of the best epoch: (\d+)", log)
    stopped = re.search(r"Epoch \d+: early stopping", log)
    return {
        "recipe": "peer",
        "process-seconds": round(wall, 1),
        "train-seconds": None,
        "epochs-run": run,
        "best-epoch": int(restored.group(1)) if restored else None,
        "median-epoch-seconds": None,
        "first-epoch-seconds": None,
        "stop-reason": f"BPReveal: {'early stopping' if stopped else 'no early stop'}, {run} of {epochs} epochs; "
        f"{wall / run:.2f} process s an epoch",
    }


def run(
    data_dir: Path,
    workdir: Path,
    recipes,
    threads: int,
    python: str,
    epochs: int | None = None,
    peer_bin: Path | None = None,
    seed: int | None = None,
) -> list[dict]:
    packed = json.loads((data_dir / "train_combined.json").read_text())
    python = os.path.abspath(shutil.which(python) or python)  # the runs' cwd is workdir; a venv's link kept
    if "peer" in recipes:
        if peer_bin is None or not (peer_bin / "trainCombinedModel").is_file():
            raise SystemExit(f"recipe peer: --peer-bin must name the bin directory of a BPReveal venv (got {peer_bin})")
        if not (data_dir / PEER_CONFIG).is_file():
            raise SystemExit(f"{data_dir}: no {PEER_CONFIG} (pack a setting whose peer/ is trained)")
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for recipe in recipes:
        env = None
        if recipe == "peer":
            peer = json.loads((data_dir / PEER_CONFIG).read_text())
            config = peer_config(peer, data_dir, workdir, epochs)
            command, options = [str(peer_bin.resolve() / "trainCombinedModel")], []
            # as in its activated venv, with bpflow's heap
            search = f"{peer_bin.resolve()}{os.pathsep}{os.environ.get('PATH', '')}"
            env = {**os.environ, "PATH": search, "GLIBC_TUNABLES": glibc_tunables()}
        else:
            config = recipe_config(packed, recipe, data_dir, epochs=epochs, seed=seed)
            command, options = [python, "-m", "bpflow", "train-combined"], ["--threads", str(threads)]
        path = workdir / f"{recipe}.json"
        path.write_text(json.dumps(config, indent=1))
        prefix = workdir / config["settings"]["output-prefix"]
        shutil.rmtree(prefix.parent, ignore_errors=True)  # no checkpoint to resume
        prefix.parent.mkdir(parents=True)
        t0 = time.perf_counter()
        with open(workdir / f"{recipe}.log", "w") as log:
            subprocess.run(
                [*command, path.name, *options], cwd=workdir, check=True, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        wall = time.perf_counter() - t0
        history = json.loads(prefix.with_name(prefix.name + ".history.json").read_text())
        limit = config["settings"]["epochs"]
        if recipe == "peer":
            rows.append(peer_summary(wall, history, limit, (workdir / f"{recipe}.log").read_text(errors="replace")))
        else:
            rows.append(summary(recipe, wall, history))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| recipe | process s | training s | epochs (best) | median epoch s | first epoch s | stop |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['recipe']} | {r['process-seconds']} | {r['train-seconds']} | {r['epochs-run']} ({r['best-epoch']}) "
            f"| {r['median-epoch-seconds']} | {r['first-epoch-seconds']} | {r['stop-reason']} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("pack", help="copy a finished quality.py setting's combined-stage inputs")
    a.add_argument("workdir", type=Path, help="the setting's working directory (holds results/bpflow)")
    a.add_argument("dest", type=Path)
    b = sub.add_parser("run", help="train the combined stage with each recipe, timed")
    b.add_argument("data", type=Path, help="a directory written by pack")
    b.add_argument("--workdir", type=Path, required=True)
    b.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(BPFLOW_RECIPES))
    b.add_argument("--threads", type=int, default=os.cpu_count())
    b.add_argument("--epochs", type=int, help="epoch limit of every recipe (default: the packed config's)")
    b.add_argument(
        "--seed",
        type=int,
        help="seed of every bpflow recipe (default: the packed config's); the peer's config is left as packed",
    )
    b.add_argument("--json", type=Path)
    b.add_argument("--python", default=sys.executable, help="the interpreter that runs `python -m bpflow`")
    b.add_argument("--peer-bin", type=Path, help="recipe peer: the bin directory of a BPReveal 5.2.2 venv")
    args = p.parse_args(argv)
    if args.command == "pack":
        pack(args.workdir, args.dest)
        return
    rows = run(
        args.data,
        args.workdir,
        args.recipes,
        args.threads,
        args.python,
        epochs=args.epochs,
        peer_bin=args.peer_bin,
        seed=args.seed,
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(markdown(rows))


if __name__ == "__main__":
    main()
