"""Marginal footprints: how a model's prediction changes when a motif is inserted.

A motif (a consensus string or a PWM) is written into the center of each of N background
sequences; the model predicts every sequence with and without the insertion, and the mean
predicted profiles are compared.  The mean difference is the model's *marginal footprint* of
the motif: what the motif does to the prediction on average over backgrounds.  The scalar
responses summarise it (definitions in docs/footprints.md):

* ``profile-response`` = sum over the window (the inserted bases and ``window`` bases on each
  side) and over the head's tasks of |mean profile with - mean profile without|, divided by
  the mean predicted total counts without the insertion.  Profiles are in predicted counts
  (softmax(logits) x exp(log counts)), so this is the fraction of the model's predicted reads
  that the motif moves (adds, removes or displaces) near the insertion.  Scale-free, >= 0,
  exactly 0 for a model that ignores the motif.
* ``shape-response``: the same with the normalised profiles softmax(logits) (counts ignored).
* ``counts-response``: mean change of the predicted log counts (paired per background).
* ``chrombpnet-score``: the number ChromBPNet thresholds at 0.003 - the maximum over positions
  of the mean normalised (task-summed) profile with the motif inserted.

Entry points: :func:`footprint` (one model, one motif), :func:`footprint_table` (several
models x several motifs -> a JSON-able dict), :func:`background_sequences` (sequences from a
dataset HDF5), :func:`insert_motif`, :func:`response_ratio`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from bpflow import schemas
from bpflow.evaluate.inference import model_shape, predict_arrays
from bpflow.evaluate.measures import softmax_joint
from bpflow.formats.dataset import TrainingDataset
from bpflow.formats.model_file import load_model
from bpflow.formats.motifs import as_motif, load_motifs, simulation_motifs
from bpflow.formats.sequence import one_hot_decode, reverse_complement_one_hot
from bpflow.lengths import crop_offset
from bpflow.utils import BpflowError, atomic_output, format_value, read_step_config, write_json_atomic

logger = logging.getLogger("bpflow.footprints")

ORIENTATIONS = ("forward", "reverse")
DEFAULT_WINDOW = 100
DEFAULT_CHUNK = 512  # sequences predicted per call (bounds memory)


def motif_start(sequence_length: int, motif_length: int) -> int:
    """First base of a motif inserted at the center: L // 2 - m // 2 (the motif's middle base,
    or the base right of its middle for even m, lands on base L // 2)."""
    return sequence_length // 2 - motif_length // 2


def insert_motif(sequences: np.ndarray, instances: np.ndarray) -> np.ndarray:
    """Copy of one-hot ``sequences`` (N, L, 4) with ``instances`` (m, 4) or (N, m, 4) written
    over bases ``motif_start(L, m) .. + m - 1``; nothing else changes."""
    seqs = np.array(sequences, copy=True)
    inst = np.asarray(instances)
    m = inst.shape[-2]
    if seqs.ndim != 3 or seqs.shape[2] != 4:
        raise BpflowError(f"sequences must have shape (N, length, 4), got {seqs.shape}")
    if m > seqs.shape[1]:
        raise BpflowError(f"the motif ({m} bp) is longer than the sequences ({seqs.shape[1]} bp)")
    s = motif_start(seqs.shape[1], m)
    seqs[:, s : s + m, :] = inst
    return seqs


def background_sequences(
    data_h5, input_length: int | None = None, num: int | None = None, seed: int = 0, strands: str = "auto"
) -> np.ndarray:
    """One-hot sequences (n, L, 4) uint8 from a dataset HDF5's ``sequence`` array.

    Sequences are center-cropped to ``input_length`` (default: as stored).  With ``strands``
    "auto", only forward samples are used when the dataset has ``coords_strand`` (a
    reverse-complement pair would count a region twice); "all" uses every sample.  With
    ``num`` smaller than the number available, ``num`` samples are drawn without replacement
    (deterministic given ``seed``) and returned in file order.
    """
    if strands not in ("auto", "all"):
        raise BpflowError(f"strands {strands!r} must be 'auto' or 'all'")
    with TrainingDataset(data_h5) as data:
        index = np.flatnonzero(data.sample_mask(strands)[0])
        if num is not None and num < len(index):
            rng = np.random.default_rng(seed)
            index = np.sort(rng.choice(index, size=int(num), replace=False))
        if not len(index):
            raise BpflowError(f"{data_h5}: no background sequence to use")
        return data.sequences(index, input_length)


# ----------------------------------------------------------------------------------------------
# One model, one motif


@dataclass
class HeadFootprint:
    """Mean predictions of one head with and without the insertion, and the responses.

    Arrays are (output_length, num_tasks), float64, means over the backgrounds (and, for the
    ``with`` arrays, over the orientations).  ``motif_bounds`` are the inserted bases in output
    coordinates (may extend past the output window for a model whose flanks hold them),
    ``window_bounds`` the response window (clipped to the output).
    """

    head: str
    profile_without: np.ndarray
    profile_with: np.ndarray
    probs_without: np.ndarray
    probs_with: np.ndarray
    logcounts_without: float
    logcounts_with: float
    total_without: float
    total_with: float
    counts_response: float
    motif_bounds: tuple[int, int]
    window_bounds: tuple[int, int]
    num_sequences: int
    orientations: tuple[str, ...]
    chrombpnet_score: float
    chrombpnet_score_without: float
    extra: dict = field(default_factory=dict)

    @property
    def footprint(self) -> np.ndarray:
        """Mean predicted profile with minus without the insertion (output_length, tasks)."""
        return self.profile_with - self.profile_without

    @property
    def profile_response_per_task(self) -> np.ndarray:
        a, b = self.window_bounds
        if self.total_without <= 0:
            return np.full(self.profile_with.shape[1], math.nan)
        return np.abs(self.footprint[a:b]).sum(axis=0) / self.total_without

    @property
    def profile_response(self) -> float:
        return float(self.profile_response_per_task.sum())

    @property
    def shape_response(self) -> float:
        a, b = self.window_bounds
        return float(np.abs(self.probs_with[a:b] - self.probs_without[a:b]).sum())

    def summary(self) -> dict:
        """The scalar responses as a JSON-able dict (NaN -> None)."""
        out = {
            "profile-response": self.profile_response,
            "profile-response-per-task": [float(v) for v in self.profile_response_per_task],
            "shape-response": self.shape_response,
            "counts-response": self.counts_response,
            "logcounts-without": self.logcounts_without,
            "logcounts-with": self.logcounts_with,
            "mean-total-without": self.total_without,
            "mean-total-with": self.total_with,
            "chrombpnet-score": self.chrombpnet_score,
            "chrombpnet-score-without": self.chrombpnet_score_without,
            "motif-bounds": list(self.motif_bounds),
            "window-bounds": list(self.window_bounds),
            "num-sequences": self.num_sequences,
            "orientations": list(self.orientations),
        }
        return _clean(out)

    def profiles(self, flank: int | None = None) -> dict:
        """Mean profiles around the insertion as lists (JSON-able), for plots.

        Positions ``center - flank .. center + flank - 1`` of the output (all of it when
        ``flank`` is None), where center is the output position of sequence base L // 2;
        ``positions`` are relative to it.  Per task: ``with``, ``without`` (predicted counts)
        and ``footprint`` (their difference).
        """
        out_len = self.profile_with.shape[0]
        center = self.extra["center"]
        a, b = (0, out_len) if flank is None else (max(0, center - flank), min(out_len, center + flank))
        return {
            "positions": list(range(a - center, b - center)),
            "with": self.profile_with[a:b].T.tolist(),
            "without": self.profile_without[a:b].T.tolist(),
            "footprint": self.footprint[a:b].T.tolist(),
        }


def _clean(obj):
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _as_orientations(orientations) -> tuple[str, ...]:
    if isinstance(orientations, str):
        orientations = ("forward", "reverse") if orientations == "both" else (orientations,)
    orientations = tuple(orientations)
    bad = [o for o in orientations if o not in ORIENTATIONS]
    if bad or not orientations or len(set(orientations)) != len(orientations):
        raise BpflowError(
            f"orientations {orientations!r}: use 'forward', 'reverse', 'both' or a list of "
            "distinct 'forward' / 'reverse'"
        )
    return orientations


class _Accumulator:
    """Running sums over backgrounds of the predicted profiles, probabilities and log counts."""

    def __init__(self, out_len: int, tasks: int):
        self.profile = np.zeros((out_len, tasks))
        self.probs = np.zeros((out_len, tasks))
        self.probs_summed = np.zeros(out_len)
        self.logcounts = 0.0
        self.total = 0.0
        self.n = 0

    def add(self, logits: np.ndarray, logcounts: np.ndarray) -> None:
        probs = softmax_joint(logits)
        totals = np.exp(np.asarray(logcounts, dtype=np.float64))
        self.profile += (probs * totals[:, None, None]).sum(axis=0)
        self.probs += probs.sum(axis=0)
        self.probs_summed += probs.sum(axis=(0, 2))
        self.logcounts += float(np.sum(logcounts, dtype=np.float64))
        self.total += float(totals.sum())
        self.n += len(totals)

    def mean(self, name: str):
        return getattr(self, name) / max(self.n, 1)


def _prepare(model, sequences, motif, orientations, window, head_names):
    spec = as_motif(motif)
    orients = _as_orientations(orientations)
    if window < 0:
        raise BpflowError(f"window must be >= 0, got {window}")
    shape = model_shape(model)
    seqs = np.asarray(sequences)
    if seqs.ndim != 3 or seqs.shape[2] != 4 or not len(seqs):
        raise BpflowError(f"background sequences must have shape (N > 0, length, 4), got {seqs.shape}")
    a = crop_offset(seqs.shape[1], shape.input_length, "the background sequences")
    seqs = seqs[:, a : a + shape.input_length, :]
    names = list(head_names) if head_names is not None else [f"head_{i}" for i in range(shape.num_heads)]
    if len(names) != shape.num_heads:
        raise BpflowError(f"head_names lists {len(names)} heads but the model has {shape.num_heads}")
    if spec.length > shape.input_length:
        raise BpflowError(
            f"motif {spec.name!r} ({spec.length} bp) is longer than the model input ({shape.input_length} bp)"
        )
    return spec, orients, shape, seqs, names


class _Baseline:
    """Predictions without the insertion: profile sums and per-sequence log counts per head."""

    def __init__(self, model, shape, seqs, run, chunk_size):
        self.acc = [_Accumulator(shape.output_length, t) for t in shape.num_tasks]
        parts = [[] for _ in shape.num_tasks]
        for a in range(0, len(seqs), chunk_size):
            lg, lc = run(seqs[a : a + chunk_size])
            for h in range(shape.num_heads):
                self.acc[h].add(lg[h], lc[h])
                parts[h].append(np.asarray(lc[h], dtype=np.float64))
        self.logcounts = [np.concatenate(p) for p in parts]


def footprint(
    model,
    sequences: np.ndarray,
    motif,
    *,
    orientations="forward",
    window: int = DEFAULT_WINDOW,
    batch_size: int = 64,
    revcomp_average: bool = False,
    task_orders=None,
    pwm_mode: str = "consensus",
    seed: int = 0,
    head_names: Sequence[str] | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict[str, HeadFootprint]:
    """Marginal footprint of ``motif`` for every head of ``model``.

    ``sequences``: one-hot backgrounds (N, L, 4), center-cropped to the model's input length
    when longer (the difference must be even).  ``motif``: see :func:`as_motif`.  The motif is
    inserted at :func:`motif_start`; ``orientations`` "forward", "reverse" (its reverse
    complement at the same bases) or "both" (the ``with`` profiles are then the mean over the
    two).  ``window``: bases on each side of the inserted bases over which the profile
    responses are summed.  ``revcomp_average`` / ``task_orders`` are passed to
    :func:`bpflow.evaluate.inference.predict_arrays` (the model's own strand averaging).  ``chunk_size``
    sequences are predicted at a time (memory).  Returns {head name: :class:`HeadFootprint`},
    heads named ``head_<i>`` unless ``head_names``.
    """
    return _footprint(
        model,
        sequences,
        motif,
        orientations,
        window,
        batch_size,
        revcomp_average,
        task_orders,
        pwm_mode,
        seed,
        head_names,
        chunk_size,
        None,
    )


def _footprint(
    model,
    sequences,
    motif,
    orientations,
    window,
    batch_size,
    revcomp_average,
    task_orders,
    pwm_mode,
    seed,
    head_names,
    chunk_size,
    baseline: _Baseline | None,
):
    spec, orients, shape, seqs, names = _prepare(model, sequences, motif, orientations, window, head_names)
    n, length, m = seqs.shape[0], shape.input_length, spec.length

    def run(x):
        return predict_arrays(model, x, batch_size=batch_size, revcomp_average=revcomp_average, task_orders=task_orders)

    if baseline is None:
        baseline = _Baseline(model, shape, seqs, run, chunk_size)
    instances = spec.instances(n, pwm_mode, seed)
    with_ = [_Accumulator(shape.output_length, t) for t in shape.num_tasks]
    delta = np.zeros(shape.num_heads)
    for a in range(0, n, chunk_size):
        b = min(n, a + chunk_size)
        for orient in orients:
            inst = instances[a:b] if orient == "forward" else reverse_complement_one_hot(instances[a:b])
            lg1, lc1 = run(insert_motif(seqs[a:b], inst))
            for h in range(shape.num_heads):
                with_[h].add(lg1[h], lc1[h])
                delta[h] += float(np.sum(lc1[h].astype(np.float64) - baseline.logcounts[h][a:b]))

    start = motif_start(length, m) - shape.left_flank
    center = length // 2 - shape.left_flank
    lo, hi = max(0, start - window), min(shape.output_length, start + m + window)
    results = {}
    for h, name in enumerate(names):
        w0, w1 = baseline.acc[h], with_[h]
        results[name] = HeadFootprint(
            head=name,
            profile_without=w0.mean("profile"),
            profile_with=w1.mean("profile"),
            probs_without=w0.mean("probs"),
            probs_with=w1.mean("probs"),
            logcounts_without=w0.mean("logcounts"),
            logcounts_with=w1.mean("logcounts"),
            total_without=w0.mean("total"),
            total_with=w1.mean("total"),
            counts_response=delta[h] / (n * len(orients)),
            motif_bounds=(start, start + m),
            window_bounds=(lo, max(lo, hi)),
            num_sequences=n,
            orientations=orients,
            chrombpnet_score=float(w1.mean("probs_summed").max()),
            chrombpnet_score_without=float(w0.mean("probs_summed").max()),
            extra={"center": center, "motif": spec.name, "motif-length": m},
        )
    return results


# ----------------------------------------------------------------------------------------------
# Several models x several motifs


def _load(model):
    return load_model(model) if isinstance(model, (str, Path)) else model


def footprint_table(
    models: Mapping[str, object],
    sequences: np.ndarray,
    motifs: Mapping[str, object],
    *,
    orientations="forward",
    window: int = DEFAULT_WINDOW,
    batch_size: int = 64,
    revcomp_average: bool = False,
    task_orders=None,
    pwm_mode: str = "consensus",
    seed: int = 0,
    head_names: Sequence[str] | None = None,
    profile_flank: int | None = DEFAULT_WINDOW,
    include_profiles: bool = True,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict:
    """Footprints of every motif for every model, as a JSON-able dict.

    ``models``: {label: Keras model or path to a ``.keras`` file}, e.g. ``combined``,
    ``residual``, ``bias``.  ``sequences``: one-hot backgrounds at least as long as the
    longest model input; each model gets them center-cropped to its own input, so all models
    see the same bases around the insertion.  ``motifs``: {name: consensus string, PWM array
    or :class:`bpflow.formats.motifs.Motif`}.  With ``pwm_mode`` "sample", every model sees the same
    sampled instances of a motif.  With ``include_profiles``, each entry also holds the mean
    profiles within ``profile_flank`` bases of the center (see :meth:`HeadFootprint.profiles`).

    Layout::

        {"window": w, "orientations": [...], "pwm-mode": ..., "num-sequences": N,
         "motifs": {name: {"consensus": ..., "length": m, "type": "sequence" | "pwm"}},
         "models": {label: {"input-length": ..., "output-length": ...,
                            "heads": {head: {motif: {<summary keys>, "profiles": {...}}}}}}}
    """
    if not models:
        raise BpflowError("footprint_table: no model given")
    if not motifs:
        raise BpflowError("footprint_table: no motif given")
    specs = {name: as_motif(m, name) for name, m in motifs.items()}
    orients = _as_orientations(orientations)
    seqs = np.asarray(sequences)
    table = {
        "window": int(window),
        "orientations": list(orients),
        "pwm-mode": pwm_mode,
        "revcomp-average": bool(revcomp_average),
        "num-sequences": int(seqs.shape[0]) if seqs.ndim == 3 else 0,
        "motifs": {
            name: {"consensus": s.consensus, "length": s.length, "type": "sequence" if s.fixed else "pwm"}
            for name, s in specs.items()
        },
        "models": {},
    }
    for label, model in models.items():
        model = _load(model)
        shape = model_shape(model, str(label))
        entry = {
            "input-length": shape.input_length,
            "output-length": shape.output_length,
            "num-tasks": shape.num_tasks,
            "heads": {},
        }
        baseline = None
        for name, spec in specs.items():
            logger.info("footprint: model %s, motif %s (%d bp, %s)", label, name, spec.length, "/".join(orients))
            if baseline is None:  # the predictions without insertion are shared by all motifs
                _, _, _, cropped, _ = _prepare(model, seqs, spec, orients, window, head_names)
                baseline = _Baseline(
                    model,
                    shape,
                    cropped,
                    lambda x: predict_arrays(
                        model, x, batch_size=batch_size, revcomp_average=revcomp_average, task_orders=task_orders
                    ),
                    chunk_size,
                )
            heads = _footprint(
                model,
                seqs,
                spec,
                orients,
                window,
                batch_size,
                revcomp_average,
                task_orders,
                pwm_mode,
                seed,
                head_names,
                chunk_size,
                baseline,
            )
            for head, fp in heads.items():
                record = fp.summary()
                if include_profiles:
                    record["profiles"] = _clean(fp.profiles(profile_flank))
                entry["heads"].setdefault(head, {})[name] = record
                logger.info(
                    "  %s %s: profile response %.4g, counts response %+.4g",
                    head,
                    name,
                    fp.profile_response,
                    fp.counts_response,
                )
        table["models"][label] = entry
    return table


def response_ratio(
    table: dict,
    model: str,
    numerator: Sequence[str],
    denominator: Sequence[str],
    head: str | None = None,
    key: str = "profile-response",
) -> float:
    """Mean ``key`` over the ``numerator`` motifs / mean over the ``denominator`` motifs.

    E.g. the residual's bias/TF ratio of issue 7:
    ``response_ratio(table, "residual", ["bias"], ["CTCF", "Klf4"])``.  ``head`` defaults to
    the model's only head.  NaN when the denominator is 0 or a value is missing.
    """
    heads = table["models"][model]["heads"]
    if head is None:
        if len(heads) != 1:
            raise BpflowError(f"model {model!r} has heads {', '.join(heads)}: name one")
        head = next(iter(heads))
    values = heads[head]

    def mean(names):
        v = [values[n][key] for n in names]
        v = [math.nan if x is None else abs(float(x)) for x in v]
        return float(np.mean(v)) if v else math.nan

    num, den = mean(numerator), mean(denominator)
    return num / den if den > 0 else math.nan


def footprints_from_files(
    models: Mapping[str, object],
    background_h5,
    motifs: Mapping[str, object],
    output_json=None,
    num: int | None = 500,
    seed: int = 0,
    **kwargs,
) -> dict:
    """:func:`footprint_table` on ``num`` background sequences of a dataset, written as JSON.

    ``models``: {label: ``.keras`` path or model}; ``motifs``: as :func:`load_motifs` takes
    them.  The backgrounds are read at the longest model input (:func:`background_sequences`
    with ``seed``); ``kwargs`` go to :func:`footprint_table`.  The JSON (when
    ``output_json``) is written atomically, with the background file and settings recorded.
    """
    loaded = {label: _load(m) for label, m in models.items()}
    specs = load_motifs(motifs)
    length = max(model_shape(m, str(label)).input_length for label, m in loaded.items())
    seqs = background_sequences(background_h5, length, num=num, seed=seed)
    table = footprint_table(loaded, seqs, specs, seed=seed, **kwargs)
    table["background"] = {"file": str(background_h5), "num-requested": num, "seed": seed}
    if output_json is not None:
        write_json_atomic(output_json, table)
    return table


def decode_insertion(sequences: np.ndarray, motif_length: int) -> list[str]:
    """The bases at the insertion site of each sequence (a check of :func:`insert_motif`)."""
    seqs = np.asarray(sequences)
    s = motif_start(seqs.shape[1], motif_length)
    return [one_hot_decode(x[s : s + motif_length]) for x in seqs]


FOOTPRINT_COLUMNS = [
    "model",
    "head",
    "motif",
    "profile-response",
    "shape-response",
    "counts-response",
    "chrombpnet-score",
    "mean-total-without",
]


def footprint_rows(table: dict) -> list[list[str]]:
    rows = []
    for label, model in table["models"].items():
        for head, motifs in model["heads"].items():
            for motif, entry in motifs.items():
                rows.append([label, head, motif] + [format_value(entry.get(k)) for k in FOOTPRINT_COLUMNS[3:]])
    return rows


def footprint_tsv(table: dict, output) -> Path:
    """The footprint responses as TSV, one row per model, head and motif."""
    lines = ["\t".join(FOOTPRINT_COLUMNS)] + ["\t".join(r) for r in footprint_rows(table)]
    with atomic_output(output) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    return Path(output)


def run_footprints_config(config: dict, source: str = "footprints config") -> dict:
    """Footprints of the TF and bias motifs for several models, from a step config.

    Keys (docs/footprints.md): ``models`` {label: .keras}, ``background-h5`` (a dataset whose
    ``sequence`` array gives the backgrounds), ``motifs`` (TF motifs) and ``bias-motifs``
    ({name: entry as :func:`load_motifs` takes it}), ``simulation-truth`` (a simulation's
    truth.json: its TF motifs and its bias motif, named ``bias``, fill in whichever of
    ``motifs`` / ``bias-motifs`` is not given), ``num-backgrounds`` (500), ``seed`` (0),
    ``orientations`` ("both"), ``pwm-mode`` ("consensus"), ``window`` (100), ``batch-size``
    (64), ``head-names``, and the outputs ``output-json`` (the :func:`footprint_table` plus
    ``tf-motifs``, ``bias-motifs`` and ``bias-tf-ratio`` {model: :func:`response_ratio` of
    the bias motifs over the TF motifs, first head}), ``output-tsv``, ``output-html``,
    ``output-png`` (optional; :mod:`bpflow.report`).  Returns the table.
    """
    config = schemas.validate(config, "footprints", source)
    tfs = dict(config.get("motifs", {}))
    biases = dict(config.get("bias-motifs", {}))
    if "simulation-truth" in config:
        sim_tfs, sim_bias = simulation_motifs(config["simulation-truth"])
        if "motifs" not in config:
            tfs = sim_tfs
        if "bias-motifs" not in config:
            biases = sim_bias
    common = set(tfs) & set(biases)
    if common:
        raise BpflowError(f"{source}: motif name(s) {', '.join(sorted(common))} used for a TF and a bias motif")
    if not tfs and not biases:
        raise BpflowError(f"{source}: no motif: give motifs, bias-motifs or simulation-truth")
    for label, path in config["models"].items():
        if not Path(path).is_file():
            raise BpflowError(f"{source}: key models/{label}: file {path} not found")
    seed = config["seed"]
    # rows of the plot and table: combined, residual, bias first (JSON objects lose order)
    models = {k: config["models"][k] for k in ("combined", "residual", "bias") if k in config["models"]}
    models.update(config["models"])
    table = footprints_from_files(
        models,
        config["background-h5"],
        {**tfs, **biases},
        None,
        num=config["num-backgrounds"],
        seed=seed,
        orientations=config["orientations"],
        pwm_mode=config["pwm-mode"],
        window=config["window"],
        batch_size=config["batch-size"],
        head_names=config.get("head-names"),
    )
    table["tf-motifs"] = list(tfs)
    table["bias-motifs"] = list(biases)
    table["bias-tf-ratio"] = {
        label: _clean(
            response_ratio(table, label, list(biases), list(tfs), head=next(iter(table["models"][label]["heads"])))
        )
        if tfs and biases
        else None
        for label in table["models"]
    }
    write_json_atomic(config["output-json"], table)
    return table


def main(argv: Sequence[str]) -> int:
    """``bpflow footprints CONFIG.json``: the table as JSON, and as TSV with ``output-tsv``."""
    path, config, _ = read_step_config(
        argv, "footprints", "Marginal footprints of TF and bias motifs.", "docs/footprints.md"
    )
    table = run_footprints_config(config, path)
    if "output-tsv" in config:
        footprint_tsv(table, config["output-tsv"])
    return 0
