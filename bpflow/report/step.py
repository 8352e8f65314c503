"""``bpflow report-figures CONFIG.json``: the report's figures and tables, drawn by
:mod:`bpflow.report.figures` in one process.

The config lists the figures (docs/evaluation.md "Report figures")::

    {"figures": [
        {"figure": "metrics-table", "metrics": ["peaks_test.json", ...], "caption": "...", "output": "m.html"},
        {"figure": "counts-scatter", "data": "D.h5", "predictions": {"combined": "P.h5", ...},
         "region-set": "peaks", "output": "c.png"},
        {"figure": "example-regions", "data": "D.h5", "predictions": {...}, "num": 3, "output": "e.png"},
        {"figure": "qc-table", "qc": "qc.json", "output": "qc.html"},
        {"figure": "footprints-table", "footprints": "footprints.json", "output": "f.html"},
        {"figure": "footprints-plot", "footprints": "footprints.json", "output": "f.png"},
        {"figure": "loss-curves", "histories": {"bias": "bias.history.json", ...}, "output": "l.png"}]}

Every figure's inputs are checked before any is drawn.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from bpflow.report import figures
from bpflow.utils import BpflowError, read_step_config

logger = logging.getLogger("bpflow.report")

# the keys of each figure that name input files
_INPUTS = ("data", "predictions", "metrics", "qc", "footprints", "histories")


def _input_files(fig: dict) -> list[str]:
    files = []
    for key in _INPUTS:
        value = fig.get(key, [])
        files += list(value.values()) if isinstance(value, dict) else [value] if isinstance(value, str) else list(value)
    return files


def _footprints(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise BpflowError(f"{path}: cannot read the footprints JSON: {err}") from None


def footprints_caption(table: dict) -> str:
    caption = f"Marginal footprints on {table.get('num-sequences')} background sequences"
    ratios = table.get("bias-tf-ratio") or {}
    if table.get("tf-motifs") and table.get("bias-motifs") and ratios:
        caption += "; bias/TF profile-response ratio: " + ", ".join(
            f"{k} {figures.fmt(v, 3)}" for k, v in ratios.items()
        )
    return caption


def draw(fig: dict) -> str:
    """Draw one figure of the config; returns a line for the log."""
    kind, out = fig["figure"], fig["output"]
    if kind == "counts-scatter":
        r = figures.counts_scatter_from_files(
            fig["predictions"], fig["data"], out, head=fig["head"], region_set=fig.get("region-set")
        )
        return "counts Pearson: " + ", ".join(f"{k} {v:.4f}" for k, v in r.items())
    if kind == "example-regions":
        shown = figures.plot_example_regions(fig["data"], fig["predictions"], out, num=fig["num"], head=fig["head"])
        return f"example regions (sample indices): {shown}"
    if kind == "metrics-table":
        figures.metrics_table_html(fig["metrics"], out, fig.get("caption"))
    elif kind == "qc-table":
        figures.qc_table_html(fig["qc"], out, fig.get("caption"))
    elif kind == "footprints-table":
        table = _footprints(fig["footprints"])
        figures.footprint_table_html(table, out, fig.get("caption") or footprints_caption(table))
    elif kind == "footprints-plot":
        figures.plot_footprints(_footprints(fig["footprints"]), out)
    else:
        figures.plot_loss_curves(fig["histories"], out)
    return f"wrote {out}"


def main(argv: list[str]) -> int:
    path, config, _ = read_step_config(
        argv, "report-figures", "Draw the report's figures and tables.", "docs/evaluation.md"
    )
    outputs = [f["output"] for f in config["figures"]]
    if len(set(outputs)) != len(outputs):
        raise BpflowError(f"{path}: key figures: two figures have the same output")
    for i, fig in enumerate(config["figures"]):
        for file in _input_files(fig):
            if not Path(file).is_file():
                raise BpflowError(f"{path}: key figures/{i} ({fig['figure']}): file not found: {file}")
    for fig in config["figures"]:
        logger.info("%s: %s", fig["figure"], draw(fig))
    return 0
