"""Predictions: run a model over regions, whole chromosomes or a dataset; write bigWigs.

``bpflow predict CONFIG.json`` runs any bpflow/BPReveal-style Keras model (combined, residual,
bias or solo) in batches and streams its outputs into an HDF5 file in BPReveal's prediction
layout; ``bpflow predictions-to-bigwig CONFIG.json`` turns one head of such a file into
bigWig tracks.  The configuration keys are documented in docs/evaluation.md.

Prediction file (one row per predicted output window)::

    head_<i>/logits      float32 (N, output_length, num_tasks)   profile logits of head i
    head_<i>/logcounts   float32 (N,)                            log counts of head i
    chrom_names          bytes   (C,)    chromosome names
    chrom_sizes          int64   (C,)    their lengths (-1 where unknown)
    coords_chrom         int32   (N,)    index into chrom_names (-1 where unknown)
    coords_start         int64   (N,)    0-based start of the output window
    coords_stop          int64   (N,)    end (exclusive) of the output window
    coords_strand        (N,)            only when copied from a dataset that has it

Each ``head_<i>`` group has attributes ``head-name`` and ``num-tasks``; the root has
``bpflow-version``, ``model-file``, ``input-length``, ``output-length``, ``revcomp-average``,
``source`` and ``config`` (JSON).  The predicted profile of a head is
softmax(logits over all positions and tasks jointly) * exp(logcounts).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from bpflow.genome import one_hot_encode, reverse_complement_one_hot
from bpflow.metrics import softmax_joint
from bpflow.utils import (
    VERBOSITY_SCHEMA,
    BpflowError,
    atomic_output,
    read_step_config,
    progress,
    setup_logging,
    validate_config,
)

logger = logging.getLogger("bpflow.predict")

DEFAULT_BATCH_SIZE = 64
BIGWIG_MODES = ("profile", "logits", "counts")

# ----------------------------------------------------------------------------------------------
# Small helpers


def _decode_strings(values) -> list[str]:
    return [v.decode() if isinstance(v, (bytes, np.bytes_)) else str(v) for v in np.asarray(values).tolist()]


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def predicted_profile(logits: np.ndarray, logcounts: np.ndarray) -> np.ndarray:
    """Expected counts per position and task: joint softmax of the logits x exp(logcounts)."""
    logcounts = np.asarray(logcounts, dtype=np.float64).reshape(-1)
    return softmax_joint(logits) * np.exp(logcounts)[:, None, None]


# ----------------------------------------------------------------------------------------------
# Coordinates shared by prediction files and datasets


@dataclass
class Coords:
    """Per-sample windows: ``chrom`` indexes ``chrom_names``; 0-based half-open start/stop."""

    chrom_names: list[str]
    chrom: np.ndarray
    start: np.ndarray
    stop: np.ndarray

    def label(self, i: int) -> str:
        c = int(self.chrom[i])
        name = self.chrom_names[c] if 0 <= c < len(self.chrom_names) else "?"
        return f"{name}:{int(self.start[i])}-{int(self.stop[i])}"

    def names(self) -> np.ndarray:
        """Chromosome name of every sample (object array)."""
        table = np.array(self.chrom_names + ["?"], dtype=object)
        index = np.where((self.chrom >= 0) & (self.chrom < len(self.chrom_names)), self.chrom, -1)
        return table[index]


def read_coords(h5, source: str) -> Coords | None:
    """Coordinates of an open HDF5 file (prediction file or dataset); None when it has none.

    ``coords_chrom`` may hold indices into ``chrom_names`` or chromosome names themselves.
    """
    keys = ("coords_chrom", "coords_start", "coords_stop")
    if not all(k in h5 for k in keys):
        return None
    raw = h5["coords_chrom"][...]
    start = h5["coords_start"][...].astype(np.int64)
    stop = h5["coords_stop"][...].astype(np.int64)
    if raw.dtype.kind in "SUO":
        labels = _decode_strings(raw)
        names = _decode_strings(h5["chrom_names"][...]) if "chrom_names" in h5 else []
        for name in sorted(set(labels) - set(names)):
            names.append(name)
        lookup = {n: i for i, n in enumerate(names)}
        chrom = np.array([lookup[n] for n in labels], dtype=np.int64)
    else:
        if "chrom_names" not in h5:
            raise BpflowError(f"{source}: coords_chrom holds indices but the file has no chrom_names")
        names = _decode_strings(h5["chrom_names"][...])
        chrom = raw.astype(np.int64)
        bad = (chrom >= len(names)) | (chrom < -1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise BpflowError(f"{source}: coords_chrom[{i}] = {chrom[i]} is not an index into chrom_names")
    if not (len(chrom) == len(start) == len(stop)):
        raise BpflowError(f"{source}: coords_chrom, coords_start and coords_stop differ in length")
    return Coords(names, chrom, start, stop)


def read_strands(h5, source: str) -> np.ndarray | None:
    """Boolean "is reverse complement" per sample from ``coords_strand``; None when absent.

    Accepted encodings: strings "+" / "-" ("." counts as forward) or signed integers +1 / -1.
    """
    if "coords_strand" not in h5:
        return None
    raw = h5["coords_strand"][...]
    if raw.dtype.kind in "SUO":
        values = np.array(_decode_strings(raw), dtype=object)
        unknown = ~np.isin(values, ["+", "-", "."])
        if unknown.any():
            i = int(np.flatnonzero(unknown)[0])
            raise BpflowError(f"{source}: coords_strand[{i}] = {values[i]!r}; expected '+', '-' or '.'")
        return values == "-"
    if raw.dtype.kind in "iu":
        values = raw.astype(np.int64)
        unknown = ~np.isin(values, [1, -1])
        if unknown.any():
            i = int(np.flatnonzero(unknown)[0])
            raise BpflowError(f"{source}: coords_strand[{i}] = {values[i]}; expected +1 or -1 (or '+'/'-')")
        return values == -1
    raise BpflowError(f"{source}: coords_strand has unsupported type {raw.dtype}")


def center_windows(start: np.ndarray, stop: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows of ``length`` centered in [start, stop): start + (width - length) // 2."""
    start = np.asarray(start, dtype=np.int64)
    stop = np.asarray(stop, dtype=np.int64)
    new_start = start + (stop - start - length) // 2
    return new_start, new_start + length


# ----------------------------------------------------------------------------------------------
# Prediction file: writer and reader


class PredictionWriter:
    """Writes a prediction file row block by row block (fixed number of rows, known up front).

    Use on a temporary path inside :func:`bpflow.utils.atomic_output`.
    """

    def __init__(self, path, num_samples: int, output_length: int, num_tasks: Sequence[int],
                 chrom_names: Sequence[str], chrom_sizes: Sequence[int], head_names: Sequence[str] | None = None,
                 attrs: dict | None = None, strand_dtype=None):
        import h5py

        self.num_samples = int(num_samples)
        self.num_tasks = [int(t) for t in num_tasks]
        self.file = h5py.File(path, "w")
        f = self.file
        names = [str(n) for n in chrom_names]
        width = max([1] + [len(n.encode()) for n in names])
        f.create_dataset("chrom_names", data=np.array([n.encode() for n in names], dtype=f"S{width}"))
        f.create_dataset("chrom_sizes", data=np.asarray(list(chrom_sizes), dtype=np.int64).reshape(-1))
        n = self.num_samples
        rows = max(1, min(n, max(1, (1 << 20) // max(1, output_length * max(self.num_tasks) * 4))))
        self.coords_chrom = f.create_dataset("coords_chrom", (n,), dtype=np.int32)
        self.coords_start = f.create_dataset("coords_start", (n,), dtype=np.int64)
        self.coords_stop = f.create_dataset("coords_stop", (n,), dtype=np.int64)
        self.coords_strand = (f.create_dataset("coords_strand", (n,), dtype=strand_dtype)
                              if strand_dtype is not None else None)
        self.logits = []
        self.logcounts = []
        head_names = list(head_names) if head_names else [f"head_{i}" for i in range(len(self.num_tasks))]
        for i, tasks in enumerate(self.num_tasks):
            group = f.create_group(f"head_{i}")
            group.attrs["head-name"] = head_names[i]
            group.attrs["num-tasks"] = tasks
            chunks = (rows, output_length, tasks) if n else None
            self.logits.append(group.create_dataset("logits", (n, output_length, tasks), dtype=np.float32,
                                                    chunks=chunks))
            self.logcounts.append(group.create_dataset("logcounts", (n,), dtype=np.float32))
        for key, value in (attrs or {}).items():
            f.attrs[key] = value

    def write(self, row: int, chrom, start, stop, logits: Sequence[np.ndarray], logcounts: Sequence[np.ndarray],
              strand=None) -> None:
        """Write rows ``row .. row + len(start) - 1``."""
        sl = slice(row, row + len(start))
        self.coords_chrom[sl] = chrom
        self.coords_start[sl] = start
        self.coords_stop[sl] = stop
        if self.coords_strand is not None and strand is not None:
            self.coords_strand[sl] = strand
        for i in range(len(self.num_tasks)):
            self.logits[i][sl] = logits[i]
            self.logcounts[i][sl] = np.asarray(logcounts[i]).reshape(-1)

    def close(self) -> None:
        self.file.close()


class PredictionFile:
    """Read access to a prediction file; use as a context manager."""

    def __init__(self, path):
        import h5py

        self.path = str(path)
        if not Path(path).is_file():
            raise BpflowError(f"{path}: prediction file not found")
        try:
            self.file = h5py.File(path, "r")
        except OSError as err:
            raise BpflowError(f"{path}: cannot open as HDF5: {_first_line(err)}") from None
        f = self.file
        self.num_heads = 0
        while f"head_{self.num_heads}" in f:
            self.num_heads += 1
        if self.num_heads == 0:
            self.close()
            raise BpflowError(f"{path}: not a prediction file (no head_0 group)")
        shapes = []
        for i in range(self.num_heads):
            group = f[f"head_{i}"]
            if "logits" not in group or "logcounts" not in group:
                self.close()
                raise BpflowError(f"{path}: head_{i} lacks logits or logcounts")
            shapes.append((group["logits"].shape, group["logcounts"].shape))
        self.num_samples = shapes[0][0][0]
        self.output_length = shapes[0][0][1]
        for i, (lshape, cshape) in enumerate(shapes):
            if len(lshape) != 3 or lshape[:2] != (self.num_samples, self.output_length) or \
                    int(np.prod(cshape)) != self.num_samples:
                self.close()
                raise BpflowError(f"{path}: head_{i} shapes {lshape} / {cshape} disagree with head_0")

    def __enter__(self) -> "PredictionFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()

    def num_tasks(self, head: int) -> int:
        return int(self.file[f"head_{head}/logits"].shape[2])

    def head_name(self, head: int) -> str:
        name = self.file[f"head_{head}"].attrs.get("head-name")
        return str(name.decode() if isinstance(name, bytes) else name) if name is not None else f"head_{head}"

    def head_index(self, head: int | str) -> int:
        """Index of a head given as an index or a name."""
        if isinstance(head, (int, np.integer)):
            if not 0 <= head < self.num_heads:
                raise BpflowError(f"{self.path}: no head {head} (the file has {self.num_heads})")
            return int(head)
        names = [self.head_name(i) for i in range(self.num_heads)]
        if head not in names:
            raise BpflowError(f"{self.path}: no head named {head!r} (heads: {', '.join(names)})")
        return names.index(head)

    def logits(self, head: int, rows=slice(None)) -> np.ndarray:
        return self.file[f"head_{head}/logits"][rows]

    def logcounts(self, head: int, rows=slice(None)) -> np.ndarray:
        return np.asarray(self.file[f"head_{head}/logcounts"][rows]).reshape(-1)

    @property
    def chrom_names(self) -> list[str]:
        return _decode_strings(self.file["chrom_names"][...]) if "chrom_names" in self.file else []

    @property
    def chrom_sizes(self) -> dict[str, int]:
        if "chrom_sizes" not in self.file:
            return {}
        sizes = self.file["chrom_sizes"][...].astype(np.int64).reshape(-1)
        return {n: int(s) for n, s in zip(self.chrom_names, sizes) if s >= 0}

    def coords(self) -> Coords | None:
        coords = read_coords(self.file, self.path)
        if coords is not None and (coords.chrom < 0).all():
            return None
        return coords

    def strands(self) -> np.ndarray | None:
        return read_strands(self.file, self.path)


# ----------------------------------------------------------------------------------------------
# Models


@dataclass
class ModelShape:
    input_length: int
    output_length: int
    num_tasks: list[int]

    @property
    def num_heads(self) -> int:
        return len(self.num_tasks)

    @property
    def left_flank(self) -> int:
        return (self.input_length - self.output_length) // 2

    @property
    def right_flank(self) -> int:
        return self.input_length - self.output_length - self.left_flank


def load_model(path):
    """Load a saved ``.keras`` model (bpflow's custom layers registered), without compiling."""
    import keras

    import bpflow  # noqa: F401  (registers custom layers and losses)

    if not Path(path).is_file():
        raise BpflowError(f"{path}: model file not found")
    try:
        return keras.saving.load_model(str(path), compile=False)
    except Exception as err:  # noqa: BLE001  (Keras raises many types)
        raise BpflowError(f"{path}: cannot load the model: {_first_line(err)}") from None


def model_shape(model, source: str = "model") -> ModelShape:
    """Input/output lengths and tasks per head of a BPNet-style model (profiles, then counts)."""
    inputs = model.inputs
    if len(inputs) != 1 or len(inputs[0].shape) != 3 or inputs[0].shape[2] != 4:
        raise BpflowError(f"{source}: expected one input of shape (batch, length, 4)")
    input_length = inputs[0].shape[1]
    if input_length is None:
        raise BpflowError(f"{source}: the model's input length is not fixed")
    outputs = model.outputs
    if len(outputs) % 2 or not outputs:
        raise BpflowError(f"{source}: expected profile outputs then counts outputs (an even number), "
                          f"got {len(outputs)} outputs")
    k = len(outputs) // 2
    profiles, counts = outputs[:k], outputs[k:]
    for i, p in enumerate(profiles):
        if len(p.shape) != 3:
            raise BpflowError(f"{source}: output {i} has shape {tuple(p.shape)}; expected (batch, length, tasks)")
    for i, c in enumerate(counts):
        if tuple(c.shape[1:]) not in ((1,), ()):
            raise BpflowError(f"{source}: output {k + i} has shape {tuple(c.shape)}; expected (batch, 1) log counts")
    output_length = profiles[0].shape[1]
    if any(p.shape[1] != output_length for p in profiles):
        raise BpflowError(f"{source}: the profile outputs differ in length")
    if (input_length - output_length) % 2 or input_length < output_length:
        raise BpflowError(f"{source}: input length {input_length} and output length {output_length} do not "
                          "allow a centered output window (the difference must be even and >= 0)")
    return ModelShape(int(input_length), int(output_length), [int(p.shape[2]) for p in profiles])


def auto_task_order(num_tasks: int, source: str = "head") -> list[int]:
    """BPReveal's "auto" reverse-complement task order: [0] for one task, [1, 0] for two."""
    if num_tasks == 1:
        return [0]
    if num_tasks == 2:
        return [1, 0]
    raise BpflowError(f"{source}: revcomp-task-order \"auto\" needs 1 or 2 tasks, the head has {num_tasks}; "
                      "give the order as a list")


def resolve_task_orders(heads: list[dict] | None, shape: ModelShape, source: str,
                        revcomp: bool = True) -> tuple[list[str], list[list[int]] | None]:
    """Head names and reverse-complement task orders from a ``heads`` config (or defaults).

    Without ``heads`` every head uses "auto".  Orders are only resolved (and a head with more
    than two tasks and no explicit order only fails) when ``revcomp`` is true; else None.
    """
    if heads is None:
        heads = [{} for _ in range(shape.num_heads)]
        names_given = False
    else:
        names_given = True
    if len(heads) != shape.num_heads:
        raise BpflowError(f"{source}: key heads lists {len(heads)} heads but the model has {shape.num_heads}")
    names, orders = [], []
    for i, (head, tasks) in enumerate(zip(heads, shape.num_tasks)):
        name = head.get("head-name", f"head_{i}")
        where = f"{source}: head {name!r}" if names_given else f"head {i}"
        if "num-tasks" in head and head["num-tasks"] != tasks:
            raise BpflowError(f"{where}: num-tasks is {head['num-tasks']} but the model's head {i} has {tasks}")
        names.append(name)
        if not revcomp:
            continue
        order = head.get("revcomp-task-order", "auto")
        if order == "auto":
            order = auto_task_order(tasks, where)
        if sorted(order) != list(range(tasks)):
            raise BpflowError(f"{where}: revcomp-task-order {order} is not a permutation of 0..{tasks - 1}")
        orders.append([int(o) for o in order])
    if len(set(names)) != len(names):
        raise BpflowError(f"{source}: duplicate head names in key heads")
    return names, (orders if revcomp else None)


def predict_batch(model, one_hot: np.ndarray, num_heads: int, revcomp_average: bool = False,
                  task_orders: Sequence[Sequence[int]] | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Run the model on one batch (b, input_length, 4).

    Returns (logits per head (b, out, tasks), log counts per head (b,)), float32.  With
    ``revcomp_average`` the reverse complement is predicted in the same call; its outputs are
    flipped back - positions reversed, forward task i taken from reverse-complement task
    ``task_orders[head][i]`` - and averaged with the forward outputs (logits and log counts).
    """
    x = np.asarray(one_hot, dtype=np.float32)
    b = x.shape[0]
    if revcomp_average:
        x = np.concatenate([x, reverse_complement_one_hot(x)], axis=0)
    outputs = model.predict_on_batch(x)
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    outputs = [np.asarray(o) for o in outputs]
    logits = [outputs[i] for i in range(num_heads)]
    logcounts = [outputs[num_heads + i].reshape(-1) for i in range(num_heads)]
    if revcomp_average:
        if task_orders is None:
            task_orders = [auto_task_order(lg.shape[2], f"head {i}") for i, lg in enumerate(logits)]
        for i in range(num_heads):
            order = np.asarray(task_orders[i])
            back = logits[i][b:, ::-1, :][:, :, order]
            logits[i] = ((logits[i][:b].astype(np.float64) + back) / 2).astype(np.float32)
            logcounts[i] = ((logcounts[i][:b].astype(np.float64) + logcounts[i][b:]) / 2).astype(np.float32)
    return ([np.asarray(lg, dtype=np.float32) for lg in logits],
            [np.asarray(lc, dtype=np.float32) for lc in logcounts])


def _padded_batches(batches: Iterable[np.ndarray], batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
    """Pad every batch to ``batch_size`` rows (one compiled shape); yield (padded, real rows)."""
    for x in batches:
        n = x.shape[0]
        if n < batch_size:
            pad = np.zeros((batch_size - n,) + x.shape[1:], dtype=x.dtype)
            x = np.concatenate([x, pad], axis=0)
        yield x, n


def predict_arrays(model, one_hot: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE, revcomp_average: bool = False,
                   task_orders: Sequence[Sequence[int]] | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Predict in-memory one-hot sequences (N, input_length, 4); returns (logits, logcounts) per head."""
    shape = model_shape(model)
    one_hot = np.asarray(one_hot)
    if one_hot.ndim != 3 or one_hot.shape[1:] != (shape.input_length, 4):
        raise BpflowError(f"sequences have shape {one_hot.shape}; the model needs (N, {shape.input_length}, 4)")
    logits = [[] for _ in range(shape.num_heads)]
    logcounts = [[] for _ in range(shape.num_heads)]
    chunks = (one_hot[a:a + batch_size] for a in range(0, len(one_hot), batch_size))
    for x, n in _padded_batches(chunks, batch_size):
        lg, lc = predict_batch(model, x, shape.num_heads, revcomp_average, task_orders)
        for i in range(shape.num_heads):
            logits[i].append(lg[i][:n])
            logcounts[i].append(lc[i][:n])
    empty = [np.zeros((0, shape.output_length, t), np.float32) for t in shape.num_tasks]
    return ([np.concatenate(v) if v else empty[i] for i, v in enumerate(logits)],
            [np.concatenate(v) if v else np.zeros(0, np.float32) for v in logcounts])


# ----------------------------------------------------------------------------------------------
# Genome access and windows


class Genome:
    """A FASTA file opened with pyfaidx; chromosome sizes come from its .fai index."""

    def __init__(self, path):
        import pyfaidx

        self.path = str(path)
        if not Path(path).is_file():
            raise BpflowError(f"{path}: genome FASTA not found")
        try:
            self.fasta = pyfaidx.Fasta(str(path), as_raw=True, sequence_always_upper=False)
        except Exception as err:  # noqa: BLE001
            raise BpflowError(f"{path}: cannot read the FASTA or its index: {_first_line(err)}") from None
        self.chrom_names = list(self.fasta.keys())
        self.chrom_sizes = {name: len(self.fasta[name]) for name in self.chrom_names}

    def one_hot(self, chrom: str, start: int, stop: int) -> np.ndarray:
        seq = self.fasta[chrom][start:stop]
        if len(seq) != stop - start:
            raise BpflowError(f"{self.path}: {chrom}:{start}-{stop} is outside the chromosome")
        return one_hot_encode(seq)

    def batch(self, chrom: str, input_starts: np.ndarray, input_length: int) -> np.ndarray:
        """One-hot windows (b, input_length, 4) of one chromosome; nearby windows share one read."""
        input_starts = np.asarray(input_starts, dtype=np.int64)
        out = np.empty((len(input_starts), input_length, 4), dtype=np.uint8)
        if not len(input_starts):
            return out
        lo, hi = int(input_starts.min()), int(input_starts.max()) + input_length
        if hi - lo <= 2 * len(input_starts) * input_length:
            seq = self.one_hot(chrom, lo, hi)
            index = (input_starts - lo)[:, None] + np.arange(input_length)[None, :]
            out[:] = seq[index]
        else:
            for j, s in enumerate(input_starts):
                out[j] = self.one_hot(chrom, int(s), int(s) + input_length)
        return out

    def close(self) -> None:
        self.fasta.close()


def read_bed_windows(bed_path, genome: Genome, shape: ModelShape, resize: bool = True) -> Coords:
    """Output windows from a BED file.

    With ``resize`` each region becomes the output-length window centered on it
    (start + (width - output_length) // 2); without, every region must be exactly
    output-length wide.  A chromosome missing from the genome is an error; windows whose
    model input would run off the chromosome are left out with a warning.
    """
    if not Path(bed_path).is_file():
        raise BpflowError(f"{bed_path}: regions BED not found")
    chrom_index = {n: i for i, n in enumerate(genome.chrom_names)}
    chroms, starts, stops = [], [], []
    skipped, first_skipped = 0, None
    out = shape.output_length
    with open(bed_path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip() or line.startswith(("#", "track", "browser")):
                continue
            fields = line.rstrip("\n").split("\t")
            where = f"{bed_path} line {lineno}"
            if len(fields) < 3:
                raise BpflowError(f"{where}: expected at least 3 tab-separated columns")
            chrom = fields[0]
            try:
                start, stop = int(fields[1]), int(fields[2])
            except ValueError:
                raise BpflowError(f"{where}: start and end must be integers") from None
            if start < 0 or stop < start:
                raise BpflowError(f"{where}: invalid region {chrom}:{start}-{stop}")
            if chrom not in chrom_index:
                raise BpflowError(f"{where}: chromosome {chrom!r} is not in the genome {genome.path}")
            if resize:
                (start,), (stop,) = center_windows([start], [stop], out)
                start, stop = int(start), int(stop)
            elif stop - start != out:
                raise BpflowError(f"{where}: region {chrom}:{fields[1]}-{fields[2]} is {stop - start} bp wide but "
                                  f"the model predicts {out} bp (set resize-regions to true to center it)")
            if start - shape.left_flank < 0 or stop + shape.right_flank > genome.chrom_sizes[chrom]:
                skipped += 1
                first_skipped = first_skipped or f"{chrom}:{start}-{stop}"
                continue
            chroms.append(chrom_index[chrom])
            starts.append(start)
            stops.append(stop)
    if skipped:
        logger.warning("%s: left out %d region(s) whose model input runs off the chromosome (first: %s)",
                       bed_path, skipped, first_skipped)
    if not starts:
        raise BpflowError(f"{bed_path}: no region left to predict")
    return Coords(list(genome.chrom_names), np.array(chroms, np.int64), np.array(starts, np.int64),
                  np.array(stops, np.int64))


def tile_starts(chrom_size: int, shape: ModelShape, stride: int) -> np.ndarray:
    """Output-window starts tiling a chromosome with ``stride``.

    The first window starts at the left flank (the model needs that many bases of context);
    the last one ends ``right_flank`` bases before the chromosome end and is added even when
    the stride does not land on it.  Bases the model cannot reach are not covered.
    """
    first = shape.left_flank
    last = chrom_size - shape.right_flank - shape.output_length
    if last < first:
        return np.zeros(0, dtype=np.int64)
    starts = np.arange(first, last + 1, stride, dtype=np.int64)
    if starts[-1] != last:
        starts = np.append(starts, np.int64(last))
    return starts


# ----------------------------------------------------------------------------------------------
# The prediction loop


def prefetch(iterable: Iterable, depth: int = 4) -> Iterator:
    """Iterate ``iterable`` in a background thread, up to ``depth`` items ahead.

    Sequence extraction then overlaps with the model's work; an exception in the producer is
    re-raised in the consumer; stopping early stops the producer.
    """
    import queue
    import threading

    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                items.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in iterable:
                if not put((None, item)):
                    return
            put((None, done))
        except BaseException as err:  # noqa: BLE001  (handed to the consumer)
            put((err, None))

    thread = threading.Thread(target=produce, name="bpflow-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            err, item = items.get()
            if err is not None:
                raise err
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join()


def _write_prediction_file(model, shape: ModelShape, output_h5, num_samples: int, batches: Iterator[tuple],
                           chrom_names: Sequence[str], chrom_sizes: Sequence[int], head_names: Sequence[str],
                           batch_size: int, revcomp_average: bool, task_orders, attrs: dict,
                           strand_dtype=None) -> Path:
    """Stream batches (chrom, start, stop, strand, one_hot) through the model into ``output_h5``."""
    num_batches = -(-num_samples // batch_size)
    t0 = time.monotonic()
    with atomic_output(output_h5) as tmp:
        writer = PredictionWriter(tmp, num_samples, shape.output_length, shape.num_tasks, chrom_names,
                                  chrom_sizes, head_names, attrs, strand_dtype)
        try:
            row = 0
            for chrom, start, stop, strand, x in progress(prefetch(batches), total=num_batches, desc="predict",
                                                          unit="batch"):
                n = len(start)
                if n < batch_size:
                    x = np.concatenate([x, np.zeros((batch_size - n,) + x.shape[1:], x.dtype)])
                logits, logcounts = predict_batch(model, x, shape.num_heads, revcomp_average, task_orders)
                writer.write(row, chrom, start, stop, [lg[:n] for lg in logits], [lc[:n] for lc in logcounts],
                             strand)
                row += n
            if row != num_samples:
                raise RuntimeError(f"internal error: wrote {row} of {num_samples} rows")
        finally:
            writer.close()
    seconds = time.monotonic() - t0
    logger.info("wrote %s: %d windows in %.1f s (%.1f windows/s)", output_h5, num_samples, seconds,
                num_samples / max(seconds, 1e-9))
    return Path(output_h5)


def _common_attrs(model_file, shape: ModelShape, revcomp_average: bool, source: str, config: dict | None) -> dict:
    from bpflow import __version__

    return {
        "bpflow-version": __version__,
        "model-file": str(model_file or ""),
        "input-length": shape.input_length,
        "output-length": shape.output_length,
        "revcomp-average": bool(revcomp_average),
        "source": source,
        "config": json.dumps(config or {}),
    }


def _genome_batch_iter(genome: Genome, coords: Coords, shape: ModelShape, batch_size: int):
    n = len(coords.start)
    for a in range(0, n, batch_size):
        sl = slice(a, min(n, a + batch_size))
        chrom, start, stop = coords.chrom[sl], coords.start[sl], coords.stop[sl]
        x = np.empty((len(start), shape.input_length, 4), dtype=np.uint8)
        for c in np.unique(chrom):
            rows = np.flatnonzero(chrom == c)
            x[rows] = genome.batch(coords.chrom_names[c], start[rows] - shape.left_flank, shape.input_length)
        yield chrom, start, stop, None, x


def predict_regions(model, genome, regions, output_h5, batch_size: int = DEFAULT_BATCH_SIZE,
                    revcomp_average: bool = False, heads: list[dict] | None = None, resize_regions: bool = True,
                    model_file=None, config: dict | None = None) -> Path:
    """Predict the output windows of a BED file (see :func:`read_bed_windows`) into ``output_h5``."""
    shape = model_shape(model, str(model_file or "model"))
    names, orders = resolve_task_orders(heads, shape, "heads", revcomp_average)
    genome = genome if isinstance(genome, Genome) else Genome(genome)
    coords = read_bed_windows(regions, genome, shape, resize_regions)
    logger.info("predicting %d regions from %s", len(coords.start), regions)
    return _write_prediction_file(
        model, shape, output_h5, len(coords.start), _genome_batch_iter(genome, coords, shape, batch_size),
        genome.chrom_names, [genome.chrom_sizes[c] for c in genome.chrom_names], names, batch_size,
        revcomp_average, orders, _common_attrs(model_file, shape, revcomp_average, "regions", config))


def predict_chromosomes(model, genome, output_h5, chromosomes: Sequence[str] | str = "all", stride: int | None = None,
                        batch_size: int = DEFAULT_BATCH_SIZE, revcomp_average: bool = False,
                        heads: list[dict] | None = None, model_file=None, config: dict | None = None) -> Path:
    """Tile whole chromosomes with output windows every ``stride`` bases (default output_length // 2)."""
    shape = model_shape(model, str(model_file or "model"))
    names, orders = resolve_task_orders(heads, shape, "heads", revcomp_average)
    genome = genome if isinstance(genome, Genome) else Genome(genome)
    stride = stride or max(1, shape.output_length // 2)
    if not 1 <= stride <= shape.output_length:
        raise BpflowError(f"stride {stride} must be between 1 and the output length {shape.output_length} "
                          "(a larger stride leaves gaps)")
    chosen = genome.chrom_names if chromosomes == "all" else list(chromosomes)
    for c in chosen:
        if c not in genome.chrom_sizes:
            raise BpflowError(f"chromosome {c!r} is not in the genome {genome.path}")
    index = {n: i for i, n in enumerate(genome.chrom_names)}
    counts = {}
    for c in chosen:
        counts[c] = len(tile_starts(genome.chrom_sizes[c], shape, stride))
        if not counts[c]:
            logger.warning("%s (%d bp) is shorter than the model input (%d bp): left out", c,
                           genome.chrom_sizes[c], shape.input_length)
    total = sum(counts.values())
    if not total:
        raise BpflowError("no chromosome is long enough for one model input")

    def batches():
        for c in chosen:
            starts = tile_starts(genome.chrom_sizes[c], shape, stride)
            for a in range(0, len(starts), batch_size):
                s = starts[a:a + batch_size]
                x = genome.batch(c, s - shape.left_flank, shape.input_length)
                yield np.full(len(s), index[c], np.int64), s, s + shape.output_length, None, x

    logger.info("predicting %d windows (stride %d) on %d chromosome(s)", total, stride, len(chosen))
    return _write_prediction_file(
        model, shape, output_h5, total, batches(), genome.chrom_names,
        [genome.chrom_sizes[c] for c in genome.chrom_names], names, batch_size, revcomp_average, orders,
        _common_attrs(model_file, shape, revcomp_average, "chromosomes", config))


def predict_dataset(model, data_h5, output_h5, genome=None, batch_size: int = DEFAULT_BATCH_SIZE,
                    revcomp_average: bool = False, heads: list[dict] | None = None, model_file=None,
                    config: dict | None = None) -> Path:
    """Predict every sample of a training dataset, its sequence center-cropped to the model input.

    Rows match the dataset sample for sample; coordinates (when the dataset has them) are the
    output-length windows centered in the dataset's windows; ``coords_strand`` is copied, and
    reverse-complement samples stay in their own orientation.
    """
    import h5py

    shape = model_shape(model, str(model_file or "model"))
    names, orders = resolve_task_orders(heads, shape, "heads", revcomp_average)
    if not Path(data_h5).is_file():
        raise BpflowError(f"{data_h5}: dataset not found")
    with h5py.File(data_h5, "r") as data:
        if "sequence" not in data:
            raise BpflowError(f"{data_h5}: no 'sequence' dataset")
        seq = data["sequence"]
        n, length = seq.shape[0], seq.shape[1]
        crop = length - shape.input_length
        if crop < 0 or crop % 2:
            raise BpflowError(f"{data_h5}: sequences are {length} bp; the model needs {shape.input_length} "
                              "(the difference must be even and >= 0)")
        jitter = crop // 2
        coords = read_coords(data, str(data_h5))
        strands_raw = data["coords_strand"] if "coords_strand" in data else None
        read_strands(data, str(data_h5))  # validates the encoding
        if genome is not None:
            genome = genome if isinstance(genome, Genome) else Genome(genome)
            chrom_names = list(genome.chrom_names)
            chrom_sizes = [genome.chrom_sizes[c] for c in chrom_names]
            if coords is not None:
                missing = sorted(set(coords.chrom_names[c] for c in np.unique(coords.chrom)) - set(chrom_names))
                if missing:
                    raise BpflowError(f"{data_h5}: chromosome {missing[0]!r} is not in the genome {genome.path}")
        elif coords is not None:
            chrom_names = list(coords.chrom_names)
            sizes = data["chrom_sizes"][...].reshape(-1) if "chrom_sizes" in data else []
            chrom_sizes = [int(sizes[i]) if i < len(sizes) else -1 for i in range(len(chrom_names))]
        else:
            chrom_names, chrom_sizes = [], []
        if coords is None:
            logger.warning("%s has no coordinates: the prediction file's coords are -1", data_h5)
            p_chrom = np.full(n, -1, np.int64)
            p_start = p_stop = p_chrom
        else:
            lookup = np.array([chrom_names.index(c) for c in coords.chrom_names], dtype=np.int64) \
                if coords.chrom_names else np.zeros(0, np.int64)
            p_chrom = np.where(coords.chrom >= 0, lookup[np.maximum(coords.chrom, 0)] if len(lookup) else -1, -1)
            p_start, p_stop = center_windows(coords.start, coords.stop, shape.output_length)

        def batches():
            for a in range(0, n, batch_size):
                b = min(n, a + batch_size)
                x = seq[a:b, jitter:jitter + shape.input_length, :]
                strand = strands_raw[a:b] if strands_raw is not None else None
                yield p_chrom[a:b], p_start[a:b], p_stop[a:b], strand, x

        logger.info("predicting %d samples of %s (sequences cropped by %d on each side)", n, data_h5, jitter)
        return _write_prediction_file(
            model, shape, output_h5, n, batches(), chrom_names, chrom_sizes, names, batch_size,
            revcomp_average, orders, _common_attrs(model_file, shape, revcomp_average, "data", config),
            strand_dtype=strands_raw.dtype if strands_raw is not None else None)


# ----------------------------------------------------------------------------------------------
# bpflow predict


_HEAD_SCHEMA = {
    "type": "object",
    "properties": {
        "head-name": {"type": "string", "minLength": 1},
        "num-tasks": {"type": "integer", "minimum": 1},
        "revcomp-task-order": {
            "oneOf": [{"const": "auto"}, {"type": "array", "items": {"type": "integer", "minimum": 0}}]
        },
    },
}

PREDICT_SCHEMA = {
    "type": "object",
    "properties": {
        "model-file": {"type": "string", "minLength": 1},
        "genome": {"type": "string", "minLength": 1},
        "regions": {"type": "string", "minLength": 1},
        "resize-regions": {"type": "boolean"},
        "chromosomes": {"oneOf": [{"const": "all"},
                                  {"type": "array", "items": {"type": "string"}, "minItems": 1}]},
        "stride": {"type": "integer", "minimum": 1},
        "data": {"type": "string", "minLength": 1},
        "batch-size": {"type": "integer", "minimum": 1},
        "output-h5": {"type": "string", "minLength": 1},
        "revcomp-average": {"type": "boolean"},
        "heads": {"type": "array", "items": _HEAD_SCHEMA, "minItems": 1},
        "verbosity": VERBOSITY_SCHEMA,
    },
    "required": ["model-file", "output-h5"],
    "additionalProperties": False,
}


def main(argv: list[str]) -> int:
    """``bpflow predict CONFIG.json``."""
    path, config = read_step_config(argv, "bpflow predict", "Predict over a BED of regions, whole chromosomes or "
                                    "a dataset.", "docs/evaluation.md")
    validate_config(config, PREDICT_SCHEMA, path)
    setup_logging(config.get("verbosity", "INFO"))
    sources = [k for k in ("regions", "chromosomes", "data") if k in config]
    if len(sources) != 1:
        raise BpflowError(f"{path}: give exactly one of the keys regions, chromosomes, data "
                          f"(found {', '.join(sources) or 'none'})")
    source = sources[0]
    if source != "chromosomes" and "stride" in config:
        raise BpflowError(f"{path}: key stride only applies with key chromosomes")
    if source != "regions" and "resize-regions" in config:
        raise BpflowError(f"{path}: key resize-regions only applies with key regions")
    if source != "data" and "genome" not in config:
        raise BpflowError(f"{path}: key genome (FASTA) is required with key {source}")
    for key in ("genome", "regions", "data"):
        if key in config and not Path(config[key]).is_file():
            raise BpflowError(f"{path}: key {key}: file {config[key]} not found")
    genome = Genome(config["genome"]) if "genome" in config else None
    model = load_model(config["model-file"])
    common = dict(batch_size=config.get("batch-size", DEFAULT_BATCH_SIZE),
                  revcomp_average=config.get("revcomp-average", False), heads=config.get("heads"),
                  model_file=config["model-file"], config=config)
    if source == "regions":
        predict_regions(model, genome, config["regions"], config["output-h5"],
                        resize_regions=config.get("resize-regions", True), **common)
    elif source == "chromosomes":
        predict_chromosomes(model, genome, config["output-h5"], config["chromosomes"], config.get("stride"),
                            **common)
    else:
        predict_dataset(model, config["data"], config["output-h5"], genome, **common)
    return 0


# ----------------------------------------------------------------------------------------------
# bpflow predictions-to-bigwig


class _TrackAccumulator:
    """Base-by-base mean of overlapping windows on one chromosome, flushed to bigWigs in order."""

    def __init__(self, writers, chrom: str, width: int):
        self.writers = writers
        self.chrom = chrom
        self.base = 0          # genome position of buffer row 0
        self.sums = np.zeros((0, width))
        self.counts = np.zeros(0, dtype=np.int64)

    def add(self, start: int, values: np.ndarray) -> None:
        if start < self.base:
            raise RuntimeError("internal error: windows must arrive sorted by start")
        end = start + len(values) - self.base
        if end > len(self.counts):
            grow = max(end, 2 * len(self.counts))
            self.sums = np.concatenate([self.sums, np.zeros((grow - len(self.counts), self.sums.shape[1]))])
            self.counts = np.concatenate([self.counts, np.zeros(grow - len(self.counts), np.int64)])
        self.sums[start - self.base:end] += values
        self.counts[start - self.base:end] += 1

    def flush(self, upto: int | None = None) -> None:
        """Write every base before ``upto`` (all when None) and drop it from the buffer."""
        k = len(self.counts) if upto is None else max(0, min(upto - self.base, len(self.counts)))
        if k == 0:
            return
        counts = self.counts[:k]
        covered = counts > 0
        if covered.any():
            edges = np.flatnonzero(np.diff(np.concatenate([[0], covered.view(np.int8), [0]])))
            means = self.sums[:k] / np.maximum(counts, 1)[:, None]
            for run_start, run_stop in zip(edges[::2], edges[1::2]):
                for t, writer in enumerate(self.writers):
                    writer.addEntries(self.chrom, int(self.base + run_start),
                                      values=np.ascontiguousarray(means[run_start:run_stop, t], dtype=np.float64),
                                      span=1, step=1)
        self.sums = self.sums[k:].copy()
        self.counts = self.counts[k:].copy()
        self.base += k


def _bigwig_values(mode: str, logits: np.ndarray, logcounts: np.ndarray) -> np.ndarray:
    if mode == "profile":
        return predicted_profile(logits, logcounts)
    if mode == "logits":
        return np.asarray(logits, dtype=np.float64)
    # counts: the window's predicted total spread evenly over its bases
    length = logits.shape[1]
    per_base = np.exp(np.asarray(logcounts, dtype=np.float64)) / length
    return np.broadcast_to(per_base[:, None, None], (len(per_base), length, 1))


def _read_rows(dataset_reader, rows: np.ndarray):
    """Read rows (any order) with increasing-index h5py access; return them in the given order."""
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    if sorted_rows[-1] - sorted_rows[0] + 1 == len(sorted_rows):
        data = dataset_reader(slice(int(sorted_rows[0]), int(sorted_rows[-1]) + 1))
    else:
        data = dataset_reader(sorted_rows)
    out = np.empty_like(data)
    out[order] = data
    return out


def predictions_to_bigwig(h5, outputs: Sequence, head: int | str = 0, mode: str = "profile", genome=None,
                          batch_size: int = 256) -> list[Path]:
    """Write one head of a prediction file as bigWigs (one per task; one file in counts mode).

    Modes: ``profile`` = softmax(logits over positions x tasks) * exp(logcounts), expected counts
    per base; ``logits`` = raw logits; ``counts`` = exp(logcounts) / output_length at every base
    of the window (one track: the head's total spread evenly).  Where windows overlap, each base
    is the mean over the windows covering it; bases no window covers are left empty.
    Reverse-complement samples (``coords_strand`` "-") are skipped.  Chromosome sizes come from
    ``genome``'s FASTA index when given, else from the file's ``chrom_sizes``.
    """
    import pyBigWig

    if mode not in BIGWIG_MODES:
        raise BpflowError(f"mode {mode!r} is not one of {', '.join(BIGWIG_MODES)}")
    with PredictionFile(h5) as pf:
        head = pf.head_index(head)
        num_tracks = 1 if mode == "counts" else pf.num_tasks(head)
        outputs = [Path(o) for o in outputs]
        if len(outputs) != num_tracks:
            raise BpflowError(f"{h5}: head {pf.head_name(head)!r} in mode {mode} gives {num_tracks} track(s) "
                              f"but {len(outputs)} output bigWig(s) were named")
        if len(set(outputs)) != len(outputs):
            raise BpflowError("the output bigWig paths must differ")
        coords = pf.coords()
        if coords is None:
            raise BpflowError(f"{h5}: the prediction file has no coordinates")
        if genome is not None:
            genome_obj = genome if isinstance(genome, Genome) else Genome(genome)
            sizes = dict(genome_obj.chrom_sizes)
            size_source = genome_obj.path
        else:
            sizes = pf.chrom_sizes
            size_source = f"{h5} chrom_sizes"
        header = list(sizes.items())
        rank = {name: i for i, (name, _) in enumerate(header)}
        names = coords.names()
        keep = np.ones(len(names), dtype=bool)
        strands = pf.strands()
        if strands is not None and strands.any():
            logger.info("%s: skipping %d reverse-complement sample(s)", h5, int(strands.sum()))
            keep &= ~strands
        missing = sorted(set(names[keep]) - set(rank))
        if missing:
            raise BpflowError(f"{h5}: chromosome {missing[0]!r} has no size in {size_source}")
        chrom_rank = np.array([rank.get(n, -1) for n in names], dtype=np.int64)
        sizes_arr = np.array([s for _, s in header] + [0], dtype=np.int64)[chrom_rank]
        bad = keep & ((coords.start < 0) | (coords.stop > sizes_arr) |
                      (coords.stop - coords.start != pf.output_length))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise BpflowError(f"{h5}: window {coords.label(i)} (row {i}) does not fit its chromosome "
                              f"({size_source}) or the output length {pf.output_length}")
        rows = np.flatnonzero(keep)
        rows = rows[np.lexsort((coords.start[rows], chrom_rank[rows]))]
        logger.info("writing %d window(s) of head %r as %s bigWig(s)", len(rows), pf.head_name(head), mode)
        with contextlib.ExitStack() as stack:
            tmps = [stack.enter_context(atomic_output(o)) for o in outputs]
            writers = []
            try:
                for tmp in tmps:
                    bw = pyBigWig.open(str(tmp), "w")
                    if bw is None:
                        raise BpflowError(f"cannot create bigWig {tmp}")
                    writers.append(bw)
                    bw.addHeader([(n, int(s)) for n, s in header])
                acc = None
                batches = range(0, len(rows), batch_size)
                for a in progress(batches, total=len(batches), desc="bigwig", unit="batch"):
                    batch = rows[a:a + batch_size]
                    logits = _read_rows(lambda r: pf.logits(head, r), batch)
                    logcounts = _read_rows(lambda r: pf.logcounts(head, r), batch)
                    values = _bigwig_values(mode, logits, logcounts)
                    for j, r in enumerate(batch):
                        chrom = names[r]
                        if acc is None or acc.chrom != chrom:
                            if acc is not None:
                                acc.flush()
                            acc = _TrackAccumulator(writers, chrom, num_tracks)
                            acc.base = int(coords.start[r])
                        acc.add(int(coords.start[r]), values[j])
                    if acc is not None:
                        acc.flush(int(coords.start[batch[-1]]))
                if acc is not None:
                    acc.flush()
            finally:
                for bw in writers:
                    bw.close()
    return outputs


TO_BIGWIG_SCHEMA = {
    "type": "object",
    "properties": {
        "h5": {"type": "string", "minLength": 1},
        "head": {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "minLength": 1}]},
        "mode": {"enum": list(BIGWIG_MODES)},
        "output-bigwigs": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
        "output-prefix": {"type": "string", "minLength": 1},
        "genome": {"type": "string", "minLength": 1},
        "verbosity": VERBOSITY_SCHEMA,
    },
    "required": ["h5"],
    "additionalProperties": False,
}


def to_bigwig_main(argv: list[str]) -> int:
    """``bpflow predictions-to-bigwig CONFIG.json``."""
    path, config = read_step_config(argv, "bpflow predictions-to-bigwig",
                                    "Write one head of a prediction file as bigWigs.", "docs/evaluation.md")
    validate_config(config, TO_BIGWIG_SCHEMA, path)
    setup_logging(config.get("verbosity", "INFO"))
    if ("output-bigwigs" in config) == ("output-prefix" in config):
        raise BpflowError(f"{path}: give exactly one of the keys output-bigwigs, output-prefix")
    if "genome" in config and not Path(config["genome"]).is_file():
        raise BpflowError(f"{path}: key genome: file {config['genome']} not found")
    mode = config.get("mode", "profile")
    head = config.get("head", 0)
    if "output-bigwigs" in config:
        outputs = config["output-bigwigs"]
    else:
        with PredictionFile(config["h5"]) as pf:
            tasks = 1 if mode == "counts" else pf.num_tasks(pf.head_index(head))
        prefix = config["output-prefix"]
        outputs = [f"{prefix}.counts.bw"] if mode == "counts" else [f"{prefix}.task{t}.bw" for t in range(tasks)]
    predictions_to_bigwig(config["h5"], outputs, head, mode, config.get("genome"))
    return 0
