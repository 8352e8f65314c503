"""The training dataset HDF5: BPReveal's layout plus bpflow's coordinates and metadata.

Layout (docs/data.md)::

    sequence      uint8   (N, input_length + 2 * max_jitter, 4)      one-hot (A, C, G, T)
    head_<i>      float32 (N, output_length + 2 * max_jitter, tasks) coverage of head i
    chrom_names, chrom_sizes, coords_chrom, coords_start, coords_stop, coords_strand
                                                                    (bpflow.formats.coords)
    metadata/     attributes: config (JSON), head_names, revcomp_task_orders, ...

Reverse-complement pairs, when present, are samples 2k / 2k+1 (``coords_strand`` "+" / "-").
:class:`TrainingDataset` reads such a file (bpflow's or BPReveal's); :func:`read_windows`
gives centred windows of several files in memory; the ``create_*`` / ``write_*`` functions
write the layout (``bpflow prepare-data``).
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import numpy as np

from bpflow.formats.coords import Coords, read_coords, read_strands
from bpflow.lengths import crop_offset
from bpflow.utils import BpflowError, first_line

logger = logging.getLogger("bpflow.dataset")

STRAND_RULES = ("auto", "forward", "all")

# Bytes per block when a whole dataset is read through (verify_readable).
_VERIFY_BLOCK_BYTES = 64 << 20


def read_error(where: str, name: str, err: BaseException) -> BpflowError:
    """The one-line error of h5py's ``err`` on reading dataset ``name`` of the file ``where``."""
    return BpflowError(f"{where}: cannot read '{name}' ({first_line(err)}); the file is truncated or corrupt")


@contextlib.contextmanager
def reading(where: str, name: str):
    """Turn h5py's error on reading dataset ``name`` of a file (truncated, corrupt chunks) into
    a one-line :class:`BpflowError` that names the file (``where``) and the dataset."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        raise read_error(where, name, err) from None


def check_head_order(stored: list[str], names: list[str], where: str, what: str) -> None:
    """Head names recorded in a file or model (``what``, e.g. "the model's heads") against the
    config's, matched by position: the same names in another order are an error (the heads
    would be swapped), other names only a warning."""
    if stored == names:
        return
    if sorted(stored) == sorted(names):
        raise BpflowError(
            f"{where}: {what} are {', '.join(stored)} but the config lists {', '.join(names)}: "
            "the heads are in a different order"
        )
    logger.warning(
        "%s: %s are named %s, the config's %s (matched by position)", where, what, ", ".join(stored), ", ".join(names)
    )


class TrainingDataset:
    """Read access to a training dataset; use as a context manager.

    ``label`` prefixes messages (e.g. "train-data"); ``h5_options`` go to ``h5py.File``
    (chunk-cache settings).  Opening checks that the file exists, is HDF5 and holds a
    ``sequence`` of shape (N, length, 4); heads are ``head_0``, ``head_1``, ... in order.
    """

    def __init__(self, path, label: str | None = None, **h5_options):
        import h5py

        self.path = Path(path)
        self.where = f"{label} {self.path}" if label else str(self.path)
        if not self.path.is_file():
            raise BpflowError(f"{self.where}: dataset file not found")
        try:
            self.file = h5py.File(self.path, "r", **h5_options)
        except OSError as err:
            raise BpflowError(f"{self.where}: not a readable HDF5 file ({first_line(err)})") from None
        try:
            if "sequence" not in self.file:
                raise BpflowError(f"{self.where}: no 'sequence' dataset; not a training dataset")
            self.sequence = self.file["sequence"]
            if self.sequence.ndim != 3 or self.sequence.shape[2] != 4:
                raise BpflowError(
                    f"{self.where}: 'sequence' must have shape (samples, length, 4), got {self.sequence.shape}"
                )
        except BaseException:
            self.file.close()
            raise
        self.num_samples = int(self.sequence.shape[0])
        self.sequence_width = int(self.sequence.shape[1])
        self.num_heads = 0
        while f"head_{self.num_heads}" in self.file:
            self.num_heads += 1

    def check_layout(
        self, input_length: int, output_length: int, num_tasks, max_jitter: int = 0, head_names=None
    ) -> None:
        """Check, from the shapes alone, that the file can feed a model: at least one sample;
        ``sequence`` and each of the ``len(num_tasks)`` heads wide enough for the model's lengths
        plus ``max_jitter`` on each side (centre-croppable); each head a float dataset with
        ``num_tasks[i]`` tasks; and, when the file records head names, the config's
        ``head_names`` in the same order (the same names in another order is an error, other
        names a warning).  One-line :class:`BpflowError` naming the file and the dataset."""
        where = self.where
        if self.num_samples == 0:
            raise BpflowError(f"{where}: the file holds no samples")
        self._flank(self.sequence_width, input_length, "sequence", "input-length", max_jitter)
        self.require_heads(len(num_tasks))
        for i, tasks in enumerate(num_tasks):
            ds = self.file[f"head_{i}"]
            if ds.shape[2] != tasks:
                raise BpflowError(
                    f"{where}: 'head_{i}' has {ds.shape[2]} task(s) but the config's head {i} has num-tasks {tasks}"
                )
            if ds.dtype.kind != "f":
                raise BpflowError(f"{where}: 'head_{i}' must be a float dataset, got {ds.dtype}")
            self._flank(int(ds.shape[1]), output_length, f"head_{i}", "output-length", max_jitter)
        if head_names is not None:
            self.check_head_names(list(head_names))

    def _flank(self, width: int, length: int, what: str, key: str, max_jitter: int) -> int:
        flank = crop_offset(width, length, f"{self.where}: '{what}' (the model's {key} is {length})")
        if flank < max_jitter:
            raise BpflowError(
                f"{self.where}: '{what}' windows are {width} wide, so they allow a jitter of at most "
                f"{flank} around the {key} {length}, but max-jitter is {max_jitter}"
            )
        return flank

    def check_head_names(self, names: list[str]) -> None:
        """The config's head names against those the file records (if any), head by head."""
        stored = self.head_names()
        if stored is not None:
            check_head_order(stored[: len(names)], names, self.where, "the file's heads (head_0, head_1, ...)")

    def verify_readable(self, num_heads: int | None = None, check_values: bool = True) -> None:
        """Read ``sequence`` and the first ``num_heads`` heads (default all) through, in blocks:
        a truncated or corrupt file fails here, with a one-line error naming the file and the
        dataset, rather than where the data are used.  With ``check_values``, NaN, infinite or
        negative coverage is an error too (naming the head and the first such sample)."""
        heads = range(self.num_heads if num_heads is None else num_heads)
        for name in ["sequence"] + [f"head_{i}" for i in heads]:
            ds = self.file[name]
            row_bytes = max(1, int(np.prod(ds.shape[1:])) * ds.dtype.itemsize)
            step = max(1, _VERIFY_BLOCK_BYTES // row_bytes)
            if ds.chunks:
                step = max(ds.chunks[0], step - step % ds.chunks[0])
            for r0 in range(0, int(ds.shape[0]), step):
                with reading(self.where, name):
                    block = ds[r0 : r0 + step]
                if not check_values or name == "sequence":
                    continue
                bad = ~np.isfinite(block)
                if bad.any():
                    i = int(np.argwhere(bad)[0][0]) + r0
                    raise BpflowError(f"{self.where}: {name} has NaN or infinite values (first in sample {i})")
                if block.size and block.min() < 0:
                    i = int(np.argwhere(block < 0)[0][0]) + r0
                    raise BpflowError(f"{self.where}: {name} has negative values (first in sample {i})")

    def __enter__(self) -> "TrainingDataset":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()

    # ------------------------------------------------------------------ heads

    def head(self, i: int):
        """The h5py dataset ``head_<i>`` (a one-line error when the file has no such head)."""
        key = f"head_{i}"
        if key not in self.file:
            raise BpflowError(f"{self.where}: no '{key}' dataset (the file has {self.num_heads} head(s))")
        return self.file[key]

    def require_heads(self, num_heads: int | None = None) -> None:
        """At least one head (or at least ``num_heads``), each shaped (N, width, tasks)."""
        wanted = max(1, num_heads or 0)
        if self.num_heads < wanted:
            raise BpflowError(
                f"{self.where}: no 'head_{self.num_heads}' dataset, but {wanted} head(s) are needed"
                + ("" if self.num_heads else " (not a bpflow/BPReveal training dataset?)")
            )
        for i in range(self.num_heads):
            ds = self.file[f"head_{i}"]
            if ds.ndim != 3 or ds.shape[0] != self.num_samples:
                raise BpflowError(
                    f"{self.where}: 'head_{i}' must have shape ({self.num_samples}, length, tasks), got {ds.shape}"
                )

    def extra_heads(self, num_heads: int) -> list[str]:
        """Heads beyond the first ``num_heads`` (a model with fewer heads ignores them)."""
        return [f"head_{i}" for i in range(num_heads, self.num_heads)]

    # ------------------------------------------------------------------ metadata

    @property
    def metadata(self) -> dict:
        """The ``metadata`` group's attributes (strings decoded; ``config`` parsed from JSON, or
        None when it is not JSON: BPReveal stores a Python repr)."""
        if "metadata" not in self.file:
            return {}
        out = {}
        for key, value in self.file["metadata"].attrs.items():
            out[key] = value.decode() if isinstance(value, bytes) else value
        if isinstance(out.get("config"), str):
            try:
                out["config"] = json.loads(out["config"])
            except json.JSONDecodeError:
                out["config"] = None
        return out

    def config(self) -> dict:
        """The prepare-data config recorded in the file ({} when there is none)."""
        cfg = self.metadata.get("config")
        return cfg if isinstance(cfg, dict) else {}

    def head_names(self) -> list[str] | None:
        """Head names from the metadata (``head_names`` or the config's heads), if recorded."""
        meta = self.metadata
        candidates = []
        if "head_names" in meta:
            try:
                candidates.append(json.loads(meta["head_names"]))
            except (TypeError, ValueError):
                pass
        heads = self.config().get("heads")
        if isinstance(heads, list):
            candidates.append([h.get("head-name") for h in heads if isinstance(h, dict)])
        for names in candidates:
            if isinstance(names, list) and len(names) == self.num_heads and all(names):
                return [str(n) for n in names]
        return None

    def stored_revcomp(self) -> bool | None:
        """Does the file hold reverse-complement pairs?  None when it does not say."""
        value = self.metadata.get("reverse_complement")
        if value is None:
            value = self.config().get("reverse-complement")
        return None if value is None else bool(value)

    def stored_task_orders(self) -> list | None:
        """The reverse-complement task order of each head, as recorded (None when not)."""
        raw = self.metadata.get("revcomp_task_orders")
        try:
            return json.loads(raw) if raw is not None else None
        except (TypeError, json.JSONDecodeError):
            return None

    # ------------------------------------------------------------------ coordinates and strands

    def coords(self) -> Coords | None:
        return read_coords(self.file, str(self.path))

    def reverse_strand(self) -> np.ndarray | None:
        """Boolean "is a reverse complement" per sample (``coords_strand``), None when absent."""
        return read_strands(self.file, str(self.path))

    def chrom_sizes(self) -> list[int]:
        """``chrom_sizes`` as stored (one per ``chrom_names`` entry; [] when absent)."""
        return [int(s) for s in self.file["chrom_sizes"][...].reshape(-1)] if "chrom_sizes" in self.file else []

    def sample_mask(self, strands: str = "auto", warn: bool = False) -> tuple[np.ndarray, str]:
        """The samples to score or show, and the rule used: with ``strands`` "auto", the
        forward samples when the file has ``coords_strand`` (a reverse-complement pair would
        count a region twice), else all; "forward" requires ``coords_strand``; "all"."""
        if strands not in STRAND_RULES:
            raise BpflowError(f"strands {strands!r} must be one of {', '.join(STRAND_RULES)}")
        n = self.num_samples
        if strands == "all":
            return np.ones(n, dtype=bool), "all"
        reverse = self.reverse_strand()
        if reverse is None:
            if strands == "forward":
                raise BpflowError(f'{self.where}: key strands is "forward" but the dataset has no coords_strand')
            if warn:
                logger.warning(
                    "%s has no coords_strand: using all %d samples (if the file stores reverse-complement "
                    "pairs, both members are counted)",
                    self.where,
                    n,
                )
            return np.ones(n, dtype=bool), "all"
        return ~reverse, "forward"

    # ------------------------------------------------------------------ data

    def sequences(self, rows=slice(None), length: int | None = None) -> np.ndarray:
        """One-hot sequences (uint8) of ``rows`` (a slice or sorted indices), center-cropped to
        ``length`` (default: as stored)."""
        length = self.sequence_width if length is None else int(length)
        a = crop_offset(self.sequence_width, length, f"{self.where}: the sequences")
        if isinstance(rows, np.ndarray) and len(rows) and len(rows) == rows[-1] - rows[0] + 1:
            rows = slice(int(rows[0]), int(rows[-1]) + 1)  # contiguous: one read
        with reading(self.where, "sequence"):
            return np.asarray(self.sequence[rows, a : a + length, :], dtype=np.uint8)

    def profiles(self, head: int, rows=slice(None), length: int | None = None) -> np.ndarray:
        """Coverage of ``head`` (float64, NaN -> 0) of ``rows``, center-cropped to ``length``."""
        ds = self.head(head)
        length = ds.shape[1] if length is None else int(length)
        a = crop_offset(ds.shape[1], length, f"{self.where}: head_{head}")
        with reading(self.where, f"head_{head}"):
            return np.nan_to_num(np.asarray(ds[rows, a : a + length, :], dtype=np.float64))

    def totals(self, head: int, length: int | None = None, chunk: int = 4096) -> np.ndarray:
        """Total counts (N,) of every sample of ``head`` over its central ``length`` bases."""
        parts = [
            self.profiles(head, slice(a, a + chunk), length).sum(axis=(1, 2)) for a in range(0, self.num_samples, chunk)
        ]
        return np.concatenate(parts) if parts else np.zeros(0)


def as_list(files) -> list:
    """One path or a list of paths -> a list."""
    return [files] if isinstance(files, (str, Path)) else list(files)


def even_rows(n: int, max_samples: int | None) -> np.ndarray:
    """Indices of at most ``max_samples`` evenly spaced rows of ``n`` (all rows without it)."""
    if max_samples is None or n <= max_samples:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, int(max_samples)).round().astype(int))


def read_windows(
    files, input_length: int, output_length: int, num_heads: int, max_samples: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Centred windows of one or more datasets, in memory.

    Returns ``(sequences (N, input_length, 4) uint8, totals (N, num_heads) float64)``: each
    sample's sequence center-cropped to ``input_length`` and each head's total counts over the
    central ``output_length`` positions (every task).  With ``max_samples``, an evenly spaced
    subset of at most that many samples.
    """
    seqs, totals = [], []
    for path in as_list(files):
        with TrainingDataset(path) as data:
            data.require_heads(num_heads)
            seqs.append(data.sequences(length=input_length))
            per_head = [data.totals(i, output_length) for i in range(num_heads)]
            totals.append(np.stack(per_head, axis=1) if per_head else np.zeros((data.num_samples, 0)))
    seq = np.concatenate(seqs) if seqs else np.zeros((0, input_length, 4), np.uint8)
    tot = np.concatenate(totals) if totals else np.zeros((0, num_heads))
    index = even_rows(len(seq), max_samples)
    return seq[index], tot[index]


def read_profiles(
    files, input_length: int, output_length: int, head: int, max_samples: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`read_windows`, with head ``head``'s profiles (N, output_length, tasks)
    float64 (NaN -> 0) instead of the totals; forward samples only where a file records
    strands (a reverse-complement pair is one window counted twice)."""
    seqs, profiles = [], []
    for path in as_list(files):
        with TrainingDataset(path) as data:
            data.require_heads(head + 1)
            rows = np.flatnonzero(data.sample_mask("auto")[0])
            rows = rows[even_rows(len(rows), max_samples)]
            seqs.append(data.sequences(rows, input_length))
            profiles.append(data.profiles(head, rows, output_length))
    if not seqs:
        raise BpflowError("no dataset given")
    seq, prof = np.concatenate(seqs), np.concatenate(profiles)
    index = even_rows(len(seq), max_samples)
    return seq[index], prof[index]


# ----------------------------------------------------------------------------------------------
# Writing the layout (bpflow prepare-data)


def create_arrays(f, num_samples: int, sequence_width: int, head_width: int, num_tasks, rows: int, filters: dict):
    """Create ``sequence`` and every ``head_<i>`` in an open h5py file, chunked by ``rows``
    samples; returns {name: dataset}."""
    arrays = {
        "sequence": f.create_dataset(
            "sequence", (num_samples, sequence_width, 4), np.uint8, chunks=(rows, sequence_width, 4), **filters
        )
    }
    for h, t in enumerate(num_tasks):
        arrays[f"head_{h}"] = f.create_dataset(
            f"head_{h}", (num_samples, head_width, t), np.float32, chunks=(rows, head_width, t), **filters
        )
    return arrays


def write_coordinates(f, chrom_names, chrom_sizes, chrom_index, start, end, per_region: int) -> None:
    """The coordinates of regions, each written ``per_region`` times (forward, then reverse
    complement when 2), with ``coords_strand`` "+" / "-"."""
    import h5py

    f.create_dataset("chrom_names", data=np.array(chrom_names, dtype=object), dtype=h5py.string_dtype("utf-8"))
    f.create_dataset("chrom_sizes", data=np.array(chrom_sizes, dtype=np.int64))
    f.create_dataset("coords_chrom", data=np.repeat(chrom_index, per_region))
    f.create_dataset("coords_start", data=np.repeat(start, per_region).astype(np.int64))
    f.create_dataset("coords_stop", data=np.repeat(end, per_region).astype(np.int64))
    strand = np.tile(np.array([b"+", b"-"][:per_region], dtype="S1"), len(start))
    f.create_dataset("coords_strand", data=strand)


def write_metadata(f, config: dict, **attrs) -> None:
    """The ``metadata`` group: the config as JSON, the bpflow version and ``attrs``."""
    from bpflow import __version__

    meta = f.require_group("metadata")
    meta.attrs["config"] = json.dumps(config)
    meta.attrs["bpflow_version"] = __version__
    for key, value in attrs.items():
        meta.attrs[key] = value
