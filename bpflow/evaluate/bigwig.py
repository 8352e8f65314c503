"""``bpflow predictions-to-bigwig CONFIG.json``: one head of a prediction file as bigWig tracks."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from bpflow.evaluate.measures import predicted_profile
from bpflow.formats.bigwig import TrackAccumulator, bigwig_writers
from bpflow.formats.fasta import fasta_chrom_sizes
from bpflow.formats.predictions import PredictionFile
from bpflow.utils import BpflowError, progress, read_step_config

logger = logging.getLogger("bpflow.predict")

BIGWIG_MODES = ("profile", "logits", "counts")


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


def predictions_to_bigwig(
    h5, outputs: Sequence, head: int | str = 0, mode: str = "profile", genome=None, batch_size: int = 256
) -> list[Path]:
    """Write one head of a prediction file as bigWigs (one per task; one file in counts mode).

    Modes: ``profile`` = softmax(logits over positions x tasks) * exp(logcounts), expected counts
    per base; ``logits`` = raw logits; ``counts`` = exp(logcounts) / output_length at every base
    of the window (one track: the head's total spread evenly).  Where windows overlap, each base
    is the mean over the windows covering it; bases no window covers are left empty.
    Reverse-complement samples (``coords_strand`` "-") are skipped.  Chromosome sizes come from
    ``genome``'s FASTA index when given, else from the file's ``chrom_sizes``.
    """
    if mode not in BIGWIG_MODES:
        raise BpflowError(f"mode {mode!r} is not one of {', '.join(BIGWIG_MODES)}")
    with PredictionFile(h5) as pf:
        head = pf.head_index(head)
        num_tracks = 1 if mode == "counts" else pf.num_tasks(head)
        outputs = [Path(o) for o in outputs]
        if len(outputs) != num_tracks:
            raise BpflowError(
                f"{h5}: head {pf.head_name(head)!r} in mode {mode} gives {num_tracks} track(s) "
                f"but {len(outputs)} output bigWig(s) were named"
            )
        if len(set(outputs)) != len(outputs):
            raise BpflowError("the output bigWig paths must differ")
        coords = pf.coords()
        if coords is None:
            raise BpflowError(f"{h5}: the prediction file has no coordinates")
        if genome is not None:
            sizes = fasta_chrom_sizes(genome)
            size_source = str(genome)
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
        bad = keep & ((coords.start < 0) | (coords.stop > sizes_arr) | (coords.stop - coords.start != pf.output_length))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise BpflowError(
                f"{h5}: window {coords.label(i)} (row {i}) does not fit its chromosome "
                f"({size_source}) or the output length {pf.output_length}"
            )
        rows = np.flatnonzero(keep)
        rows = rows[np.lexsort((coords.start[rows], chrom_rank[rows]))]
        logger.info("writing %d window(s) of head %r as %s bigWig(s)", len(rows), pf.head_name(head), mode)
        with bigwig_writers(outputs, header) as writers:
            acc = None
            batches = range(0, len(rows), batch_size)
            for a in progress(batches, total=len(batches), desc="bigwig", unit="batch"):
                batch = rows[a : a + batch_size]
                logits = _read_rows(lambda r: pf.logits(head, r), batch)
                logcounts = _read_rows(lambda r: pf.logcounts(head, r), batch)
                values = _bigwig_values(mode, logits, logcounts)
                for j, r in enumerate(batch):
                    chrom = names[r]
                    if acc is None or acc.chrom != chrom:
                        if acc is not None:
                            acc.flush()
                        acc = TrackAccumulator(writers, chrom, int(coords.start[r]))
                    acc.add(int(coords.start[r]), values[j])
                if acc is not None:
                    acc.flush(int(coords.start[batch[-1]]))
            if acc is not None:
                acc.flush()
    return outputs


def main(argv: list[str]) -> int:
    """``bpflow predictions-to-bigwig CONFIG.json``."""
    path, config, _ = read_step_config(
        argv, "predictions-to-bigwig", "Write one head of a prediction file as bigWigs.", "docs/evaluation.md"
    )
    if ("output-bigwigs" in config) == ("output-prefix" in config):
        raise BpflowError(f"{path}: give exactly one of the keys output-bigwigs, output-prefix")
    if "genome" in config and not Path(config["genome"]).is_file():
        raise BpflowError(f"{path}: key genome: file {config['genome']} not found")
    mode, head = config["mode"], config["head"]
    if "output-bigwigs" in config:
        outputs = config["output-bigwigs"]
    else:
        with PredictionFile(config["h5"]) as pf:
            tasks = 1 if mode == "counts" else pf.num_tasks(pf.head_index(head))
        prefix = config["output-prefix"]
        outputs = [f"{prefix}.counts.bw"] if mode == "counts" else [f"{prefix}.task{t}.bw" for t in range(tasks)]
    predictions_to_bigwig(config["h5"], outputs, head, mode, config.get("genome"))
    return 0
