"""A training step's config resolved: :func:`check_config` validates it (the step's JSON
schema, bpflow/schemas/train-<step>.schema.json, then the rules a schema cannot express)
without reading data, and returns :class:`TrainSettings` and a :class:`HeadSpec` per head.

The steps are "bias" (``bpflow train-bias``, BPReveal's solo model), "transformation" and
"combined"; every key is documented in docs/training.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from bpflow import lengths, schemas
from bpflow.formats.dataset import as_list
from bpflow.formats.sequence import revcomp_task_order
from bpflow.utils import BpflowError

logger = logging.getLogger("bpflow.train")

STEPS = ("bias", "transformation", "combined")
COUNTS_SCHEDULES = ("joint", "profile-first")
COUNTS_FIT_METHODS = ("shift", "linear")

# Learning rates above this are legal (the schema allows up to 1) but unusual for Adam: a warning.
HIGH_LEARNING_RATE = 0.05

# A combined stage's counts phase (profile-first, counts-phase-trainable "all") with fewer epochs
# than this is short: on the quality suite 3-4 epochs left the counts 0.004-0.015 x oracle
# under a 15-epoch phase's and 6-8 epochs 0.001-0.004 (benchmarks/README.md, 2026-12-05
# fourteenth session) - a warning before training and a QC check after it.
MIN_COUNTS_PHASE_EPOCHS = 8
SHORT_COUNTS_PHASE = (
    f"fewer than the {MIN_COUNTS_PHASE_EPOCHS} the quality suite found enough (3-4 epochs left the counts "
    f"0.004-0.015 x oracle short); give it more (counts-phase-epochs >= {MIN_COUNTS_PHASE_EPOCHS}, or "
    f"epochs >= {4 * MIN_COUNTS_PHASE_EPOCHS} with its default of a quarter)"
)

# The default counts phase (both steps) is a quarter of ``epochs`` but no longer than this: on
# the quality suite the combined stage's counts phase had its best epoch within its first 15 on
# every setting when it could run longer, every profile phase stopped early at 20-35 epochs
# (19 full-scale runs), and with ``epochs`` 100 a 25-epoch phase took 1.12x the time of a
# 15-epoch one for a residual no better (benchmarks/README.md, twenty-third and twenty-fourth
# sessions) - so there any ``epochs`` from 60 up trains what 60 does.
MAX_DEFAULT_COUNTS_PHASE_EPOCHS = 15


# settings keys only profile-first uses (the workflow's COUNTS_SCHEDULE_KEYS[1:], a copy that
# tests/test_workflow.py checks)
PROFILE_FIRST_KEYS = (
    "counts-phase-trainable",
    "counts-phase-learning-rate",
    "counts-phase-schedule",
    "counts-phase-epochs",
    "profile-phase-stop-delta",
    "profile-phase-patience-after-halving",
)


@dataclass
class HeadSpec:
    """One head's training settings (resolved from the config)."""

    name: str
    num_tasks: int
    profile_weight: float
    counts_weight: float | None  # the starting lambda, None: derive from the data
    frac_target: float | None  # counts-loss-frac-target, None: lambda stays fixed
    use_bias_counts: bool = True
    revcomp_order: list[int] | None = None
    counts_combination: str = "sum"  # combined only: how the bias counts join (models.COUNTS_COMBINATIONS)

    @property
    def product_counts(self) -> bool:
        """A combined head whose counts follow the product of the bias and residual tracks."""
        return self.use_bias_counts and self.counts_combination == "product"

    def as_model_head(self) -> dict:
        return {
            "head-name": self.name,
            "num-tasks": self.num_tasks,
            "use-bias-counts": self.use_bias_counts,
            "counts-combination": self.counts_combination,
        }


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
    min_delta: float = 0.0
    plateau_min_delta: float = 0.0
    seed: int = 1234
    mixed_precision: bool | str = False
    jit_compile: bool | str = "auto"
    reverse_complement: bool = False
    checkpoint_dir: str = ""
    multi_device: bool | str = "auto"
    deterministic: bool | str = "auto"
    data_workers: int = 2
    data_cache_mb: float = 256
    warmup_epochs: float = 0.0
    # set by profile-first for its profile phase (profile-phase-stop-delta): the plateau ends
    # the phase instead of halving the learning rate
    plateau_stops: bool = False
    # set by profile-first for its profile phase (profile-phase-patience-after-halving): once
    # the plateau has halved the rate, the phase ends after this many epochs without a
    # significant improvement (0: early-stopping-patience alone)
    halved_patience: int = 0
    # "plateau" (halve on a plateau) or "cosine" (from the rate to 0 over the phase's steps;
    # set by profile-first for its counts phase from counts-phase-schedule)
    lr_schedule: str = "plateau"

    @classmethod
    def from_config(cls, config: dict) -> "TrainSettings":
        """From a config whose defaults are filled in (:func:`bpflow.schemas.validate`)."""
        s = config["settings"]
        prefix = s["output-prefix"]
        return cls(
            output_prefix=prefix,
            epochs=s["epochs"],
            max_jitter=s["max-jitter"],
            early_stopping_patience=s["early-stopping-patience"],
            batch_size=s["batch-size"],
            learning_rate=float(s["learning-rate"]),
            plateau_patience=s["learning-rate-plateau-patience"],
            min_delta=float(s["early-stopping-min-delta"]),
            plateau_min_delta=float(s.get("learning-rate-plateau-min-delta", 0.0)),
            seed=s["seed"],
            mixed_precision=s["mixed-precision"],
            jit_compile=s["jit-compile"],
            reverse_complement=s["reverse-complement"],
            checkpoint_dir=s.get("checkpoint-dir") or f"{prefix}.checkpoint",
            multi_device=s["multi-device"],
            deterministic=s["deterministic"],
            data_workers=s["data-workers"],
            data_cache_mb=s["data-cache-mb"],
            warmup_epochs=float(s.get("learning-rate-warmup-epochs", 0.0)),
        )

    def as_dict(self) -> dict:
        return {
            "output-prefix": self.output_prefix,
            "epochs": self.epochs,
            "max-jitter": self.max_jitter,
            "early-stopping-patience": self.early_stopping_patience,
            "batch-size": self.batch_size,
            "learning-rate": self.learning_rate,
            "learning-rate-plateau-patience": self.plateau_patience,
            "early-stopping-min-delta": self.min_delta,
            "learning-rate-plateau-min-delta": self.plateau_min_delta,
            "seed": self.seed,
            "mixed-precision": self.mixed_precision,
            "jit-compile": self.jit_compile,
            "reverse-complement": self.reverse_complement,
            "checkpoint-dir": self.checkpoint_dir,
            "multi-device": self.multi_device,
            "deterministic": self.deterministic,
            "data-workers": self.data_workers,
            "data-cache-mb": self.data_cache_mb,
            "learning-rate-warmup-epochs": self.warmup_epochs,
        }


def step_name(step: str) -> str:
    """The canonical step ("bias", "transformation", "combined"); "solo" is an alias of "bias"."""
    step = "bias" if step == "solo" else step
    if step not in STEPS:
        raise ValueError(f"unknown training step {step!r}")
    return step


def counts_phase_epochs(settings: dict) -> int:
    """The epochs reserved for profile-first's counts phase (``counts-phase-epochs``, default a
    quarter of ``epochs``, at least 1 and at most :data:`MAX_DEFAULT_COUNTS_PHASE_EPOCHS`)."""
    given = settings.get("counts-phase-epochs")
    return int(given or min(MAX_DEFAULT_COUNTS_PHASE_EPOCHS, max(1, settings["epochs"] // 4)))


def check_config(config: dict, step: str, source: str = "config") -> tuple[dict, TrainSettings, list[HeadSpec]]:
    """Validate a step's config (schema, then cross-key consistency) without reading data.

    Returns (the config with its defaults filled in, the settings, the heads).  Raises a
    one-line :class:`BpflowError` naming ``source`` and the key.
    """
    step = step_name(step)
    raw = config
    config = schemas.validate(raw, f"train-{step}", source)
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
            raise BpflowError(
                f"{where}: counts-loss-frac-target needs profile-loss-weight > 0 (the "
                "target is a fraction of the head's total loss)"
            )
        if frac is not None and weight is not None and weight == 0:
            raise BpflowError(
                f"{where}/counts-loss-weight: must be > 0 when counts-loss-frac-target "
                "adapts it (a zero weight cannot be scaled)"
            )
        order = h.get("revcomp-task-order")
        if order is not None and order != "auto":
            revcomp_task_order(order, h["num-tasks"], f"{where}/revcomp-task-order")
        elif settings.reverse_complement:
            revcomp_task_order(order, h["num-tasks"], f"{where}/revcomp-task-order")
        heads.append(
            HeadSpec(
                name=h["head-name"],
                num_tasks=h["num-tasks"],
                profile_weight=float(h["profile-loss-weight"]),
                counts_weight=None if weight is None else float(weight),
                frac_target=None if frac is None else float(frac),
                use_bias_counts=bool(h.get("use-bias-counts", True)),  # combined only (schema default)
                counts_combination=h.get("counts-combination", "sum"),
                revcomp_order=None if order in (None, "auto") else [int(x) for x in order],
            )
        )

    s = config["settings"]
    for key in ("learning-rate", "counts-phase-learning-rate"):
        if key in s and s[key] > HIGH_LEARNING_RATE:
            logger.warning(
                "%s: key settings/%s: %g is unusually high for Adam (typically 1e-4 to 1e-2); training may diverge",
                source,
                key,
                s[key],
            )
    if step in ("bias", "combined"):
        arch = s["architecture"]
        where = f"{source}: key settings/architecture"
        if arch.get("model-args"):
            logger.warning(
                "%s/model-args: %r is ignored (bpflow's bpnet takes no extra arguments)", where, arch["model-args"]
            )
        needed = lengths.needed_input_length(
            arch["output-length"], arch["layers"], arch["input-filter-width"], arch["output-filter-width"]
        )
        if arch["input-length"] < needed:
            raise BpflowError(
                f"{where}/input-length: {arch['input-length']} is too short: output-length "
                f"{arch['output-length']} with {arch['layers']} layers and filter widths "
                f"{arch['input-filter-width']}/{arch['output-filter-width']} needs {needed}"
            )
        if (arch["input-length"] - needed) % 2:
            raise BpflowError(
                f"{where}/input-length: {arch['input-length']} exceeds the needed {needed} by an "
                "odd number of bases; use the needed length or add an even number"
            )
    if step != "transformation" and s["counts-schedule"] == "joint":
        for key in PROFILE_FIRST_KEYS:
            if key in raw["settings"]:
                raise BpflowError(f'{source}: key settings/{key}: only used with counts-schedule "profile-first"')
    if step != "transformation" and s["counts-schedule"] == "profile-first" and s["epochs"] < 2:
        raise BpflowError(
            f'{source}: key settings/epochs: counts-schedule "profile-first" needs at least 2 epochs '
            "(a profile phase and a counts phase share them)"
        )
    if s.get("counts-phase-epochs", 0) >= s["epochs"]:
        raise BpflowError(
            f"{source}: key settings/counts-phase-epochs: {s['counts-phase-epochs']} leaves the profile "
            f"phase no epoch of the {s['epochs']} (epochs bounds both phases together)"
        )
    if (
        step == "combined"
        and s["counts-schedule"] == "profile-first"
        and s.get("counts-phase-trainable", "all") == "all"
        and counts_phase_epochs(s) < MIN_COUNTS_PHASE_EPOCHS
    ):
        logger.warning(
            "%s: key settings/%s: the counts phase gets %d epochs, %s",
            source,
            "counts-phase-epochs" if s.get("counts-phase-epochs") else "epochs",
            counts_phase_epochs(s),
            SHORT_COUNTS_PHASE,
        )
    if step == "transformation":
        _check_file(s["solo-model-file"], f"{source}: key settings/solo-model-file")
        if s["profile-architecture"]["name"] == "passthrough" and s["counts-architecture"]["name"] == "passthrough":
            raise BpflowError(
                f"{source}: key settings: profile-architecture and counts-architecture are both "
                "passthrough, so the transformation has nothing to train"
            )
        if ("counts-train-data" in config) != ("counts-val-data" in config):
            raise BpflowError(
                f"{source}: keys counts-train-data and counts-val-data go together (give both or neither)"
            )
        if "counts-fit" in s and "counts-train-data" not in config:
            raise BpflowError(f"{source}: key settings/counts-fit: only used with counts-train-data")
        if "counts-train-data" in config:
            spec = s["counts-architecture"]
            if spec["name"] != "simple" or "linear" not in spec.get("types", []):
                raise BpflowError(
                    f"{source}: key settings/counts-architecture: with counts-train-data the "
                    "counts part is fitted in closed form and needs a simple transformation with "
                    'a linear term, e.g. {"name": "simple", "types": ["linear"]}'
                )
            for key in ("counts-train-data", "counts-val-data"):
                check_files(config[key], f"{source}: key {key}")
    if step == "combined":
        _check_file(
            s["transformation-model"]["transformation-model-file"],
            f"{source}: key settings/transformation-model/transformation-model-file",
        )
    for key in ("train-data", "val-data"):
        check_files(config[key], f"{source}: key {key}")
    return config, settings, heads


def _check_file(path, where: str) -> None:
    if not Path(path).is_file():
        raise BpflowError(f"{where}: file not found: {path}")


def check_files(files, where: str) -> None:
    """Every file of a one-file-or-list key exists (``where``/<index> names a list entry)."""
    for i, path in enumerate(as_list(files)):
        _check_file(path, where + (f"/{i}" if not isinstance(files, str) else ""))


# Keys that say how to run or where to write, not what the weights become: a change of any
# of them neither invalidates a checkpoint nor repeats a finished run.
RUN_TIME_KEYS = ("verbosity",)
RUN_TIME_SETTINGS = (
    "output-prefix",
    "checkpoint-dir",
    "data-workers",
    "data-cache-mb",
    "combined-model-file",
    "residual-model-file",
)


def weights_config(config: dict) -> dict:
    """The part of a (filled) config that determines the trained weights: everything but
    :data:`RUN_TIME_KEYS` and :data:`RUN_TIME_SETTINGS`."""
    out = {k: v for k, v in config.items() if k not in RUN_TIME_KEYS}
    out["settings"] = {k: v for k, v in config["settings"].items() if k not in RUN_TIME_SETTINGS}
    return out
