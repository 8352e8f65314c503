"""``bpflow contributions CONFIG.json``: DeepSHAP contribution scores of a model over regions.

For each explained head and target ("counts", "profile") the step writes one contribution
file ``PREFIX.<head>.<target>.h5`` (:mod:`bpflow.formats.contributions`) and, with ``bigwig``,
the bigWig of its projected contributions ``PREFIX.<head>.<target>.bw``.  The input windows
(the model's input length) come from a BED / narrowPeak file (centred on the summit, else on
the interval's midpoint), a bpflow dataset HDF5 (its forward samples, sequences centre-cropped)
or whole chromosomes tiled with a stride.  References are dinucleotide shuffles
(:func:`bpflow.interpret.shuffle.references_for`, seeded per window), scores exact DeepLIFT /
DeepSHAP (:mod:`bpflow.interpret.deepshap`).  The keys are documented in docs/contributions.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from bpflow.evaluate.inference import ModelShape, model_shape, resolve_task_orders
from bpflow.evaluate.predict import tile_starts
from bpflow.formats.bed import read_bed
from bpflow.formats.coords import center_windows
from bpflow.formats.dataset import TrainingDataset, even_rows
from bpflow.formats.fasta import FastaFile
from bpflow.lengths import crop_offset
from bpflow.utils import BpflowError, progress, read_step_config, temporary_path

logger = logging.getLogger("bpflow.contributions")

#: windows read from the genome / dataset at a time (rounded up to a multiple of the batch size)
CHUNK_REGIONS = 256
#: the summation-to-delta check warns above this relative error
SUMMATION_TOLERANCE = 1e-3


@dataclass
class Windows:
    """The input windows to explain: ``chrom`` indexes ``chrom_names``; ``start`` is each
    window's 0-based start (width: the model's input length).  ``region_start`` /
    ``region_stop`` are the regions the windows were made from (None for tiled windows).
    ``read(rows)`` returns the one-hot (n, L, 4) uint8 of sorted row indices."""

    chrom_names: list[str]
    chrom_sizes: list[int]  # -1 where unknown
    chrom: np.ndarray
    start: np.ndarray
    region_start: np.ndarray | None
    region_stop: np.ndarray | None
    read: Callable[[np.ndarray], np.ndarray]
    source: str

    def __len__(self) -> int:
        return len(self.start)

    def subset(self, rows: np.ndarray, read: Callable[[np.ndarray], np.ndarray]) -> "Windows":
        pick = None if self.region_start is None else (self.region_start[rows], self.region_stop[rows])
        return Windows(
            self.chrom_names,
            self.chrom_sizes,
            self.chrom[rows],
            self.start[rows],
            *(pick or (None, None)),
            read,
            self.source,
        )


def _genome_reader(genome: FastaFile, chrom_names: list[str], chrom: np.ndarray, start: np.ndarray, length: int):
    def read(rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), length, 4), dtype=np.uint8)
        c, s = chrom[rows], start[rows]
        for k in np.unique(c):
            sel = np.flatnonzero(c == k)
            out[sel] = genome.one_hot_windows(chrom_names[int(k)], s[sel], length)
        return out

    return read


def bed_windows(bed_path, genome: FastaFile, length: int) -> Windows:
    """Input windows of ``length`` centred on each region's narrowPeak summit (where it has
    one) or its midpoint (``start + (width - length) // 2``).  A chromosome missing from the
    genome is an error; windows running off their chromosome are left out with a warning."""
    bed = read_bed(bed_path, extra_columns=False)
    if not len(bed):
        raise BpflowError(f"{bed_path}: no region in the BED file")
    index = {n: i for i, n in enumerate(genome.chrom_names)}
    missing = [k for k, c in enumerate(bed.chrom) if c not in index]
    if missing:
        k = missing[0]
        raise BpflowError(f"{bed.where(k)}: chromosome {bed.chrom[k]!r} is not in the genome {genome.path}")
    has_summit = bed.summit >= 0
    lo = np.where(has_summit, bed.summit, bed.start)
    hi = np.where(has_summit, bed.summit + 1, bed.end)
    start, stop = center_windows(lo, hi, length)
    sizes = np.array([genome.chrom_sizes[c] for c in bed.chrom], dtype=np.int64)
    off = (start < 0) | (stop > sizes)
    if off.any():
        k = int(np.flatnonzero(off)[0])
        logger.warning(
            "%s: skipped %d of %d region(s) whose %d bp window runs off the chromosome (first: %s)",
            bed_path,
            int(off.sum()),
            len(bed),
            length,
            bed.where(k),
        )
    keep = np.flatnonzero(~off)
    if not len(keep):
        raise BpflowError(f"{bed_path}: no region left: every window runs off its chromosome")
    logger.info(
        "%s: %d region(s), %d centred on a narrowPeak summit, the others on their midpoint",
        bed_path,
        len(keep),
        int(has_summit[keep].sum()),
    )
    chrom = np.array([index[c] for c in bed.chrom[keep]], dtype=np.int64)
    names = list(genome.chrom_names)
    start = start[keep].astype(np.int64)
    return Windows(
        names,
        [genome.chrom_sizes[c] for c in names],
        chrom,
        start,
        bed.start[keep].astype(np.int64),
        bed.end[keep].astype(np.int64),
        _genome_reader(genome, names, chrom, start, length),
        "bed",
    )


def chromosome_windows(genome: FastaFile, chromosomes, shape: ModelShape, stride: int | None) -> Windows:
    """Input windows tiling whole chromosomes every ``stride`` bases (default output_length // 2),
    from the chromosome's start to its end (the last one ends at the end)."""
    length = shape.input_length
    stride = stride or max(1, shape.output_length // 2)
    if stride > length:
        raise BpflowError(
            f"key regions/stride: {stride} is larger than the model's input length {length} (it would leave gaps)"
        )
    chosen = genome.chrom_names if chromosomes == "all" else list(chromosomes)
    for c in chosen:
        if c not in genome.chrom_sizes:
            raise BpflowError(f"key regions/chromosomes: chromosome {c!r} is not in the genome {genome.path}")
    index = {n: i for i, n in enumerate(genome.chrom_names)}
    chrom, start = [], []
    for c in chosen:
        # tile_starts tiles output windows after a left flank: their input windows tile [0, size)
        starts = tile_starts(genome.chrom_sizes[c], shape, stride) - shape.left_flank
        if not len(starts):
            logger.warning(
                "%s (%d bp) is shorter than the model input (%d bp): left out", c, genome.chrom_sizes[c], length
            )
        chrom.append(np.full(len(starts), index[c], np.int64))
        start.append(starts.astype(np.int64))
    chrom, start = np.concatenate(chrom), np.concatenate(start)
    if not len(start):
        raise BpflowError("key regions/chromosomes: no chromosome is long enough for one model input")
    logger.info("tiling %d chromosome(s) with %d windows (stride %d)", len(chosen), len(start), stride)
    names = list(genome.chrom_names)
    return Windows(
        names,
        [genome.chrom_sizes[c] for c in names],
        chrom,
        start,
        None,
        None,
        _genome_reader(genome, names, chrom, start, length),
        "chromosomes",
    )


def dataset_windows(data: TrainingDataset, genome: FastaFile | None, length: int) -> Windows:
    """The forward samples of an open dataset, sequences centre-cropped to ``length``; each
    window centred on the sample's region (its coordinates, the output window)."""
    where = data.where
    crop = crop_offset(data.sequence_width, length, f"{where}: the sequences (the model's input length is {length})")
    coords = data.coords()
    if coords is None:
        raise BpflowError(
            f"{where}: the dataset has no coordinates (coords_chrom/start/stop); cannot place its windows"
        )
    mask, rule = data.sample_mask("auto")
    rows = np.flatnonzero(mask & (coords.chrom >= 0))
    if len(rows) < data.num_samples:
        logger.info(
            "%s: %d of %d samples (%s; reverse complements and samples without coordinates left out)",
            where,
            len(rows),
            data.num_samples,
            rule,
        )
    if not len(rows):
        raise BpflowError(f"{where}: no sample to explain")
    if genome is not None:
        names = list(genome.chrom_names)
        used = sorted(set(coords.chrom_names[int(c)] for c in np.unique(coords.chrom[rows])))
        for name in used:
            if name not in genome.chrom_sizes:
                raise BpflowError(f"{where}: chromosome {name!r} is not in the genome {genome.path}")
        sizes = [genome.chrom_sizes[c] for c in names]
        lookup = np.array([names.index(c) if c in genome.chrom_sizes else -1 for c in coords.chrom_names], np.int64)
    else:
        names = list(coords.chrom_names)
        stored = data.chrom_sizes()
        sizes = [int(stored[i]) if i < len(stored) else -1 for i in range(len(names))]
        lookup = np.arange(len(names), dtype=np.int64)
    region_start, region_stop = coords.start[rows], coords.stop[rows]
    start, _ = center_windows(region_start, region_stop, length)

    def read(sel: np.ndarray) -> np.ndarray:
        picked = rows[sel]
        if len(picked) and picked[-1] - picked[0] + 1 == len(picked):
            block = slice(int(picked[0]), int(picked[-1]) + 1)
            return np.asarray(data.sequence[block, crop : crop + length, :], dtype=np.uint8)
        return np.asarray(data.sequence[picked, crop : crop + length, :], dtype=np.uint8)

    return Windows(
        names, sizes, lookup[coords.chrom[rows]], start.astype(np.int64), region_start, region_stop, read, "dataset"
    )


class _ChunkedSequences:
    """Sliceable view of the windows' one-hot sequences for :func:`iter_deepshap`, read
    ``chunk`` windows at a time (one chunk in memory)."""

    def __init__(self, windows: Windows, length: int, chunk: int):
        self.windows, self.length, self.chunk = windows, length, chunk
        self._first, self._data = -1, None

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, item: slice) -> np.ndarray:
        a, b, _ = item.indices(len(self))
        first = (a // self.chunk) * self.chunk
        if first != self._first:
            rows = np.arange(first, min(len(self), first + self.chunk))
            self._data, self._first = self.windows.read(rows), first
        if b > self._first + len(self._data):  # a slice across chunks (not with a multiple of the batch size)
            return np.concatenate([self[a : self._first + len(self._data)], self[self._first + len(self._data) : b]])
        return self._data[a - self._first : b - self._first]


def _output_paths(prefix: str, head: str, target: str) -> tuple[Path, Path]:
    return Path(f"{prefix}.{head}.{target}.h5"), Path(f"{prefix}.{head}.{target}.bw")


def explain(
    model,
    windows: Windows,
    h5_path: Path,
    head_index: int,
    head_name: str,
    target: str,
    num_references: int,
    seed: int,
    batch_size: int,
    model_file: str = "",
    config: dict | None = None,
) -> float:
    """Write the contribution file of one head and target; return the largest relative
    summation-to-delta error (over windows without N)."""
    import keras

    from bpflow.formats.contributions import ContributionWriter
    from bpflow.interpret.deepshap import iter_deepshap
    from bpflow.interpret.shuffle import references_for

    length = model.inputs[0].shape[1]
    chunk = -(-CHUNK_REGIONS // batch_size) * batch_size
    sequences = _ChunkedSequences(windows, length, chunk)
    stats = {"worst": 0.0, "checked": 0}

    def references(batch, start):
        return references_for(batch.astype(np.uint8), num_references, seed, start=start)

    with ContributionWriter(
        h5_path,
        length,
        windows.chrom_names,
        num_samples=len(windows),
        chrom_sizes=windows.chrom_sizes,
        model_file=model_file,
        head=head_name,
        target=target,
        num_references=num_references,
        seed=seed,
        backend=keras.backend.backend(),
        regions=windows.region_start is not None,
        attrs={"source": windows.source, "config": json.dumps(config or {})},
    ) as writer:

        def done():
            for part in iter_deepshap(model, sequences, references, target, head=head_index, batch_size=batch_size):
                n = len(part.hypothetical)
                rows = slice(part.start, part.start + n)
                x = sequences[rows]
                regions = {}
                if windows.region_start is not None:
                    regions = dict(region_start=windows.region_start[rows], region_stop=windows.region_stop[rows])
                writer.write(x, part.hypothetical, windows.chrom[rows], windows.start[rows], **regions)
                full = (x.sum(axis=-1) == 1).all(axis=1)
                if full.any():
                    total = (part.hypothetical * x).sum(axis=(1, 2), dtype=np.float64)[full]
                    f_x = part.prediction[full].astype(np.float64)
                    f_ref = part.reference_prediction[full].astype(np.float64)
                    scale = np.maximum(1.0, np.maximum(np.abs(f_x), np.abs(f_ref)))
                    stats["worst"] = max(stats["worst"], float((np.abs(total - (f_x - f_ref)) / scale).max()))
                    stats["checked"] += int(full.sum())
                yield from range(n)

        for _ in progress(done(), total=len(windows), desc=f"contributions {head_name}/{target}", unit="region"):
            pass
        writer.file.attrs["summation-to-delta-max-error"] = stats["worst"]
    worst, checked = stats["worst"], stats["checked"]
    line = (
        f"{head_name}/{target}: summation to delta, max |sum(h*x) - (f(x) - mean f(ref))| / max(1, |f|) = "
        f"{worst:.2e} over {checked} window(s) without N"
    )
    if worst > SUMMATION_TOLERANCE:
        logger.warning("%s: above %g; the scores may be inexact", line, SUMMATION_TOLERANCE)
    else:
        logger.info("%s", line)
    return worst


def main(argv: list[str]) -> int:
    """``bpflow contributions CONFIG.json``."""
    path, config, _ = read_step_config(
        argv, "contributions", "DeepSHAP contribution scores of a model over regions.", "docs/contributions.md"
    )
    regions = config["regions"]
    source = next(iter(regions))
    if source in ("bed", "chromosomes") and "genome" not in config:
        raise BpflowError(f"{path}: key genome (FASTA) is required with regions {source}")
    for key, file in (("genome", config.get("genome")), ("regions/bed", regions.get("bed"))):
        if file is not None and not Path(file).is_file():
            raise BpflowError(f"{path}: key {key}: file {file} not found")
    if "dataset" in regions and not Path(regions["dataset"]).is_file():
        raise BpflowError(f"{path}: key regions/dataset: file {regions['dataset']} not found")

    from bpflow.formats.model_file import check_model_file

    check_model_file(config["model-file"], f"{path}: key model-file")
    genome = FastaFile(config["genome"]) if "genome" in config else None

    import keras

    from bpflow.formats.model_file import load_model

    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")  # the scores are computed in float32 in any case
    try:
        model = load_model(config["model-file"], f"{path}: key model-file")
        return _run(path, config, model, genome)
    finally:
        keras.config.set_dtype_policy(policy)
        if genome is not None:
            genome.close()


def _run(path: str, config: dict, model, genome: FastaFile | None) -> int:
    import keras

    shape = model_shape(model, config["model-file"])
    head_names, _ = resolve_task_orders(config.get("heads"), shape, f"{path}", revcomp=False)
    chosen = config.get("contribution-heads", head_names)
    for name in chosen:
        if name not in head_names:
            raise BpflowError(
                f"{path}: key contribution-heads: head {name!r} is not one of the model's heads "
                f"({', '.join(head_names)}; named by key heads)"
            )
    regions = config["regions"]
    with contextlib.ExitStack() as stack:
        if "bed" in regions:
            windows = bed_windows(regions["bed"], genome, shape.input_length)
        elif "chromosomes" in regions:
            windows = chromosome_windows(genome, regions["chromosomes"], shape, regions.get("stride"))
        else:
            data = stack.enter_context(TrainingDataset(regions["dataset"]))
            windows = dataset_windows(data, genome, shape.input_length)
        if config["max-regions"] is not None and len(windows) > config["max-regions"]:
            rows = even_rows(len(windows), config["max-regions"])
            full = windows

            def read(sel):
                return full.read(rows[sel])

            windows = windows.subset(rows, read)
            logger.info("explaining %d evenly spaced of %d windows (key max-regions)", len(rows), len(full))
        if config["bigwig"]:
            used = sorted({int(c) for c in np.unique(windows.chrom)})
            unknown = [windows.chrom_names[c] for c in used if windows.chrom_sizes[c] < 0]
            if unknown:
                raise BpflowError(
                    f"{path}: the size of chromosome {unknown[0]!r} is unknown; give key genome or set bigwig to false"
                )
        if keras.config.dtype_policy().name != "float32" or any(
            getattr(layer, "dtype_policy", None) is not None and layer.dtype_policy.name != "float32"
            for layer in model.layers
        ):
            logger.info("the model has mixed-precision layers: its contributions are computed in float32")
        logger.info(
            "explaining %d window(s) of %d bp from %s: heads %s, targets %s, %d references (seed %d)",
            len(windows),
            shape.input_length,
            windows.source,
            ", ".join(chosen),
            ", ".join(config["targets"]),
            config["num-references"],
            config["seed"],
        )
        _write_outputs(path, config, model, windows, head_names, chosen)
    return 0


def _write_outputs(path, config, model, windows: Windows, head_names, chosen) -> None:
    """All outputs are written under temporary names and renamed into place together at the
    end: an error leaves none of them."""
    from bpflow.formats.contributions import write_projected_bigwig

    staged: list[tuple[Path, Path]] = []
    try:
        for name in chosen:
            for target in config["targets"]:
                h5, bw = _output_paths(config["output-prefix"], name, target)
                tmp_h5 = temporary_path(h5)
                staged.append((tmp_h5, h5))
                explain(
                    model,
                    windows,
                    tmp_h5,
                    head_names.index(name),
                    name,
                    target,
                    config["num-references"],
                    config["seed"],
                    config["batch-size"],
                    model_file=config["model-file"],
                    config=config,
                )
                if config["bigwig"]:
                    tmp_bw = temporary_path(bw)
                    staged.append((tmp_bw, bw))
                    header = [(n, s) for n, s in zip(windows.chrom_names, windows.chrom_sizes) if s >= 0]
                    write_projected_bigwig(tmp_bw, tmp_h5, chrom_sizes=header)
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise
    for tmp, final in staged:
        os.replace(tmp, final)
        logger.info("wrote %s", final)
