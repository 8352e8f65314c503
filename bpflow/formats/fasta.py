"""Genome FASTA: random access through the ``.fai`` index.

Coordinates are 0-based, half-open.  A :class:`FastaFile` is not thread-safe: open one per
thread.

The FASTA may be plain text or bgzip-compressed (BGZF, named ``.gz`` or ``.bgz``; read through
Biopython).  Plain gzip (and bzip2, xz, zstd, zip) allows no random access and is refused
with a one-line error that says how to recompress or decompress the file.

A missing or stale index (``.fai``, plus ``.gzi`` for bgzip) is built on a temporary name and
renamed into place, so concurrent jobs never read a half-written one; where the FASTA's
folder cannot be written, it is built in a temporary folder for the run (with a warning).

Bases may be A, C, G, T (either case; lower case, soft-masked repeats, reads as the base) or
the IUPAC codes N, R, Y, S, W, K, M, B, D, H, V and the masking letter X (either case),
which read as an unknown base (an all-zero one-hot row).  Any other byte in a sequence (a
digit, space, ``-``, ``*``, ...) is an error naming the chromosome and position.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from bpflow.formats.blocks import DEFAULT_MAX_GAP, DEFAULT_MAX_SPAN, read_windows
from bpflow.formats.sequence import one_hot_encode, one_hot_windows
from bpflow.utils import BpflowError, first_line, read_head, temporary_path

logger = logging.getLogger("bpflow.fasta")

# Bytes a sequence may hold: A, C, G, T and the IUPAC ambiguity codes (plus the masking letter
# X), either case.  ``bytes.translate(None, _SEQUENCE_BYTES)`` leaves only the others.
_SEQUENCE_BYTES = b"ACGTNRYSWKMBDHVX" + b"ACGTNRYSWKMBDHVX".lower()

# File signatures of compression formats (the first bytes of the file).
_GZIP_MAGIC = b"\x1f\x8b"
_OTHER_COMPRESSION = ((b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"PK\x03\x04", "zip"))
_BGZF_SUFFIXES = (".gz", ".bgz")  # pyfaidx reads a FASTA as BGZF only under these names

# Indexes built in a temporary folder (the FASTA's folder was read-only), by FASTA identity.
_INDEX_LOCK = threading.Lock()
_TEMPORARY_INDEXES: dict[tuple, tuple[str, str | None]] = {}


def _compression(path: Path) -> str:
    """ "plain", "bgzf", "gzip" or the name of another compression format, from the first
    bytes of the file; a one-line error when it cannot be read or is empty."""
    head = read_head(path, 18, "FASTA file")
    if head.startswith(_GZIP_MAGIC):
        # BGZF: a gzip member with the FEXTRA flag and a "BC" extra subfield (SAM spec 4.1).
        return "bgzf" if len(head) >= 16 and head[3] & 4 and head[12:14] == b"BC" else "gzip"
    for magic, name in _OTHER_COMPRESSION:
        if head.startswith(magic):
            return name
    return "plain"


def _check_compression(path: Path) -> bool:
    """Refuse FASTA files that cannot be read at random positions; True for bgzip (BGZF)."""
    kind = _compression(path)
    named_compressed = path.name.lower().endswith(_BGZF_SUFFIXES)
    if kind == "gzip":
        raise BpflowError(
            f"{path}: compressed with plain gzip, which cannot be read at random positions; recompress it "
            f"with bgzip (zcat {path} | bgzip > NEW.fa.gz) or decompress it (zcat {path} > NEW.fa)"
        )
    if kind not in ("plain", "bgzf"):
        raise BpflowError(f"{path}: compressed with {kind}; decompress it, or recompress it with bgzip (to a .gz name)")
    if kind == "bgzf" and not named_compressed:
        raise BpflowError(f"{path}: bgzip-compressed, but its name does not end in .gz or .bgz; rename it")
    if kind == "plain" and named_compressed:
        raise BpflowError(
            f"{path}: named like a compressed file but not compressed; rename it without "
            f"{Path(path).suffix} or compress it with bgzip"
        )
    if kind == "bgzf":
        try:
            import Bio.bgzf  # noqa: F401  (pyfaidx reads BGZF through Biopython)
        except ImportError:
            raise BpflowError(
                f"{path}: reading a bgzip-compressed FASTA needs Biopython, a bpflow dependency (pip install biopython)"
            ) from None
    return kind == "bgzf"


def _fresh(index: Path, fasta_mtime: float) -> bool:
    """An index file exists and is not older than its FASTA (pyfaidx's staleness rule)."""
    try:
        return index.stat().st_mtime >= fasta_mtime
    except OSError:
        return False


def _build_index(path: Path, fai: Path, gzi: Path | None) -> None:
    """Index ``path`` into ``fai`` (and ``gzi``) through temporary names renamed when done."""
    import pyfaidx

    tmp_fai, tmp_gzi = temporary_path(fai), (temporary_path(gzi) if gzi else None)
    try:
        index = pyfaidx.Faidx(
            str(path),
            indexname=str(tmp_fai),
            gzi_indexname=str(tmp_gzi) if tmp_gzi else None,
            build_index=True,
            rebuild=True,
        )
        index.close()
        if gzi is not None:
            os.replace(tmp_gzi, gzi)
        os.replace(tmp_fai, fai)
    except UnicodeDecodeError:
        raise BpflowError(f"{path}: not a text FASTA file (it holds bytes that are not text)") from None
    except Exception as err:  # pyfaidx raises several types for malformed files
        _duplicate_name_error(path, err)
        raise BpflowError(f"{path}: cannot index this FASTA file: {first_line(err)}") from None
    finally:
        for tmp in (tmp_fai, tmp_gzi):
            if tmp is not None:
                tmp.unlink(missing_ok=True)


def _duplicate_name_error(path: Path, err: Exception) -> None:
    """Raise a one-line error for pyfaidx's ``Duplicate key "NAME"``; return otherwise."""
    text = str(err)
    if isinstance(err, ValueError) and text.startswith("Duplicate key") and text.count('"') >= 2:
        name = text.split('"')[1]
        raise BpflowError(f"{path}: chromosome {name} appears more than once in the FASTA file; names must be unique")


def _writable(probe: Path) -> bool:
    """Whether a file can be created at ``probe`` (left removed)."""
    try:
        with open(probe, "w"):
            pass
    except OSError:
        return False
    probe.unlink(missing_ok=True)
    return True


def _index_files(path: Path, bgzf: bool) -> tuple[str, str | None]:
    """The FASTA's ``.fai`` (and ``.gzi``) paths, built first when missing or stale."""
    fai = Path(f"{path}.fai")
    gzi = Path(f"{path}.gzi") if bgzf else None
    stat = path.stat()

    def fresh() -> bool:
        return _fresh(fai, stat.st_mtime) and (gzi is None or _fresh(gzi, stat.st_mtime))

    if fresh():
        return str(fai), (str(gzi) if gzi else None)
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    with _INDEX_LOCK:  # threads of one process index a FASTA once
        if key in _TEMPORARY_INDEXES:
            return _TEMPORARY_INDEXES[key]
        if fresh():
            return str(fai), (str(gzi) if gzi else None)
        if _writable(temporary_path(fai)):
            logger.debug("indexing %s", path)
            _build_index(path, fai, gzi)
            return str(fai), (str(gzi) if gzi else None)
        folder = Path(tempfile.mkdtemp(prefix="bpflow-fasta-index-"))
        atexit.register(shutil.rmtree, folder, True)
        logger.warning(
            "%s: cannot write its index %s there; indexing it in a temporary folder for this run "
            "(index it once where it can be written, e.g. samtools faidx, to skip this)",
            path,
            fai.name,
        )
        tmp_fai, tmp_gzi = folder / fai.name, (folder / gzi.name if gzi else None)
        _build_index(path, tmp_fai, tmp_gzi)
        _TEMPORARY_INDEXES[key] = (str(tmp_fai), str(tmp_gzi) if tmp_gzi else None)
        return _TEMPORARY_INDEXES[key]


class FastaFile:
    """A FASTA file opened for random access; ``chrom_sizes`` lists the chromosomes in file
    order, ``chrom_names`` their names."""

    def __init__(self, path: str | Path):
        import pyfaidx

        self.path = Path(path)
        if not self.path.is_file():
            raise BpflowError(f"{self.path}: FASTA file not found")
        bgzf = _check_compression(self.path)
        fai, gzi = _index_files(self.path, bgzf)
        try:
            self._faidx = pyfaidx.Faidx(
                str(self.path),
                indexname=fai,
                gzi_indexname=gzi,
                build_index=False,
                rebuild=False,
                as_raw=True,
                sequence_always_upper=False,
            )
        except Exception as err:  # pyfaidx raises several types for malformed indexes
            _duplicate_name_error(self.path, err)
            raise BpflowError(
                f"{self.path}: cannot read its index {fai}: {first_line(err)}; delete it to rebuild it"
            ) from None
        self.chrom_sizes: dict[str, int] = {name: int(rec.rlen) for name, rec in self._faidx.index.items()}
        if not any(self.chrom_sizes.values()):
            self._faidx.close()
            raise BpflowError(f"{self.path}: the FASTA file has no sequence (no bases after its '>' lines)")

    @property
    def chrom_names(self) -> list[str]:
        return list(self.chrom_sizes)

    def close(self) -> None:
        self._faidx.close()

    def __enter__(self) -> "FastaFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check(self, chrom: str, start: int, end: int, pad: bool) -> int:
        size = self.chrom_sizes.get(chrom)
        if size is None:
            raise BpflowError(f"{self.path}: chromosome {chrom} is not in the FASTA file")
        if start > end:
            raise BpflowError(f"{self.path}: invalid interval {chrom}:{start}-{end}")
        if not pad and (start < 0 or end > size):
            raise BpflowError(f"{self.path}: {chrom}:{start}-{end} runs off the end of {chrom} (length {size})")
        return size

    def fetch(self, chrom: str, start: int, end: int, pad: bool = False) -> bytes:
        """Bases ``[start, end)`` as ASCII bytes (case kept).  With ``pad``, positions outside
        the chromosome read as ``N``; otherwise they are an error.  A byte that is not a
        base letter (see the module docstring) is an error naming its position."""
        start, end = int(start), int(end)
        size = self._check(chrom, start, end, pad)
        lo, hi = max(start, 0), min(end, size)
        seq = b""
        if hi > lo:
            try:
                seq = self._faidx.fetch(chrom, lo + 1, hi).encode("latin-1")
            except Exception as err:  # e.g. a corrupt bgzip block
                raise BpflowError(f"{self.path}: cannot read {chrom}:{lo}-{hi}: {first_line(err)}") from None
            if len(seq) != hi - lo:  # a truncated or inconsistent .fai
                raise BpflowError(f"{self.path}: read {len(seq)} bases for {chrom}:{lo}-{hi}; is the .fai index stale?")
            if seq.translate(None, _SEQUENCE_BYTES):
                k = next(i for i, b in enumerate(seq) if b not in _SEQUENCE_BYTES)
                hint = "; is the .fai index stale?" if seq[k] in b"\n\r>" else ""
                raise BpflowError(
                    f"{self.path}: {chrom}:{lo + k} holds {chr(seq[k])!r}, which is not a base letter "
                    f"(A, C, G, T or an IUPAC code such as N, either case){hint}"
                )
        if pad and (start < lo or end > hi):
            left = b"N" * (min(lo, end) - start)
            right = b"N" * (end - max(hi, start))
            seq = left + seq + right
        return seq

    def one_hot(self, chrom: str, start: int, end: int, pad: bool = False) -> np.ndarray:
        """(end - start, 4) uint8 one-hot sequence (N and other bases are zero rows)."""
        return one_hot_encode(self.fetch(chrom, start, end, pad=pad))

    def windows(
        self,
        chrom: str,
        starts: Sequence[int] | np.ndarray,
        width: int,
        max_gap: int = DEFAULT_MAX_GAP,
        max_span: int = DEFAULT_MAX_SPAN,
        pad: bool = False,
    ) -> np.ndarray:
        """Bases of windows ``[s, s + width)`` on ``chrom`` as an (n, width) uint8 array of
        ASCII codes, read in merged blocks (:mod:`bpflow.formats.blocks`)."""

        def read(a: int, b: int) -> np.ndarray:
            return np.frombuffer(self.fetch(chrom, a, b, pad=pad), dtype=np.uint8)

        return read_windows(read, starts, width, np.uint8, max_gap, max_span)

    def one_hot_windows(self, chrom: str, starts: Sequence[int] | np.ndarray, width: int) -> np.ndarray:
        """One-hot windows (n, width, 4) uint8 of one chromosome, read in merged blocks."""
        return one_hot_windows(self.windows(chrom, starts, width))


def fasta_chrom_sizes(path: str | Path) -> dict[str, int]:
    """Chromosome sizes of a FASTA file, in file order."""
    with FastaFile(path) as fa:
        return dict(fa.chrom_sizes)
