"""Replay recorded training histories under another ``early-stopping-min-delta`` (issue 17).

Early stopping with a min-delta changes nothing before the epoch where it stops (the learning
rate's plateau counter and the kept best weights follow any lower loss, as with 0), so a
history recorded with min-delta 0 says exactly where a run with min-delta d would have
stopped, which validation loss it would have kept, how many seconds it would have saved, and
whether the epoch-limit check ("still improving") would still warn.  The phases of a
``profile-first`` run are replayed separately (a phase that stops earlier would hand the
counts phase other weights and more epochs: that part is not replayed).

    .venv/bin/python benchmarks/early_stopping_replay.py results/*/models/*.history.json
    .venv/bin/python benchmarks/early_stopping_replay.py --min-delta 0 1e-4 1e-3 -- FILES
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def phases(record: dict) -> list[tuple[str, dict]]:
    """(phase name, the phase's per-epoch history) of a training record."""
    history = record["history"]
    names = history.get("phase") or ["all"] * len(history["epoch"])
    out = []
    for name in dict.fromkeys(names):
        rows = [i for i, n in enumerate(names) if n == name]
        out.append((name, {k: [v[i] for i in rows] for k, v in history.items() if isinstance(v, list)}))
    return out


def total(history: dict, i: int, at: int) -> float:
    """Epoch i's validation loss with the lambdas epoch ``at`` was trained with (the profile
    weight from ``at``'s recorded total: val_loss = w x profile + lambda x counts)."""
    heads = [k[len("val_") : -len("_profile")] for k in history if k.startswith("val_") and k.endswith("_profile")]
    lam = {h: history[f"{h}_counts_weight"][at] for h in heads}
    rest = history["val_loss"][at] - sum(lam[h] * history[f"val_{h}_counts"][at] for h in heads)
    profile = sum(history[f"val_{h}_profile"][at] for h in heads)
    w = rest / profile if profile else 1.0
    return sum(w * history[f"val_{h}_profile"][i] + lam[h] * history[f"val_{h}_counts"][i] for h in heads)


def replay(history: dict, patience: int, min_delta: float) -> dict:
    """Early stopping over one phase's recorded validation terms: each epoch's total uses the
    lambdas it was trained with, and the reference epochs are re-expressed with them (as
    bpflow.train.loop.TrainingState does)."""
    best = significant = None
    wait = 0
    epochs = len(history["val_loss"])
    for i in range(epochs):
        if best is None or total(history, i, i) < total(history, best, i):
            best = i
        if significant is None or total(history, i, i) < total(history, significant, i) * (1 - min_delta):
            significant, wait = i, 0
        else:
            wait += 1
            if wait >= patience:
                return {"stop": i + 1, "best": best + 1, "significant": significant + 1, "early": True}
    return {"stop": epochs, "best": best + 1, "significant": significant + 1, "early": False}


def given_up(history: dict, best: int, reference: int) -> float:
    """How much higher the kept epoch's validation loss is than ``reference``'s, both with the
    phase's last lambdas (lambda changes from epoch to epoch under counts-loss-frac-target)."""
    last = len(history["val_loss"]) - 1
    return total(history, best - 1, last) - total(history, reference - 1, last)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("histories", nargs="+", help="*.history.json files of bpflow train-* runs")
    p.add_argument("--min-delta", type=float, nargs="+", default=[0.0, 1e-4])
    args = p.parse_args(argv)
    print(
        "| history | phase | min-delta | epochs | stopped early | best epoch | val loss given up (vs min-delta 0) "
        "| seconds saved | warns: still improving |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for path in args.histories:
        record = json.loads(Path(path).read_text())
        patience = record["settings"]["early-stopping-patience"]
        for name, history in phases(record):
            reference = replay(history, patience, 0.0)["best"]
            for delta in args.min_delta:
                r = replay(history, patience, delta)
                saved = sum(history["seconds"][r["stop"] :])
                warns = not r["early"] and r["significant"] == r["stop"]
                print(
                    f"| {path} | {name} | {delta:g} | {r['stop']} of {len(history['val_loss'])} | "
                    f"{'yes' if r['early'] else 'no'} | {r['best']} | {given_up(history, r['best'], reference):+.2f} | "
                    f"{saved:.0f} | {'**yes**' if warns else 'no'} |"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
