"""Training datasets: ``bpflow prepare-data CONFIG.json`` and ``bpflow inspect-data FILE.h5``.

The HDF5 layout is BPReveal's (``sequence``, ``head_0``, ``head_1``, ...; reverse-complement
pairs at samples 2k / 2k+1) plus per-sample coordinates under BPReveal's prediction-file names
(``chrom_names``, ``chrom_sizes``, ``coords_chrom``, ``coords_start``, ``coords_stop``) and
``coords_strand``, and the config as JSON in the ``metadata`` group.  See docs/data.md.

Work is split into batches of consecutive regions (BED order).  Each batch reads its windows
in merged blocks (bpflow.coverage), builds the forward / reverse-complement samples and
deflate-compresses whole HDF5 chunks; with ``num-threads`` > 1 batches are built in worker
threads (zlib and most numpy work release the GIL) while the main thread writes the
compressed chunks straight into the file (``write_direct_chunk``).  Memory is bounded by the
batches in flight, not by the number of regions.
"""

from __future__ import annotations

import argparse
import collections
import copy
import itertools
import json
import logging
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bpflow.coverage import (BigWigFile, FastaFile, iter_chrom_groups, one_hot_windows,
                             read_bed, read_bigwig_windows, read_sequence_windows,
                             reverse_complement_windows)
from bpflow.genome import one_hot_encode, revcomp_task_order
from bpflow.utils import (VERBOSITY_SCHEMA, WINDOW_SCHEMA_PROPERTIES, BpflowError, atomic_output, read_step_config,
                          progress, setup_logging, validate_config)

logger = logging.getLogger("bpflow.dataprep")


PREPARE_DATA_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "bpflow prepare-data",
    "type": "object",
    "additionalProperties": False,
    "required": ["genome", "input-length", "output-length", "max-jitter", "regions", "output-h5", "heads"],
    "properties": {
        **WINDOW_SCHEMA_PROPERTIES,
        "regions": {"type": "string", "minLength": 1},
        "output-h5": {"type": "string", "minLength": 1},
        "reverse-complement": {"type": "boolean"},
        "heads": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["bigwig-files"],
                "properties": {
                    "bigwig-files": {"type": "array", "minItems": 1,
                                     "items": {"type": "string", "minLength": 1}},
                    "revcomp-task-order": {"oneOf": [
                        {"const": "auto"},
                        {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}},
                    ]},
                    "num-tasks": {"type": "integer", "minimum": 1},
                    "head-name": {"type": "string"},
                    "use-absolute-values": {"type": "boolean"},
                },
            },
        },
        "num-threads": {"type": "integer", "minimum": 1},
        "compression": {"enum": ["fast", "gzip", "none"]},
        "compression-level": {"type": "integer", "minimum": 1, "maximum": 9},
        "verbosity": VERBOSITY_SCHEMA,
    },
}

DATA_DEFAULTS = {"reverse-complement": True, "num-threads": 1, "compression": "fast",
                 "compression-level": 4, "verbosity": "INFO"}

# Target uncompressed bytes per HDF5 chunk, and samples per batch of work.
CHUNK_BYTES = 1 << 20
BATCH_SAMPLES = 1024


# --------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------


resolve_revcomp_order = revcomp_task_order


def check_length_arithmetic(config: dict, source: str) -> None:
    """input-length >= output-length with an even difference (shared with prepare-regions)."""
    inp, out = config["input-length"], config["output-length"]
    if inp < out:
        raise BpflowError(f"{source}: key input-length: {inp} is shorter than output-length {out}")
    if (inp - out) % 2:
        raise BpflowError(f"{source}: key input-length: input-length - output-length = {inp - out} "
                          "must be even (the output window sits in the middle of the input)")


def normalize_data_config(config: dict, source: str = "config") -> dict:
    """Validate a prepare-data config (schema and cross-key rules) and return a copy with
    defaults filled in and each head's ``revcomp-task-order`` resolved to a list (or None
    without reverse complement).  Reads no data."""
    validate_config(config, PREPARE_DATA_SCHEMA, source)
    cfg = copy.deepcopy(config)
    for key, value in DATA_DEFAULTS.items():
        cfg.setdefault(key, value)
    check_length_arithmetic(cfg, source)
    for i, head in enumerate(cfg["heads"]):
        where = f"{source}: heads/{i}"
        n = len(head["bigwig-files"])
        if "num-tasks" in head and head["num-tasks"] != n:
            raise BpflowError(f"{where}: num-tasks is {head['num-tasks']} but bigwig-files lists {n} "
                              "file(s); give one bigWig per task")
        head.setdefault("num-tasks", n)
        head.setdefault("use-absolute-values", False)
        head.setdefault("head-name", f"head_{i}")
        if cfg["reverse-complement"]:
            head["revcomp-task-order"] = resolve_revcomp_order(head.get("revcomp-task-order", "auto"), n, where)
        else:
            if "revcomp-task-order" in head:
                raise BpflowError(f"{where}: revcomp-task-order is set but reverse-complement is false")
            head["revcomp-task-order"] = None
    return cfg


# --------------------------------------------------------------------------------------
# Regions
# --------------------------------------------------------------------------------------


@dataclass
class _Plan:
    chrom: np.ndarray  # object array of str
    start: np.ndarray  # output-window start per region
    end: np.ndarray
    chrom_names: list[str]
    chrom_sizes: list[int]
    chrom_index: np.ndarray
    seq_pad: int  # bases added each side for the sequence window
    seq_len: int
    head_len: int


def _load_regions(cfg: dict, source: str, fasta_sizes: dict[str, int],
                  bigwig_sizes: list[tuple[str, dict[str, int]]]) -> _Plan:
    regions_path = cfg["regions"]
    bed = read_bed(regions_path, extra_columns=False)
    if len(bed) == 0:
        raise BpflowError(f"{regions_path}: no regions in this BED file")
    out, jitter = cfg["output-length"], cfg["max-jitter"]
    widths = bed.end - bed.start
    bad = np.flatnonzero(widths != out)
    if len(bad):
        k = int(bad[0])
        raise BpflowError(f"{bed.where(k)}: region {bed.chrom[k]}:{bed.start[k]}-{bed.end[k]} is "
                          f"{widths[k]} bp wide but output-length is {out}; regions must be output-length "
                          "wide (bpflow prepare-regions writes such BEDs)")
    seq_pad = (cfg["input-length"] - out) // 2 + jitter
    for chrom, idx in iter_chrom_groups(bed.chrom):
        if chrom not in fasta_sizes:
            raise BpflowError(f"{cfg['genome']}: chromosome {chrom} (used at {bed.where(idx[0])}) is "
                              "not in the FASTA file")
        lo, hi = int(bed.start[idx].min()), int(bed.end[idx].max())
        if lo - seq_pad < 0 or hi + seq_pad > fasta_sizes[chrom]:
            k = idx[np.argmax((bed.start[idx] - seq_pad < 0) | (bed.end[idx] + seq_pad > fasta_sizes[chrom]))]
            raise BpflowError(f"{bed.where(k)}: region {chrom}:{bed.start[k]}-{bed.end[k]} padded to "
                              f"input-length + 2*max-jitter runs off the end of {chrom} (length "
                              f"{fasta_sizes[chrom]} in {cfg['genome']})")
        for path, sizes in bigwig_sizes:
            if chrom not in sizes:
                raise BpflowError(f"{path}: chromosome {chrom} (used at {bed.where(idx[0])}) is not "
                                  "in this bigWig")
            if lo - jitter < 0 or hi + jitter > sizes[chrom]:
                k = idx[np.argmax((bed.start[idx] - jitter < 0) | (bed.end[idx] + jitter > sizes[chrom]))]
                raise BpflowError(f"{bed.where(k)}: region {chrom}:{bed.start[k]}-{bed.end[k]} padded by "
                                  f"max-jitter runs off the end of {chrom} (length {sizes[chrom]} in {path})")
    order = list(fasta_sizes)
    names = [c for c, _ in iter_chrom_groups(bed.chrom, order)]
    lookup = {c: i for i, c in enumerate(names)}
    return _Plan(chrom=bed.chrom, start=bed.start, end=bed.end, chrom_names=names,
                 chrom_sizes=[fasta_sizes[c] for c in names],
                 chrom_index=np.array([lookup[c] for c in bed.chrom], dtype=np.int32),
                 seq_pad=seq_pad, seq_len=cfg["input-length"] + 2 * jitter,
                 head_len=out + 2 * jitter)


# --------------------------------------------------------------------------------------
# Building batches
# --------------------------------------------------------------------------------------


class _Readers:
    """One FASTA handle and one handle per bigWig (one set per thread)."""

    def __init__(self, genome: str, bigwigs: list[list[str]], registry: list, lock: threading.Lock):
        self.fasta = FastaFile(genome)
        self.bigwigs = [[BigWigFile(p) for p in head] for head in bigwigs]
        with lock:
            registry.append(self)

    def close(self) -> None:
        self.fasta.close()
        for head in self.bigwigs:
            for bw in head:
                bw.close()


# --- A direct deflate encoder for one-hot chunks -------------------------------------------
#
# One-hot bytes are 0 or 1.  One dynamic-Huffman deflate block with the code 0x00 -> "0",
# 0x01 -> "10", end-of-block -> "11" (all other literals unused; one unused distance code, as
# zlib allows) codes a one-hot row (A, C, G or T) in exactly 5 bits: a 1 at bit c of the
# row's 5 bits, c = the base's column.  So 8 rows are 40 bits and the stream is built with a
# few numpy operations - ~3x faster than zlib's Huffman-only mode at the same size (6.4x
# smaller than raw); an all-zero row (N or another non-ACGT base) is 4 zero bits.  The result
# is an ordinary zlib stream (header, block, Adler-32) that any inflate - HDF5's gzip filter
# included - decodes.  Chunks holding anything else return None and go through zlib.


class _BitWriter:
    def __init__(self) -> None:
        self.value, self.nbits = 0, 0

    def put(self, value: int, n: int) -> None:
        """``n`` bits of ``value``, least significant first (deflate's extra bits)."""
        self.value |= (value & ((1 << n) - 1)) << self.nbits
        self.nbits += n

    def put_code(self, code: int, n: int) -> None:
        """A Huffman code, most significant bit first."""
        self.put(int(format(code, f"0{n}b")[::-1], 2), n)

    def to_bytes(self) -> bytes:
        return self.value.to_bytes((self.nbits + 7) // 8, "little")


def _one_hot_block_header() -> bytes:
    b = _BitWriter()
    b.put(1, 1)       # BFINAL: the only block
    b.put(2, 2)       # BTYPE: dynamic Huffman codes
    b.put(0, 5)       # HLIT: 257 literal/length codes (0..256)
    b.put(0, 5)       # HDIST: 1 distance code
    b.put(19 - 4, 4)  # HCLEN: all 19 code-length codes (makes the header 104 bits: byte aligned)
    # Code-length code: symbols 0, 1, 2 and 18 (run of zeros), each 2 bits: 00, 01, 10, 11.
    for sym in (16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15):
        b.put(2 if sym in (0, 1, 2, 18) else 0, 3)
    code = {0: 0, 1: 1, 2: 2, 18: 3}
    # Lengths of literals 0 (1 bit), 1 (2 bits), 2..255 (unused: 2 single zeros + runs of 138
    # and 114), end-of-block 256 (2 bits), then distance code 0 (1 bit).
    for sym, run in ((1, 0), (2, 0), (0, 0), (0, 0), (18, 138), (18, 114), (2, 0), (1, 0)):
        b.put_code(code[sym], 2)
        if sym == 18:
            b.put(run - 11, 7)
    assert b.nbits == 104
    return b"\x78\x01" + b.to_bytes()  # zlib header (deflate, 32 KiB window) + block header


_ONE_HOT_HEADER = _one_hot_block_header()
_ONE_HOT_ROW = np.zeros(16, dtype=bool)
_ONE_HOT_ROW[[0, 1, 2, 4, 8]] = True  # an N row (all zero) or one base


def _pack_rows(r: np.ndarray) -> np.ndarray:
    """Bits of rows coded 1 << column, 5 bits each, for a multiple of 8 rows: 5 bytes per 8."""
    g = len(r) // 8
    p = r[0::2].astype(np.uint16) | (r[1::2].astype(np.uint16) << 5)    # pairs: 10 bits
    q = p[0::2].astype(np.uint32) | (p[1::2].astype(np.uint32) << 10)   # quads: 20 bits
    o = q[0::2].astype(np.uint64) | (q[1::2].astype(np.uint64) << 20)   # octets: 40 bits
    return o.astype("<u8").view(np.uint8).reshape(g, 8)[:, :5].ravel()


def _deflate_one_hot(raw: bytes) -> bytes | None:
    """zlib stream of one-hot bytes (rows of 4 bytes holding one 1, or none for N), or None
    for any other data."""
    x = np.frombuffer(raw, dtype=np.uint8)
    if len(x) % 4 or x.max(initial=0) > 1:
        return None
    x = x.reshape(-1, 4)
    r = x[:, 0] | (x[:, 1] << 1) | (x[:, 2] << 2) | (x[:, 3] << 3)  # 1 << column, 0 for N
    if not _ONE_HOT_ROW[r].all():
        return None
    return _deflate_codes(r)


def _deflate_codes(r: np.ndarray) -> bytes:
    """zlib stream of the one-hot bytes of base codes ``r`` (1, 2, 4, 8 for A, C, G, T; 0 for
    N), without building the one-hot bytes: their Adler-32 is computed from the codes."""
    r = np.ascontiguousarray(r, dtype=np.uint8).ravel()
    m = len(r)
    g = m // 8
    zero_rows = np.flatnonzero(r == 0)
    if len(zero_rows) == 0:
        body = _pack_rows(r[:8 * g]).tobytes()
        tail = _BitWriter()
        for k in range(8 * g, m):
            tail.put(int(r[k]), 5)
        tail.put(3, 2)  # end of block
        body += tail.to_bytes()
    else:
        # An N row is 4 zero bits, not 5: pack as 5 and drop one bit per N row.
        rr = np.concatenate([r, np.zeros((-m) % 8, dtype=np.uint8)])
        bits = np.unpackbits(_pack_rows(rr), bitorder="little")[:5 * m]
        keep = np.ones(5 * m, dtype=bool)
        keep[5 * zero_rows + 4] = False
        bits = np.concatenate([bits[keep], np.ones(2, dtype=np.uint8)])  # + end of block
        body = np.packbits(bits, bitorder="little").tobytes()
    # Adler-32 of the n one-hot bytes: a = 1 + sum(b), b = n + sum over the 1-bytes at j of n - j;
    # the 1 of row k sits at byte 4k + column.
    n = 4 * m
    counts = np.bincount(r, minlength=16)
    ones = m - int(counts[0])
    columns = int(counts[2]) + 2 * int(counts[4]) + 3 * int(counts[8])
    rows_sum = m * (m - 1) // 2 - int(zero_rows.sum())
    a = (1 + ones) % 65521
    b = (n + ones * n - 4 * rows_sum - columns) % 65521
    return _ONE_HOT_HEADER + body + ((b << 16) | a).to_bytes(4, "big")


# Base code (1 << one-hot column; 0 for anything else) of each ASCII character, and the code of
# the complementary base (A <-> T, C <-> G: the 4 bits reversed).
_BASE_CODE = one_hot_encode(bytes(range(256))) @ np.array([1, 2, 4, 8], dtype=np.uint8)
_COMPLEMENT_CODE = np.zeros(16, dtype=np.uint8)
_COMPLEMENT_CODE[[1, 2, 4, 8]] = [8, 4, 2, 1]


def _compress_code_chunks(codes: np.ndarray, rows: int) -> list[tuple[bytes, int]]:
    """Deflate (n, length) base codes as HDF5 chunks of ``rows`` one-hot samples."""
    out = []
    for c0 in range(0, len(codes), rows):
        part = codes[c0:c0 + rows]
        if len(part) < rows:  # the edge chunk is stored full size; padding rows are N rows
            part = np.concatenate([part, np.zeros((rows - len(part),) + codes.shape[1:], dtype=np.uint8)])
        out.append((_deflate_codes(part), 0))
    return out


def _compress_chunks(array: np.ndarray, rows: int, compression: str, level: int,
                     fast_strategy: int) -> list[tuple[bytes, int]]:
    """Split (n, ...) into HDF5 chunks of ``rows`` samples (the last one zero-padded, as HDF5
    stores edge chunks full size) and deflate each; returns (bytes, filter_mask) pairs.

    ``compression``: "fast" deflates with zlib's ``fast_strategy`` (Huffman-only or RLE: 2-8x
    faster than level 1 and here no larger; "fast" sequences go through
    :func:`_compress_code_chunks` instead), "gzip" at the given level, "none" stores raw.
    Either way the result is a standard deflate stream that HDF5's gzip filter reads."""
    out = []
    for c0 in range(0, len(array), rows):
        part = array[c0:c0 + rows]
        if len(part) < rows:
            padded = np.zeros((rows,) + array.shape[1:], dtype=array.dtype)
            padded[:len(part)] = part
            part = padded
        raw = np.ascontiguousarray(part).tobytes()
        if compression != "none":
            if compression == "fast":
                packer = zlib.compressobj(1, zlib.DEFLATED, 15, 8, fast_strategy)
            else:
                packer = zlib.compressobj(level, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY)
            packed = packer.compress(raw) + packer.flush()
            # The deflate filter is optional: a chunk that would grow is stored raw, mask bit 0 set.
            out.append((packed, 0) if len(packed) < len(raw) else (raw, 1))
        else:
            out.append((raw, 0))
    return out


class _BatchBuilder:
    def __init__(self, cfg: dict, plan: _Plan, rows: int):
        self.cfg = cfg
        self.plan = plan
        self.rows = rows
        self.revcomp = cfg["reverse-complement"]
        self.orders = [h["revcomp-task-order"] for h in cfg["heads"]]
        self.negative = ["abs" if h["use-absolute-values"] else "error" for h in cfg["heads"]]
        self._registry: list[_Readers] = []
        self._lock = threading.Lock()
        self._local = threading.local()

    def _readers(self) -> _Readers:
        readers = getattr(self._local, "readers", None)
        if readers is None:
            readers = _Readers(self.cfg["genome"], [h["bigwig-files"] for h in self.cfg["heads"]],
                               self._registry, self._lock)
            self._local.readers = readers
        return readers

    def close(self) -> None:
        for readers in self._registry:
            readers.close()
        self._registry.clear()

    def build(self, r0: int, r1: int) -> dict:
        """Samples of regions r0..r1-1 as compressed chunks, plus per-head count totals."""
        readers = self._readers()
        plan, cfg, jitter = self.plan, self.cfg, self.cfg["max-jitter"]
        step = 2 if self.revcomp else 1
        n = (r1 - r0) * step
        # Final (interleaved) sample arrays; forward samples are the rows 0, step, 2*step, ...
        # With "fast" compression the sequence stays as base codes (1 byte per base, see
        # _deflate_codes) and is never expanded to one-hot.
        fast = cfg["compression"] == "fast"
        seq = np.empty((n, plan.seq_len) if fast else (n, plan.seq_len, 4), dtype=np.uint8)
        heads = [np.empty((n, plan.head_len, len(h["bigwig-files"])), dtype=np.float32) for h in cfg["heads"]]
        for chrom, idx in iter_chrom_groups(plan.chrom[r0:r1]):
            starts = plan.start[r0:r1][idx]
            raw = read_sequence_windows(readers.fasta, chrom, starts - plan.seq_pad, plan.seq_len)
            seq[idx * step] = _BASE_CODE[raw] if fast else one_hot_windows(raw)
            for h, head_bws in enumerate(readers.bigwigs):
                for t, bw in enumerate(head_bws):
                    heads[h][idx * step, :, t] = read_bigwig_windows(bw, chrom, starts - jitter, plan.head_len,
                                                                     negative=self.negative[h])
        out_len = cfg["output-length"]
        totals = [float(h[0::step, jitter:jitter + out_len].sum(dtype=np.float64)) for h in heads]
        if self.revcomp:
            if fast:
                seq[1::2] = _COMPLEMENT_CODE[seq[0::2, ::-1]]
            else:
                reverse_complement_windows(seq[0::2], out=seq[1::2])
            for h, order in zip(heads, self.orders):
                h[1::2] = h[0::2, ::-1][:, :, np.argsort(order)]
        comp, level = cfg["compression"], cfg["compression-level"]
        if fast:
            chunks = {"sequence": _compress_code_chunks(seq, self.rows)}
        else:
            chunks = {"sequence": _compress_chunks(seq, self.rows, comp, level, zlib.Z_HUFFMAN_ONLY)}
        for h, arr in enumerate(heads):
            chunks[f"head_{h}"] = _compress_chunks(arr, self.rows, comp, level, zlib.Z_RLE)
        return {"r0": r0, "r1": r1, "chunks": chunks, "totals": totals}


def _chunk_rows(row_bytes: int, num_samples: int) -> int:
    rows = max(2, min(512, CHUNK_BYTES // max(row_bytes, 1)))
    rows -= rows % 2  # reverse-complement pairs never straddle a chunk
    return min(rows, num_samples)


def _ordered_results(builder: _BatchBuilder, batches: list[tuple[int, int]], threads: int):
    """Build batches (in worker threads when threads > 1) and yield results in order."""
    if threads <= 1:
        for r0, r1 in batches:
            yield builder.build(r0, r1)
        return
    ex = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bpflow-data")
    pending: collections.deque = collections.deque()
    todo = iter(batches)
    try:
        for r0, r1 in itertools.islice(todo, 2 * threads):
            pending.append(ex.submit(builder.build, r0, r1))
        while pending:
            result = pending.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(ex.submit(builder.build, *nxt))
            yield result
    finally:
        for fut in pending:
            fut.cancel()
        ex.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------------------
# Main entry points
# --------------------------------------------------------------------------------------


def prepare_data(config: dict, source: str = "config") -> dict:
    """Write the training HDF5 described by a prepare-data config (see docs/data.md).

    Validates the config and all inputs before writing; on any error no output file
    remains.  Returns a summary: output path, number of regions and samples, shapes and the
    total counts per head (output window of the forward samples).
    """
    import h5py

    from bpflow import __version__

    cfg = normalize_data_config(config, source)
    files = [("genome", cfg["genome"]), ("regions", cfg["regions"])]
    files += [(f"heads/{i}/bigwig-files", p) for i, h in enumerate(cfg["heads"]) for p in h["bigwig-files"]]
    for key, path in files:
        if not Path(path).is_file():
            raise BpflowError(f"{source}: key {key}: file not found: {path}")
    with FastaFile(cfg["genome"]) as fa:
        fasta_sizes = dict(fa.chrom_sizes)
    bigwig_sizes = []
    for head in cfg["heads"]:
        for path in head["bigwig-files"]:
            with BigWigFile(path) as bw:
                bigwig_sizes.append((path, dict(bw.chrom_sizes)))
    plan = _load_regions(cfg, source, fasta_sizes, bigwig_sizes)

    num_regions = len(plan.start)
    per_region = 2 if cfg["reverse-complement"] else 1
    num_samples = num_regions * per_region
    num_tasks = [len(h["bigwig-files"]) for h in cfg["heads"]]
    row_bytes = max([plan.seq_len * 4] + [plan.head_len * t * 4 for t in num_tasks])
    rows = _chunk_rows(row_bytes, num_samples)
    batch_samples = max(rows, (BATCH_SAMPLES // rows) * rows)
    batch_regions = batch_samples // per_region
    batches = [(r0, min(r0 + batch_regions, num_regions)) for r0 in range(0, num_regions, batch_regions)]
    threads = cfg["num-threads"]
    output = Path(cfg["output-h5"])
    logger.info("prepare-data: %d regions -> %d samples, %d batches, %d thread(s) -> %s",
                num_regions, num_samples, len(batches), threads, output)

    level = cfg["compression-level"] if cfg["compression"] == "gzip" else 1
    filters = {"compression": "gzip", "compression_opts": level} if cfg["compression"] != "none" else {}
    totals = np.zeros(len(cfg["heads"]), dtype=np.float64)
    builder = _BatchBuilder(cfg, plan, rows)
    with atomic_output(output) as tmp:
        try:
            with h5py.File(tmp, "w") as f:
                datasets = {"sequence": f.create_dataset("sequence", (num_samples, plan.seq_len, 4), np.uint8,
                                                         chunks=(rows, plan.seq_len, 4), **filters)}
                for h, t in enumerate(num_tasks):
                    datasets[f"head_{h}"] = f.create_dataset(f"head_{h}", (num_samples, plan.head_len, t),
                                                             np.float32, chunks=(rows, plan.head_len, t),
                                                             **filters)
                _write_coordinates(f, plan, per_region)
                meta = f.create_group("metadata")
                meta.attrs["config"] = json.dumps(cfg)
                meta.attrs["bpflow_version"] = __version__
                meta.attrs["input_length"] = cfg["input-length"]
                meta.attrs["output_length"] = cfg["output-length"]
                meta.attrs["max_jitter"] = cfg["max-jitter"]
                meta.attrs["reverse_complement"] = cfg["reverse-complement"]
                meta.attrs["num_regions"] = num_regions
                meta.attrs["head_names"] = json.dumps([h["head-name"] for h in cfg["heads"]])
                meta.attrs["revcomp_task_orders"] = json.dumps([h["revcomp-task-order"] for h in cfg["heads"]])

                results = _ordered_results(builder, batches, threads)
                try:
                    for result in progress(results, total=len(batches), desc="prepare-data", unit="batches"):
                        s0 = result["r0"] * per_region
                        for name, chunks in result["chunks"].items():
                            dsid = datasets[name].id
                            for k, (data, mask) in enumerate(chunks):
                                offset = (s0 + k * rows,) + (0,) * (datasets[name].ndim - 1)
                                dsid.write_direct_chunk(offset, data, filter_mask=mask)
                        totals += result["totals"]
                finally:
                    results.close()  # stops the worker threads before their handles are closed
                meta.attrs["total_counts"] = json.dumps(totals.tolist())
        finally:
            builder.close()
    summary = {
        "output-h5": str(output), "num-regions": num_regions, "num-samples": num_samples,
        "sequence-shape": [num_samples, plan.seq_len, 4],
        "head-shapes": [[num_samples, plan.head_len, t] for t in num_tasks],
        "total-counts": totals.tolist(),
    }
    logger.info("prepare-data: wrote %s (%d samples; total counts per head %s)", output, num_samples,
                ", ".join(f"{x:g}" for x in totals))
    return summary


def _write_coordinates(f, plan: _Plan, per_region: int) -> None:
    import h5py

    f.create_dataset("chrom_names", data=np.array(plan.chrom_names, dtype=object),
                     dtype=h5py.string_dtype("utf-8"))
    f.create_dataset("chrom_sizes", data=np.array(plan.chrom_sizes, dtype=np.int64))
    f.create_dataset("coords_chrom", data=np.repeat(plan.chrom_index, per_region))
    f.create_dataset("coords_start", data=np.repeat(plan.start, per_region).astype(np.int64))
    f.create_dataset("coords_stop", data=np.repeat(plan.end, per_region).astype(np.int64))
    strand = np.tile(np.array([b"+", b"-"][:per_region], dtype="S1"), len(plan.start))
    f.create_dataset("coords_strand", data=strand)


def main(argv: list[str]) -> int:
    path, config = read_step_config(
        argv, "bpflow prepare-data", "Write a BPReveal-layout training HDF5 (sequence + head_i) from a FASTA, "
        "bigWigs and a BED of output-length regions.", "docs/data.md")
    setup_logging(config.get("verbosity", "INFO") if isinstance(config.get("verbosity"), str) else "INFO")
    summary = prepare_data(config, source=path)
    print(f"wrote {summary['output-h5']}: {summary['num-regions']} regions, {summary['num-samples']} samples")
    return 0


# --------------------------------------------------------------------------------------
# inspect-data
# --------------------------------------------------------------------------------------


def _head_names(f) -> list[str]:
    names = [k for k in f.keys() if k.startswith("head_") and k[5:].isdigit()]
    return sorted(names, key=lambda k: int(k[5:]))


def _infer_order(fwd: np.ndarray, rev: np.ndarray) -> list[int] | None:
    """The task permutation p with rev[:, p[i]] == flip(fwd[:, i]), if any (<= 4 tasks)."""
    tasks = fwd.shape[-1]
    if tasks > 4:
        return None
    flipped = fwd[::-1]
    for perm in itertools.permutations(range(tasks)):
        if all(np.array_equal(rev[:, perm[i]], flipped[:, i]) for i in range(tasks)):
            return list(perm)
    return None


def inspect_data(path: str | Path, block: int = 1024) -> dict:
    """Shapes, counts and a reverse-complement pairing check of a training HDF5 (bpflow's or
    BPReveal's), reading it in blocks of samples.

    ``reverse_complement["status"]`` is ``"ok"`` (every pair 2k/2k+1 is an exact reverse
    complement, tasks swapped as recorded or inferred), ``"not-paired"`` (the file says it has
    no pairs, or its first pair is not one) or ``"broken"`` (some pairs are wrong).
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise BpflowError(f"{path}: file not found")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise BpflowError(f"{path}: not a readable HDF5 file ({err})") from None
    with f:
        if "sequence" not in f:
            raise BpflowError(f"{path}: no 'sequence' dataset; not a training dataset")
        seq = f["sequence"]
        heads = _head_names(f)
        problems = []
        if seq.ndim != 3 or seq.shape[2] != 4:
            problems.append(f"sequence has shape {seq.shape}, expected (N, length, 4)")
        n = int(seq.shape[0])
        for name in heads:
            if f[name].ndim != 3 or f[name].shape[0] != n:
                problems.append(f"{name} has shape {f[name].shape}, expected ({n}, length, tasks)")
        meta = dict(f["metadata"].attrs) if "metadata" in f else {}
        config = None
        if "config" in meta:
            try:
                config = json.loads(meta["config"])
            except (TypeError, ValueError):
                config = None
        jitter = output_length = None
        revcomp = orders = None
        if isinstance(config, dict):
            jitter, output_length = config.get("max-jitter"), config.get("output-length")
            revcomp = config.get("reverse-complement")
            orders = [h.get("revcomp-task-order") for h in config.get("heads", [])]
        report = {
            "path": str(path), "num_samples": n,
            "sequence": {"shape": list(seq.shape), "dtype": str(seq.dtype)},
            "heads": [], "coordinates": all(k in f for k in ("chrom_names", "coords_chrom", "coords_start",
                                                            "coords_stop")),
            "metadata": {k: (v.item() if hasattr(v, "item") else v) for k, v in meta.items() if k != "config"},
            "problems": problems,
        }
        if problems:
            report["reverse_complement"] = {"status": "not-checked"}
            return report
        task_totals = [np.zeros(f[h].shape[2], dtype=np.float64) for h in heads]
        window_counts = [[] for _ in heads]
        # Reverse-complement check state.
        check = revcomp is not False and n >= 2
        status, bad_pairs, first_bad, checked = "ok", 0, None, 0
        inferred: list[list[int] | None] = list(orders) if orders and revcomp else [None] * len(heads)
        step = max(2, block - block % 2)
        for s0 in range(0, n, step):
            s1 = min(n, s0 + step)
            sq = seq[s0:s1]
            hv = [f[h][s0:s1] for h in heads]
            for k, arr in enumerate(hv):
                task_totals[k] += arr.sum(axis=(0, 1), dtype=np.float64)
                if jitter is not None and output_length is not None:
                    fwd = arr[0::2] if revcomp else arr
                    window_counts[k].append(fwd[:, jitter:jitter + output_length].sum(axis=(1, 2), dtype=np.float64))
            if not check:
                continue
            if s0 == 0 and revcomp is None:
                # No metadata (e.g. a BPReveal file): is the first pair a reverse complement?
                if not np.array_equal(sq[1], sq[0][::-1, ::-1]):
                    check, status = False, "not-paired"
                    continue
            npairs = (s1 - s0) // 2
            for p in range(npairs):
                a, b = 2 * p, 2 * p + 1
                ok = np.array_equal(sq[b], sq[a][::-1, ::-1])
                for k in range(len(heads)):
                    if not ok:
                        break
                    if inferred[k] is None:
                        # Without metadata, learn the task order from the first pair with signal.
                        if not hv[k][a].any():
                            ok = not hv[k][b].any()
                            continue
                        inferred[k] = _infer_order(hv[k][a], hv[k][b]) or list(range(hv[k].shape[2]))
                    order = inferred[k]
                    flipped = hv[k][a][::-1]
                    ok = all(np.array_equal(hv[k][b][:, order[t]], flipped[:, t]) for t in range(len(order)))
                checked += 1
                if not ok:
                    bad_pairs += 1
                    if first_bad is None:
                        first_bad = (s0 + a) // 2
        if check and n % 2:
            status = "broken"
            problems.append(f"{n} samples is odd, but the file should hold reverse-complement pairs")
        if check and bad_pairs:
            status = "broken"
        if revcomp is False or n < 2:
            status = "not-paired"
        report["reverse_complement"] = {
            "status": status, "pairs_checked": checked, "bad_pairs": bad_pairs, "first_bad_pair": first_bad,
            "task_orders": inferred if status != "not-paired" else None,
            "from_metadata": revcomp is not None,
        }
        for k, name in enumerate(heads):
            entry = {"name": name, "shape": list(f[name].shape), "dtype": str(f[name].dtype),
                     "total_counts": float(task_totals[k].sum()), "task_totals": task_totals[k].tolist(),
                     "mean_counts_per_sample": float(task_totals[k].sum() / n) if n else 0.0}
            if window_counts[k]:
                wc = np.concatenate(window_counts[k])
                entry["output_window_counts"] = {
                    "regions": int(len(wc)), "total": float(wc.sum()), "mean": float(wc.mean()),
                    "median": float(np.median(wc)), "min": float(wc.min()), "max": float(wc.max()),
                    "zero_count_regions": int((wc == 0).sum())}
            report["heads"].append(entry)
        if "chrom_names" in f:
            report["chromosomes"] = [c.decode() if isinstance(c, bytes) else str(c) for c in f["chrom_names"][:]]
    return report


def _format_report(r: dict) -> str:
    lines = [f"{r['path']}", f"  samples: {r['num_samples']}",
             f"  sequence: shape {tuple(r['sequence']['shape'])} {r['sequence']['dtype']}"]
    for h in r["heads"]:
        lines.append(f"  {h['name']}: shape {tuple(h['shape'])} {h['dtype']}; total counts {h['total_counts']:.6g} "
                     f"(per task {', '.join(f'{x:.6g}' for x in h['task_totals'])}; "
                     f"mean per sample {h['mean_counts_per_sample']:.6g})")
        w = h.get("output_window_counts")
        if w:
            lines.append(f"    output window, forward samples: {w['regions']} regions, mean {w['mean']:.6g}, "
                         f"median {w['median']:.6g}, min {w['min']:.6g}, max {w['max']:.6g}, "
                         f"{w['zero_count_regions']} with zero counts")
    lines.append(f"  coordinates: {'yes' if r['coordinates'] else 'no'}"
                 + (f" ({len(r['chromosomes'])} chromosomes)" if r.get("chromosomes") else ""))
    rc = r["reverse_complement"]
    if rc["status"] == "ok":
        lines.append(f"  reverse-complement pairs: OK ({rc['pairs_checked']} pairs checked; task orders "
                     f"{rc['task_orders']}{'' if rc['from_metadata'] else ', inferred'})")
    elif rc["status"] == "broken":
        lines.append(f"  reverse-complement pairs: BROKEN ({rc['bad_pairs']} of {rc['pairs_checked']} pairs are "
                     f"not reverse complements; first bad pair: region {rc['first_bad_pair']}, samples "
                     f"{2 * (rc['first_bad_pair'] or 0)}/{2 * (rc['first_bad_pair'] or 0) + 1})")
    else:
        lines.append(f"  reverse-complement pairs: {rc['status']}")
    for p in r["problems"]:
        lines.append(f"  PROBLEM: {p}")
    return "\n".join(lines)


def inspect_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="bpflow inspect-data",
        description="Print shapes, sample count and total counts per head of a training HDF5 and check "
        "its reverse-complement pairing.  Exit code 1 when a check fails.")
    parser.add_argument("file", help="training HDF5 (bpflow prepare-data or BPReveal prepareTrainingData)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = inspect_data(args.file)
    print(json.dumps(report, indent=2) if args.json else _format_report(report))
    return 1 if report["problems"] or report["reverse_complement"]["status"] == "broken" else 0
