"""Plots written by bpflow's steps (matplotlib's object API: no pyplot, no global state)."""

from __future__ import annotations

from pathlib import Path

from bpflow.utils import atomic_output


def plot_loss_history(record: dict, path) -> None:
    """Training and validation curves of a training history (``<prefix>.history.json``).

    Panels: the total loss; per head the raw profile loss (multinomial NLL) and the raw counts
    loss (MSE of log counts); the counts-loss weight lambda of every head; the learning rate.
    The validation value before training (epoch 0) is drawn as a hollow marker.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    hist = record["history"]
    heads = record.get("heads") or sorted({k[: -len("_counts_weight")] for k in hist if k.endswith("_counts_weight")})
    initial = record.get("initial") or {}
    epochs = hist.get("epoch", [])
    panels = [("total loss", "loss")]
    for h in heads:
        panels.append((f"{h}: profile NLL", f"{h}_profile"))
        panels.append((f"{h}: counts MSE", f"{h}_counts"))
    panels.append(("counts-loss weight (lambda)", None))
    panels.append(("learning rate", "learning_rate"))
    cols = 2
    rows = (len(panels) + cols - 1) // cols
    fig = Figure(figsize=(5.5 * cols, 3.2 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    for i, (title, key) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if title.startswith("counts-loss weight"):
            for h in heads:
                ax.plot(epochs, hist.get(f"{h}_counts_weight", []), marker=".", label=h)
            ax.set_yscale("log")
            ax.legend(fontsize=8)
        elif key == "learning_rate":
            ax.plot(epochs, hist.get(key, []), marker=".", color="tab:gray")
            ax.set_yscale("log")
        else:
            values = list(hist.get(key, [])) + list(hist.get(f"val_{key}", []))
            if key == "loss" and values and min(values) > 0:
                ax.set_yscale("log")
            ax.plot(epochs, hist.get(key, []), marker=".", label="train")
            ax.plot(epochs, hist.get(f"val_{key}", []), marker=".", label="validation")
            if f"val_{key}" in initial:
                ax.plot(
                    [0],
                    [initial[f"val_{key}"]],
                    marker="o",
                    mfc="none",
                    color="tab:orange",
                    linestyle="none",
                    label="validation, initial",
                )
            best = record.get("best-epoch")
            if best and key == "loss":
                ax.axvline(best, color="tab:green", linestyle=":", label="best epoch")
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{record.get('step', 'training')}: {Path(str(path)).name}", fontsize=11)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
