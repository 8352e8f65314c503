"""Per-sample coordinates, shared by training datasets and prediction files.

Layout (BPReveal's prediction-file names; bpflow's datasets use the same)::

    chrom_names   bytes/str (C,)   chromosome names
    chrom_sizes   int64     (C,)   their lengths (-1 where unknown)
    coords_chrom  int       (N,)   index into chrom_names (-1 where unknown), or the names
    coords_start  int64     (N,)   0-based start of the window
    coords_stop   int64     (N,)   end (exclusive)
    coords_strand           (N,)   "+" / "-" (or +1 / -1): "-" marks a reverse-complement sample
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bpflow.utils import BpflowError, first_line


def decode_strings(values) -> list[str]:
    """Strings of an HDF5 string/bytes array."""
    return [v.decode() if isinstance(v, (bytes, np.bytes_)) else str(v) for v in np.asarray(values).tolist()]


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
        labels = decode_strings(raw)
        names = decode_strings(h5["chrom_names"][...]) if "chrom_names" in h5 else []
        for name in sorted(set(labels) - set(names)):
            names.append(name)
        lookup = {n: i for i, n in enumerate(names)}
        chrom = np.array([lookup[n] for n in labels], dtype=np.int64)
    else:
        if "chrom_names" not in h5:
            raise BpflowError(f"{source}: coords_chrom holds indices but the file has no chrom_names")
        names = decode_strings(h5["chrom_names"][...])
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
        values = np.array(decode_strings(raw), dtype=object)
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


def open_hdf5(path, what: str):
    """``path`` opened read-only with h5py, or a one-line BpflowError naming the file and
    ``what`` it should be ("prediction file", ...) when it is missing or not HDF5."""
    import h5py

    if not Path(path).is_file():
        raise BpflowError(f"{path}: {what} not found")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise BpflowError(f"{path}: cannot open as HDF5: {first_line(err)}") from None
