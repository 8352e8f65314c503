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

from bpflow import allocator
from bpflow.backend import without_tensorflow
from bpflow.formats.dataset import TrainingDataset, as_list, check_head_order
from bpflow.formats.model_file import check_model_file, load_model
from bpflow.train import recipes
from bpflow.train.loop import check_outputs, copy_weights, detach_counts_weights, fingerprint, fit_model, writing
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


# --------------------------------------------------------------------------- inputs


def model_lengths(step: str, config: dict) -> tuple[int, int]:
    """(input length, output length) of the model a step trains, from its config."""
    s = config["settings"]
    a = s if step == "transformation" else s["architecture"]
    return a["input-length"], a["output-length"]


def data_keys(step: str, config: dict) -> list[tuple[str, int]]:
    """The dataset keys of a (filled) config with the jitter each is read with: train-data at
    max-jitter; val-data and the counts data (transformation) centred."""
    keys = [("train-data", config["settings"]["max-jitter"]), ("val-data", 0)]
    if step == "transformation":
        keys += [(key, 0) for key in ("counts-train-data", "counts-val-data") if key in config]
    return keys


def check_inputs(step: str, config: dict, heads: Sequence[HeadSpec], source: str = "config") -> None:
    """Every input of a step, before anything is trained, with a one-line error
    naming the key and the file: the model file (a readable .keras archive), and each HDF5
    dataset (readable, samples present, windows wide enough for the model's lengths and
    max-jitter, one head of the config's num-tasks per config head, head names as recorded).
    The counts data of train-transformation, read only after its profile part is trained,
    are read through here as well (truncated or corrupt chunks, NaN, negative coverage)."""
    s = config["settings"]
    if step == "transformation":
        check_model_file(s["solo-model-file"], f"{source}: key settings/solo-model-file")
    if step == "combined":
        check_model_file(
            s["transformation-model"]["transformation-model-file"],
            f"{source}: key settings/transformation-model/transformation-model-file",
        )
    input_length, output_length = model_lengths(step, config)
    num_tasks = [h.num_tasks for h in heads]
    names = [h.name for h in heads]
    for key, jitter in data_keys(step, config):
        for path in as_list(config[key]):
            with TrainingDataset(path, key) as data:
                data.check_layout(input_length, output_length, num_tasks, jitter, names)
                if key.startswith("counts-"):
                    data.verify_readable(len(heads))


def _model_head_names(model) -> list[str] | None:
    """The head names of a model whose profile outputs are ``<model name>_profile_<head>``
    (bpflow's and BPReveal's solo and transformation models), else None."""
    names = list(model.output_names)
    prefix = f"{model.name}_profile_"
    profiles = names[: len(names) // 2]
    if not profiles or not all(n.startswith(prefix) for n in profiles):
        return None
    return [n[len(prefix) :] for n in profiles]


def check_model_heads(model, heads: Sequence[HeadSpec], where: str, output_length: int | None = None) -> None:
    """A loaded model against the config's heads: a profile and a counts output per head,
    each head's num-tasks, the profile output length (``output_length``), and the head names
    where the model's output names record them (the same names in another order is an error,
    other names a warning).  ``where`` names the key and the file."""
    check_outputs(model, heads, where)
    for i in range(len(heads)):
        length = model.outputs[i].shape[1]
        if output_length is not None and length != output_length:
            raise BpflowError(
                f"{where}: the model's profile output of head {i} is {length} bp long, but the "
                f"config's output-length is {output_length}"
            )
    stored = _model_head_names(model)
    if stored is not None:
        check_head_order(stored, [h.name for h in heads], where, "the model's heads")


# --------------------------------------------------------------------------- models


def build_bias(config: dict, heads: Sequence[HeadSpec], source: str = "config"):
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
        raise BpflowError(f"{source}: key settings/architecture: {err}") from None


def build_transformation(config: dict, heads: Sequence[HeadSpec], source: str = "config"):
    """The transformation model of a train-transformation config (loads the solo model)."""
    from bpflow.models import transformationModel

    s = config["settings"]
    key = f"{source}: key settings/solo-model-file"
    solo = load_model(s["solo-model-file"], key)
    in_len, out_len = solo.inputs[0].shape[1], solo.outputs[0].shape[1]
    if in_len != s["input-length"] or out_len != s["output-length"]:
        raise BpflowError(
            f"{source}: keys settings/input-length, output-length: {s['input-length']}/{s['output-length']} "
            f"differ from the solo model {s['solo-model-file']} ({in_len}/{out_len})"
        )
    check_model_heads(solo, heads, f"{key}: {s['solo-model-file']}")
    try:
        return transformationModel(
            solo, s["profile-architecture"], s["counts-architecture"], [h.as_model_head() for h in heads]
        )
    except ValueError as err:
        raise BpflowError(f"{key}: {s['solo-model-file']}: {err}") from None


def build_combined(config: dict, heads: Sequence[HeadSpec], source: str = "config"):
    """(combined, residual, bias) of a train-combined config (loads the transformation model)."""
    from bpflow.models import combinedModel

    s = config["settings"]
    a = s["architecture"]
    path = s["transformation-model"]["transformation-model-file"]
    key = f"{source}: key settings/transformation-model/transformation-model-file"
    bias = load_model(path, key)
    check_model_heads(bias, heads, f"{key}: {path}", a["output-length"])
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
        raise BpflowError(f"{source}: key settings/architecture: {err}") from None


BUILDERS = {"bias": build_bias, "transformation": build_transformation, "combined": build_combined}


def _save_model(model, path: Path, hint: str = "") -> None:
    with writing(path, "model", hint), atomic_output(path) as tmp:
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
    "combined".  Under JAX, TensorFlow is not imported (:func:`bpflow.backend.without_tensorflow`)."""
    with without_tensorflow():
        return _run_step(step, config, source=source, callbacks=callbacks)


def _run_step(step: str, config: dict, *, source: str, callbacks) -> dict:
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
            "train-%s: backend %s, %d %s device(s), %s%s; malloc: %s",
            step,
            rt.backend,
            rt.num_devices,
            rt.device_kind,
            rt.precision,
            ", deterministic" if rt.deterministic else "",
            allocator.state,
        )
        with rt.scope():
            built = BUILDERS[step](config, heads, source)  # loads and checks the model files
        check_inputs(step, config, heads, source)  # every dataset, before anything is trained
        model = built[0] if step == "combined" else built
        counts_init = None
        # profile-first trains its counts layers with weight 0 and then fits them by least
        # squares (recipes.fit_profile_first): a start at the mean would go unused
        centre = step != "transformation" and s["counts-schedule"] != "profile-first"
        if centre and step == "combined" and s["init-residual-counts"]:
            counts_init = recipes.center_counts(built[1], heads, config["train-data"], bias=built[2])
        if centre and step == "bias" and s["init-counts"]:
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
    written: list[Path] = []
    hint = (
        f"the checkpoint in {checkpoint.parent} is kept; a rerun resumes from it" if checkpoint.parent.is_dir() else ""
    )
    try:
        _save_models(step, config, heads, source, model, paths, written, hint)
        with warnings.catch_warnings():  # a lambda of 0 (a part trained alone) on the log-scaled lambda panel
            warnings.filterwarnings("ignore", message="Data has no positive values")
            with writing(paths["plot"], "loss plot", hint):
                plot_loss_history(record, paths["plot"])
        written.append(paths["plot"])
        with writing(paths["history"], "training history", hint):
            write_json_atomic(paths["history"], record)
    except BaseException:
        # No model without its history: nothing (a later step, Snakemake) may take a half-written
        # run as done.  The checkpoint stays, so a rerun resumes instead of training again.
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    for path in [checkpoint, *(recipes.phase_checkpoint(checkpoint, phase) for phase in recipes.PHASES)]:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    with contextlib.suppress(OSError):
        checkpoint.parent.rmdir()
    logger.info("train-%s: wrote %s", step, ", ".join(str(p) for p in paths.values()))
    return record


def _save_models(step: str, config: dict, heads, source: str, model, paths: dict, written: list, hint: str) -> None:
    """Save clean copies (float32, no optimizer, no distribution) of the trained weights; each
    file saved is appended to ``written``."""
    with float32_policy():
        clean = BUILDERS[step](config, heads, source)
        copy_weights(model, clean[0] if step == "combined" else clean)
        saves = [(clean[0], "combined"), (clean[1], "residual")] if step == "combined" else [(clean, "model")]
        for built, role in saves:
            _save_model(built, paths[role], hint)
            written.append(paths[role])


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
