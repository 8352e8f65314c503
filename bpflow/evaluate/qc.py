"""Quality checks of a trained combined model: ``bpflow qc-combined CONFIG.json``.

* :func:`counts_qc`: on validation peaks, the combined model's counts against the bias
  branch's and the residual's; flags a collapsed residual counts head.
* :func:`motif_qc`: marginal footprints (:mod:`bpflow.evaluate.footprints`) of the bias branch
  and the residual for TF motifs and bias motifs; flags a bias model that learned TF motifs and
  a residual that learned the bias.

The step reads the saved combined, residual and (transformed) bias models, so changing a
threshold reruns the checks, not the training.  Thresholds and the JSON layout: docs/qc.md.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from bpflow import schemas
from bpflow.evaluate.footprints import background_sequences, footprint_table
from bpflow.evaluate.inference import model_shape, predict_arrays
from bpflow.evaluate.kmer_bias import KmerBias, profile_losses
from bpflow.evaluate.measures import pearson
from bpflow.formats.dataset import as_list, read_profiles, read_windows
from bpflow.formats.model_file import load_model
from bpflow.formats.motifs import load_motifs, simulation_motifs
from bpflow.lengths import crop_offset
from bpflow.train.settings import MAX_DEFAULT_COUNTS_PHASE_EPOCHS, MIN_COUNTS_PHASE_EPOCHS, SHORT_COUNTS_PHASE
from bpflow.utils import BpflowError, read_step_config, write_json_atomic

logger = logging.getLogger("bpflow.qc")

QC_FORMAT = "bpflow-qc/1"
RESIDUAL_PEARSON_MARGIN = 0.05  # combined counts Pearson this far below the residual's alone: warn


# --------------------------------------------------------------------------- QC of the combined model


def _pearson(x, y) -> float:
    return float(pearson(np.asarray(x, np.float64), np.asarray(y, np.float64)))


def _mse(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.mean((a - b) ** 2)) if a.size else math.nan


def predict_logcounts(model, sequences: np.ndarray, batch_size: int = 256) -> list[np.ndarray]:
    """Each head's predicted log counts (N,) of a model over in-memory sequences, center-cropped
    to the model's input (the bias model's input is shorter than the combined model's)."""
    length = model_shape(model).input_length
    a = crop_offset(sequences.shape[1], length, "the QC sequences")
    return predict_arrays(model, sequences[:, a : a + length], batch_size=batch_size)[1]


def _check(head: dict, check: str, value: str, threshold: str, failed: bool, warning: str) -> None:
    """Record one check of a head (``checks``: what the report's table shows) and, when it
    failed, its warning."""
    head["checks"].append(
        {"check": check, "value": value, "threshold": threshold, "status": "WARNING" if failed else "ok"}
    )
    if failed:
        head["warnings"].append(warning)


def counts_qc(
    combined,
    residual,
    bias,
    files,
    head_names: Sequence[str],
    use_bias_counts: Sequence[bool],
    min_residual_share: float = 0.1,
    max_samples: int | None = 4096,
) -> dict:
    """Counts of the combined model, its bias branch and its residual on ``files``
    (validation peaks) against the observed log(1 + total).

    Per head: Pearson of each model, ``residual-share`` = median over windows of 1 -
    exp(bias) / exp(combined) (the residual's part of the predicted counts: exp(residual) /
    (exp(residual) + exp(bias)) with ``counts-combination`` "sum"),
    and ``warnings``: the residual's share below ``min_residual_share`` (collapsed residual
    counts head), the combined counts Pearson more than ``RESIDUAL_PEARSON_MARGIN`` below the
    residual's alone (the bias counts hurt), or not above the bias branch's.
    """
    shape = model_shape(combined)
    n = len(head_names)
    seqs, totals = read_windows(files, shape.input_length, shape.output_length, n, max_samples=max_samples)
    out = {"num-windows": int(len(seqs)), "min-residual-share": float(min_residual_share), "heads": {}}
    if not len(seqs):
        return out
    comb = predict_logcounts(combined, seqs)
    res = predict_logcounts(residual, seqs)
    bia = predict_logcounts(bias, seqs)
    for i, name in enumerate(head_names):
        y = np.log1p(totals[:, i])
        r, b, c = res[i].astype(np.float64), bia[i].astype(np.float64), comb[i].astype(np.float64)
        # the share of the combined model's reads beyond the bias branch's: exp(r) / (exp(b) +
        # exp(r)) with counts-combination "sum", 1 - 1 / (the bias-weighted mean fold) with "product"
        share = np.clip(-np.expm1(np.clip(b - c, -50, 50)), 0.0, 1.0)
        h = {
            "pearson-combined": _pearson(comb[i], y),
            "pearson-bias": _pearson(b, y),
            "pearson-residual": _pearson(r, y),
            "mse-combined": _mse(comb[i], y),
            "residual-share": float(np.median(share)) if use_bias_counts[i] else 1.0,
            "mean-residual-reads": float(np.mean(np.exp(r))),
            "mean-bias-reads": float(np.mean(np.exp(b))),
            "checks": [],
            "warnings": [],
        }
        comb_r, res_r, bias_r = h["pearson-combined"], h["pearson-residual"], h["pearson-bias"]
        if use_bias_counts[i]:  # without the bias counts, combined counts = residual counts
            _check(
                h,
                "residual share of the predicted counts (validation peaks, median)",
                f"{h['residual-share']:.3g}",
                f">= {min_residual_share:g}",
                h["residual-share"] < min_residual_share,
                f"head {name}: collapsed residual counts head: the residual predicts a median "
                f"{100 * h['residual-share']:.2g} % of the counts on validation peaks (threshold "
                f"{100 * min_residual_share:.2g} %); the bias branch's counts are probably fitted to peak depth "
                "(fit the counts transformation on background regions: transformation recipe 'bpflow')",
            )
            _check(
                h,
                "counts Pearson, combined vs residual alone",
                f"{comb_r:.3f} vs {res_r:.3f}",
                f"combined >= residual - {RESIDUAL_PEARSON_MARGIN:g}",
                comb_r < res_r - RESIDUAL_PEARSON_MARGIN,
                f"head {name}: adding the bias branch's counts makes the counts worse: Pearson on validation "
                f"peaks {comb_r:.3f} combined against {res_r:.3f} for the residual "
                "alone; the bias branch's counts are probably fitted to peak depth (transformation recipe 'bpflow')",
            )
        _check(
            h,
            "counts Pearson, combined vs bias branch alone",
            f"{comb_r:.3f} vs {bias_r:.3f}",
            "combined > bias",
            not comb_r > bias_r,
            f"head {name}: the combined model's counts Pearson on validation peaks "
            f"({comb_r:.3f}) is not above the bias branch's alone ({bias_r:.3f})",
        )
        out["heads"][name] = h
    return out


def qc_motifs(config: Mapping) -> tuple[dict, dict]:
    """(TF motifs, bias motifs) of a qc-combined config: ``truth-json`` (a bpflow simulation's
    truth.json: its TF motifs and its bias motif, named "bias"), then the ``motifs`` /
    ``bias-motifs`` entries (:func:`bpflow.formats.motifs.load_motifs`; they override)."""
    tf, bias = {}, {}
    if config.get("truth-json"):
        tf, bias = simulation_motifs(config["truth-json"])
    tf.update(load_motifs(config.get("motifs") or {}))
    bias.update(load_motifs(config.get("bias-motifs") or {}))
    return tf, bias


def motif_qc(
    residual,
    bias,
    sequences: np.ndarray,
    tf_motifs: Mapping,
    bias_motifs: Mapping,
    max_bias_tf_ratio: float = 0.2,
    max_residual_bias_ratio: float = 0.1,
    seed: int = 0,
    head_names: Sequence[str] | None = None,
) -> dict:
    """Marginal footprints of the residual and the bias branch (profile-response per head).

    ``bias-tf-ratio`` = the bias branch's mean TF-motif response / the residual's (a bias
    model that learned TF motifs has a large one); ``residual-bias-tf-ratio`` = the
    residual's mean bias-motif response / its mean TF-motif response (the truth is 0).
    """
    motifs = {**dict(tf_motifs), **dict(bias_motifs)}
    out = {
        "tf-motifs": list(tf_motifs),
        "bias-motifs": list(bias_motifs),
        "num-sequences": int(len(sequences)),
        "max-bias-tf-ratio": max_bias_tf_ratio,
        "max-residual-bias-ratio": max_residual_bias_ratio,
        "heads": {},
    }
    if not motifs or not len(sequences):
        return out
    table = footprint_table(
        {"residual": residual, "bias": bias},
        sequences,
        motifs,
        orientations=("forward", "reverse"),
        include_profiles=False,
        seed=seed,
        head_names=head_names,
    )
    heads = table["models"]["residual"]["heads"]
    for head in heads:

        def mean(model, names):
            v = [abs(float(table["models"][model]["heads"][head][m]["profile-response"])) for m in names]
            return float(np.mean(v)) if v else math.nan

        h = {
            "residual-tf-response": mean("residual", tf_motifs),
            "residual-bias-response": mean("residual", bias_motifs),
            "bias-tf-response": mean("bias", tf_motifs),
            "bias-bias-response": mean("bias", bias_motifs),
            "per-motif": {
                m: {
                    label: table["models"][label]["heads"][head][m]["profile-response"]
                    for label in ("residual", "bias")
                }
                for m in motifs
            },
            "checks": [],
            "warnings": [],
        }
        rt = h["residual-tf-response"]
        h["bias-tf-ratio"] = h["bias-tf-response"] / rt if rt and rt > 0 else math.nan
        h["residual-bias-tf-ratio"] = h["residual-bias-response"] / rt if rt and rt > 0 else math.nan
        if tf_motifs:
            _check(
                h,
                "bias branch's TF-motif response / the residual's",
                f"{h['bias-tf-ratio']:.4g}",
                f"<= {max_bias_tf_ratio:g}",
                h["bias-tf-ratio"] > max_bias_tf_ratio,
                f"head {head}: the bias model responds to TF motifs ({h['bias-tf-response']:.3g}, "
                f"{h['bias-tf-ratio']:.2f} x the residual's; threshold {max_bias_tf_ratio}): it probably learned "
                "TF motifs - train it on regions without TF signal, make it smaller, or use a control",
            )
        if tf_motifs and bias_motifs:
            _check(
                h,
                "residual's bias-motif response / its TF-motif response",
                f"{h['residual-bias-tf-ratio']:.4g}",
                f"<= {max_residual_bias_ratio:g}",
                h["residual-bias-tf-ratio"] > max_residual_bias_ratio,
                f"head {head}: the residual responds to the bias motif(s) ({h['residual-bias-tf-ratio']:.3f} x "
                f"its TF-motif response; threshold {max_residual_bias_ratio}): the bias is not fully removed",
            )
        out["heads"][head] = h
    return out


SECTIONS = ("training", "bias", "counts", "motifs")


def section_entries(report: dict):
    """(section, name, entry) of every head or stage entry of a QC report, in report order:
    ``training`` has ``stages``, the other sections ``heads``."""
    for part in SECTIONS:
        section = report.get(part) or {}
        for name, entry in (section.get("heads") or section.get("stages") or {}).items():
            yield part, name, entry


def all_warnings(report: dict) -> list[str]:
    """Every warning string of a QC report."""
    return [w for _, _, entry in section_entries(report) for w in entry.get("warnings", [])]


# --------------------------------------------------------------------------- training histories


def _still_improving_advice(phase: Mapping) -> str:
    """What a stage or phase that ended at its epoch limit still improving should do next.  A
    phase on a cosine (``schedule`` "cosine") ends at a rate near 0, whose last epochs settle
    rather than train: there the last epoch's gain does not say that more epochs would help
    (on the quality suite four such 15-epoch phases gained nothing from 20; docs/qc.md).  A
    counts phase's epochs are ``counts-phase-epochs`` (by default a quarter of ``epochs``, at most
    :data:`MAX_DEFAULT_COUNTS_PHASE_EPOCHS`, so a larger ``epochs`` may not lengthen it): the
    advice names that key."""
    more = "more epochs"
    if phase.get("phase") == "counts":
        more = (
            "more epochs (settings/counts-phase-epochs; its default is a quarter of epochs, "
            f"at most {MAX_DEFAULT_COUNTS_PHASE_EPOCHS})"
        )
    if phase.get("schedule") == "cosine":
        return (
            "on its cosine the last epochs run at a rate near 0 and settle, so more epochs may not help "
            f"(docs/qc.md); rerun it with {more} and see whether its best epoch comes before its end"
        )
    return f"it was still improving; give it {more}"


def training_qc(histories: Mapping[str, str]) -> dict:
    """Per training stage (and counts-schedule phase): did it end at its epoch limit while
    still improving?  That is: it was not stopped early and its last epoch lowered the
    validation loss by more than ``early-stopping-min-delta`` (the epoch that early stopping
    waits for: ``last-significant-epoch``; records written before that key existed use the
    best epoch) - more epochs would probably have helped.  And was the combined stage's
    counts phase given at least :data:`MIN_COUNTS_PHASE_EPOCHS` epochs?  A short cosine phase
    can settle before its end and pass the first check while its counts stay short."""
    out = {"stages": {}}
    for stage, path in histories.items():
        try:
            record = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise BpflowError(f"{path}: cannot read the training history: {err}") from None
        entry = {
            "epochs-run": record.get("epochs-run"),
            "best-epoch": record.get("best-epoch"),
            "stop-reason": record.get("stop-reason"),
            "checks": [],
            "warnings": [],
        }
        parts = record.get("phases") or [dict(record, phase=None)]
        for part in parts:
            run, best = part.get("epochs-run") or 0, part.get("best-epoch")
            last_gain = part.get("last-significant-epoch", best)
            at_limit = run > 0 and str(part.get("stop-reason", "")).startswith("finished")
            improving = at_limit and last_gain == run
            what = f"{stage}" + (f", {part['phase']} phase" if part.get("phase") else "")
            _check(
                entry,
                f"{what}: ended at the epoch limit while still improving",
                f"best epoch {best} of {run}, last improvement by more than min-delta: epoch {last_gain}",
                "last such improvement before the last epoch, or stopped early",
                improving,
                f"{what}: training ended at its epoch limit ({run} epochs) and its last epoch lowered the "
                f"validation loss by more than early-stopping-min-delta: {_still_improving_advice(part)}",
            )
            allowed = part.get("epochs-allowed") or 0  # 0: counts layers fitted in closed form
            if record.get("step") == "train-combined" and part.get("phase") == "counts" and allowed:
                _check(
                    entry,
                    f"{what}: epochs",
                    f"{allowed} allowed",
                    f">= {MIN_COUNTS_PHASE_EPOCHS}",
                    allowed < MIN_COUNTS_PHASE_EPOCHS,
                    f"{what}: only {allowed} epochs allowed, {SHORT_COUNTS_PHASE}",
                )
        out["stages"][stage] = entry
    return out


# --------------------------------------------------------------------------- bias model vs a k-mer table


def bias_kmer_qc(
    model,
    heads: Sequence[str],
    train_files,
    val_files,
    left: int = 3,
    right: int = 3,
    pseudocount: float = 10.0,
    max_samples: int | None = 20000,
) -> dict:
    """The neural bias model against :class:`~bpflow.evaluate.kmer_bias.KmerBias` fitted on the
    training background: mean multinomial NLL per held-out background window under a flat
    profile, the k-mer table and the model, and the part of the flat profile's loss each
    removes (``gain``).  Warns when the model removes less than the table."""
    shape = model_shape(model)
    out = {"kmer": {"left": left, "right": right, "pseudocount": pseudocount}, "heads": {}}
    for h, name in enumerate(heads):
        seq_t, prof_t = read_profiles(train_files, shape.input_length, shape.output_length, h, max_samples)
        seq_v, prof_v = read_profiles(val_files, shape.input_length, shape.output_length, h, max_samples)
        table = KmerBias(left, right, pseudocount).fit(seq_t, prof_t)
        logits = predict_arrays(model, seq_v, batch_size=64)[0][h]
        losses = profile_losses(prof_v, {"kmer": table.log_rates_of(seq_v, shape.output_length), "model": logits})
        entry = {
            "train-windows": int(len(seq_t)),
            "val-windows": int(len(seq_v)),
            "nll": losses,
            "gain-kmer": losses["flat"] - losses["kmer"],
            "gain-model": losses["flat"] - losses["model"],
            "checks": [],
            "warnings": [],
        }
        entry["model-vs-kmer"] = entry["gain-model"] / entry["gain-kmer"] if entry["gain-kmer"] > 0 else math.nan
        _check(
            entry,
            "bias model's profile-loss gain over a flat profile vs a k-mer table's (held-out background)",
            f"{entry['gain-model']:.4g} vs {entry['gain-kmer']:.4g}",
            "model >= k-mer table",
            not entry["gain-model"] >= entry["gain-kmer"],
            f"head {name}: the bias model removes less of the flat profile's loss on held-out background "
            f"({entry['gain-model']:.4g} per window) than a {left + right + 1}-mer table of cut rates does "
            f"({entry['gain-kmer']:.4g}): it has not learned the bias the data show - train it longer, give it "
            "more background regions or check its data",
        )
        out["heads"][name] = entry
    return out


# --------------------------------------------------------------------------- bpflow qc-combined


def run_qc(config: dict, combined=None, residual=None, bias=None) -> dict:
    """The QC report of a trained combined model (docs/qc.md): counts checks on the ``data``
    windows (validation peaks) and, when motifs are known (``truth-json``, ``motifs``,
    ``bias-motifs``), marginal-footprint checks on ``background-data`` (default: the first
    ``data`` file).  Models not passed are loaded from the config's files.  Every warning is
    also logged."""
    config = schemas.validate(config, "qc-combined", "qc-combined config")
    if not config["enabled"]:
        return {
            "format": QC_FORMAT,
            "step": "qc-combined",
            "counts": None,
            "motifs": None,
            "warnings": [],
            "disabled": True,
        }
    combined = combined or load_model(config["combined-model-file"], "combined-model-file")
    residual = residual or load_model(config["residual-model-file"], "residual-model-file")
    bias = bias or load_model(config["bias-model-file"], "bias-model-file")
    names = [h["head-name"] for h in config["heads"]]
    data = as_list(config["data"])
    report = {
        "format": QC_FORMAT,
        "step": "qc-combined",
        "training": None,
        "counts": None,
        "motifs": None,
        "warnings": [],
    }
    report["counts"] = counts_qc(
        combined,
        residual,
        bias,
        data,
        names,
        [h["use-bias-counts"] for h in config["heads"]],
        min_residual_share=config["min-residual-share"],
        max_samples=config["max-samples"],
    )
    report["counts"]["data"] = data
    report["training"] = training_qc(config.get("histories") or {})
    tf_motifs, bias_motifs = qc_motifs(config)
    if tf_motifs or bias_motifs:
        background = config.get("background-data", data[0])
        seqs = background_sequences(
            background, combined.inputs[0].shape[1], num=config["num-sequences"], seed=config["seed"]
        )
        report["motifs"] = motif_qc(
            residual,
            bias,
            seqs,
            tf_motifs,
            bias_motifs,
            max_bias_tf_ratio=config["max-bias-tf-ratio"],
            max_residual_bias_ratio=config["max-residual-bias-ratio"],
            head_names=names,
        )
        report["motifs"]["background-data"] = str(background)
    report["warnings"] = all_warnings(report)
    for h, v in (report["counts"] or {}).get("heads", {}).items():
        logger.info(
            "QC %s: counts Pearson on %d validation windows: combined %.3f, bias %.3f, residual %.3f; "
            "residual share of predicted counts %.3g",
            h,
            report["counts"]["num-windows"],
            v["pearson-combined"],
            v["pearson-bias"],
            v["pearson-residual"],
            v["residual-share"],
        )
    for h, v in (report["motifs"] or {}).get("heads", {}).items():
        logger.info(
            "QC %s: footprints: residual TF %.4g, residual bias-motif %.4g, bias-model TF %.4g",
            h,
            v["residual-tf-response"],
            v["residual-bias-response"],
            v["bias-tf-response"],
        )
    _log_warnings(report)
    return report


def main(argv: list[str]) -> int:
    path, config, _ = read_step_config(argv, "qc-combined", "Quality checks of a trained combined model.", "docs/qc.md")
    keys = ("combined-model-file", "residual-model-file", "bias-model-file", "truth-json", "background-data")
    _check_inputs(path, config, keys, ("data",))
    write_json_atomic(config["output-json"], run_qc(config))
    return 0


# --------------------------------------------------------------------------- bpflow qc-bias


def run_bias_qc(config: dict, model=None) -> dict:
    """The QC report of a trained bias model (docs/qc.md): the k-mer baseline check and the
    epoch-limit check of its training history.  Every warning is also logged."""
    config = schemas.validate(config, "qc-bias", "qc-bias config")
    report = {"format": QC_FORMAT, "step": "qc-bias", "training": None, "bias": None, "warnings": []}
    if not config["enabled"]:
        return {**report, "disabled": True}
    model = model or load_model(config["bias-model-file"], "bias-model-file")
    names = [h["head-name"] for h in config["heads"]]
    report["training"] = training_qc(config.get("histories") or {})
    report["bias"] = bias_kmer_qc(
        model,
        names,
        config["train-data"],
        config["val-data"],
        config["kmer-left"],
        config["kmer-right"],
        config["pseudocount"],
        config["max-samples"],
    )
    report["warnings"] = all_warnings(report)
    for h, v in report["bias"]["heads"].items():
        logger.info(
            "QC %s: profile NLL per held-out background window: flat %.5g, %d-mer table %.5g, bias model %.5g",
            h,
            v["nll"]["flat"],
            config["kmer-left"] + config["kmer-right"] + 1,
            v["nll"]["kmer"],
            v["nll"]["model"],
        )
    _log_warnings(report)
    return report


def _log_warnings(report: dict) -> None:
    for w in report["warnings"]:
        logger.warning("QC WARNING: %s", w)
    if not report["warnings"]:
        logger.info("QC: no warnings")


def _check_inputs(path: str, config: dict, keys, list_keys) -> None:
    files = [(k, config[k]) for k in keys if k in config]
    files += [(k, f) for k in list_keys for f in as_list(config.get(k, []))]
    files += [(f"histories/{stage}", f) for stage, f in (config.get("histories") or {}).items()]
    for key, file in files:
        if not Path(file).is_file():
            raise BpflowError(f"{path}: key {key}: file not found: {file}")
    names = [h["head-name"] for h in config["heads"]]
    if len(set(names)) != len(names):
        raise BpflowError(f"{path}: key heads: head names repeat ({', '.join(names)})")


def bias_main(argv: list[str]) -> int:
    path, config, _ = read_step_config(argv, "qc-bias", "Quality checks of a trained bias model.", "docs/qc.md")
    _check_inputs(path, config, ("bias-model-file",), ("train-data", "val-data"))
    write_json_atomic(config["output-json"], run_bias_qc(config))
    return 0
