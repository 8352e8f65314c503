"""Contribution-score files: one HDF5 file per model, head and target.

One row per input window::

    sequence      uint8   (N, L, 4)  one-hot input (columns A, C, G, T; N rows all zero)
    hypothetical  float32 (N, L, 4)  hypothetical contributions (TF-MoDISco's "hyp scores")
    chrom_names, chrom_sizes, coords_chrom, coords_start, coords_stop
                                     the input windows (bpflow.formats.coords; chrom_sizes -1
                                     where unknown)
    region_start, region_stop  int64 (N,)   the region (peak) of each window, on the same
                                     chromosome; only in files whose regions differ from the
                                     input windows

The actual contributions are ``hypothetical * sequence``; summed over the bases they give the
projected contribution of each position (:meth:`ContributionFile.projected`).  Root
attributes: ``format`` ("bpflow-contributions"), ``format-version``, ``bpflow-version``,
``model-file``, ``head``, ``target`` ("counts" or "profile"), ``num-references``, ``seed``,
``backend``, ``input-length``, plus any extra ones the writer is given.

Also here: the export of a file to TF-MoDISco-lite's ``modisco motifs`` inputs
(:func:`export_modisco_inputs`) and the bigWig of projected contributions
(:func:`write_projected_bigwig`).
"""

from __future__ import annotations

import contextlib
import zipfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from bpflow.formats.bigwig import TrackAccumulator, bigwig_writers
from bpflow.formats.coords import Coords, decode_strings, open_hdf5, read_coords
from bpflow.utils import BpflowError, atomic_output

FORMAT_NAME = "bpflow-contributions"
FORMAT_VERSION = 1
TARGETS = ("counts", "profile")

# Rows per HDF5 chunk: about 1 MiB of hypothetical scores.
_CHUNK_BYTES = 1 << 20


def _chunk_rows(length: int) -> int:
    return max(1, _CHUNK_BYTES // max(1, length * 4 * 4))


class ContributionWriter:
    """Streams a contribution file batch by batch; the file appears (atomically renamed from a
    temporary name) only when :meth:`close` succeeds.

    With ``num_samples`` the datasets have that many rows and closing before all are written
    is an error; without it they grow with each batch.  Use as a context manager: an
    exception in the block (or :meth:`abort`) deletes the temporary file and leaves no file.
    ``regions`` adds the ``region_start`` / ``region_stop`` datasets, which :meth:`write` then
    requires.
    """

    def __init__(
        self,
        path,
        input_length: int,
        chrom_names: Sequence[str],
        *,
        num_samples: int | None = None,
        chrom_sizes: Sequence[int] | Mapping[str, int] | None = None,
        model_file: str = "",
        head: str | int = "",
        target: str = "counts",
        num_references: int = 0,
        seed: int = 0,
        backend: str = "",
        regions: bool = False,
        attrs: dict | None = None,
    ):
        import h5py

        from bpflow import __version__

        if target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
        if int(input_length) < 1:
            raise ValueError(f"the input length must be >= 1, got {input_length}")
        self.path = Path(path)
        self.input_length = int(input_length)
        self.num_samples = None if num_samples is None else int(num_samples)
        self.chrom_names = [str(n) for n in chrom_names]
        self._chrom_index = {n: i for i, n in enumerate(self.chrom_names)}
        self.rows = 0
        self._closed = False
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_output(self.path))
        try:
            self.file = h5py.File(tmp, "w")
        except BaseException as err:
            self._stack.__exit__(type(err), err, err.__traceback__)
            raise
        self._stack.callback(self.file.close)  # closes before the rename (callbacks run LIFO)
        try:
            self._create(chrom_sizes, regions)
            attributes = {
                "format": FORMAT_NAME,
                "format-version": FORMAT_VERSION,
                "bpflow-version": __version__,
                "model-file": str(model_file),
                "head": str(head),
                "target": target,
                "num-references": int(num_references),
                "seed": int(seed),
                "backend": str(backend),
                "input-length": self.input_length,
                **(attrs or {}),
            }
            for key, value in attributes.items():
                self.file.attrs[key] = value
        except BaseException:
            self.abort()
            raise

    def _create(self, chrom_sizes, regions: bool) -> None:
        f = self.file
        width = max([1] + [len(n.encode()) for n in self.chrom_names])
        f.create_dataset("chrom_names", data=np.array([n.encode() for n in self.chrom_names], dtype=f"S{width}"))
        if isinstance(chrom_sizes, Mapping):
            sizes = [int(chrom_sizes.get(n, -1)) for n in self.chrom_names]
        elif chrom_sizes is None:
            sizes = [-1] * len(self.chrom_names)
        else:
            sizes = [int(s) for s in chrom_sizes]
            if len(sizes) != len(self.chrom_names):
                raise ValueError(f"{len(sizes)} chromosome sizes for {len(self.chrom_names)} chromosome names")
        f.create_dataset("chrom_sizes", data=np.asarray(sizes, dtype=np.int64).reshape(-1))
        n = self.num_samples or 0
        maxrows = self.num_samples  # None: resizable
        length = self.input_length
        rows = _chunk_rows(length) if self.num_samples is None else max(1, min(self.num_samples, _chunk_rows(length)))
        chunks = (rows, length, 4)
        self.sequence = f.create_dataset(
            "sequence",
            (n, length, 4),
            maxshape=(maxrows, length, 4),
            dtype=np.uint8,
            chunks=chunks,
            compression="gzip",
            compression_opts=1,
        )
        self.hypothetical = f.create_dataset(
            "hypothetical", (n, length, 4), maxshape=(maxrows, length, 4), dtype=np.float32, chunks=chunks
        )
        vector = {"maxshape": (maxrows,), "chunks": (max(1024, rows),) if maxrows is None else None}
        self.coords_chrom = f.create_dataset("coords_chrom", (n,), dtype=np.int32, **vector)
        self.coords_start = f.create_dataset("coords_start", (n,), dtype=np.int64, **vector)
        self.coords_stop = f.create_dataset("coords_stop", (n,), dtype=np.int64, **vector)
        self.region_start = self.region_stop = None
        if regions:
            self.region_start = f.create_dataset("region_start", (n,), dtype=np.int64, **vector)
            self.region_stop = f.create_dataset("region_stop", (n,), dtype=np.int64, **vector)

    def __enter__(self) -> "ContributionWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def _chrom_indices(self, chrom, count: int) -> np.ndarray:
        values = np.broadcast_to(np.asarray(chrom), (count,))
        if values.dtype.kind in "iu":
            index = values.astype(np.int64)
            bad = (index < 0) | (index >= len(self.chrom_names))
            if bad.any():
                raise BpflowError(f"{self.path}: chromosome index {int(index[bad][0])} is not in chrom_names")
            return index
        names = decode_strings(values)
        missing = sorted(set(names) - set(self._chrom_index))
        if missing:
            raise BpflowError(f"{self.path}: chromosome {missing[0]!r} is not in chrom_names")
        return np.array([self._chrom_index[n] for n in names], dtype=np.int64)

    def write(self, sequence, hypothetical, chrom, start, stop=None, region_start=None, region_stop=None) -> None:
        """Append a batch: (b, L, 4) one-hot ``sequence`` and ``hypothetical`` scores, the
        chromosome (index into ``chrom_names`` or name; one for the batch or one per row) and
        the 0-based start of each input window (``stop`` defaults to start + L), and the
        regions when the file has them."""
        if self._closed:
            raise RuntimeError("internal error: write after close")
        sequence = np.asarray(sequence)
        hypothetical = np.asarray(hypothetical, dtype=np.float32)
        count = len(sequence)
        shape = (count, self.input_length, 4)
        if sequence.shape != shape or hypothetical.shape != shape:
            raise ValueError(
                f"{self.path}: a batch of sequence {sequence.shape} and hypothetical {hypothetical.shape}; "
                f"expected both (rows, {self.input_length}, 4)"
            )
        start = np.broadcast_to(np.asarray(start, dtype=np.int64), (count,))
        stop = (
            start + self.input_length if stop is None else np.broadcast_to(np.asarray(stop, dtype=np.int64), (count,))
        )
        chrom = self._chrom_indices(chrom, count)
        if self.region_start is not None and (region_start is None or region_stop is None):
            raise ValueError(f"{self.path}: the file has regions; give region_start and region_stop")
        if not np.isfinite(hypothetical).all():
            k = int(np.flatnonzero(~np.isfinite(hypothetical).all(axis=(1, 2)))[0])
            raise BpflowError(
                f"{self.path}: non-finite hypothetical contributions for "
                f"{self.chrom_names[chrom[k]]}:{start[k]}-{stop[k]} (row {self.rows + k})"
            )
        end = self.rows + count
        if self.num_samples is None:
            for dataset in self._datasets():
                dataset.resize(end, axis=0)
        elif end > self.num_samples:
            raise ValueError(f"{self.path}: {end} rows written to a file of {self.num_samples}")
        rows = slice(self.rows, end)
        self.sequence[rows] = sequence
        self.hypothetical[rows] = hypothetical
        self.coords_chrom[rows] = chrom
        self.coords_start[rows] = start
        self.coords_stop[rows] = stop
        if self.region_start is not None:
            self.region_start[rows] = np.broadcast_to(np.asarray(region_start, dtype=np.int64), (count,))
            self.region_stop[rows] = np.broadcast_to(np.asarray(region_stop, dtype=np.int64), (count,))
        self.rows = end

    def _datasets(self):
        found = [self.sequence, self.hypothetical, self.coords_chrom, self.coords_start, self.coords_stop]
        return found + ([self.region_start, self.region_stop] if self.region_start is not None else [])

    def close(self) -> None:
        """Finish the file and rename it into place (an error, leaving no file, when fewer
        rows were written than announced)."""
        if self._closed:
            return
        if self.num_samples is not None and self.rows != self.num_samples:
            err = BpflowError(f"{self.path}: {self.rows} of {self.num_samples} rows written; no file left")
            self.abort()
            raise err
        self._closed = True
        self._stack.close()

    def abort(self) -> None:
        """Close and delete the temporary file; no file is left at the path."""
        if self._closed:
            return
        self._closed = True
        err = _Aborted()
        with contextlib.suppress(_Aborted):
            self._stack.__exit__(_Aborted, err, None)


class _Aborted(Exception):
    """Thrown into the atomic-output context to make it delete the temporary file."""


class ContributionFile:
    """Read access to a contribution file; use as a context manager."""

    REQUIRED = ("sequence", "hypothetical", "coords_chrom", "coords_start", "coords_stop", "chrom_names")

    def __init__(self, path):
        self.path = str(path)
        self.file = open_hdf5(path, "contribution file")
        try:
            self._check()
        except BaseException:
            self.file.close()
            raise

    def _check(self) -> None:
        f = self.file
        for key in self.REQUIRED:
            if key not in f:
                raise BpflowError(f"{self.path}: not a contribution file (no {key} dataset)")
        shape = f["sequence"].shape
        if len(shape) != 3 or shape[2] != 4:
            raise BpflowError(f"{self.path}: sequence has shape {shape}; expected (N, length, 4)")
        if f["hypothetical"].shape != shape:
            raise BpflowError(f"{self.path}: hypothetical has shape {f['hypothetical'].shape}, sequence {shape}")
        self.num_samples, self.input_length = int(shape[0]), int(shape[1])
        keys = ["coords_chrom", "coords_start", "coords_stop"]
        keys += [k for k in ("region_start", "region_stop") if k in f]
        for key in keys:
            if f[key].shape != (self.num_samples,):
                raise BpflowError(f"{self.path}: {key} has shape {f[key].shape}; expected ({self.num_samples},)")
        if ("region_start" in f) != ("region_stop" in f):
            raise BpflowError(f"{self.path}: region_start and region_stop must both be present or both absent")
        if "target" in f.attrs and self.attrs["target"] not in TARGETS:
            raise BpflowError(f"{self.path}: attribute target is {self.attrs['target']!r}; expected counts or profile")

    def __enter__(self) -> "ContributionFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()

    @property
    def attrs(self) -> dict:
        """Root attributes, strings decoded and numpy scalars as Python values."""
        out = {}
        for key, value in self.file.attrs.items():
            if isinstance(value, (bytes, np.bytes_)):
                value = value.decode()
            elif isinstance(value, np.generic):
                value = value.item()
            out[key] = value
        return out

    @property
    def target(self) -> str:
        return str(self.attrs.get("target", ""))

    @property
    def head(self) -> str:
        return str(self.attrs.get("head", ""))

    @property
    def chrom_names(self) -> list[str]:
        return decode_strings(self.file["chrom_names"][...])

    @property
    def chrom_sizes(self) -> dict[str, int]:
        """Known chromosome sizes (those stored as -1 are left out)."""
        if "chrom_sizes" not in self.file:
            return {}
        sizes = self.file["chrom_sizes"][...].astype(np.int64).reshape(-1)
        return {n: int(s) for n, s in zip(self.chrom_names, sizes) if s >= 0}

    def coords(self) -> Coords:
        """The input windows."""
        return read_coords(self.file, self.path)

    def regions(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(region_start, region_stop) of every row, or None when the file has none (the
        regions are then the input windows)."""
        if "region_start" not in self.file:
            return None
        return self.file["region_start"][...].astype(np.int64), self.file["region_stop"][...].astype(np.int64)

    def sequence(self, rows=slice(None)) -> np.ndarray:
        return self.file["sequence"][rows]

    def hypothetical(self, rows=slice(None)) -> np.ndarray:
        return self.file["hypothetical"][rows]

    def projected(self, rows=slice(None)) -> np.ndarray:
        """(n, L) float32: sum over bases of hypothetical * one-hot."""
        return projected(self.sequence(rows), self.hypothetical(rows))


def projected(sequence: np.ndarray, hypothetical: np.ndarray) -> np.ndarray:
    """Projected contributions: ``(hypothetical * sequence).sum(-1)``, as float32."""
    return np.einsum("...j,...j->...", np.asarray(hypothetical, dtype=np.float32), np.asarray(sequence, np.float32))


# ----------------------------------------------------------------------------------------------
# TF-MoDISco-lite inputs


def _write_npz_rows(path, shape: tuple, dtype, batches, compress: bool) -> None:
    """Write an .npz holding one array ``arr_0`` of ``shape``, from C-order row blocks, without
    holding it in memory (the layout ``numpy.savez`` writes)."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with atomic_output(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=method, allowZip64=True) as zf:
            with zf.open("arr_0.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array_header_2_0(fh, header)
                for block in batches:
                    fh.write(np.ascontiguousarray(block, dtype=dtype).tobytes())


def export_modisco_inputs(
    contributions, sequences_path, attributions_path, batch_size: int = 512, compress_attributions: bool = False
) -> None:
    """Write a contribution file's one-hot sequences and hypothetical contributions as the two
    .npz files of ``modisco motifs -s SEQUENCES.npz -a ATTRIBUTIONS.npz``: each holds one array
    ``arr_0`` of shape (N, 4, L) (bases before positions), uint8 and float32.  Streams in
    blocks of ``batch_size`` rows; the sequences are deflate-compressed, the attributions
    only with ``compress_attributions`` (float scores barely compress)."""
    own = not isinstance(contributions, ContributionFile)
    cf = ContributionFile(contributions) if own else contributions
    try:
        n, length = cf.num_samples, cf.input_length
        blocks = range(0, n, batch_size)
        _write_npz_rows(
            sequences_path,
            (n, 4, length),
            np.uint8,
            (cf.sequence(slice(a, a + batch_size)).transpose(0, 2, 1) for a in blocks),
            compress=True,
        )
        _write_npz_rows(
            attributions_path,
            (n, 4, length),
            np.float32,
            (cf.hypothetical(slice(a, a + batch_size)).transpose(0, 2, 1) for a in blocks),
            compress=compress_attributions,
        )
    finally:
        if own:
            cf.close()


# ----------------------------------------------------------------------------------------------
# bigWig of projected contributions


def _read_rows(read, rows: np.ndarray) -> np.ndarray:
    """``read(index)`` for rows in any order, with increasing-index access (h5py needs it)."""
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    if len(ordered) and ordered[-1] - ordered[0] + 1 == len(ordered):
        data = read(slice(int(ordered[0]), int(ordered[-1]) + 1))
    else:
        data = read(ordered)
    out = np.empty_like(data)
    out[order] = data
    return out


def write_projected_bigwig(path, contributions, chrom_sizes=None, batch_size: int = 256) -> Path:
    """Write the projected contributions (sum over bases of hypothetical * one-hot) at each
    genome position as a bigWig; where windows overlap, each base is the mean over the windows
    covering it; bases no window covers get no entry.

    ``contributions``: a contribution file (path or open :class:`ContributionFile`) or a
    mapping of arrays: ``sequence`` and ``hypothetical`` (N, L, 4), ``chrom`` (N,) chromosome
    names and ``start`` (N,) window starts.  ``chrom_sizes`` (a mapping or (name, size)
    pairs) is the bigWig's header, in its order; by default the file's ``chrom_sizes``.
    Parts of windows outside their chromosome are left out.  The file appears only when
    complete.
    """
    own = isinstance(contributions, (str, Path))
    source = ContributionFile(contributions) if own else contributions
    try:
        return _write_projected(Path(path), source, chrom_sizes, batch_size)
    finally:
        if own:
            source.close()


def _write_projected(path: Path, source, chrom_sizes, batch_size: int) -> Path:
    if isinstance(source, ContributionFile):
        coords = source.coords()
        names, starts = coords.names(), coords.start
        read_seq, read_hyp = source.sequence, source.hypothetical
        label = source.path
        if chrom_sizes is None:
            chrom_sizes = source.chrom_sizes
            if not chrom_sizes:
                raise BpflowError(f"{label}: the file has no chromosome sizes; give chrom_sizes")
    else:
        try:
            seq, hyp = np.asarray(source["sequence"]), np.asarray(source["hypothetical"])
            names = np.asarray(decode_strings(source["chrom"]), dtype=object)
            starts = np.asarray(source["start"], dtype=np.int64).reshape(-1)
        except KeyError as err:
            raise ValueError(f"contribution arrays lack {err}") from None
        if seq.ndim != 3 or seq.shape[2] != 4 or hyp.shape != seq.shape or not len(names) == len(starts) == len(seq):
            raise ValueError(f"sequence {seq.shape}, hypothetical {hyp.shape}, {len(names)} chrom, {len(starts)} start")
        read_seq, read_hyp = seq.__getitem__, hyp.__getitem__
        label = "contributions"
        if chrom_sizes is None:
            raise ValueError("chrom_sizes is required with arrays")
    header = [(str(n), int(s)) for n, s in (chrom_sizes.items() if isinstance(chrom_sizes, Mapping) else chrom_sizes)]
    rank = {name: i for i, (name, _) in enumerate(header)}
    missing = sorted(set(names) - set(rank))
    if missing:
        raise BpflowError(f"{label}: chromosome {missing[0]!r} is not in the chromosome sizes")
    chrom_rank = np.array([rank[n] for n in names], dtype=np.int64)
    sizes = np.array([s for _, s in header], dtype=np.int64)
    rows = np.lexsort((starts, chrom_rank))
    with bigwig_writers([path], header) as writers:
        acc = None
        for a in range(0, len(rows), batch_size):
            batch = rows[a : a + batch_size]
            values = projected(_read_rows(read_seq, batch), _read_rows(read_hyp, batch)).astype(np.float64)
            if not np.isfinite(values).all():
                k = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
                raise BpflowError(f"{label}: non-finite contributions in row {int(batch[k])}")
            for j, r in enumerate(batch):
                chrom, start = names[r], int(starts[r])
                lo, hi = max(start, 0), min(start + values.shape[1], int(sizes[chrom_rank[r]]))
                if hi <= lo:
                    continue
                if acc is None or acc.chrom != chrom:
                    if acc is not None:
                        acc.flush()
                    acc = TrackAccumulator(writers, chrom, lo)
                acc.add(lo, values[j, lo - start : hi - start, None])
            if acc is not None:
                acc.flush(max(0, int(starts[batch[-1]])))
        if acc is not None:
            acc.flush()
    return path
