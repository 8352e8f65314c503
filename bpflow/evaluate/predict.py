"""Predictions: ``bpflow predict CONFIG.json`` runs any bpflow/BPReveal-style Keras model
(combined, residual, bias or solo) over the windows of a BED file, whole chromosomes or a
training dataset, in batches, and streams its outputs into a prediction file
(:mod:`bpflow.formats.predictions`).  The configuration keys are documented in
docs/evaluation.md.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from bpflow.evaluate.inference import (
    DEFAULT_BATCH_SIZE,
    ModelShape,
    model_shape,
    predict_batch,
    prefetch,
    resolve_task_orders,
)
from bpflow.formats.bed import read_bed
from bpflow.formats.coords import Coords, center_windows
from bpflow.formats.dataset import TrainingDataset
from bpflow.formats.fasta import FastaFile
from bpflow.formats.model_file import load_model
from bpflow.formats.predictions import PredictionWriter
from bpflow.lengths import crop_offset
from bpflow.utils import BpflowError, atomic_output, progress, read_step_config

logger = logging.getLogger("bpflow.predict")


def read_bed_windows(bed_path, genome: FastaFile, shape: ModelShape, resize: bool = True) -> Coords:
    """Output windows from a BED file (:func:`bpflow.formats.bed.read_bed`).

    With ``resize`` each region becomes the output-length window centered on it
    (start + (width - output_length) // 2); without, every region must be exactly
    output-length wide.  A chromosome missing from the genome is an error; windows whose
    model input would run off the chromosome are left out with a warning.
    """
    bed = read_bed(bed_path, extra_columns=False)
    chrom_index = {n: i for i, n in enumerate(genome.chrom_names)}
    out = shape.output_length
    missing = [k for k, c in enumerate(bed.chrom) if c not in chrom_index]
    if missing:
        k = missing[0]
        raise BpflowError(f"{bed.where(k)}: chromosome {bed.chrom[k]!r} is not in the genome {genome.path}")
    if resize:
        start, stop = center_windows(bed.start, bed.end, out)
    else:
        wrong = np.flatnonzero(bed.end - bed.start != out)
        if len(wrong):
            k = int(wrong[0])
            raise BpflowError(
                f"{bed.where(k)}: region {bed.chrom[k]}:{bed.start[k]}-{bed.end[k]} is "
                f"{bed.end[k] - bed.start[k]} bp wide but the model predicts {out} bp (set "
                "resize-regions to true to center it)"
            )
        start, stop = bed.start, bed.end
    sizes = np.array([genome.chrom_sizes[c] for c in bed.chrom], dtype=np.int64)
    off = (start - shape.left_flank < 0) | (stop + shape.right_flank > sizes)
    if off.any():
        k = int(np.flatnonzero(off)[0])
        logger.warning(
            "%s: left out %d region(s) whose model input runs off the chromosome (first: %s:%d-%d)",
            bed_path,
            int(off.sum()),
            bed.chrom[k],
            start[k],
            stop[k],
        )
    keep = ~off
    if not keep.any():
        raise BpflowError(f"{bed_path}: no region left to predict")
    chrom = np.array([chrom_index[c] for c in bed.chrom[keep]], dtype=np.int64)
    return Coords(list(genome.chrom_names), chrom, start[keep].astype(np.int64), stop[keep].astype(np.int64))


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


def _write_prediction_file(
    model,
    shape: ModelShape,
    output_h5,
    num_samples: int,
    batches: Iterator[tuple],
    chrom_names: Sequence[str],
    chrom_sizes: Sequence[int],
    head_names: Sequence[str],
    batch_size: int,
    revcomp_average: bool,
    task_orders,
    attrs: dict,
    strand_dtype=None,
) -> Path:
    """Stream batches (chrom, start, stop, strand, one_hot) through the model into ``output_h5``."""
    num_batches = -(-num_samples // batch_size)
    t0 = time.monotonic()
    with atomic_output(output_h5) as tmp:
        writer = PredictionWriter(
            tmp,
            num_samples,
            shape.output_length,
            shape.num_tasks,
            chrom_names,
            chrom_sizes,
            head_names,
            attrs,
            strand_dtype,
        )
        try:
            row = 0
            for chrom, start, stop, strand, x in progress(
                prefetch(batches), total=num_batches, desc="predict", unit="batch"
            ):
                n = len(start)
                if n < batch_size:
                    x = np.concatenate([x, np.zeros((batch_size - n,) + x.shape[1:], x.dtype)])
                logits, logcounts = predict_batch(model, x, shape.num_heads, revcomp_average, task_orders)
                writer.write(row, chrom, start, stop, [lg[:n] for lg in logits], [lc[:n] for lc in logcounts], strand)
                row += n
            if row != num_samples:
                raise RuntimeError(f"internal error: wrote {row} of {num_samples} rows")
        finally:
            writer.close()
    seconds = time.monotonic() - t0
    logger.info(
        "wrote %s: %d windows in %.1f s (%.1f windows/s)",
        output_h5,
        num_samples,
        seconds,
        num_samples / max(seconds, 1e-9),
    )
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


def _genome_batch_iter(genome: FastaFile, coords: Coords, shape: ModelShape, batch_size: int):
    n = len(coords.start)
    for a in range(0, n, batch_size):
        sl = slice(a, min(n, a + batch_size))
        chrom, start, stop = coords.chrom[sl], coords.start[sl], coords.stop[sl]
        x = np.empty((len(start), shape.input_length, 4), dtype=np.uint8)
        for c in np.unique(chrom):
            rows = np.flatnonzero(chrom == c)
            x[rows] = genome.one_hot_windows(coords.chrom_names[c], start[rows] - shape.left_flank, shape.input_length)
        yield chrom, start, stop, None, x


def predict_regions(
    model,
    genome,
    regions,
    output_h5,
    batch_size: int = DEFAULT_BATCH_SIZE,
    revcomp_average: bool = False,
    heads: list[dict] | None = None,
    resize_regions: bool = True,
    model_file=None,
    config: dict | None = None,
) -> Path:
    """Predict the output windows of a BED file (see :func:`read_bed_windows`) into ``output_h5``."""
    shape = model_shape(model, str(model_file or "model"))
    names, orders = resolve_task_orders(heads, shape, "heads", revcomp_average)
    genome = genome if isinstance(genome, FastaFile) else FastaFile(genome)
    coords = read_bed_windows(regions, genome, shape, resize_regions)
    logger.info("predicting %d regions from %s", len(coords.start), regions)
    return _write_prediction_file(
        model,
        shape,
        output_h5,
        len(coords.start),
        _genome_batch_iter(genome, coords, shape, batch_size),
        genome.chrom_names,
        [genome.chrom_sizes[c] for c in genome.chrom_names],
        names,
        batch_size,
        revcomp_average,
        orders,
        _common_attrs(model_file, shape, revcomp_average, "regions", config),
    )


def predict_chromosomes(
    model,
    genome,
    output_h5,
    chromosomes: Sequence[str] | str = "all",
    stride: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    revcomp_average: bool = False,
    heads: list[dict] | None = None,
    model_file=None,
    config: dict | None = None,
) -> Path:
    """Tile whole chromosomes with output windows every ``stride`` bases (default output_length // 2)."""
    shape = model_shape(model, str(model_file or "model"))
    names, orders = resolve_task_orders(heads, shape, "heads", revcomp_average)
    genome = genome if isinstance(genome, FastaFile) else FastaFile(genome)
    stride = stride or max(1, shape.output_length // 2)
    if not 1 <= stride <= shape.output_length:
        raise BpflowError(
            f"stride {stride} must be between 1 and the output length {shape.output_length} "
            "(a larger stride leaves gaps)"
        )
    chosen = genome.chrom_names if chromosomes == "all" else list(chromosomes)
    for c in chosen:
        if c not in genome.chrom_sizes:
            raise BpflowError(f"chromosome {c!r} is not in the genome {genome.path}")
    index = {n: i for i, n in enumerate(genome.chrom_names)}
    counts = {}
    for c in chosen:
        counts[c] = len(tile_starts(genome.chrom_sizes[c], shape, stride))
        if not counts[c]:
            logger.warning(
                "%s (%d bp) is shorter than the model input (%d bp): left out",
                c,
                genome.chrom_sizes[c],
                shape.input_length,
            )
    total = sum(counts.values())
    if not total:
        raise BpflowError("no chromosome is long enough for one model input")

    def batches():
        for c in chosen:
            starts = tile_starts(genome.chrom_sizes[c], shape, stride)
            for a in range(0, len(starts), batch_size):
                s = starts[a : a + batch_size]
                x = genome.one_hot_windows(c, s - shape.left_flank, shape.input_length)
                yield np.full(len(s), index[c], np.int64), s, s + shape.output_length, None, x

    logger.info("predicting %d windows (stride %d) on %d chromosome(s)", total, stride, len(chosen))
    return _write_prediction_file(
        model,
        shape,
        output_h5,
        total,
        batches(),
        genome.chrom_names,
        [genome.chrom_sizes[c] for c in genome.chrom_names],
        names,
        batch_size,
        revcomp_average,
        orders,
        _common_attrs(model_file, shape, revcomp_average, "chromosomes", config),
    )


def predict_dataset(
    model,
    data_h5,
    output_h5,
    genome=None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    revcomp_average: bool = False,
    heads: list[dict] | None = None,
    model_file=None,
    config: dict | None = None,
) -> Path:
    """Predict every sample of a training dataset, its sequence center-cropped to the model input.

    Rows match the dataset sample for sample; coordinates (when the dataset has them) are the
    output-length windows centered in the dataset's windows; ``coords_strand`` is copied, and
    reverse-complement samples stay in their own orientation.
    """
    shape = model_shape(model, str(model_file or "model"))
    names, orders = resolve_task_orders(heads, shape, "heads", revcomp_average)
    with TrainingDataset(data_h5) as data:
        seq, n = data.sequence, data.num_samples
        jitter = crop_offset(data.sequence_width, shape.input_length, f"{data_h5}: the sequences")
        coords = data.coords()
        data.reverse_strand()  # validates the encoding of coords_strand
        strands_raw = data.file["coords_strand"] if "coords_strand" in data.file else None
        if genome is not None:
            genome = genome if isinstance(genome, FastaFile) else FastaFile(genome)
            chrom_names = list(genome.chrom_names)
            chrom_sizes = [genome.chrom_sizes[c] for c in chrom_names]
            if coords is not None:
                missing = sorted(set(coords.chrom_names[c] for c in np.unique(coords.chrom)) - set(chrom_names))
                if missing:
                    raise BpflowError(f"{data_h5}: chromosome {missing[0]!r} is not in the genome {genome.path}")
        elif coords is not None:
            chrom_names = list(coords.chrom_names)
            sizes = data.chrom_sizes()
            chrom_sizes = [int(sizes[i]) if i < len(sizes) else -1 for i in range(len(chrom_names))]
        else:
            chrom_names, chrom_sizes = [], []
        if coords is None:
            logger.warning("%s has no coordinates: the prediction file's coords are -1", data_h5)
            p_chrom = np.full(n, -1, np.int64)
            p_start = p_stop = p_chrom
        else:
            lookup = (
                np.array([chrom_names.index(c) for c in coords.chrom_names], dtype=np.int64)
                if coords.chrom_names
                else np.zeros(0, np.int64)
            )
            p_chrom = np.where(coords.chrom >= 0, lookup[np.maximum(coords.chrom, 0)] if len(lookup) else -1, -1)
            p_start, p_stop = center_windows(coords.start, coords.stop, shape.output_length)

        def batches():
            for a in range(0, n, batch_size):
                b = min(n, a + batch_size)
                x = seq[a:b, jitter : jitter + shape.input_length, :]
                strand = strands_raw[a:b] if strands_raw is not None else None
                yield p_chrom[a:b], p_start[a:b], p_stop[a:b], strand, x

        logger.info("predicting %d samples of %s (sequences cropped by %d on each side)", n, data_h5, jitter)
        return _write_prediction_file(
            model,
            shape,
            output_h5,
            n,
            batches(),
            chrom_names,
            chrom_sizes,
            names,
            batch_size,
            revcomp_average,
            orders,
            _common_attrs(model_file, shape, revcomp_average, "data", config),
            strand_dtype=strands_raw.dtype if strands_raw is not None else None,
        )


def main(argv: list[str]) -> int:
    """``bpflow predict CONFIG.json``."""
    path, config, _ = read_step_config(
        argv, "predict", "Predict over a BED of regions, whole chromosomes or a dataset.", "docs/evaluation.md"
    )
    sources = [k for k in ("regions", "chromosomes", "data") if k in config]
    if len(sources) != 1:
        raise BpflowError(
            f"{path}: give exactly one of the keys regions, chromosomes, data (found {', '.join(sources) or 'none'})"
        )
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
    genome = FastaFile(config["genome"]) if "genome" in config else None
    model = load_model(config["model-file"])
    common = dict(
        batch_size=config["batch-size"],
        revcomp_average=config["revcomp-average"],
        heads=config.get("heads"),
        model_file=config["model-file"],
        config=config,
    )
    if source == "regions":
        predict_regions(
            model,
            genome,
            config["regions"],
            config["output-h5"],
            resize_regions=config.get("resize-regions", True),
            **common,
        )
    elif source == "chromosomes":
        predict_chromosomes(model, genome, config["output-h5"], config["chromosomes"], config.get("stride"), **common)
    else:
        predict_dataset(model, config["data"], config["output-h5"], genome, **common)
    return 0
