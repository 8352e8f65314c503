"""Builders of tiny FASTA / bigWig / BED fixtures for the data-preparation tests.

The arrays used to write a file are returned as well, so tests compare bpflow's output with
values known independently of bpflow's readers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

# a bpflow log line (bpflow.utils.setup_logging; other libraries' Python logs go through it too)
LOG_LINE = re.compile(r"\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def stderr_lines(err: str) -> list[str]:
    """The non-empty lines of a step's stderr that are not log lines: for a bad input, exactly
    one must be left, the error (C libraries' own messages or a traceback would be more)."""
    return [line for line in err.strip().splitlines() if line.strip() and not LOG_LINE.match(line)]


def random_sequence(length: int, rng: np.random.Generator, gc: float = 0.5) -> str:
    """Random ACGT string with the given expected GC fraction."""
    p = [(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2]
    return np.frombuffer(b"ACGT", dtype=np.uint8)[rng.choice(4, size=length, p=p)].tobytes().decode()


def write_fasta(path: Path, chroms: dict[str, str], line_width: int = 60) -> Path:
    """Write a FASTA file (wrapped at ``line_width``) from {name: sequence}."""
    path = Path(path)
    with open(path, "w") as fh:
        for name, seq in chroms.items():
            fh.write(f">{name}\n")
            for i in range(0, len(seq), line_width):
                fh.write(seq[i : i + line_width] + "\n")
    return path


def write_bigwig(path: Path, sizes: dict[str, int], values: dict[str, np.ndarray]) -> Path:
    """Write a bigWig with one entry per non-zero base (so zero bases have *no data* and read
    back as NaN from pyBigWig).  ``values[chrom]`` has one value per base; chromosomes in
    ``sizes`` but not in ``values`` are declared and left empty."""
    import pyBigWig

    path = Path(path)
    bw = pyBigWig.open(str(path), "w")
    bw.addHeader(list(sizes.items()), maxZooms=0)
    for chrom in sizes:
        if chrom not in values:
            continue
        vals = np.asarray(values[chrom], dtype=np.float64)
        pos = np.flatnonzero(vals != 0)
        if len(pos) == 0:
            continue
        bw.addEntries([chrom] * len(pos), pos.tolist(), ends=(pos + 1).tolist(), values=vals[pos].tolist())
    bw.close()
    return path


def write_bed(path: Path, rows: list[tuple]) -> Path:
    path = Path(path)
    with open(path, "w") as fh:
        for row in rows:
            fh.write("\t".join(str(x) for x in row) + "\n")
    return path


def write_json(path: Path, obj: dict) -> Path:
    path = Path(path)
    path.write_text(json.dumps(obj))
    return path


def read_bed_rows(path: Path) -> list[list[str]]:
    text = Path(path).read_text()
    return [line.split("\t") for line in text.splitlines() if line]


def one_hot_reference(seq: str) -> np.ndarray:
    """Independent one-hot (A, C, G, T columns; anything else all zero) written out by hand."""
    rows = {"A": [1, 0, 0, 0], "C": [0, 1, 0, 0], "G": [0, 0, 1, 0], "T": [0, 0, 0, 1]}
    return np.array([rows.get(b.upper(), [0, 0, 0, 0]) for b in seq], dtype=np.uint8).reshape(len(seq), 4)


def make_dataset_inputs(
    tmp_path: Path, seed: int = 0, sizes: dict[str, int] | None = None, density: float = 0.1
) -> dict:
    """A random genome and two stranded bigWigs (plus >= 0, minus >= 0) with integer counts at
    a fraction ``density`` of the bases.  Returns paths and the arrays written."""
    rng = np.random.default_rng(seed)
    sizes = sizes or {"chr1": 6000, "chr2": 5000}
    seqs = {c: random_sequence(n, rng) for c, n in sizes.items()}
    plus = {c: np.where(rng.random(n) < density, rng.integers(1, 6, n), 0).astype(np.float64) for c, n in sizes.items()}
    minus = {
        c: np.where(rng.random(n) < density, rng.integers(1, 6, n), 0).astype(np.float64) for c, n in sizes.items()
    }
    return {
        "sizes": sizes,
        "seqs": seqs,
        "plus": plus,
        "minus": minus,
        "genome": str(write_fasta(tmp_path / "genome.fa", seqs)),
        "plus_bw": str(write_bigwig(tmp_path / "plus.bw", sizes, plus)),
        "minus_bw": str(write_bigwig(tmp_path / "minus.bw", sizes, minus)),
    }
