"""BED and narrowPeak regions: reading (with file and line of every region), writing.

Coordinates are 0-based, half-open.  ``#``, ``track`` / ``browser`` and blank lines are
skipped; ``.gz`` files are read through gzip.  Only narrowPeak files (see :func:`read_bed`)
have summits.
"""

from __future__ import annotations

import gzip
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from bpflow.utils import BpflowError, atomic_output


@dataclass
class BedRegions:
    """Regions of BED files as columns.  ``summit`` is the narrowPeak summit as an absolute
    position, or -1 when the line has none (always -1 outside narrowPeak files).  ``file``
    (index into ``paths`` and ``narrowpeak``) and ``line`` say where each region came from
    (:meth:`where`).  Chromosome names are shared string objects
    and the optional columns can be skipped, so millions of regions stay small."""

    chrom: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    start: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    end: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    name: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    score: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    strand: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    summit: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    file: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int32))
    line: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    paths: list[str] = field(default_factory=list)
    narrowpeak: list[bool] = field(default_factory=list)  # per path: read as narrowPeak

    def __len__(self) -> int:
        return len(self.start)

    def where(self, k: int) -> str:
        """``file:line`` of region k (for error messages)."""
        return f"{self.paths[int(self.file[k])]}:{int(self.line[k])}"

    def subset(self, index) -> "BedRegions":
        index = np.asarray(index, dtype=np.int64)
        return BedRegions(
            self.chrom[index],
            self.start[index],
            self.end[index],
            self.name[index],
            self.score[index],
            self.strand[index],
            self.summit[index],
            self.file[index],
            self.line[index],
            list(self.paths),
            list(self.narrowpeak),
        )

    @staticmethod
    def concat(parts: Sequence["BedRegions"]) -> "BedRegions":
        parts = list(parts)
        if not parts:
            return BedRegions()
        offsets = np.cumsum([0] + [len(p.paths) for p in parts[:-1]])

        def cat(attr, dtype):
            return np.concatenate([getattr(p, attr) for p in parts]).astype(dtype, copy=False)

        return BedRegions(
            cat("chrom", object),
            cat("start", np.int64),
            cat("end", np.int64),
            cat("name", object),
            cat("score", object),
            cat("strand", object),
            cat("summit", np.int64),
            np.concatenate([p.file + o for p, o in zip(parts, offsets)]).astype(np.int32),
            cat("line", np.int64),
            [x for p in parts for x in p.paths],
            [x for p in parts for x in p.narrowpeak],
        )


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt")
    return open(path)


# Lines that hold no region: comments, UCSC track and browser lines, blank lines.
_SKIP = re.compile(r"#|(track|browser)(\s|$)")
_INTEGER = re.compile(r"-?[0-9]+")
# narrowPeak columns 5 and 7-10 (1-based) are numbers; 10 is the summit offset (-1 = none).
_NARROWPEAK_NUMBERS = {4: "score", 6: "signalValue", 7: "pValue", 8: "qValue", 9: "peak (summit offset)"}


def _narrowpeak_problem(cols: list[str]) -> str | None:
    """Why a line is not a narrowPeak line (None when it is one)."""
    if len(cols) != 10:
        return f"a narrowPeak line has exactly 10 columns, this one has {len(cols)}"
    for k, label in _NARROWPEAK_NUMBERS.items():
        try:
            float(cols[k])
        except ValueError:
            return f"narrowPeak column {k + 1} ({label}) must be a number: {cols[k]!r}"
    if not _INTEGER.fullmatch(cols[9]):
        return f"narrowPeak column 10 (summit offset) must be an integer: {cols[9]!r}"
    return None


def _is_narrowpeak_name(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".narrowpeak") or name.endswith(".narrowpeak.gz")


def read_bed(path: str | Path, extra_columns: bool = True) -> BedRegions:
    """Read a BED file (3+ columns; ``.gz`` allowed).  ``#`` lines, ``track`` / ``browser``
    lines and blank lines are skipped.  Malformed lines are a BpflowError naming file and line.
    Without ``extra_columns`` the name, score and strand columns read as ".", "0", ".".

    The format is decided from the file: it is narrowPeak when its name ends in
    ``.narrowPeak`` (``.gz``) or its first region line has exactly 10 columns with numbers in
    columns 5 and 7-10.  Then every line must be a narrowPeak line, and column 10 (the summit
    offset from start, -1 = none) sets ``summit``; a summit outside its peak is an error.
    Any other file (BED3-BED9, broadPeak, BED12, gappedPeak, ...) has no summits, whatever
    its column 10 holds."""
    path = Path(path)
    if not path.is_file():
        raise BpflowError(f"{path}: BED file not found")
    chroms, starts, ends, names, scores, strands, summits, lines = [], [], [], [], [], [], [], []
    interned: dict[str, str] = {}
    narrowpeak: bool | None = True if _is_narrowpeak_name(path) else None  # None: not known yet
    try:
        with _open_text(path) as fh:
            for lineno, text in enumerate(fh, 1):
                text = text.rstrip("\r\n")
                if not text.strip() or _SKIP.match(text):
                    continue
                cols = text.split("\t") if "\t" in text else text.split()
                if len(cols) < 3:
                    raise BpflowError(f"{path}:{lineno}: a BED line needs at least 3 columns: {text[:80]!r}")
                if not (_INTEGER.fullmatch(cols[1]) and _INTEGER.fullmatch(cols[2])):
                    raise BpflowError(
                        f"{path}:{lineno}: start and end must be integers, got {cols[1][:20]!r} and "
                        f"{cols[2][:20]!r} (a header line must start with '#')"
                    )
                start, end = int(cols[1]), int(cols[2])
                if start < 0:
                    raise BpflowError(f"{path}:{lineno}: negative start in {cols[0]}:{start}-{end}")
                if end <= start:
                    raise BpflowError(
                        f"{path}:{lineno}: end must be greater than start in {cols[0]}:{start}-{end} "
                        "(0-based, half-open coordinates)"
                    )
                problem = _narrowpeak_problem(cols) if narrowpeak is not False else None
                if narrowpeak is None:
                    narrowpeak = problem is None
                summit = -1
                if narrowpeak:
                    if problem is not None:
                        raise BpflowError(f"{path}:{lineno}: {problem} (the file is read as narrowPeak)")
                    offset = int(cols[9])
                    if offset < -1 or offset >= end - start:
                        raise BpflowError(
                            f"{path}:{lineno}: summit offset {offset} (column 10) lies outside the peak "
                            f"{cols[0]}:{start}-{end}, which is {end - start} bp wide (-1 means no summit)"
                        )
                    if offset >= 0:
                        summit = start + offset
                chroms.append(interned.setdefault(cols[0], cols[0]))
                starts.append(start)
                ends.append(end)
                if extra_columns:
                    names.append(cols[3] if len(cols) > 3 else ".")
                    scores.append(cols[4] if len(cols) > 4 else "0")
                    strands.append(cols[5] if len(cols) > 5 else ".")
                summits.append(summit)
                lines.append(lineno)
    except (UnicodeDecodeError, OSError, EOFError) as err:
        raise BpflowError(f"{path}: cannot read this BED file: {err}") from None
    n = len(starts)

    def column(values: list, default: str | None = None) -> np.ndarray:
        out = np.empty(n, dtype=object)
        out[:] = values if default is None or extra_columns else default
        return out

    return BedRegions(
        column(chroms),
        np.array(starts, dtype=np.int64),
        np.array(ends, dtype=np.int64),
        column(names, "."),
        column(scores, "0"),
        column(strands, "."),
        np.array(summits, dtype=np.int64),
        np.zeros(n, dtype=np.int32),
        np.array(lines, dtype=np.int64),
        [str(path)],
        [bool(narrowpeak)],
    )


def write_bed(
    path: str | Path, chroms: Sequence[str], starts: Sequence[int], ends: Sequence[int], *extra_columns: Sequence
) -> None:
    """Write a BED file (tab-separated) atomically; extra columns follow chrom/start/end."""
    with atomic_output(path) as tmp:
        with open(tmp, "w") as fh:
            for row in zip(chroms, starts, ends, *extra_columns):
                fh.write("\t".join(str(x) for x in row))
                fh.write("\n")


def iter_chrom_groups(
    chroms: Sequence[str] | np.ndarray, order: Sequence[str] | None = None
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (chrom, indices) for each chromosome present, in ``order`` when given (others
    after it, by name), else by name."""
    chroms = np.asarray(chroms, dtype=object)
    if len(chroms) == 0:
        return
    names, inverse = np.unique(chroms.astype(str), return_inverse=True)
    rank = {c: i for i, c in enumerate(order or [])}
    for k in sorted(range(len(names)), key=lambda j: (rank.get(names[j], math.inf), names[j])):
        yield str(names[k]), np.flatnonzero(inverse == k)


class IntervalSet:
    """Disjoint, merged intervals per chromosome with vectorised overlap queries."""

    def __init__(self, chroms, starts, ends, expand: int = 0):
        self._sets: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        starts = np.asarray(starts, dtype=np.int64) - expand
        ends = np.asarray(ends, dtype=np.int64) + expand
        for chrom, idx in iter_chrom_groups(chroms):
            order = idx[np.argsort(starts[idx], kind="stable")]
            s, e = starts[order], ends[order]
            # Merge: a new interval starts where the start exceeds every earlier end.
            run_end = np.maximum.accumulate(e)
            new = np.ones(len(s), dtype=bool)
            new[1:] = s[1:] > run_end[:-1]
            group = np.cumsum(new) - 1
            ms = s[new]
            me = np.zeros(len(ms), dtype=np.int64)
            np.maximum.at(me, group, e)
            self._sets[chrom] = (ms, me)

    def overlaps(self, chrom: str, starts, ends) -> np.ndarray:
        """Whether each window [start, end) shares at least one base with the set."""
        starts = np.asarray(starts, dtype=np.int64)
        ends = np.asarray(ends, dtype=np.int64)
        if chrom not in self._sets:
            return np.zeros(len(starts), dtype=bool)
        ms, me = self._sets[chrom]
        k = np.searchsorted(ms, ends, side="left") - 1
        return (k >= 0) & (me[np.maximum(k, 0)] > starts)
