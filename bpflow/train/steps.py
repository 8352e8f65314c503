"""The three training steps: ``bpflow train-bias`` (alias ``train-solo``), ``train-transformation``
and ``train-combined``.

Each step reads one JSON config with BPReveal's keys (plus a few of bpflow's own; every key is
documented in docs/training.md), validates it before any data is read, builds its model, trains
it (:mod:`bpflow.train.loop`, :mod:`bpflow.train.recipes`) and writes its model(s),
``<prefix>.history.json`` and ``<prefix>.loss.png``.  A finished run is not repeated, and a
killed one resumes from its checkpoint, as long as nothing that changes the weights changed
(:func:`fingerprint`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Sequence

from bpflow.formats.dataset import as_list
from bpflow.formats.model_file import load_model
from bpflow.train import recipes
from bpflow.train.loop import copy_weights, detach_counts_weights, fingerprint, fit_model
from bpflow.train.plots import plot_loss_history
from bpflow.train.runtime import float32_policy, runtime
from bpflow.train.settings import HeadSpec, check_config, step_name, weights_config
from bpflow.utils import BpflowError, atomic_output, read_step_config, write_json_atomic

logger = logging.getLogger("bpflow.train")

HISTORY_FORMAT = "bpflow-training-history/1"


def output_paths(step: str, config: dict) -> dict[str, Path]:
    """The files a step writes, by role: ``history``, ``plot`` and ``model`` (bias and
    transformation) or ``combined`` and ``residual`` (combined)."""
    s = config["settings"]
    prefix = s["output-prefix"]
    out = {"history": Path(f"{prefix}.history.json"), "plot": Path(f"{prefix}.loss.png")}
    if step == "combined":
        out["combined"] = Path(s.get("combined-model-file") or f"{prefix}_combined.keras")
        out["residual"] = Path(s.get("residual-model-file") or f"{prefix}_residual.keras")
        if out["combined"] == out["residual"]:
            raise BpflowError("settings: combined-model-file and residual-model-file are the same file")
    else:
        out["model"] = Path(f"{prefix}.keras")
    return out


def build_bias(config: dict, heads: Sequence[HeadSpec]):
    """The solo (bias) model of a train-bias config."""
    from bpflow.models import soloModel

    a = config["settings"]["architecture"]
    try:
        return soloModel(
            a["input-length"],
            a["output-length"],
            a["filters"],
            a["layers"],
            a["input-filter-width"],
            a["output-filter-width"],
            [h.as_model_head() for h in heads],
            a["model-name"],
        )
    except ValueError as err:
        raise BpflowError(f"settings/architecture: {err}") from None


def build_transformation(config: dict, heads: Sequence[HeadSpec]):
    """The transformation model of a train-transformation config (loads the solo model)."""
    from bpflow.models import transformationModel

    s = config["settings"]
    solo = load_model(s["solo-model-file"], "settings/solo-model-file")
    in_len, out_len = solo.inputs[0].shape[1], solo.outputs[0].shape[1]
    if in_len != s["input-length"] or out_len != s["output-length"]:
        raise BpflowError(
            f"settings/input-length, output-length: {s['input-length']}/{s['output-length']} "
            f"differ from the solo model {s['solo-model-file']} ({in_len}/{out_len})"
        )
    try:
        return transformationModel(
            solo, s["profile-architecture"], s["counts-architecture"], [h.as_model_head() for h in heads]
        )
    except ValueError as err:
        raise BpflowError(f"settings/solo-model-file: {err}") from None


def build_combined(config: dict, heads: Sequence[HeadSpec]):
    """(combined, residual, bias) of a train-combined config (loads the transformation model)."""
    from bpflow.models import combinedModel

    s = config["settings"]
    a = s["architecture"]
    path = s["transformation-model"]["transformation-model-file"]
    bias = load_model(path, "settings/transformation-model/transformation-model-file")
    try:
        return combinedModel(
            a["input-length"],
            a["output-length"],
            a["filters"],
            a["layers"],
            a["input-filter-width"],
            a["output-filter-width"],
            [h.as_model_head() for h in heads],
            bias,
        )
    except ValueError as err:
        raise BpflowError(f"settings/architecture: {err}") from None


BUILDERS = {"bias": build_bias, "transformation": build_transformation, "combined": build_combined}


def _save_model(model, path: Path) -> None:
    with atomic_output(path) as tmp:
        model.save(tmp)


def _input_files(step: str, config: dict) -> list:
    files = as_list(config["train-data"]) + as_list(config["val-data"])
    s = config["settings"]
    if step == "transformation":
        files.append(s["solo-model-file"])
        for key in ("counts-train-data", "counts-val-data"):
            if key in config:
                files += as_list(config[key])
    if step == "combined":
        files.append(s["transformation-model"]["transformation-model-file"])
    return files


def _already_done(paths: dict, fp: str) -> dict | None:
    hist = paths["history"]
    if not hist.is_file() or not all(p.is_file() for p in paths.values()):
        return None
    try:
        with open(hist) as fh:
            record = json.load(fh)
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("completed") and record.get("fingerprint") == fp:
        return record
    return None


def run_step(step: str, config: dict, *, source: str = "config", callbacks=()) -> dict:
    """Run ``train-<step>`` on a config dict; return the history record (also written to
    ``<prefix>.history.json``).  ``step`` is "bias" (or its alias "solo"), "transformation" or
    "combined"."""
    step = step_name(step)
    config, settings, heads = check_config(config, step, source)
    paths = output_paths(step, config)
    fp = fingerprint(step, weights_config(config), _input_files(step, config))
    done = _already_done(paths, fp)
    if done is not None:
        logger.info("train-%s: %s is complete for this config and these inputs; nothing to do", step, paths["history"])
        return done
    checkpoint = Path(settings.checkpoint_dir) / "checkpoint.npz"
    s = config["settings"]
    start = time.monotonic()
    with runtime(settings) as rt:
        logger.info(
            "train-%s: backend %s, %d %s device(s), %s%s",
            step,
            rt.backend,
            rt.num_devices,
            rt.device_kind,
            rt.precision,
            ", deterministic" if rt.deterministic else "",
        )
        with rt.scope():
            built = BUILDERS[step](config, heads)
        model = built[0] if step == "combined" else built
        counts_init = None
        if step == "combined" and s["init-residual-counts"]:
            counts_init = recipes.center_counts(built[1], heads, config["train-data"], bias=built[2])
        if step == "bias" and s["init-counts"]:
            counts_init = recipes.center_counts(model, heads, config["train-data"])
        common = dict(fingerprint_value=fp, checkpoint_path=checkpoint, callbacks=callbacks)
        if step == "transformation" and "counts-train-data" in config:
            record = recipes.fit_transformation_parts(model, config, heads, settings, rt, **common)
        elif step != "transformation" and s["counts-schedule"] == "profile-first":
            body, bias = (built[1], built[2]) if step == "combined" else (model, None)
            record = recipes.fit_profile_first(model, body, config, heads, settings, rt, bias=bias, **common)
        else:
            record = fit_model(model, heads, settings, rt, config["train-data"], config["val-data"], **common)
        environment = rt.describe()
        if counts_init is not None:
            record["residual-counts-init" if step == "combined" else "counts-init"] = counts_init
    detach_counts_weights(model)

    # Clean copies (float32, no optimizer, no distribution) of the trained weights.
    with float32_policy():
        clean = BUILDERS[step](config, heads)
        copy_weights(model, clean[0] if step == "combined" else clean)
        if step == "combined":
            _save_model(clean[0], paths["combined"])
            _save_model(clean[1], paths["residual"])
        else:
            _save_model(clean, paths["model"])
    record = {
        "format": HISTORY_FORMAT,
        "step": f"train-{step}",
        "completed": True,
        "fingerprint": fp,
        "config": config,
        "settings": settings.as_dict(),
        "environment": environment,
        "heads": [h.name for h in heads],
        "wall-seconds": time.monotonic() - start,
        **record,
        "outputs": {k: str(v) for k, v in paths.items()},
    }
    with warnings.catch_warnings():  # a lambda of 0 (a part trained alone) on the log-scaled lambda panel
        warnings.filterwarnings("ignore", message="Data has no positive values")
        plot_loss_history(record, paths["plot"])
    write_json_atomic(paths["history"], record)
    for path in [checkpoint, *(recipes.phase_checkpoint(checkpoint, phase) for phase in recipes.PHASES)]:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    with contextlib.suppress(OSError):
        checkpoint.parent.rmdir()
    logger.info("train-%s: wrote %s", step, ", ".join(str(p) for p in paths.values()))
    return record


def train_bias(config: dict, *, source: str = "train-bias config", callbacks=()) -> dict:
    """Train a solo (bias) model from a config dict; see :func:`run_step`."""
    return run_step("bias", config, source=source, callbacks=callbacks)


train_solo = train_bias  # BPReveal's name of the same model


def train_transformation(config: dict, *, source: str = "train-transformation config", callbacks=()) -> dict:
    """Fit the transformation of a frozen solo model; see :func:`run_step`."""
    return run_step("transformation", config, source=source, callbacks=callbacks)


def train_combined(config: dict, *, source: str = "train-combined config", callbacks=()) -> dict:
    """Train the residual inside the combined model; see :func:`run_step`."""
    return run_step("combined", config, source=source, callbacks=callbacks)


# --------------------------------------------------------------------------- CLI


def _main(step: str, argv: list[str]) -> int:
    path, config, _ = read_step_config(
        argv, f"train-{step}", f"Train the {step} model from a JSON config.", "docs/training.md"
    )
    run_step(step, config, source=path)
    return 0


def train_bias_main(argv: list[str]) -> int:
    return _main("bias", argv)


def train_transformation_main(argv: list[str]) -> int:
    return _main("transformation", argv)


def train_combined_main(argv: list[str]) -> int:
    return _main("combined", argv)
