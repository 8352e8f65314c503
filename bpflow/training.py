"""Training the three stages: ``bpflow train-solo``, ``train-transformation``, ``train-combined``.

Each step reads one JSON config with BPReveal's keys (plus a few of bpflow's own; every key is
documented in docs/training.md), validates it with a JSON schema before any data is read, and
writes its model(s), ``<prefix>.history.json`` and ``<prefix>.loss.png``.

The shared machinery (:func:`fit_model`) takes any model with BPReveal's output order (each
head's profile logits, then each head's log counts) and:

- streams batches from the HDF5 files (:class:`bpflow.batcher.H5Batcher`);
- minimises, per head, ``profile-loss-weight`` x multinomial NLL + lambda x MSE of the log
  counts, the counts target being ``log(1 + total counts of the head in the window)``;
- adapts lambda to ``counts-loss-frac-target`` (:func:`update_counts_weight`), stops early and
  halves the learning rate on a plateau, comparing validation losses re-expressed with the
  current lambda;
- checkpoints after every epoch and resumes from the checkpoint when run again;
- stops at once on a NaN or infinite loss;
- trains data-parallel over every device when asked (TensorFlow MirroredStrategy, JAX
  ``keras.distribution.DataParallel``).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import keras
import numpy as np

from bpflow import __version__, lengths
from bpflow.batcher import H5Batcher, revcomp_task_order
from bpflow.losses import CountsMSE, MultinomialNLL, multinomial_nll
from bpflow.utils import (VERBOSITY_SCHEMA, BpflowError, atomic_output, read_step_config, setup_logging,
                          validate_config, write_json_atomic)

logger = logging.getLogger("bpflow.training")

HISTORY_FORMAT = "bpflow-training-history/1"
CHECKPOINT_FORMAT = "bpflow-checkpoint/1"

# BPReveal's starting lambda when only counts-loss-frac-target is given:
# INITIAL_LAMBDA_FACTOR * mean total counts per training window * target.
INITIAL_LAMBDA_FACTOR = 37.0

# --------------------------------------------------------------------------- JSON schemas

_POS_INT = {"type": "integer", "minimum": 1}
_NONNEG_INT = {"type": "integer", "minimum": 0}
_DATA = {"oneOf": [{"type": "string", "minLength": 1},
                   {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}}]}

_HEAD_PROPERTIES = {
    "head-name": {"type": "string", "minLength": 1},
    "num-tasks": _POS_INT,
    "profile-loss-weight": {"type": "number", "minimum": 0},
    "counts-loss-weight": {"type": "number", "minimum": 0},
    "counts-loss-frac-target": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    "revcomp-task-order": {"oneOf": [{"const": "auto"},
                                     {"type": "array", "minItems": 1, "items": _NONNEG_INT}]},
}


def _head_schema(combined: bool) -> dict:
    props = dict(_HEAD_PROPERTIES)
    if combined:
        props["use-bias-counts"] = {"type": "boolean"}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["head-name", "num-tasks", "profile-loss-weight"],
        "properties": props,
        "anyOf": [{"required": ["counts-loss-weight"]}, {"required": ["counts-loss-frac-target"]}],
    }


_ARCHITECTURE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["architecture-name", "input-length", "output-length", "model-name", "filters", "layers",
                 "input-filter-width", "output-filter-width"],
    "properties": {
        "architecture-name": {"enum": ["bpnet"]},
        "input-length": _POS_INT,
        "output-length": _POS_INT,
        "model-name": {"type": "string", "minLength": 1},
        "filters": _POS_INT,
        "layers": _NONNEG_INT,
        "input-filter-width": _POS_INT,
        "output-filter-width": _POS_INT,
        "model-args": {"type": "string"},
    },
}

_TRANSFORM_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"enum": ["passthrough", "simple"]},
        "types": {"type": "array", "minItems": 1, "items": {"enum": ["linear", "sigmoid", "relu"]}},
    },
    "if": {"properties": {"name": {"const": "simple"}}},
    "then": {"required": ["types"]},
}

# train-transformation: how the counts part is fitted on `counts-train-data` (bpflow.qc).
COUNTS_FIT_METHODS = ("shift", "linear")

# train-combined: the optional `qc` block (bpflow.qc; docs/training.md "Quality checks").
_QC_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "enabled": {"type": "boolean"},
        "data": _DATA,
        "min-residual-share": {"type": "number", "minimum": 0, "maximum": 1},
        "truth-json": {"type": "string", "minLength": 1},
        "motifs": {"type": "object"},
        "bias-motifs": {"type": "object"},
        "background-data": {"type": "string", "minLength": 1},
        "num-sequences": _POS_INT,
        "max-bias-tf-ratio": {"type": "number", "minimum": 0},
        "max-residual-bias-ratio": {"type": "number", "minimum": 0},
    },
}

# settings keys shared by the three steps: BPReveal's, then bpflow's additions.
_SETTINGS_COMMON = {
    "output-prefix": {"type": "string", "minLength": 1},
    "epochs": _POS_INT,
    "max-jitter": _NONNEG_INT,
    "early-stopping-patience": _POS_INT,
    "batch-size": _POS_INT,
    "learning-rate": {"type": "number", "exclusiveMinimum": 0},
    "learning-rate-plateau-patience": _POS_INT,
    "seed": _NONNEG_INT,
    "mixed-precision": {"oneOf": [{"type": "boolean"}, {"enum": ["float16", "bfloat16"]}]},
    "jit-compile": {"oneOf": [{"type": "boolean"}, {"const": "auto"}]},
    "reverse-complement": {"type": "boolean"},
    "checkpoint-dir": {"type": "string", "minLength": 1},
    "multi-device": {"oneOf": [{"type": "boolean"}, {"const": "auto"}]},
    "deterministic": {"oneOf": [{"type": "boolean"}, {"const": "auto"}]},
    "data-workers": _NONNEG_INT,
    "data-cache-mb": {"type": "number", "minimum": 1},
}
_SETTINGS_REQUIRED = ["output-prefix", "epochs", "max-jitter", "early-stopping-patience", "batch-size",
                      "learning-rate", "learning-rate-plateau-patience"]

# train-solo / train-combined: "joint" trains profile and counts together (BPReveal's way);
# "profile-first" trains the profile alone, then the counts (fit_profile_first)
COUNTS_SCHEDULES = ("joint", "profile-first")
_COUNTS_SCHEDULE_SETTINGS = {
    "counts-schedule": {"enum": list(COUNTS_SCHEDULES)},
    "counts-phase-trainable": {"enum": ["all", "counts-layers"]},
    "counts-phase-learning-rate": {"type": "number", "exclusiveMinimum": 0},
}

SETTINGS_DEFAULTS = {
    "seed": 1234,
    "mixed-precision": False,
    "jit-compile": "auto",
    "reverse-complement": False,
    "checkpoint-dir": None,  # <output-prefix>.checkpoint
    "multi-device": "auto",
    "deterministic": "auto",
    "data-workers": 2,
    "data-cache-mb": 256,
}


def _step_schema(step: str) -> dict:
    settings_props = dict(_SETTINGS_COMMON)
    required = list(_SETTINGS_REQUIRED)
    if step in ("solo", "combined"):
        settings_props.update(_COUNTS_SCHEDULE_SETTINGS)
    if step == "solo":
        settings_props["architecture"] = _ARCHITECTURE
        required.append("architecture")
    elif step == "transformation":
        settings_props.update({
            "solo-model-file": {"type": "string", "minLength": 1},
            "input-length": _POS_INT,
            "output-length": _POS_INT,
            "profile-architecture": _TRANSFORM_SPEC,
            "counts-architecture": _TRANSFORM_SPEC,
            "counts-fit": {"enum": sorted(COUNTS_FIT_METHODS)},
        })
        required += ["solo-model-file", "input-length", "output-length", "profile-architecture",
                     "counts-architecture"]
    elif step == "combined":
        arch = copy.deepcopy(_ARCHITECTURE)
        arch["required"] = [k for k in arch["required"] if k != "model-name"]
        settings_props["architecture"] = arch
        settings_props["init-residual-counts"] = {"type": "boolean"}
        settings_props["transformation-model"] = {
            "type": "object",
            "additionalProperties": False,
            "required": ["transformation-model-file"],
            "properties": {"transformation-model-file": {"type": "string", "minLength": 1}},
        }
        required += ["architecture", "transformation-model"]
    else:  # pragma: no cover - internal misuse
        raise ValueError(f"unknown step {step!r}")
    extra = {}
    if step == "transformation":
        extra = {"counts-train-data": _DATA, "counts-val-data": _DATA}
    if step == "combined":
        extra = {"qc": _QC_SCHEMA}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"bpflow train-{step}",
        "type": "object",
        "additionalProperties": False,
        "required": ["settings", "train-data", "val-data", "heads"],
        "properties": {
            "settings": {"type": "object", "additionalProperties": False, "required": required,
                         "properties": settings_props},
            "train-data": _DATA,
            "val-data": _DATA,
            "heads": {"type": "array", "minItems": 1, "items": _head_schema(step == "combined")},
            "verbosity": VERBOSITY_SCHEMA,
            **extra,
        },
    }


SOLO_SCHEMA = _step_schema("solo")
TRANSFORMATION_SCHEMA = _step_schema("transformation")
COMBINED_SCHEMA = _step_schema("combined")
SCHEMAS = {"solo": SOLO_SCHEMA, "transformation": TRANSFORMATION_SCHEMA, "combined": COMBINED_SCHEMA}


# --------------------------------------------------------------------------- resolved config


@dataclass
class HeadSpec:
    """One head's training settings (resolved from the config)."""

    name: str
    num_tasks: int
    profile_weight: float
    counts_weight: float | None          # the starting lambda, None: derive from the data
    frac_target: float | None            # counts-loss-frac-target, None: lambda stays fixed
    use_bias_counts: bool = True
    revcomp_order: list[int] | None = None

    def as_model_head(self) -> dict:
        return {"head-name": self.name, "num-tasks": self.num_tasks, "use-bias-counts": self.use_bias_counts}


@dataclass
class TrainSettings:
    """The ``settings`` block with defaults filled in (BPReveal keys and bpflow's)."""

    output_prefix: str
    epochs: int
    max_jitter: int
    early_stopping_patience: int
    batch_size: int
    learning_rate: float
    plateau_patience: int
    seed: int = 1234
    mixed_precision: bool | str = False
    jit_compile: bool | str = "auto"
    reverse_complement: bool = False
    checkpoint_dir: str = ""
    multi_device: bool | str = "auto"
    deterministic: bool | str = "auto"
    data_workers: int = 2
    data_cache_mb: float = 256
    verbosity: str = "INFO"

    @classmethod
    def from_config(cls, config: dict) -> "TrainSettings":
        s = {**SETTINGS_DEFAULTS, **config["settings"]}
        prefix = s["output-prefix"]
        return cls(
            output_prefix=prefix, epochs=s["epochs"], max_jitter=s["max-jitter"],
            early_stopping_patience=s["early-stopping-patience"], batch_size=s["batch-size"],
            learning_rate=float(s["learning-rate"]), plateau_patience=s["learning-rate-plateau-patience"],
            seed=s["seed"], mixed_precision=s["mixed-precision"], jit_compile=s["jit-compile"],
            reverse_complement=s["reverse-complement"],
            checkpoint_dir=s["checkpoint-dir"] or f"{prefix}.checkpoint",
            multi_device=s["multi-device"], deterministic=s["deterministic"],
            data_workers=s["data-workers"], data_cache_mb=s["data-cache-mb"],
            verbosity=config.get("verbosity", "INFO"),
        )

    def as_dict(self) -> dict:
        return {
            "output-prefix": self.output_prefix, "epochs": self.epochs, "max-jitter": self.max_jitter,
            "early-stopping-patience": self.early_stopping_patience, "batch-size": self.batch_size,
            "learning-rate": self.learning_rate, "learning-rate-plateau-patience": self.plateau_patience,
            "seed": self.seed, "mixed-precision": self.mixed_precision, "jit-compile": self.jit_compile,
            "reverse-complement": self.reverse_complement, "checkpoint-dir": self.checkpoint_dir,
            "multi-device": self.multi_device, "deterministic": self.deterministic,
            "data-workers": self.data_workers, "data-cache-mb": self.data_cache_mb,
        }


def _as_list(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def check_config(config: dict, step: str, source: str = "config") -> tuple[TrainSettings, list[HeadSpec]]:
    """Validate a step's config (schema, then cross-key consistency) without reading data.

    Raises a one-line :class:`BpflowError` naming ``source`` and the key.
    """
    validate_config(config, SCHEMAS[step], source)
    settings = TrainSettings.from_config(config)
    heads: list[HeadSpec] = []
    names = set()
    for i, h in enumerate(config["heads"]):
        where = f"{source}: key heads/{i}"
        if h["head-name"] in names:
            raise BpflowError(f"{where}/head-name: duplicate head-name {h['head-name']!r}")
        names.add(h["head-name"])
        frac = h.get("counts-loss-frac-target")
        weight = h.get("counts-loss-weight")
        if frac is not None and h["profile-loss-weight"] == 0:
            raise BpflowError(f"{where}: counts-loss-frac-target needs profile-loss-weight > 0 (the "
                              "target is a fraction of the head's total loss)")
        if frac is not None and weight is not None and weight == 0:
            raise BpflowError(f"{where}/counts-loss-weight: must be > 0 when counts-loss-frac-target "
                              "adapts it (a zero weight cannot be scaled)")
        order = h.get("revcomp-task-order")
        if order is not None and order != "auto":
            revcomp_task_order(order, h["num-tasks"], f"{where}/revcomp-task-order")
        elif settings.reverse_complement:
            revcomp_task_order(order, h["num-tasks"], f"{where}/revcomp-task-order")
        heads.append(HeadSpec(
            name=h["head-name"], num_tasks=h["num-tasks"], profile_weight=float(h["profile-loss-weight"]),
            counts_weight=None if weight is None else float(weight),
            frac_target=None if frac is None else float(frac),
            use_bias_counts=bool(h.get("use-bias-counts", True)),
            revcomp_order=None if order in (None, "auto") else [int(x) for x in order]))

    s = config["settings"]
    if step in ("solo", "combined"):
        arch = s["architecture"]
        where = f"{source}: key settings/architecture"
        if arch.get("model-args"):
            logger.warning("%s/model-args: %r is ignored (bpflow's bpnet takes no extra arguments)", where,
                           arch["model-args"])
        needed = lengths.needed_input_length(arch["output-length"], arch["layers"],
                                             arch["input-filter-width"], arch["output-filter-width"])
        if arch["input-length"] < needed:
            raise BpflowError(f"{where}/input-length: {arch['input-length']} is too short: output-length "
                              f"{arch['output-length']} with {arch['layers']} layers and filter widths "
                              f"{arch['input-filter-width']}/{arch['output-filter-width']} needs {needed}")
        if (arch["input-length"] - needed) % 2:
            raise BpflowError(f"{where}/input-length: {arch['input-length']} exceeds the needed {needed} by an "
                              "odd number of bases; use the needed length or add an even number")
    if s.get("counts-schedule", "joint") == "joint":
        for key in ("counts-phase-trainable", "counts-phase-learning-rate"):
            if key in s:
                raise BpflowError(f"{source}: key settings/{key}: only used with counts-schedule "
                                  "\"profile-first\"")
    if step == "transformation":
        _check_file(s["solo-model-file"], f"{source}: key settings/solo-model-file")
        if s["profile-architecture"]["name"] == "passthrough" and s["counts-architecture"]["name"] == "passthrough":
            raise BpflowError(f"{source}: key settings: profile-architecture and counts-architecture are both "
                              "passthrough, so the transformation has nothing to train")
        if ("counts-train-data" in config) != ("counts-val-data" in config):
            raise BpflowError(f"{source}: keys counts-train-data and counts-val-data go together (give both "
                              "or neither)")
        if "counts-fit" in s and "counts-train-data" not in config:
            raise BpflowError(f"{source}: key settings/counts-fit: only used with counts-train-data")
        if "counts-train-data" in config:
            spec = s["counts-architecture"]
            if spec["name"] != "simple" or "linear" not in spec.get("types", []):
                raise BpflowError(f"{source}: key settings/counts-architecture: with counts-train-data the "
                                  "counts part is fitted in closed form and needs a simple transformation with "
                                  "a linear term, e.g. {\"name\": \"simple\", \"types\": [\"linear\"]}")
            for key in ("counts-train-data", "counts-val-data"):
                for i, path in enumerate(_as_list(config[key])):
                    _check_file(path, f"{source}: key {key}" + (f"/{i}" if not isinstance(config[key], str) else ""))
    if step == "combined":
        _check_file(s["transformation-model"]["transformation-model-file"],
                    f"{source}: key settings/transformation-model/transformation-model-file")
        qc = config.get("qc") or {}
        for key in ("truth-json", "background-data"):
            if key in qc:
                _check_file(qc[key], f"{source}: key qc/{key}")
        if "data" in qc:
            for i, path in enumerate(_as_list(qc["data"])):
                _check_file(path, f"{source}: key qc/data" + (f"/{i}" if not isinstance(qc["data"], str) else ""))
    for key in ("train-data", "val-data"):
        for i, path in enumerate(_as_list(config[key])):
            _check_file(path, f"{source}: key {key}" + (f"/{i}" if not isinstance(config[key], str) else ""))
    return settings, heads


def _check_file(path, where: str) -> None:
    if not Path(path).is_file():
        raise BpflowError(f"{where}: file not found: {path}")


# --------------------------------------------------------------------------- adaptive lambda


def initial_counts_weight(mean_counts: float, frac_target: float) -> float:
    """BPReveal's starting lambda: 37 x mean total counts per training window x target."""
    return INITIAL_LAMBDA_FACTOR * float(mean_counts) * float(frac_target)


def update_counts_weight(weight: float, profile_loss: float, counts_loss: float, frac_target: float,
                         epoch: int) -> float:
    """The counts-loss weight (lambda) for the epoch after ``epoch`` (0-based).

    Aims for ``lambda * c / (lambda * c + p) = t``: the candidate is ``t * p / ((1 - t) * c)``
    where ``p`` is the head's weighted profile loss and ``c`` its raw counts loss.  After
    epochs 0 and 1 lambda jumps to the candidate, changing by at most 10x; later it moves to
    ``0.3 * candidate + 0.7 * lambda``, changing by at most 2x.
    """
    t = float(frac_target)
    if counts_loss > 0:
        candidate = t * profile_loss / ((1.0 - t) * counts_loss)
    else:
        candidate = math.inf  # counts already perfect: raise lambda as far as allowed
    if epoch <= 1:
        new, factor = candidate, 10.0
    else:
        new, factor = 0.3 * candidate + 0.7 * weight, 2.0
    return float(min(max(new, weight / factor), weight * factor))


# --------------------------------------------------------------------------- runtime


@dataclass
class Runtime:
    """Backend, devices and precision of a training run (see :func:`runtime`)."""

    backend: str
    num_devices: int
    device_kind: str
    deterministic: bool
    precision: str
    strategy: object = None

    def scope(self):
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def describe(self) -> dict:
        return {"backend": self.backend, "devices": self.num_devices, "device-kind": self.device_kind,
                "deterministic": self.deterministic, "precision": self.precision,
                "bpflow-version": __version__, "keras-version": keras.__version__}


def _tf_devices():
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return gpus, tf.config.list_logical_devices("CPU")


@contextlib.contextmanager
def runtime(settings: TrainSettings):
    """Seed, determinism, mixed precision and data parallelism for one run; restores Keras's
    global dtype policy and distribution afterwards."""
    backend = keras.backend.backend()
    strategy = None
    data_parallel = None
    num_devices, device_kind = 1, "cpu"
    if backend == "tensorflow":
        import tensorflow as tf

        gpus, cpus = _tf_devices()
        device_kind = "gpu" if gpus else "cpu"
        devices = gpus if gpus else cpus
        if (settings.multi_device is True or (settings.multi_device == "auto" and gpus)) and len(devices) > 1:
            strategy = tf.distribute.MirroredStrategy([d.name for d in devices])
            num_devices = strategy.num_replicas_in_sync
    elif backend == "jax":
        import jax

        devices = jax.devices()
        device_kind = devices[0].platform
        if (settings.multi_device is True or (settings.multi_device == "auto" and device_kind != "cpu")) \
                and len(devices) > 1:
            data_parallel = keras.distribution.DataParallel(devices=devices)
            num_devices = len(devices)
    elif settings.multi_device is True:
        logger.warning("multi-device training is supported with the tensorflow and jax backends, not %s",
                       backend)
    if settings.batch_size % num_devices:
        raise BpflowError(f"settings/batch-size: {settings.batch_size} is not a multiple of the "
                          f"{num_devices} devices used for data-parallel training")
    deterministic = settings.deterministic
    if deterministic == "auto":
        deterministic = device_kind == "cpu"
    precision = "float32"
    if settings.mixed_precision:
        precision = "mixed_bfloat16" if settings.mixed_precision == "bfloat16" else "mixed_float16"

    prev_policy = keras.config.dtype_policy()
    prev_distribution = keras.distribution.distribution() if data_parallel is not None else None
    try:
        if data_parallel is not None:
            keras.distribution.set_distribution(data_parallel)
        keras.utils.set_random_seed(settings.seed)
        if deterministic and backend == "tensorflow":
            import tensorflow as tf

            tf.config.experimental.enable_op_determinism()
        elif deterministic and backend == "jax" and device_kind == "gpu" and \
                "xla_gpu_deterministic_ops" not in os.environ.get("XLA_FLAGS", ""):
            logger.warning("deterministic: under JAX on a GPU set XLA_FLAGS=--xla_gpu_deterministic_ops=true "
                           "before starting bpflow for bit-identical reruns")
        keras.config.set_dtype_policy(precision)
        yield Runtime(backend, num_devices, device_kind, bool(deterministic), precision, strategy)
    finally:
        keras.config.set_dtype_policy(prev_policy)
        if data_parallel is not None:
            keras.distribution.set_distribution(prev_distribution)


@contextlib.contextmanager
def _float32_policy():
    prev = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(prev)


# --------------------------------------------------------------------------- compile


def _squared_error(y_true, y_pred):
    y_pred = keras.ops.convert_to_tensor(y_pred)
    y_true = keras.ops.cast(y_true, y_pred.dtype)
    return keras.ops.mean(keras.ops.square(y_true - y_pred), axis=-1)


def _output_names(model, heads: Sequence[HeadSpec]) -> tuple[list[str], list[str]]:
    names = list(model.output_names)
    n = len(heads)
    if len(names) != 2 * n:
        raise BpflowError(f"model {model.name!r} has {len(names)} outputs, but the config has {n} heads "
                          f"(expected {2 * n}: a profile and a counts output per head)")
    for i, head in enumerate(heads):
        tasks = model.outputs[i].shape[-1]
        if tasks != head.num_tasks:
            raise BpflowError(f"model {model.name!r}: head {i} ({head.name}) has {tasks} task(s), the config "
                              f"says num-tasks {head.num_tasks}")
    return names[:n], names[n:]


def compile_model(model, heads: Sequence[HeadSpec], learning_rate: float, counts_weights: Sequence[float],
                  jit_compile="auto") -> list:
    """Compile ``model`` with bpflow's losses; return the lambda variables (one per head).

    Losses: ``profile-loss-weight`` x :class:`MultinomialNLL` per profile output and
    :class:`CountsMSE` (weight lambda) per counts output.  Weighted metrics ``nll`` and ``mse``
    report the raw (unweighted) terms.  The lambda variables are attached to the model
    (attributes ``counts_loss_weight_<i>``) so that the JAX backend reads them as state instead
    of baking them into the compiled step; :func:`detach_counts_weights` removes them.
    """
    _output_names(model, heads)
    detach_counts_weights(model)  # a model compiled before (an earlier stage) keeps no stale lambda
    losses = [MultinomialNLL(name=f"profile_nll_{i}") for i in range(len(heads))]
    counts = [CountsMSE(w, name=f"counts_mse_{i}") for i, w in enumerate(counts_weights)]
    weights = [h.profile_weight for h in heads] + [1.0] * len(heads)
    metrics = ([[keras.metrics.MeanMetricWrapper(multinomial_nll, name="nll")] for _ in heads]
               + [[keras.metrics.MeanMetricWrapper(_squared_error, name="mse")] for _ in heads])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss=losses + counts,
                  loss_weights=weights, weighted_metrics=metrics, jit_compile=jit_compile)
    variables = []
    for i, loss in enumerate(counts):
        setattr(model, f"counts_loss_weight_{i}", loss.weight)
        variables.append(loss.weight)
    return variables


def detach_counts_weights(model) -> None:
    """Remove the lambda variables that :func:`compile_model` attached to ``model``."""
    i = 0
    while hasattr(model, f"counts_loss_weight_{i}"):
        delattr(model, f"counts_loss_weight_{i}")
        i += 1


def _value(variable) -> np.ndarray:
    return np.array(keras.ops.convert_to_numpy(variable.value))


def _model_variables(model, exclude) -> list:
    ids = {id(v) for v in exclude}
    return [v for v in model.weights if id(v) not in ids]


def copy_weights(source, target, exclude=()) -> None:
    """Copy weights between two builds of the same architecture, matched by variable path
    (by position when paths are not unique)."""
    src = _model_variables(source, exclude)
    dst = list(target.weights)
    src_paths = [v.path for v in src]
    dst_paths = [v.path for v in dst]
    if len(set(src_paths)) == len(src) and sorted(src_paths) == sorted(dst_paths):
        by_path = {v.path: v for v in src}
        pairs = [(by_path[v.path], v) for v in dst]
    elif len(src) == len(dst):
        pairs = list(zip(src, dst))
    else:
        raise BpflowError(f"cannot copy weights of {source.name!r} ({len(src)} variables) to "
                          f"{target.name!r} ({len(dst)} variables)")
    for s, d in pairs:
        value = _value(s)
        if tuple(value.shape) != tuple(d.shape):
            raise BpflowError(f"weight {s.path} has shape {value.shape}, the rebuilt model expects {d.shape}")
        d.assign(value)


# --------------------------------------------------------------------------- callbacks


class _NanWatch(keras.callbacks.Callback):
    """Flags the first batch whose running training loss is NaN or infinite and stops fit.

    The loss is read in Keras's helper threads (``async_safe``: no device sync per step); the
    stop is requested from ``on_train_batch_begin`` in the training loop's own thread (setting
    ``stop_training`` from a helper thread can end an epoch while the JAX backend still holds
    donated buffers), so training stops within a step or two of the bad batch.
    """

    async_safe = True

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.bad = None
        self._lock = threading.Lock()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.bad is not None:
            self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        if not logs or "loss" not in logs:
            return
        value = float(np.asarray(logs["loss"]))
        if not math.isfinite(value):
            with self._lock:  # helper threads may report batches out of order: keep the first
                if self.bad is None or (self.epoch, int(batch)) < self.bad[:2]:
                    self.bad = (self.epoch, int(batch), value)


def _terms(logs: dict, prefix: str, profile_names, counts_names, heads) -> dict:
    out = {}
    for head, pname, cname in zip(heads, profile_names, counts_names):
        out[f"{head.name}_profile"] = float(logs[f"{prefix}{pname}_nll"])
        out[f"{head.name}_counts"] = float(logs[f"{prefix}{cname}_mse"])
    return out


def _total(terms: dict, heads, lambdas) -> float:
    return float(sum(h.profile_weight * terms[f"{h.name}_profile"] + lam * terms[f"{h.name}_counts"]
                     for h, lam in zip(heads, lambdas)))


class TrainingState:
    """Everything about a run besides the weights: epochs done, lambdas, learning rate, early
    stopping and plateau counters, the best epoch's validation terms, and the history.

    :meth:`end_epoch` is the per-epoch bookkeeping (pure Python, no Keras); the checkpoint
    stores :meth:`to_json`.
    """

    def __init__(self, heads: Sequence[HeadSpec], lambdas: Sequence[float], learning_rate: float,
                 epochs: int, early_stopping_patience: int, plateau_patience: int):
        self.heads = list(heads)
        self.epochs = int(epochs)
        self.early_stopping_patience = int(early_stopping_patience)
        self.plateau_patience = int(plateau_patience)
        self.epochs_done = 0
        self.lambdas = [float(x) for x in lambdas]
        self.learning_rate = float(learning_rate)
        self.best_terms: dict | None = None
        self.best_epoch: int | None = None
        self.es_wait = 0
        self.lr_wait = 0
        self.stopped = False
        self.stop_reason = ""
        self.initial: dict = {}
        self.history: dict[str, list] = {"epoch": [], "loss": [], "val_loss": []}
        for h in self.heads:
            for key in (f"{h.name}_profile", f"{h.name}_counts"):
                self.history[key] = []
                self.history[f"val_{key}"] = []
            self.history[f"{h.name}_counts_weight"] = []
        self.history["learning_rate"] = []
        self.history["seconds"] = []

    _SAVED = ("epochs_done", "lambdas", "learning_rate", "best_terms", "best_epoch", "es_wait", "lr_wait",
              "stopped", "stop_reason", "initial", "history")

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self._SAVED}

    def load_json(self, obj: dict) -> None:
        for k in self._SAVED:
            setattr(self, k, obj[k])

    def best_total(self) -> float | None:
        """The best validation loss, re-expressed with the current lambdas."""
        if self.best_terms is None:
            return None
        return _total(self.best_terms, self.heads, self.lambdas)

    def end_epoch(self, epoch: int, train_terms: dict, val_terms: dict, seconds: float = 0.0) -> dict:
        """Record epoch ``epoch`` (0-based) and decide what comes next.

        ``*_terms``: raw per-head losses ``<head>_profile`` (multinomial NLL) and
        ``<head>_counts`` (MSE).  The epoch's losses use the lambdas it was trained with; the
        validation loss is compared with the best epoch's terms re-expressed with those same
        lambdas.  Then the plateau and early-stopping counters move, and lambda is updated for
        the next epoch from the validation terms after epoch 0 and the training terms later.
        Returns ``{"improved", "loss", "val_loss", "lambdas" (used), "learning_rate" (used),
        "notes"}``.
        """
        lambdas = list(self.lambdas)
        learning_rate = self.learning_rate
        loss = _total(train_terms, self.heads, lambdas)
        val_loss = _total(val_terms, self.heads, lambdas)
        h = self.history
        h["epoch"].append(epoch + 1)
        h["loss"].append(loss)
        h["val_loss"].append(val_loss)
        for key, v in train_terms.items():
            h[key].append(v)
        for key, v in val_terms.items():
            h[f"val_{key}"].append(v)
        for head, lam in zip(self.heads, lambdas):
            h[f"{head.name}_counts_weight"].append(lam)
        h["learning_rate"].append(learning_rate)
        h["seconds"].append(seconds)

        best = self.best_total()
        improved = best is None or val_loss < best
        notes = []
        if improved:
            self.best_terms, self.best_epoch = dict(val_terms), epoch + 1
            self.es_wait = self.lr_wait = 0
            notes.append("best")
        else:
            self.es_wait += 1
            self.lr_wait += 1
            if self.lr_wait >= self.plateau_patience:
                self.learning_rate /= 2.0
                self.lr_wait = 0
                notes.append(f"learning rate -> {self.learning_rate:.3g}")
            if self.es_wait >= self.early_stopping_patience:
                self.stopped = True
                self.stop_reason = (f"early stopping: no improvement of the validation loss for "
                                    f"{self.es_wait} epochs (best: epoch {self.best_epoch})")
        source = val_terms if epoch == 0 else train_terms
        for i, head in enumerate(self.heads):
            if head.frac_target is None:
                continue
            p = head.profile_weight * source[f"{head.name}_profile"]
            c = source[f"{head.name}_counts"]
            self.lambdas[i] = update_counts_weight(self.lambdas[i], p, c, head.frac_target, epoch)
        self.epochs_done = epoch + 1
        if self.epochs_done >= self.epochs and not self.stopped:
            self.stopped = True
            self.stop_reason = f"finished all {self.epochs} epochs"
        return {"improved": improved, "loss": loss, "val_loss": val_loss, "lambdas": lambdas,
                "learning_rate": learning_rate, "notes": notes}


class _Controller(keras.callbacks.Callback):
    """Per-epoch bookkeeping around :meth:`TrainingState.end_epoch`: best weights, lambda and
    learning-rate assignment, the log line, the checkpoint."""

    def __init__(self, trainer: "_Fit"):
        super().__init__()
        self.trainer = trainer
        self.t0 = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.trainer.train_data.set_epoch(epoch)
        self.t0 = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        tr = self.trainer
        if tr.nan_watch.bad is not None:
            self.model.stop_training = True
            return
        seconds = time.monotonic() - self.t0
        st = tr.state
        train_terms = _terms(logs, "", tr.profile_names, tr.counts_names, tr.heads)
        val_terms = _terms(logs, "val_", tr.profile_names, tr.counts_names, tr.heads)
        bad = [k for k, v in {**train_terms, **{f"val_{k}": v for k, v in val_terms.items()}}.items()
               if not math.isfinite(v)]
        if bad:
            tr.nan_watch.bad = (epoch, None, bad[0])
            self.model.stop_training = True
            return
        out = st.end_epoch(epoch, train_terms, val_terms, seconds)
        if out["improved"]:
            tr.best_weights = [_value(v) for v in tr.model_variables]
        for var, lam in zip(tr.lambda_vars, st.lambdas):
            var.assign(lam)
        self.model.optimizer.learning_rate = st.learning_rate
        logger.info("%s", _epoch_line(epoch + 1, st.epochs, seconds, out["loss"], out["val_loss"], train_terms,
                                      val_terms, tr.heads, out["lambdas"], st.lambdas, out["learning_rate"],
                                      out["notes"]))
        tr.write_checkpoint()
        if st.stopped:
            if st.stop_reason.startswith("early"):
                logger.info("%s", st.stop_reason)
            self.model.stop_training = True


def _epoch_line(epoch, epochs, seconds, loss, val_loss, train_terms, val_terms, heads, lambdas, new_lambdas,
                lr, notes) -> str:
    parts = [f"epoch {epoch}/{epochs} ({seconds:.1f} s): loss {loss:.4g} val {val_loss:.4g}"]
    for h, lam, new in zip(heads, lambdas, new_lambdas):
        lam_txt = f"lambda {lam:.4g}" + (f"->{new:.4g}" if new != lam else "")
        parts.append(f"{h.name}: profile {train_terms[f'{h.name}_profile']:.4g} val "
                     f"{val_terms[f'{h.name}_profile']:.4g}, counts {train_terms[f'{h.name}_counts']:.4g} val "
                     f"{val_terms[f'{h.name}_counts']:.4g}, {lam_txt}")
    parts.append(f"lr {lr:.3g}")
    line = " | ".join(parts)
    if notes:
        line += " [" + "; ".join(notes) + "]"
    return line


# --------------------------------------------------------------------------- fitting


def fingerprint(step: str, config: dict, files: Sequence) -> str:
    """A hash of the config, the backend and the size and mtime of every input file: a
    checkpoint or a finished run is reused only when it matches."""
    items = []
    for path in files:
        st = Path(path).stat()
        items.append([str(Path(path).resolve()), st.st_size, st.st_mtime_ns])
    blob = json.dumps({"step": step, "config": config, "files": items, "backend": keras.backend.backend(),
                       "format": CHECKPOINT_FORMAT}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class _Fit:
    """One call of :func:`fit_model` (holds what the callbacks need)."""

    def __init__(self, model, heads, settings, rt, train_data, val_data, lambda_vars, checkpoint_path,
                 fingerprint_value):
        self.model = model
        self.heads = heads
        self.settings = settings
        self.rt = rt
        self.train_data = train_data
        self.val_data = val_data
        self.lambda_vars = lambda_vars
        self.model_variables = _model_variables(model, lambda_vars)
        self.profile_names, self.counts_names = _output_names(model, heads)
        self.checkpoint_path = Path(checkpoint_path)
        self.fingerprint = fingerprint_value
        self.state: TrainingState | None = None
        self.best_weights: list | None = None
        self.nan_watch = _NanWatch()

    def write_checkpoint(self) -> None:
        arrays = {}
        for i, v in enumerate(self.model_variables):
            arrays[f"w_{i}"] = _value(v)
        opt_vars = list(self.model.optimizer.variables)
        for i, v in enumerate(opt_vars):
            arrays[f"o_{i}"] = _value(v)
        best_is_current = self.state.best_epoch == self.state.epochs_done
        if self.best_weights is not None and not best_is_current:
            for i, w in enumerate(self.best_weights):
                arrays[f"b_{i}"] = w
        meta = {
            "format": CHECKPOINT_FORMAT, "fingerprint": self.fingerprint,
            "variables": [v.path for v in self.model_variables],
            "optimizer-variables": [v.path for v in opt_vars],
            "best-is-current": bool(best_is_current), "has-best": self.best_weights is not None,
            "state": self.state.to_json(),
        }
        arrays["meta"] = np.array(json.dumps(meta))
        self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(self.checkpoint_path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

    def read_checkpoint(self) -> bool:
        """Restore from the checkpoint if there is one for this run; True if restored."""
        path = self.checkpoint_path
        if not path.is_file():
            return False
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("fingerprint") != self.fingerprint:
                    logger.warning("%s was written for a different config or different input files; "
                                   "starting afresh", path)
                    return False
                if meta["variables"] != [v.path for v in self.model_variables]:
                    logger.warning("%s does not match the model's variables; starting afresh", path)
                    return False
                weights = [z[f"w_{i}"] for i in range(len(self.model_variables))]
                with self.rt.scope():
                    if not self.model.optimizer.built:
                        self.model.optimizer.build(self.model.trainable_variables)
                opt_vars = list(self.model.optimizer.variables)
                if meta["optimizer-variables"] != [v.path for v in opt_vars]:
                    logger.warning("%s does not match the optimizer's variables; starting afresh", path)
                    return False
                opt_values = [z[f"o_{i}"] for i in range(len(opt_vars))]
                best = None
                if meta["has-best"]:
                    best = weights if meta["best-is-current"] else \
                        [z[f"b_{i}"] for i in range(len(self.model_variables))]
        except (OSError, KeyError, ValueError) as err:
            logger.warning("cannot read the checkpoint %s (%s); starting afresh", path, err)
            return False
        for v, w in zip(self.model_variables, weights):
            v.assign(w)
        for v, w in zip(opt_vars, opt_values):
            v.assign(w)
        self.state.load_json(meta["state"])
        self.best_weights = [np.array(w) for w in best] if best is not None else None
        for var, lam in zip(self.lambda_vars, self.state.lambdas):
            var.assign(lam)
        self.model.optimizer.learning_rate = self.state.learning_rate
        logger.info("resuming from %s after epoch %d", path, self.state.epochs_done)
        return True


def _verbose() -> int:
    return 1 if sys.stdout.isatty() and sys.stderr.isatty() else 0


def fit_model(model, heads: Sequence[HeadSpec], settings: TrainSettings, rt: Runtime, train_data, val_data, *,
              fingerprint_value: str, checkpoint_path=None, callbacks=(), batcher_options=None) -> dict:
    """Train ``model`` (built inside ``rt.scope()``) and leave it at its best weights.

    ``train_data`` / ``val_data``: an HDF5 path or a list of paths (concatenated).  The model's
    outputs must be each head's profile logits then each head's log counts.  Returns the
    record of the run: ``history`` (per-epoch terms), ``initial`` (validation terms before
    training), ``best-epoch``, ``stop-reason``, data statistics.

    Resumes from ``checkpoint_path`` (default ``<checkpoint-dir>/checkpoint.npz``) when it
    holds a checkpoint with the same ``fingerprint_value``; writes it after every epoch.
    Raises :class:`BpflowError` on a NaN or infinite loss.
    """
    input_length = model.inputs[0].shape[1]
    output_length = model.outputs[0].shape[1]
    num_tasks = [h.num_tasks for h in heads]
    _output_names(model, heads)
    orders = [h.revcomp_order for h in heads]
    options = dict(cache_mb=settings.data_cache_mb, workers=settings.data_workers)
    options.update(batcher_options or {})
    train = H5Batcher(train_data, num_tasks, input_length, output_length, settings.batch_size,
                      max_jitter=settings.max_jitter, shuffle=True, seed=settings.seed,
                      reverse_complement=settings.reverse_complement, revcomp_orders=orders,
                      batch_multiple=rt.num_devices, name="train-data", **options)
    val = None
    try:
        val = H5Batcher(val_data, num_tasks, input_length, output_length, settings.batch_size, max_jitter=0,
                        shuffle=False, batch_multiple=rt.num_devices, sample_weights=True, name="val-data",
                        **options)
        logger.info("%s", train.describe())
        logger.info("%s", val.describe())
        t0 = time.monotonic()
        train_stats = train.scan()
        val_stats = val.scan()
        for head, ts, vs in zip(heads, train_stats, val_stats):
            logger.info("head %s: mean counts per window %.4g (train), %.4g (val); windows without counts: "
                        "%d of %d (train), %d of %d (val)", head.name, ts.mean_total, vs.mean_total,
                        ts.zero_windows, ts.num_samples, vs.zero_windows, vs.num_samples)
        logger.debug("data checked in %.1f s", time.monotonic() - t0)
        lambdas = []
        for head, stats in zip(heads, train_stats):
            if head.counts_weight is not None:
                lambdas.append(head.counts_weight)
                continue
            if stats.mean_total <= 0:
                raise BpflowError(f"train-data: head {head.name!r} has no counts in any window, so "
                                  "counts-loss-frac-target cannot set lambda; give counts-loss-weight")
            lambdas.append(initial_counts_weight(stats.mean_total, head.frac_target))
        with rt.scope():
            lambda_vars = compile_model(model, heads, settings.learning_rate, lambdas, settings.jit_compile)
        fit = _Fit(model, heads, settings, rt, train, val, lambda_vars,
                   checkpoint_path or Path(settings.checkpoint_dir) / "checkpoint.npz", fingerprint_value)
        fit.state = TrainingState(heads, lambdas, settings.learning_rate, settings.epochs,
                                  settings.early_stopping_patience, settings.plateau_patience)
        resumed = fit.read_checkpoint()
        if not resumed:
            initial = model.evaluate(val, verbose=0, return_dict=True)
            terms = _terms(initial, "", fit.profile_names, fit.counts_names, heads)
            fit.state.initial = {"val_loss": _total(terms, heads, lambdas),
                                 **{f"val_{k}": v for k, v in terms.items()}}
            logger.info("before training: val loss %.4g (%s)", fit.state.initial["val_loss"],
                        ", ".join(f"{h.name} lambda {lam:.4g}" for h, lam in zip(heads, lambdas)))
        st = fit.state
        if not st.stopped and st.epochs_done < settings.epochs:
            train.set_epoch(st.epochs_done)  # Keras may fetch a first batch before on_epoch_begin
            model.fit(train, validation_data=val, epochs=settings.epochs, initial_epoch=st.epochs_done,
                      callbacks=[fit.nan_watch, _Controller(fit), *callbacks], verbose=_verbose(), shuffle=False)
        if fit.nan_watch.bad is not None:
            epoch, batch, what = fit.nan_watch.bad
            where = f"epoch {epoch + 1}" + (f", batch {batch + 1}" if batch is not None else "")
            raise BpflowError(f"training stopped: the loss became NaN or infinite in {where} ({what}); "
                              "check the data for extreme values or lower learning-rate (the checkpoint "
                              "keeps the last good epoch)")
        if fit.best_weights is not None:
            for v, w in zip(fit.model_variables, fit.best_weights):
                v.assign(w)
        record = {
            "initial": st.initial,
            "history": st.history,
            "best-epoch": st.best_epoch,
            "best-val-loss": st.history["val_loss"][st.best_epoch - 1] if st.best_epoch else None,
            "epochs-run": st.epochs_done,
            "stopped-early": st.stop_reason.startswith("early"),
            "stop-reason": st.stop_reason,
            "final-counts-loss-weight": {h.name: lam for h, lam in zip(heads, st.lambdas)},
            "final-learning-rate": st.learning_rate,
            "train-samples": train.num_samples,
            "val-samples": val.num_samples,
            "train-counts": {h.name: vars(s) for h, s in zip(heads, train_stats)},
            "val-counts": {h.name: vars(s) for h, s in zip(heads, val_stats)},
        }
        logger.info("best epoch %s (val loss %.4g); %s", st.best_epoch, record["best-val-loss"] or float("nan"),
                    st.stop_reason)
        return record
    finally:
        train.close()
        if val is not None:
            val.close()


# --------------------------------------------------------------------------- the three steps


def output_paths(step: str, prefix: str) -> dict[str, Path]:
    """The files a step writes, by role."""
    out = {"history": Path(f"{prefix}.history.json"), "plot": Path(f"{prefix}.loss.png")}
    if step == "combined":
        out["combined"] = Path(f"{prefix}_combined.keras")
        out["residual"] = Path(f"{prefix}_residual.keras")
        out["qc"] = Path(f"{prefix}.qc.json")
    else:
        out["model"] = Path(f"{prefix}.keras")
    return out


def _load_model(path, what: str):
    import bpflow  # noqa: F401,F811  (registers custom objects)

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as err:  # keras raises many types for a bad file
        raise BpflowError(f"{what}: cannot load the model {path}: {err}") from None


def build_solo(config: dict, heads: Sequence[HeadSpec]):
    """The solo model of a train-solo config."""
    from bpflow.models import soloModel

    a = config["settings"]["architecture"]
    try:
        return soloModel(a["input-length"], a["output-length"], a["filters"], a["layers"],
                         a["input-filter-width"], a["output-filter-width"], [h.as_model_head() for h in heads],
                         a["model-name"])
    except ValueError as err:
        raise BpflowError(f"settings/architecture: {err}") from None


def build_transformation(config: dict, heads: Sequence[HeadSpec]):
    """The transformation model of a train-transformation config (loads the solo model)."""
    from bpflow.models import transformationModel

    s = config["settings"]
    solo = _load_model(s["solo-model-file"], "settings/solo-model-file")
    in_len, out_len = solo.inputs[0].shape[1], solo.outputs[0].shape[1]
    if in_len != s["input-length"] or out_len != s["output-length"]:
        raise BpflowError(f"settings/input-length, output-length: {s['input-length']}/{s['output-length']} "
                          f"differ from the solo model {s['solo-model-file']} ({in_len}/{out_len})")
    try:
        return transformationModel(solo, s["profile-architecture"], s["counts-architecture"],
                                   [h.as_model_head() for h in heads])
    except ValueError as err:
        raise BpflowError(f"settings/solo-model-file: {err}") from None


def build_combined(config: dict, heads: Sequence[HeadSpec]):
    """(combined, residual, bias) of a train-combined config (loads the transformation model)."""
    from bpflow.models import combinedModel

    s = config["settings"]
    a = s["architecture"]
    path = s["transformation-model"]["transformation-model-file"]
    bias = _load_model(path, "settings/transformation-model/transformation-model-file")
    try:
        return combinedModel(a["input-length"], a["output-length"], a["filters"], a["layers"],
                             a["input-filter-width"], a["output-filter-width"],
                             [h.as_model_head() for h in heads], bias)
    except ValueError as err:
        raise BpflowError(f"settings/architecture: {err}") from None


def _save_model(model, path: Path) -> None:
    with atomic_output(path) as tmp:
        model.save(tmp)


def _input_files(step: str, config: dict) -> list:
    files = _as_list(config["train-data"]) + _as_list(config["val-data"])
    s = config["settings"]
    if step == "transformation":
        files.append(s["solo-model-file"])
        for key in ("counts-train-data", "counts-val-data"):
            if key in config:
                files += _as_list(config[key])
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
    ``<prefix>.history.json``).  ``step`` is "solo", "transformation" or "combined"."""
    settings, heads = check_config(config, step, source)
    setup_logging(config.get("verbosity", "INFO"))
    paths = output_paths(step, settings.output_prefix)
    fp = fingerprint(step, config, _input_files(step, config))
    done = _already_done(paths, fp)
    if done is not None:
        logger.info("train-%s: %s is complete for this config and these inputs; nothing to do",
                    step, paths["history"])
        return done
    checkpoint = Path(settings.checkpoint_dir) / "checkpoint.npz"
    builders = {"solo": build_solo, "transformation": build_transformation, "combined": build_combined}
    start = time.monotonic()
    with runtime(settings) as rt:
        logger.info("train-%s: backend %s, %d %s device(s), %s%s", step, rt.backend, rt.num_devices,
                    rt.device_kind, rt.precision, ", deterministic" if rt.deterministic else "")
        with rt.scope():
            built = builders[step](config, heads)
        model = built[0] if step == "combined" else built
        counts_init = None
        if step == "combined" and config["settings"].get("init-residual-counts", True):
            counts_init = init_residual_counts(built[1], built[2], heads, config["train-data"])
        if step == "transformation" and "counts-train-data" in config:
            record = fit_transformation_parts(model, config, heads, settings, rt, fingerprint_value=fp,
                                              checkpoint_path=checkpoint, callbacks=callbacks)
        elif step != "transformation" and config["settings"].get("counts-schedule", "joint") == "profile-first":
            record = fit_profile_first(model, built[1] if step == "combined" else model, config, heads, settings,
                                       rt, fingerprint_value=fp, checkpoint_path=checkpoint, callbacks=callbacks)
        else:
            record = fit_model(model, heads, settings, rt, config["train-data"], config["val-data"],
                               fingerprint_value=fp, checkpoint_path=checkpoint, callbacks=callbacks)
        environment = rt.describe()
        if counts_init is not None:
            record["residual-counts-init"] = counts_init
    detach_counts_weights(model)

    # Clean copies (float32, no optimizer, no distribution) of the trained weights.
    with _float32_policy():
        if step == "combined":
            combined, residual, bias = build_combined(config, heads)
            copy_weights(model, combined)
            _save_model(combined, paths["combined"])
            _save_model(residual, paths["residual"])
            qc_report = combined_qc(config, heads, combined, residual, bias)
            write_json_atomic(paths["qc"], qc_report)
            record["qc-warnings"] = qc_report["warnings"]
        else:
            clean = builders[step](config, heads)
            copy_weights(model, clean)
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
    import warnings

    from bpflow.plots import plot_loss_history

    with warnings.catch_warnings():  # a lambda of 0 (a part trained alone) on the log-scaled lambda panel
        warnings.filterwarnings("ignore", message="Data has no positive values")
        plot_loss_history(record, paths["plot"])
    write_json_atomic(paths["history"], record)
    for path in [checkpoint, *(_phase_checkpoint(checkpoint, phase) for phase in PHASES)]:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    with contextlib.suppress(OSError):
        checkpoint.parent.rmdir()
    logger.info("train-%s: wrote %s", step, ", ".join(str(p) for p in paths.values()))
    return record


def _empty_record(heads: Sequence[HeadSpec], reason: str) -> dict:
    """A fit_model-like record for a part with nothing to train."""
    return {"initial": {}, "history": {"epoch": []}, "best-epoch": None, "best-val-loss": None, "epochs-run": 0,
            "stopped-early": False, "stop-reason": reason,
            "final-counts-loss-weight": {h.name: 0.0 for h in heads}, "final-learning-rate": None,
            "train-samples": 0, "val-samples": 0, "train-counts": {}, "val-counts": {}}


def fit_transformation_parts(model, config: dict, heads: Sequence[HeadSpec], settings: TrainSettings, rt: Runtime,
                             *, fingerprint_value: str, checkpoint_path=None, callbacks=()) -> dict:
    """bpflow's transformation recipe: the profile part trained on ``train-data`` / ``val-data``
    (the peaks: the counts part frozen, counts loss weight 0), then the counts part fitted in
    closed form (``settings/counts-fit``: "shift" or "linear", :mod:`bpflow.qc`) to
    log(1 + observed total) on ``counts-train-data`` (background regions, where the bias
    explains all reads), its MSE reported on ``counts-val-data``.

    Returns :func:`fit_model`'s record of the profile part plus ``counts-fit``.
    """
    import dataclasses

    from bpflow import qc

    s = config["settings"]
    for h in heads:
        model.get_layer(f"transformation_logcounts_{h.name}").trainable = False
    profile_heads = [dataclasses.replace(h, counts_weight=0.0, frac_target=None) for h in heads]
    if s["profile-architecture"]["name"] == "passthrough":
        logger.info("profile transformation: passthrough, nothing to train")
        record = _empty_record(heads, "profile transformation is passthrough: nothing to train")
    else:
        logger.info("profile transformation: trained on train-data (counts part frozen)")
        record = fit_model(model, profile_heads, settings, rt, config["train-data"], config["val-data"],
                           fingerprint_value=fingerprint_value, checkpoint_path=checkpoint_path,
                           callbacks=callbacks)
    solo = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    record["counts-fit"] = qc.fit_counts_transform(
        model, solo, [h.name for h in heads], config["counts-train-data"], config["counts-val-data"],
        s.get("counts-fit", "shift"), s["input-length"], s["output-length"])
    record["recipe"] = "profile on train-data, counts on counts-train-data"
    return record


PHASES = ("profile", "counts")


def _phase_checkpoint(checkpoint: Path, phase: str) -> Path:
    return checkpoint.with_name(f"{checkpoint.stem}-{phase}{checkpoint.suffix}")


def _phase_summary(name: str, rec: dict, trainable) -> dict:
    return {"phase": name, "trainable": trainable, "epochs-run": rec["epochs-run"], "best-epoch": rec["best-epoch"],
            "best-val-loss": rec["best-val-loss"], "stop-reason": rec["stop-reason"],
            "final-learning-rate": rec["final-learning-rate"]}


def fit_profile_first(model, body, config: dict, heads: Sequence[HeadSpec], settings: TrainSettings, rt: Runtime,
                      *, fingerprint_value: str, checkpoint_path: Path, callbacks=()) -> dict:
    """``settings/counts-schedule`` "profile-first" (train-solo, train-combined).

    Phase 1 trains with a counts loss weight of 0, so the network's body serves the profile
    alone; phase 2 then trains the counts with the heads' counts weights (and
    ``counts-loss-frac-target``), starting from phase 1's best weights, at
    ``counts-phase-learning-rate`` (default: a tenth of ``learning-rate``).  With
    ``counts-phase-trainable`` "all" (default) every trainable weight moves in phase 2, the
    profile loss included, so the body learns what the counts need without being pulled far
    from the profile optimum; "counts-layers" trains only ``body``'s ``*_logcounts_<head>``
    Dense layers on the frozen body.  ``body`` is the model whose counts layers those are (the
    solo model, or the residual of a combined model).  Each phase has the step's epochs and
    patience and its own checkpoint.  Returns :func:`fit_model`'s record with the two phases'
    histories joined (``history/phase`` says which epoch belongs to which) and ``phases``
    summarising each.
    """
    import dataclasses

    s = config["settings"]
    counts_layers = {layer.name for layer in body.layers
                     if any(layer.name.endswith(f"_logcounts_{h.name}") for h in heads)}
    profile_heads = [dataclasses.replace(h, counts_weight=0.0, frac_target=None) for h in heads]
    logger.info("counts-schedule profile-first: phase 1 of 2, the profile (counts loss weight 0)")
    first = fit_model(model, profile_heads, settings, rt, config["train-data"], config["val-data"],
                      fingerprint_value=f"{fingerprint_value}/profile",
                      checkpoint_path=_phase_checkpoint(checkpoint_path, "profile"), callbacks=callbacks)
    trainable = s.get("counts-phase-trainable", "all")
    frozen = []
    if trainable == "counts-layers":
        frozen = [layer for layer in body.layers if layer.name not in counts_layers and layer.trainable]
    for layer in frozen:
        layer.trainable = False
    phase_settings = dataclasses.replace(
        settings, learning_rate=float(s.get("counts-phase-learning-rate", settings.learning_rate / 10)))
    try:
        logger.info("counts-schedule profile-first: phase 2 of 2, the counts (%s trainable, learning rate %.4g)",
                    "all weights" if not frozen else ", ".join(sorted(counts_layers)),
                    phase_settings.learning_rate)
        second = fit_model(model, heads, phase_settings, rt, config["train-data"], config["val-data"],
                           fingerprint_value=f"{fingerprint_value}/counts",
                           checkpoint_path=_phase_checkpoint(checkpoint_path, "counts"), callbacks=callbacks)
    finally:
        for layer in frozen:
            layer.trainable = True
    offset = first["epochs-run"]
    history = {}
    for key, values in first["history"].items():
        later = second["history"].get(key, [])
        history[key] = list(values) + ([e + offset for e in later] if key == "epoch" else list(later))
    history["phase"] = [PHASES[0]] * len(first["history"]["epoch"]) + [PHASES[1]] * len(second["history"]["epoch"])
    record = dict(second)
    record.update({
        "initial": first["initial"],
        "history": history,
        "best-epoch": None if second["best-epoch"] is None else second["best-epoch"] + offset,
        "epochs-run": first["epochs-run"] + second["epochs-run"],
        "phases": [_phase_summary(PHASES[0], first, "all"),
                   _phase_summary(PHASES[1], second, "all" if not frozen else sorted(counts_layers))],
    })
    return record


def init_residual_counts(residual, bias, heads: Sequence[HeadSpec], train_data, max_samples: int = 2048) -> dict:
    """Start the residual's counts where the data are: each head's counts Dense bias is set so
    that the untrained combined model predicts the mean total counts of the training windows,
    log(mean(1 + total) - mean(exp(bias log counts))) with bias counts (at least 5 % of the
    mean), log(mean(1 + total)) without.  Otherwise the first epochs of a combined model whose
    bias branch predicts the bias level (recipe bpflow) go to the counts error of a residual
    starting near 0 reads, at the expense of the profile.  Returns {head: value}."""
    from bpflow import qc
    from bpflow.predict import model_shape

    shape = model_shape(residual)
    seqs, totals = qc.read_windows(_as_list(train_data), shape.input_length, shape.output_length, len(heads),
                                   max_samples=max_samples)
    if not len(seqs):
        return {}
    _, bias_lc = qc.predict_logcounts(bias, seqs)
    out = {}
    for i, h in enumerate(heads):
        target = float(np.mean(1.0 + totals[:, i]))
        if h.use_bias_counts:
            rest = target - float(np.mean(np.exp(bias_lc[i].astype(np.float64))))
            value = math.log(max(rest, 0.05 * target))
        else:
            value = math.log(target)
        dense = residual.get_layer(f"residual_logcounts_{h.name}")
        dense.bias.assign(np.full(dense.bias.shape, value, dtype=np.float32))
        out[h.name] = value
        logger.info("residual counts of head %s start at log %.4g reads (mean training total %.4g)",
                    h.name, value, target - 1)
    return out


def combined_qc(config: dict, heads: Sequence[HeadSpec], combined, residual, bias) -> dict:
    """The QC report of a trained combined model (``<prefix>.qc.json``; docs/training.md):
    counts checks on the ``qc/data`` windows (default: val-data) and, when motifs are known
    (``qc/truth-json``, ``qc/motifs``, ``qc/bias-motifs``), marginal-footprint checks on
    ``qc/background-data``.  Every warning is also logged."""
    from bpflow import qc

    opts = config.get("qc") or {}
    report = {"format": qc.QC_FORMAT, "step": "train-combined", "counts": None, "motifs": None, "warnings": []}
    if not opts.get("enabled", True):
        report["disabled"] = True
        return report
    names = [h.name for h in heads]
    data = opts.get("data", config["val-data"])
    report["counts"] = qc.counts_qc(combined, residual, bias, _as_list(data), names,
                                    [h.use_bias_counts for h in heads],
                                    min_residual_share=opts.get("min-residual-share", qc.MIN_RESIDUAL_SHARE))
    report["counts"]["data"] = _as_list(data)
    tf_motifs, bias_motifs = qc.load_qc_motifs(opts)
    if tf_motifs or bias_motifs:
        from bpflow.footprints import background_sequences

        background = opts.get("background-data", _as_list(data)[0])
        seqs = background_sequences(background, combined.inputs[0].shape[1],
                                    num=opts.get("num-sequences", qc.QC_NUM_SEQUENCES),
                                    seed=int(config["settings"].get("seed", SETTINGS_DEFAULTS["seed"])))
        report["motifs"] = qc.motif_qc(
            residual, bias, seqs, tf_motifs, bias_motifs,
            max_bias_tf_ratio=opts.get("max-bias-tf-ratio", qc.MAX_BIAS_TF_RATIO),
            max_residual_bias_ratio=opts.get("max-residual-bias-ratio", qc.MAX_RESIDUAL_BIAS_RATIO),
            head_names=names)
        report["motifs"]["background-data"] = str(background)
    report["warnings"] = qc.all_warnings(report)
    for h, v in (report["counts"] or {}).get("heads", {}).items():
        logger.info("QC %s: counts Pearson on %d validation windows: combined %.3f, bias %.3f, residual %.3f; "
                    "residual share of predicted counts %.3g", h, report["counts"]["num-windows"],
                    v["pearson-combined"], v["pearson-bias"], v["pearson-residual"], v["residual-share"])
    for h, v in (report["motifs"] or {}).get("heads", {}).items():
        logger.info("QC %s: footprints: residual TF %.4g, residual bias-motif %.4g, bias-model TF %.4g",
                    h, v["residual-tf-response"], v["residual-bias-response"], v["bias-tf-response"])
    for w in report["warnings"]:
        logger.warning("QC WARNING: %s", w)
    if not report["warnings"]:
        logger.info("QC: no warnings")
    return report


def train_solo(config: dict, *, source: str = "train-solo config", callbacks=()) -> dict:
    """Train a solo (bias) model from a config dict; see :func:`run_step`."""
    return run_step("solo", config, source=source, callbacks=callbacks)


def train_transformation(config: dict, *, source: str = "train-transformation config", callbacks=()) -> dict:
    """Fit the transformation of a frozen solo model; see :func:`run_step`."""
    return run_step("transformation", config, source=source, callbacks=callbacks)


def train_combined(config: dict, *, source: str = "train-combined config", callbacks=()) -> dict:
    """Train the residual inside the combined model; see :func:`run_step`."""
    return run_step("combined", config, source=source, callbacks=callbacks)


# --------------------------------------------------------------------------- CLI


def _main(step: str, argv: list[str]) -> int:
    path, config = read_step_config(argv, f"bpflow train-{step}", f"Train the {step} model from a JSON config.",
                                    "docs/training.md")
    run_step(step, config, source=path)
    return 0


def train_solo_main(argv: list[str]) -> int:
    return _main("solo", argv)


def train_transformation_main(argv: list[str]) -> int:
    return _main("transformation", argv)


def train_combined_main(argv: list[str]) -> int:
    return _main("combined", argv)
