"""``bpflow metrics CONFIG.json``: scores one or more prediction files against the dataset they
were predicted from (definitions: :mod:`bpflow.evaluate.measures`, docs/evaluation.md).
Regions whose observed profile is all zero have no profile to compare: summaries leave them out
and report how many there were.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from bpflow.evaluate.measures import PROFILE_METRICS, region_metrics, summarize_head
from bpflow.formats.coords import center_windows
from bpflow.formats.dataset import TrainingDataset
from bpflow.formats.predictions import PredictionFile
from bpflow.lengths import crop_offset
from bpflow.utils import BpflowError, atomic_output, read_step_config

logger = logging.getLogger("bpflow.metrics")


# ----------------------------------------------------------------------------------------------
# Reading a dataset and its matching prediction files


def check_same_samples(pf: PredictionFile, data: TrainingDataset, out_len: int | None = None) -> None:
    """Raise unless the prediction file matches the dataset sample for sample."""
    out_len = pf.output_length if out_len is None else out_len
    n_data = data.num_samples
    if pf.num_samples != n_data:
        raise BpflowError(
            f"{pf.path} has {pf.num_samples} samples but the dataset {data.path} has {n_data}: "
            "they must match sample for sample (predict with the dataset as key data)"
        )
    pc, dc = pf.coords(), data.coords()
    if pc is None or dc is None:
        logger.warning("%s or %s has no coordinates: cannot check that the samples match", pf.path, data.path)
        return
    d_start, d_stop = center_windows(dc.start, dc.stop, out_len)
    same = (pc.names() == dc.names()) & (pc.start == d_start) & (pc.stop == d_stop)
    if not same.all():
        i = int(np.flatnonzero(~same)[0])
        raise BpflowError(
            f"{pf.path} sample {i} is {pc.label(i)} but {data.path} sample {i} is "
            f"{dc.names()[i]}:{d_start[i]}-{d_stop[i]} (its window centered to {out_len} bp); "
            f"{int((~same).sum())} sample(s) differ: the files do not match sample for sample"
        )


def evaluate(
    predictions: list[tuple[str, str]],
    data_path: str,
    strands: str = "auto",
    chunk_size: int = 1024,
    region_set: str | None = None,
    keep_regions: bool = False,
) -> tuple[dict, dict]:
    """Score labelled prediction files against a dataset.

    Returns (result dict as written to the JSON output, per-region values keyed by
    (label, head name) when ``keep_regions`` else {}).
    """
    result = {"region-set": region_set, "data": str(data_path), "models": {}}
    regions = {}
    with TrainingDataset(data_path) as data:
        data.require_heads()
        heads = [f"head_{i}" for i in range(data.num_heads)]
        mask, used = data.sample_mask(strands, warn=True)
        result.update({"strands": used, "num-samples": int(len(mask)), "num-evaluated": int(mask.sum())})
        if not mask.any():
            raise BpflowError(f"{data_path}: no sample to evaluate")
        data_names = data.head_names() or heads
        coords = data.coords()
        for label, path in predictions:
            with PredictionFile(path) as pf:
                if pf.num_heads != len(heads):
                    raise BpflowError(f"{path} has {pf.num_heads} head(s) but {data_path} has {len(heads)}")
                out = pf.output_length
                check_same_samples(pf, data, out)
                model_result = {"predictions": str(path), "heads": {}}
                for h, key in enumerate(heads):
                    ds = data.head(h)
                    tasks = pf.num_tasks(h)
                    crop_offset(ds.shape[1], out, f"{data_path} {key} (the predictions of {path})")
                    if ds.shape[2] != tasks:
                        raise BpflowError(
                            f"{data_path} {key} has shape {ds.shape[1:]} but {path} head_{h} "
                            f"predicts ({out}, {tasks}): cannot center-crop one onto the other"
                        )
                    name = pf.head_name(h) if pf.head_name(h) != f"head_{h}" else data_names[h]
                    parts: dict[str, list] = {}
                    for a in range(0, len(mask), chunk_size):
                        b = min(len(mask), a + chunk_size)
                        sel = mask[a:b]
                        if not sel.any():
                            continue
                        obs = data.profiles(h, slice(a, b), out)[sel]
                        vals = region_metrics(obs, pf.logits(h, slice(a, b))[sel], pf.logcounts(h, slice(a, b))[sel])
                        for k, v in vals.items():
                            parts.setdefault(k, []).append(v)
                    values = {k: np.concatenate(v) for k, v in parts.items()}
                    model_result["heads"][name] = {"head-index": h, **summarize_head(values)}
                    if keep_regions:
                        index = np.flatnonzero(mask)
                        if coords is not None:
                            s, e = (c[index] for c in center_windows(coords.start, coords.stop, out))
                            values["chrom"], values["start"], values["stop"] = coords.names()[index], s, e
                        values["index"] = index
                        regions[(label, name)] = values
                    logger.info(
                        "%s %s: counts Pearson %.3f, median JSD %.3f (%d regions)",
                        label,
                        name,
                        model_result["heads"][name]["counts"]["pearson"],
                        model_result["heads"][name]["profile"]["jsd"]["median"],
                        int(mask.sum()),
                    )
                result["models"][label] = model_result
    return result, regions


# ----------------------------------------------------------------------------------------------
# Output


TSV_COLUMNS = [
    "region-set",
    "model",
    "head",
    "num-regions",
    "num-zero-observed",
    "counts-pearson",
    "counts-spearman",
    "counts-mse",
] + [f"{m}-{s}" for m in PROFILE_METRICS for s in ("median", "q1", "q3", "mean")]

REGION_COLUMNS = [
    "region-set",
    "model",
    "head",
    "index",
    "chrom",
    "start",
    "stop",
    "observed-log1p-counts",
    "predicted-logcounts",
    "jsd",
    "normalized-jsd",
    "mnll",
    "pearson",
]


def _fmt(value) -> str:
    if value is None:
        return "NA"
    if isinstance(value, float):
        return "NA" if not math.isfinite(value) else f"{value:.6g}"
    return str(value)


def tsv_rows(result: dict) -> list[list[str]]:
    rows = []
    for label, model in result["models"].items():
        for head, r in model["heads"].items():
            row = [
                result.get("region-set") or "",
                label,
                head,
                r["num-regions"],
                r["num-zero-observed"],
                r["counts"]["pearson"],
                r["counts"]["spearman"],
                r["counts"]["mse"],
            ]
            row += [r["profile"][m][s] for m in PROFILE_METRICS for s in ("median", "q1", "q3", "mean")]
            rows.append([_fmt(v) for v in row])
    return rows


def _json_clean(obj):
    """NaN/inf -> null so the JSON output is standard JSON."""
    if isinstance(obj, dict):
        return {k: _json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _write_text(path, lines: list[str]) -> None:
    with atomic_output(path) as tmp:
        with open(tmp, "w") as fh:
            fh.write("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------------------------
# bpflow metrics


def _labelled(predictions, source: str) -> list[tuple[str, str]]:
    if isinstance(predictions, str):
        predictions = [predictions]
    if isinstance(predictions, list):
        pairs = [(Path(p).name.removesuffix(".h5").removesuffix(".hdf5"), p) for p in predictions]
    else:
        pairs = list(predictions.items())
    labels = [label for label, _ in pairs]
    if len(set(labels)) != len(labels):
        raise BpflowError(
            f"{source}: key predictions: labels repeat ({', '.join(labels)}); use an object {{label: file}}"
        )
    for label, path in pairs:
        if not Path(path).is_file():
            raise BpflowError(f"{source}: key predictions: {label}: file {path} not found")
    return pairs


def main(argv: list[str]) -> int:
    """``bpflow metrics CONFIG.json``."""
    path, config, _ = read_step_config(
        argv, "metrics", "Score prediction files against the dataset they predict.", "docs/evaluation.md"
    )
    outputs = [k for k in ("output-json", "output-tsv", "output-regions-tsv") if k in config]
    if not outputs:
        raise BpflowError(f"{path}: give at least one of the keys output-json, output-tsv, output-regions-tsv")
    if len({config[k] for k in outputs}) != len(outputs):
        raise BpflowError(f"{path}: the output files must differ")
    if not Path(config["data"]).is_file():
        raise BpflowError(f"{path}: key data: file {config['data']} not found")
    predictions = _labelled(config["predictions"], path)
    region_set = config.get("region-set")
    result, regions = evaluate(
        predictions, config["data"], config["strands"], config["chunk-size"], region_set, "output-regions-tsv" in config
    )
    if "output-json" in config:
        with atomic_output(config["output-json"]) as tmp:
            with open(tmp, "w") as fh:
                json.dump(_json_clean(result), fh, indent=2, allow_nan=False)
                fh.write("\n")
    if "output-tsv" in config:
        _write_text(config["output-tsv"], ["\t".join(TSV_COLUMNS)] + ["\t".join(r) for r in tsv_rows(result)])
    if "output-regions-tsv" in config:
        lines = ["\t".join(REGION_COLUMNS)]
        for (label, head), values in regions.items():
            n = len(values["index"])
            for i in range(n):
                row = [
                    region_set or "",
                    label,
                    head,
                    int(values["index"][i]),
                    values["chrom"][i] if "chrom" in values else "NA",
                    int(values["start"][i]) if "start" in values else "NA",
                    int(values["stop"][i]) if "stop" in values else "NA",
                ]
                row += [float(values[k][i]) for k in REGION_COLUMNS[7:]]
                lines.append("\t".join(_fmt(v) for v in row))
        _write_text(config["output-regions-tsv"], lines)
    return 0
