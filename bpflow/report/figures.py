"""Figures and tables for the run report (matplotlib's object API on an Agg canvas).

Every function writes one file atomically (:func:`bpflow.utils.atomic_output`): figures as
PNG, SVG or PDF (chosen by the file suffix), tables as HTML snippets or TSV.  Inputs are the
files the pipeline writes: prediction HDF5 files (:class:`bpflow.formats.predictions.PredictionFile`),
training datasets (``sequence``, ``head_<i>``, coordinates; docs/evaluation.md), the JSON of
``bpflow metrics`` and the dict of :func:`bpflow.evaluate.footprints.footprint_table`.

* :func:`plot_counts_scatter` / :func:`counts_scatter_from_files` - predicted vs observed log
  counts, Pearson in the title.
* :func:`pick_example_regions` / :func:`plot_example_regions` - observed and predicted
  profiles of a few peaks chosen by a fixed rule (the highest observed counts).
* :func:`plot_footprints`, :func:`footprint_table_html`, :func:`footprint_tsv` - marginal
  footprints.
* :func:`metrics_table_html` - the metrics summary as an HTML table.
* :func:`plot_loss_curves` - training histories.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from bpflow.evaluate.footprints import FOOTPRINT_COLUMNS, footprint_rows
from bpflow.evaluate.measures import pearson, predicted_profile
from bpflow.evaluate.metrics import check_same_samples
from bpflow.evaluate.qc import section_entries
from bpflow.formats.coords import center_windows
from bpflow.formats.dataset import TrainingDataset
from bpflow.formats.predictions import PredictionFile
from bpflow.utils import BpflowError, atomic_output, format_value

FIGURE_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
MODEL_COLORS = {"observed": "#303030", "combined": "#1f77b4", "residual": "#2ca02c", "bias": "#d62728"}
_FALLBACK_COLORS = ["#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def subplots(nrows: int = 1, ncols: int = 1, figsize=(4.0, 4.0), **kwargs):
    """A Figure on an Agg canvas and its (nrows x ncols) axes array.

    matplotlib's object API: no pyplot, no global figure state, the user's backend untouched.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kwargs)


def _color(label: str, i: int) -> str:
    return MODEL_COLORS.get(label, _FALLBACK_COLORS[i % len(_FALLBACK_COLORS)])


def save_figure(fig, output) -> Path:
    """Write ``fig`` to ``output`` atomically (format from the suffix)."""
    output = Path(output)
    fmt = FIGURE_FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise BpflowError(f"{output}: figure files must end in {', '.join(FIGURE_FORMATS)}")
    with atomic_output(output) as tmp:
        fig.savefig(tmp, format=fmt, dpi=110, bbox_inches="tight")
    return output


def _write_text(output, text: str) -> Path:
    with atomic_output(output) as tmp:
        with open(tmp, "w") as fh:
            fh.write(text)
    return Path(output)


fmt = format_value


# ----------------------------------------------------------------------------------------------
# Reading predictions and datasets


def observed_totals(data_h5, head: int = 0, output_length: int | None = None, chunk_size: int = 4096) -> np.ndarray:
    """Observed total counts of every sample (N,) over the central ``output_length`` bases."""
    with TrainingDataset(data_h5) as data:
        return data.totals(head, output_length, chunk_size)


def _existing(path, what: str) -> str:
    if not Path(path).is_file():
        raise BpflowError(f"{path}: {what} not found")
    return str(path)


# ----------------------------------------------------------------------------------------------
# Counts scatter


def plot_counts_scatter(observed_log1p, predicted_logcounts, output, title: str | None = None, ax=None) -> Path | None:
    """Scatter of predicted log counts (y) vs observed log(1 + total) (x) with the y = x line.

    The title ends with the Pearson correlation ("Pearson r = 0.812, n = 512").  With ``ax``
    the panel is drawn there and nothing is written (``output`` is ignored).
    """
    x = np.asarray(observed_log1p, dtype=np.float64).ravel()
    y = np.asarray(predicted_logcounts, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise BpflowError(f"observed ({x.size}) and predicted ({y.size}) counts differ in number")
    r = pearson(x, y) if len(x) > 1 else math.nan
    own = ax is None
    if own:
        fig, axes = subplots(figsize=(4.2, 4.0))
        ax = axes[0][0]
    ax.scatter(x, y, s=6 if len(x) > 2000 else 14, alpha=0.5, linewidths=0, color="#1f77b4")
    finite = np.concatenate([x[np.isfinite(x)], y[np.isfinite(y)]])
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        ax.plot([lo, hi], [lo, hi], color="#888888", lw=0.8, ls="--")
    ax.set_xlabel("observed log(1 + counts)")
    ax.set_ylabel("predicted log counts")
    stat = f"Pearson r = {fmt(r, 3)}, n = {len(x)}"
    ax.set_title(f"{title}\n{stat}" if title else stat, fontsize=9)
    if own:
        return save_figure(fig, output)
    return None


def counts_scatter_from_files(
    predictions: Mapping[str, str], data_h5, output, head: int = 0, strands: str = "auto", region_set: str | None = None
) -> dict[str, float]:
    """One scatter panel per model (e.g. combined, residual, bias) against one dataset.

    Each prediction file must be the dataset predicted sample for sample (``bpflow predict``
    with key ``data``).  Samples shown: as in ``bpflow metrics`` (forward strand only when the
    dataset has ``coords_strand``).  Returns {label: Pearson r}.
    """
    if not predictions:
        raise BpflowError("counts scatter: no prediction file given")
    fig, axes = subplots(1, len(predictions), figsize=(4.0 * len(predictions), 4.0))
    result = {}
    with TrainingDataset(data_h5) as data:
        mask = data.sample_mask(strands)[0]
        for ax, (label, path) in zip(axes[0], predictions.items()):
            with PredictionFile(path) as pf:
                check_same_samples(pf, data)
                obs = np.log1p(data.totals(head, pf.output_length))[mask]
                pred = pf.logcounts(pf.head_index(head))[mask]
                name = pf.head_name(pf.head_index(head))
            where = f" ({region_set})" if region_set else ""
            plot_counts_scatter(obs, pred, None, title=f"{label}, {name}{where}", ax=ax)
            result[label] = pearson(obs, pred) if len(obs) > 1 else math.nan
    save_figure(fig, output)
    return result


# ----------------------------------------------------------------------------------------------
# Example regions


def pick_example_regions(
    data_h5, num: int = 3, head: int = 0, output_length: int | None = None, strands: str = "auto"
) -> list[int]:
    """Sample indices of the example regions: the rule is fixed and documented.

    Among the dataset's samples that ``bpflow metrics`` scores (forward-strand samples when
    the dataset has ``coords_strand``, else all), take the ``num`` with the highest observed
    total counts of head ``head`` within the central ``output_length`` bases (default: the
    stored width; NaN counts as 0).  Ties go to the lower index; the result is ordered from
    the highest total down.  Run it on the test chromosomes' peak dataset to show test peaks.
    """
    if num < 1:
        raise BpflowError(f"num must be >= 1, got {num}")
    with TrainingDataset(data_h5) as data:
        totals = data.totals(head, output_length)
        mask = data.sample_mask(strands)[0]
    index = np.flatnonzero(mask)
    order = np.lexsort((index, -totals[index]))  # highest total first, ties -> lower index
    return [int(i) for i in index[order][:num]]


def _strand_plot(ax, values: np.ndarray, color: str, label: str | None = None) -> None:
    """Plot (length, tasks): two tasks as plus (up) and minus (down) strands, else one line per task."""
    x = np.arange(values.shape[0])
    if values.shape[1] == 2:
        ax.plot(x, values[:, 0], color=color, lw=0.9, label=label)
        ax.plot(x, -values[:, 1], color=color, lw=0.9, alpha=0.75)
        ax.axhline(0, color="#bbbbbb", lw=0.5)
    else:
        for t in range(values.shape[1]):
            ax.plot(
                x, values[:, t], lw=0.9, color=color if values.shape[1] == 1 else None, label=label if t == 0 else None
            )


def plot_example_regions(
    data_h5,
    predictions: Mapping[str, str],
    output,
    indices: Sequence[int] | None = None,
    num: int = 3,
    head: int = 0,
    strands: str = "auto",
) -> list[int]:
    """Observed and predicted profiles of a few regions (columns) x tracks (rows).

    Rows: observed coverage, then each prediction file's predicted profile (softmax of the
    logits x exp(log counts)) in the order given (e.g. combined, residual, bias).  A two-task
    head is drawn as plus strand up and minus strand down.  Regions: ``indices`` or
    :func:`pick_example_regions` (``num`` of them).  Returns the sample indices shown.
    """
    data_path = str(data_h5)
    files = []
    try:
        for label, path in predictions.items():
            files.append((label, PredictionFile(path)))
        out_len = files[0][1].output_length if files else None
        if any(pf.output_length != out_len for _, pf in files):
            raise BpflowError("the prediction files differ in output length")
        if indices is None:
            indices = pick_example_regions(data_path, num, head, out_len, strands)
        indices = [int(i) for i in indices]
        rows = 1 + len(files)
        fig, axes = subplots(rows, len(indices), figsize=(4.2 * len(indices), 1.6 * rows + 0.6), sharex="col")
        with TrainingDataset(data_path) as data:
            n = data.num_samples
            bad = [i for i in indices if not 0 <= i < n]
            if bad:
                raise BpflowError(f"{data_path}: sample {bad[0]} does not exist ({n} samples)")
            for _, pf in files:
                check_same_samples(pf, data)
            out_len = out_len or data.head(head).shape[1]
            coords = data.coords()
            for c, i in enumerate(indices):
                obs = data.profiles(head, slice(i, i + 1), out_len)[0]
                tracks = [("observed", obs)]
                for label, pf in files:
                    h = pf.head_index(head)
                    tracks.append(
                        (label, predicted_profile(pf.logits(h, slice(i, i + 1)), pf.logcounts(h, slice(i, i + 1)))[0])
                    )
                if coords is not None:
                    s, e = center_windows(coords.start[i : i + 1], coords.stop[i : i + 1], out_len)
                    where = f"{coords.names()[i]}:{int(s[0])}-{int(e[0])}"
                else:
                    where = f"sample {i}"
                for r, (label, values) in enumerate(tracks):
                    ax = axes[r][c]
                    _strand_plot(ax, values, _color(label, r))
                    if c == 0:
                        ax.set_ylabel(label, fontsize=9)
                    ax.tick_params(labelsize=7)
                axes[0][c].set_title(f"{where}\nobserved total {obs.sum():.0f}", fontsize=9)
                axes[-1][c].set_xlabel("position in output window (bp)", fontsize=8)
            if any(v.shape[1] == 2 for _, v in tracks):
                fig.suptitle("plus strand up, minus strand mirrored down", fontsize=8)
    finally:
        for _, pf in files:
            pf.close()
    save_figure(fig, output)
    return indices


# ----------------------------------------------------------------------------------------------
# Footprints


def _footprint_entries(table: dict, models, motifs, head):
    models = list(models or table["models"])
    motifs = list(motifs or table["motifs"])
    for label in models:
        if label not in table["models"]:
            raise BpflowError(f"footprint table has no model {label!r} (models: {', '.join(table['models'])})")
    heads = {}
    for label in models:
        names = list(table["models"][label]["heads"])
        if head is None:
            heads[label] = names[0]
        elif head not in names:
            raise BpflowError(f"footprint table: model {label!r} has no head {head!r}")
        else:
            heads[label] = head
    return models, motifs, heads


def plot_footprints(
    table: dict,
    output,
    models: Sequence[str] | None = None,
    motifs: Sequence[str] | None = None,
    head: str | None = None,
) -> Path:
    """Grid of marginal footprints: one row per model, one column per motif.

    Each panel shows the footprint (mean predicted profile with minus without the motif)
    around the insertion, divided by the model's mean predicted total counts without it, so
    the curve is in the units of ``profile-response`` (fraction of predicted reads per base;
    its absolute sum over the response window is the response, given in the panel title).  Two
    tasks: plus strand up, minus strand down.  Rows share their y axis, so within a model
    the motifs compare directly (the residual's bias-motif panel should be flat).  Needs a
    table made with ``include_profiles=True``.
    """
    models, motifs, heads = _footprint_entries(table, models, motifs, head)
    fig, axes = subplots(len(models), len(motifs), figsize=(3.2 * len(motifs), 2.3 * len(models) + 0.4), sharey="row")
    _draw_footprints(table, axes, models, motifs, heads)
    if any(
        np.asarray(table["models"][m]["heads"][heads[m]][motifs[0]]["profiles"]["footprint"]).shape[0] == 2
        for m in models
    ):
        fig.suptitle(
            "footprint = mean profile with - without motif, / mean total without "
            "(plus strand up, minus strand mirrored down)",
            fontsize=8,
        )
    return save_figure(fig, output)


def _draw_footprints(table, axes, models, motifs, heads) -> None:
    for r, label in enumerate(models):
        for c, motif in enumerate(motifs):
            ax = axes[r][c]
            entry = table["models"][label]["heads"][heads[label]].get(motif)
            if entry is None or "profiles" not in entry:
                raise BpflowError(
                    f"footprint table: no profiles for model {label!r}, motif {motif!r} "
                    "(make it with include_profiles=True)"
                )
            prof = entry["profiles"]
            total = entry.get("mean-total-without") or 1.0
            fp = np.asarray(prof["footprint"], dtype=np.float64).T / total  # (positions, tasks)
            x = np.asarray(prof["positions"])
            if fp.shape[1] == 2:
                ax.plot(x, fp[:, 0], color=_color(label, r), lw=0.9)
                ax.plot(x, -fp[:, 1], color=_color(label, r), lw=0.9, alpha=0.7)
            else:
                for t in range(fp.shape[1]):
                    ax.plot(x, fp[:, t], lw=0.9)
            ax.axhline(0, color="#bbbbbb", lw=0.5)
            ax.axvline(0, color="#dddddd", lw=0.5)
            resp = entry.get("profile-response")
            ax.set_title(f"{motif}\nresponse {fmt(resp, 3)}, dlogc {fmt(entry.get('counts-response'), 2)}", fontsize=8)
            ax.tick_params(labelsize=7)
            if c == 0:
                ax.set_ylabel(f"{label}\nchange / total", fontsize=8)
            if r == len(models) - 1:
                ax.set_xlabel("bp from insertion center", fontsize=8)


def _align(value) -> str:
    """Numbers (and NA) right-aligned, text left-aligned."""
    try:
        float(str(value))
        return "right"
    except ValueError:
        return "right" if str(value) == "NA" else "left"


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]], caption: str | None = None) -> str:
    """A plain, self-contained HTML table (escaped)."""
    out = ['<table class="bpflow" border="1" style="border-collapse:collapse;font-family:sans-serif;font-size:12px">']
    if caption:
        out.append(f"<caption>{html.escape(caption)}</caption>")
    out.append("<tr>" + "".join(f'<th style="padding:2px 6px">{html.escape(str(h))}</th>' for h in header) + "</tr>")
    for row in rows:
        out.append(
            "<tr>"
            + "".join(f'<td style="padding:2px 6px;text-align:{_align(v)}">{html.escape(str(v))}</td>' for v in row)
            + "</tr>"
        )
    out.append("</table>")
    return "\n".join(out) + "\n"


def footprint_table_html(table: dict, output, caption: str | None = None) -> Path:
    """The footprint responses as an HTML table snippet."""
    return _write_text(output, html_table(FOOTPRINT_COLUMNS, footprint_rows(table), caption))


# ----------------------------------------------------------------------------------------------
# Metrics


METRICS_HTML_COLUMNS = [
    ("region-set", None),
    ("model", None),
    ("head", None),
    ("regions", "num-regions"),
    ("counts Pearson", ("counts", "pearson")),
    ("counts Spearman", ("counts", "spearman")),
    ("counts MSE", ("counts", "mse")),
    ("median JSD", ("profile", "jsd", "median")),
    ("median norm. JSD", ("profile", "normalized-jsd", "median")),
    ("median MNLL", ("profile", "mnll", "median")),
    ("median profile Pearson", ("profile", "pearson", "median")),
]


def metrics_rows(results: Sequence) -> list[list[str]]:
    """Rows of :data:`METRICS_HTML_COLUMNS` from ``bpflow metrics`` JSON results (dicts or paths)."""
    rows = []
    for res in results:
        if isinstance(res, (str, Path)):
            with open(_existing(res, "metrics JSON")) as fh:
                res = json.load(fh)
        for label, model in res.get("models", {}).items():
            for head, values in model.get("heads", {}).items():
                row = [res.get("region-set") or "", label, head]
                for _, key in METRICS_HTML_COLUMNS[3:]:
                    v = values
                    for k in key if isinstance(key, tuple) else (key,):
                        v = v.get(k) if isinstance(v, dict) else None
                    row.append(fmt(v, 3))
                rows.append(row)
    return rows


def metrics_table_html(results: Sequence, output, caption: str | None = None) -> Path:
    """One HTML table of the ``bpflow metrics`` results (e.g. test peaks and test background)."""
    return _write_text(output, html_table([c for c, _ in METRICS_HTML_COLUMNS], metrics_rows(results), caption))


# ----------------------------------------------------------------------------------------------
# Quality checks of train-combined (<prefix>.qc.json)

QC_COLUMNS = ["head", "check", "value", "threshold", "status"]


def qc_rows(qc: dict) -> list[list[str]]:
    """Rows of :data:`QC_COLUMNS`: every check that :mod:`bpflow.evaluate.qc` recorded in a QC
    report (``checks`` of each training stage, bias-model head, counts head and motif head)."""
    return [
        [name, c["check"], c["value"], c["threshold"], c["status"]]
        for _, name, entry in section_entries(qc)
        for c in entry.get("checks", [])
    ]


def qc_table_html(qc_json, output, caption: str | None = None) -> Path:
    """QC reports (one path or a list: qc-bias's and qc-combined's) as HTML: their warnings in
    full (or "no warnings"), then one table of :func:`qc_rows`."""
    reports = []
    for path in [qc_json] if isinstance(qc_json, (str, Path)) else list(qc_json):
        with open(_existing(path, "QC JSON")) as fh:
            reports.append(json.load(fh))
    warnings = [w for qc in reports for w in qc.get("warnings") or []]
    disabled = [qc.get("step", "?") for qc in reports if qc.get("disabled")]
    head = ""
    if disabled:
        head = f"<p><b>Quality checks disabled</b> ({', '.join(disabled)}; training.qc.enabled: false).</p>\n"
    if warnings:
        head += "<p><b>QC warnings:</b></p><ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in warnings) + "</ul>"
    elif not disabled:
        head += "<p><b>QC: no warnings.</b></p>"
    rows = [row for qc in reports for row in qc_rows(qc)]
    return _write_text(output, head + "\n" + html_table(QC_COLUMNS, rows, caption))


# ----------------------------------------------------------------------------------------------
# Training histories


def plot_loss_curves(histories: Mapping[str, object], output, keys: Sequence[str] | None = None) -> Path:
    """One panel per stage: loss curves from training histories.

    ``histories``: {stage label: dict or path to a JSON file} where the dict maps a metric
    name to its per-epoch values (Keras ``History.history``; a top-level ``history`` key is
    also accepted, so bpflow's ``<prefix>.history.json`` works as it is).  Plotted: ``keys``
    when given, else every key containing "loss"; a ``val_`` key is drawn dashed; x is the
    ``epoch`` list when present, else 1, 2, ...  (Each training step also writes its own
    detailed ``<prefix>.loss.png``; this is a one-figure overview of all stages.)
    """
    if not histories:
        raise BpflowError("loss curves: no history given")
    fig, axes = subplots(1, len(histories), figsize=(4.2 * len(histories), 3.4))
    for ax, (stage, hist) in zip(axes[0], histories.items()):
        _draw_history(ax, stage, hist, keys)
    return save_figure(fig, output)


def _draw_history(ax, stage: str, hist, keys) -> None:
    if isinstance(hist, (str, Path)):
        with open(_existing(hist, "history JSON")) as fh:
            hist = json.load(fh)
    if isinstance(hist, dict) and isinstance(hist.get("history"), dict):
        hist = hist["history"]
    if not isinstance(hist, dict):
        raise BpflowError(f"loss curves: history of {stage!r} is not an object of per-epoch lists")
    names = [k for k in (keys or [k for k in hist if "loss" in k]) if isinstance(hist.get(k), list)]
    from matplotlib.ticker import MaxNLocator

    epochs = hist.get("epoch") if isinstance(hist.get("epoch"), list) else None
    for name in names:
        values = np.asarray([math.nan if v is None else v for v in hist[name]], dtype=np.float64)
        x = (
            np.asarray(epochs, dtype=np.float64)
            if epochs and len(epochs) == len(values)
            else np.arange(1, len(values) + 1)
        )
        ax.plot(x, values, ls="--" if name.startswith("val_") else "-", label=name)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(stage, fontsize=9)
    ax.set_xlabel("epoch", fontsize=8)
    ax.tick_params(labelsize=7)
    if names:
        ax.legend(fontsize=6)
