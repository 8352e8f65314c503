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

from bpflow.train.loop import TrainingState, _total
from bpflow.train.settings import HeadSpec


def phases(record: dict) -> list[tuple[str, dict]]:
    """(phase name, the phase's per-epoch history) of a training record."""
    history = record["history"]
    names = history.get("phase") or ["all"] * len(history["epoch"])
    out = []
    for name in dict.fromkeys(names):
        rows = [i for i, n in enumerate(names) if n == name]
        out.append((name, {k: [v[i] for i in rows] for k, v in history.items() if isinstance(v, list)}))
    return out


def heads_of(record: dict) -> list[HeadSpec]:
    """The record's heads with their profile-loss weights (lambdas come from the history)."""
    return [
        HeadSpec(h["head-name"], h.get("num-tasks", 1), float(h.get("profile-loss-weight", 1.0)), None, None)
        for h in record["config"]["heads"]
    ]


def _terms(history: dict, heads, i: int) -> dict:
    return {k: history[f"val_{k}"][i] for h in heads for k in (f"{h.name}_profile", f"{h.name}_counts")}


def _lambdas(history: dict, heads, i: int) -> list[float]:
    return [history[f"{h.name}_counts_weight"][i] for h in heads]


def replay(history: dict, heads, patience: int, min_delta: float) -> dict:
    """bpflow's own early stopping (:class:`TrainingState`) over one phase's recorded
    validation terms, each epoch with the lambdas it was trained with."""
    epochs = len(history["val_loss"])
    st = TrainingState(heads, _lambdas(history, heads, 0), 1.0, epochs, patience, epochs + 1, min_delta)
    for i in range(epochs):
        st.lambdas = _lambdas(history, heads, i)  # heads without a frac target: lambdas are replayed
        st.end_epoch(i, _terms(history, heads, i), _terms(history, heads, i))
        if st.stopped:
            break
    early = st.stop_reason.startswith("early")
    return {"stop": st.epochs_done, "best": st.best_epoch, "significant": st.significant_epoch, "early": early}


def given_up(history: dict, heads, best: int, reference: int) -> float:
    """How much higher the kept epoch's validation loss is than ``reference``'s, both with the
    phase's last lambdas (lambda changes from epoch to epoch under counts-loss-frac-target)."""
    lambdas = _lambdas(history, heads, len(history["val_loss"]) - 1)
    return _total(_terms(history, heads, best - 1), heads, lambdas) - _total(
        _terms(history, heads, reference - 1), heads, lambdas
    )


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
        heads = heads_of(record)
        for name, history in phases(record):
            reference = replay(history, heads, patience, 0.0)["best"]
            for delta in args.min_delta:
                r = replay(history, heads, patience, delta)
                saved = sum(history["seconds"][r["stop"] :])
                warns = not r["early"] and r["significant"] == r["stop"]
                print(
                    f"| {path} | {name} | {delta:g} | {r['stop']} of {len(history['val_loss'])} | "
                    f"{'yes' if r['early'] else 'no'} | {r['best']} | {given_up(history, heads, r['best'], reference):+.2f} | "
                    f"{saved:.0f} | {'**yes**' if warns else 'no'} |"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
