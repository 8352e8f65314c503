"""Region sets: ``bpflow prepare-regions CONFIG.json``.

From peak BEDs and a genome, write for each of train / val / test the regions to train on,
each exactly output-length wide (centred on the narrowPeak summit when there is one), a BED
of rejected regions with the reason for each, optional background (non-peak) regions for the
bias model, and a JSON summary.  Keys follow BPReveal's prepareBed; see docs/data.md.

Every check on a region uses its *padded* window, the output window grown by
(input-length - output-length) / 2 + max-jitter on each side: the sequence and coverage a
training sample can ever see.
"""

from __future__ import annotations

import bisect
import collections
import copy
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from bpflow.coverage import (BedRegions, BigWigFile, FastaFile, acgt_mask, gc_mask, iter_chrom_groups,
                             read_bed, read_bigwig_windows, read_sequence_windows, window_sums, write_bed)
from bpflow.utils import (VERBOSITY_SCHEMA, WINDOW_SCHEMA_PROPERTIES, BpflowError, read_step_config, progress,
                          setup_logging, validate_config, write_json_atomic)

logger = logging.getLogger("bpflow.regions")

SPLITS = ("train", "val", "test")
_STRINGS = {"type": "array", "items": {"type": "string", "minLength": 1}}
_FILES = {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}}

PREPARE_REGIONS_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "bpflow prepare-regions",
    "type": "object",
    "additionalProperties": False,
    "required": ["genome", "input-length", "output-length", "max-jitter", "heads", "splits", "output-prefix"],
    "properties": {
        **WINDOW_SCHEMA_PROPERTIES,
        "heads": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["bigwig-names"],
                "properties": {
                    "bigwig-names": _FILES,
                    "max-counts": {"type": "number", "minimum": 0},
                    "max-quantile": {"type": "number", "minimum": 0, "maximum": 1},
                    "min-counts": {"type": "number", "minimum": 0},
                    "min-quantile": {"type": "number", "minimum": 0, "maximum": 1},
                    "use-absolute-values": {"type": "boolean"},
                    "head-name": {"type": "string"},
                },
            },
        },
        "splits": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "regions": _FILES,
                "train-chroms": _STRINGS, "val-chroms": _STRINGS, "test-chroms": _STRINGS,
                "train-regex": {"type": "string"}, "val-regex": {"type": "string"},
                "test-regex": {"type": "string"},
                "train-regions": _STRINGS, "val-regions": _STRINGS, "test-regions": _STRINGS,
            },
        },
        "resize-mode": {"enum": ["summit", "center", "start", "none"]},
        "remove-overlaps": {"type": "boolean"},
        "overlap-max-distance": {"type": "integer", "minimum": 1},
        "blacklist": {"oneOf": [{"type": "string", "minLength": 1}, _STRINGS]},
        "max-non-acgt-fraction": {"type": "number", "minimum": 0, "maximum": 1},
        "background": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "count": {"type": "integer", "minimum": 0},
                "ratio": {"type": "number", "minimum": 0},
                "min-distance": {"type": "integer", "minimum": 0},
                "gc-match": {"type": "boolean"},
                "gc-bins": {"type": "integer", "minimum": 1, "maximum": 1000},
                "counts-quantile": {"type": "number", "minimum": 0, "maximum": 1},
                "counts-factor": {"type": ["number", "null"], "minimum": 0},
            },
        },
        "seed": {"type": "integer"},
        "num-threads": {"type": "integer", "minimum": 1},
        "verbosity": VERBOSITY_SCHEMA,
        "output-prefix": {"type": "string", "minLength": 1},
        "output-train": {"type": "string", "minLength": 1},
        "output-val": {"type": "string", "minLength": 1},
        "output-test": {"type": "string", "minLength": 1},
        "output-all": {"type": "string", "minLength": 1},
        "output-reject": {"type": "string", "minLength": 1},
        "output-summary": {"type": "string", "minLength": 1},
        "output-background-train": {"type": "string", "minLength": 1},
        "output-background-val": {"type": "string", "minLength": 1},
        "output-background-test": {"type": "string", "minLength": 1},
        "output-background-all": {"type": "string", "minLength": 1},
    },
}

REGION_DEFAULTS = {"resize-mode": "summit", "remove-overlaps": False, "max-non-acgt-fraction": 0.0,
                   "seed": 0, "num-threads": 1, "verbosity": "INFO"}
BACKGROUND_DEFAULTS = {"gc-match": True, "gc-bins": 20, "counts-quantile": 0.01, "counts-factor": 0.5}

# Reject reasons, in the order the checks run.
REASONS = ("not-in-split", "wrong-width", "chrom-not-in-genome", "chrom-not-in-bigwig", "off-chrom-end",
           "blacklist", "non-acgt", "overlap")  # then "max-counts:head_<i>", "min-counts:head_<i>"

# Windows per unit of work when reading sequence or coverage.
WORK_BATCH = 1024


# --------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------


def _split_mode(splits: dict, source: str) -> str:
    modes = {
        "chroms": ("train-chroms", "val-chroms", "test-chroms"),
        "regex": ("train-regex", "val-regex", "test-regex"),
        "bed": ("train-regions", "val-regions", "test-regions"),
    }
    used = [m for m, keys in modes.items() if any(k in splits for k in keys)]
    if len(used) != 1:
        raise BpflowError(f"{source}: key splits: give exactly one of train-chroms/val-chroms/test-chroms, "
                          "train-regex/val-regex/test-regex or train-regions/val-regions/test-regions")
    mode = used[0]
    missing = [k for k in modes[mode] if k not in splits]
    if missing:
        raise BpflowError(f"{source}: key splits: missing {', '.join(missing)}")
    if mode in ("chroms", "regex") and "regions" not in splits:
        raise BpflowError(f"{source}: key splits: 'regions' (a list of peak BED files) is required with "
                          f"{modes[mode][0]}")
    if mode == "bed" and "regions" in splits:
        raise BpflowError(f"{source}: key splits/regions: not used with train-regions/val-regions/test-regions")
    return mode


def normalize_regions_config(config: dict, source: str = "config") -> dict:
    """Validate a prepare-regions config (schema and cross-key rules) and return a copy with
    defaults filled in (``splits["mode"]`` = "chroms" | "regex" | "bed", ``blacklist`` a list,
    output paths resolved under ``outputs``).  Reads no data."""
    from bpflow.dataprep import check_length_arithmetic

    validate_config(config, PREPARE_REGIONS_SCHEMA, source)
    cfg = copy.deepcopy(config)
    for key, value in REGION_DEFAULTS.items():
        cfg.setdefault(key, value)
    check_length_arithmetic(cfg, source)
    for i, head in enumerate(cfg["heads"]):
        for kind in ("max", "min"):
            if f"{kind}-counts" in head and f"{kind}-quantile" in head:
                raise BpflowError(f"{source}: heads/{i}: give {kind}-counts or {kind}-quantile, not both")
        head.setdefault("use-absolute-values", False)
        head.setdefault("head-name", f"head_{i}")
    if cfg["remove-overlaps"] and "overlap-max-distance" not in cfg:
        raise BpflowError(f"{source}: key overlap-max-distance: required when remove-overlaps is true")
    if not cfg["remove-overlaps"] and "overlap-max-distance" in cfg:
        raise BpflowError(f"{source}: key overlap-max-distance: only allowed when remove-overlaps is true")
    splits = cfg["splits"]
    splits["mode"] = _split_mode(splits, source)
    if splits["mode"] == "chroms":
        seen: dict[str, str] = {}
        for split in SPLITS:
            for chrom in splits[f"{split}-chroms"]:
                if chrom in seen and seen[chrom] != split:
                    raise BpflowError(f"{source}: key splits: chromosome {chrom} is in both "
                                      f"{seen[chrom]}-chroms and {split}-chroms")
                seen[chrom] = split
    if splits["mode"] == "regex":
        for split in SPLITS:
            try:
                re.compile(splits[f"{split}-regex"])
            except re.error as err:
                raise BpflowError(f"{source}: key splits/{split}-regex: not a valid regular expression: "
                                  f"{err}") from None
    blacklist = cfg.get("blacklist", [])
    cfg["blacklist"] = [blacklist] if isinstance(blacklist, str) else list(blacklist)
    if "background" in cfg:
        bg = cfg["background"]
        if "count" in bg and "ratio" in bg:
            raise BpflowError(f"{source}: key background: give count or ratio, not both")
        if "count" not in bg and "ratio" not in bg:
            bg["ratio"] = 1.0
        for key, value in BACKGROUND_DEFAULTS.items():
            bg.setdefault(key, value)
        bg.setdefault("min-distance", (cfg["input-length"] - cfg["output-length"]) // 2 + cfg["max-jitter"])
        if splits["mode"] != "chroms":
            raise BpflowError(f"{source}: key background: background sampling needs splits by chromosome "
                              "(train-chroms/val-chroms/test-chroms)")
    prefix = cfg["output-prefix"]
    outputs = {split: cfg.get(f"output-{split}", f"{prefix}_{split}.bed") for split in SPLITS}
    outputs["all"] = cfg.get("output-all", f"{prefix}_all.bed")
    outputs["reject"] = cfg.get("output-reject", f"{prefix}_reject.bed")
    outputs["summary"] = cfg.get("output-summary", f"{prefix}_summary.json")
    for split in SPLITS + ("all",):
        key = f"output-background-{split}"
        if "background" in cfg:
            outputs[f"background-{split}"] = cfg.get(key, f"{prefix}_background_{split}.bed")
        elif key in cfg:
            raise BpflowError(f"{source}: key {key}: only allowed with background")
    if len(set(outputs.values())) != len(outputs):
        raise BpflowError(f"{source}: two outputs have the same path: {sorted(outputs.values())}")
    cfg["outputs"] = outputs
    return cfg


# --------------------------------------------------------------------------------------
# Intervals
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Parallel reading with per-thread handles
# --------------------------------------------------------------------------------------


class _Handles:
    """Lazily opened FASTA / bigWig handles, one set per thread, closed together."""

    def __init__(self, genome: str, bigwigs: list[list[str]]):
        self.genome, self.bigwigs = genome, bigwigs
        self._local = threading.local()
        self._all: list = []
        self._lock = threading.Lock()

    def get(self):
        h = getattr(self._local, "h", None)
        if h is None:
            h = (FastaFile(self.genome), [[BigWigFile(p) for p in head] for head in self.bigwigs])
            self._local.h = h
            with self._lock:
                self._all.append(h)
        return h

    def close(self) -> None:
        for fasta, heads in self._all:
            fasta.close()
            for head in heads:
                for bw in head:
                    bw.close()
        self._all.clear()


def _run(tasks: list, func: Callable, threads: int, desc: str | None) -> list:
    """func(task) for each task, in threads when threads > 1; results in task order (with
    progress lines when ``desc`` is given)."""
    def shown(items):
        return progress(items, total=len(items), desc=desc, unit="batches") if desc else items

    if threads <= 1 or len(tasks) <= 1:
        return [func(t) for t in shown(tasks)]
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bpflow-regions") as ex:
        futures = [ex.submit(func, t) for t in tasks]
        try:
            return [f.result() for f in shown(futures)]
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _window_tasks(chroms: np.ndarray, starts: np.ndarray, order: list[str]) -> list[tuple[str, np.ndarray]]:
    """(chrom, indices sorted by start) work units of at most WORK_BATCH windows."""
    tasks = []
    for chrom, idx in iter_chrom_groups(chroms, order):
        idx = idx[np.argsort(starts[idx], kind="stable")]
        for k in range(0, len(idx), WORK_BATCH):
            tasks.append((chrom, idx[k:k + WORK_BATCH]))
    return tasks


@dataclass
class _Geometry:
    input_length: int
    output_length: int
    jitter: int

    @property
    def pad(self) -> int:  # padded window = output window grown by this on each side
        return (self.input_length - self.output_length) // 2 + self.jitter

    @property
    def padded_length(self) -> int:
        return self.input_length + 2 * self.jitter

    @property
    def min_window(self) -> tuple[int, int]:  # (offset in padded window, width) for min-counts
        width = max(self.output_length - 2 * self.jitter, 1)
        return self.pad + (self.output_length - width) // 2, width


def _sequence_stats(handles: _Handles, geo: _Geometry, chroms: np.ndarray, out_starts: np.ndarray,
                    index: np.ndarray, order: list[str], threads: int, desc: str | None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Non-ACGT fraction of each padded window and GC fraction of its input-length window."""
    nonacgt = np.zeros(len(index), dtype=np.float64)
    gc = np.zeros(len(index), dtype=np.float64)
    sub_starts = out_starts[index]

    def work(task):
        chrom, idx = task
        fasta, _ = handles.get()
        raw = read_sequence_windows(fasta, chrom, sub_starts[idx] - geo.pad, geo.padded_length)
        acgt = acgt_mask(raw)
        inner = slice(geo.jitter, geo.jitter + geo.input_length)
        n_acgt = acgt[:, inner].sum(axis=1)
        n_gc = gc_mask(raw[:, inner]).sum(axis=1)
        frac_gc = np.divide(n_gc, n_acgt, out=np.zeros(len(idx)), where=n_acgt > 0)
        return idx, 1.0 - acgt.sum(axis=1) / geo.padded_length, frac_gc

    for idx, na, g in _run(_window_tasks(chroms[index], sub_starts, order), work, threads, desc):
        nonacgt[idx], gc[idx] = na, g
    return nonacgt, gc


def _count_sums(handles: _Handles, geo: _Geometry, heads: list[dict], chroms: np.ndarray,
                out_starts: np.ndarray, index: np.ndarray, order: list[str], threads: int, desc: str | None,
                windows: tuple[str, ...] = ("padded", "min", "output")) -> dict[str, np.ndarray]:
    """Per head, the coverage summed over its bigWigs in the padded window ("padded"), the
    central output-length - 2*max-jitter window ("min") and the output window ("output").
    Arrays of shape (len(index), num_heads)."""
    offsets = {"padded": (0, geo.padded_length), "min": geo.min_window, "output": (geo.pad, geo.output_length)}
    result = {w: np.zeros((len(index), len(heads)), dtype=np.float64) for w in windows}
    sub_starts = out_starts[index]
    negative = ["abs" if h["use-absolute-values"] else "error" for h in heads]

    def work(task):
        chrom, idx = task
        _, bigwigs = handles.get()
        sums = {w: np.zeros((len(idx), len(heads))) for w in windows}
        for h, head_bws in enumerate(bigwigs):
            total = np.zeros((len(idx), geo.padded_length), dtype=np.float32)
            for bw in head_bws:
                total += read_bigwig_windows(bw, chrom, sub_starts[idx] - geo.pad, geo.padded_length,
                                             negative=negative[h])
            for w in windows:
                off, width = offsets[w]
                sums[w][:, h] = window_sums(total, off, width)
        return idx, sums

    for idx, sums in _run(_window_tasks(chroms[index], sub_starts, order), work, threads, desc):
        for w in windows:
            result[w][idx] = sums[w]
    return result


# --------------------------------------------------------------------------------------
# Peaks
# --------------------------------------------------------------------------------------


def _load_peaks(cfg: dict) -> tuple[BedRegions, np.ndarray, np.ndarray]:
    """All input regions, their split (0 train, 1 val, 2 test, -1 none) and a reason array
    (None = still kept)."""
    splits = cfg["splits"]
    mode = splits["mode"]
    if mode == "bed":
        parts, labels = [], []
        for s, split in enumerate(SPLITS):
            for path in splits[f"{split}-regions"]:
                bed = read_bed(path)
                parts.append(bed)
                labels.append(np.full(len(bed), s, dtype=np.int64))
        bed = BedRegions.concat(parts)
        split_of = np.concatenate(labels) if labels else np.empty(0, dtype=np.int64)
    else:
        bed = BedRegions.concat([read_bed(p) for p in splits["regions"]])
        split_of = np.full(len(bed), -1, dtype=np.int64)
        if mode == "chroms":
            lookup = {c: s for s, split in enumerate(SPLITS) for c in splits[f"{split}-chroms"]}
            split_of = np.array([lookup.get(c, -1) for c in bed.chrom], dtype=np.int64)
        else:
            regexes = [re.compile(splits[f"{split}-regex"]) for split in SPLITS]
            for k, name in enumerate(bed.name):
                hits = [s for s, rx in enumerate(regexes) if rx.search(name)]
                if len(hits) > 1:
                    raise BpflowError(f"{bed.where(k)}: region name {name!r} matches the regexes of "
                                      f"{' and '.join(SPLITS[s] for s in hits)}")
                if hits:
                    split_of[k] = hits[0]
    reason = np.full(len(bed), None, dtype=object)
    reason[split_of < 0] = "not-in-split"
    return bed, split_of, reason


def _output_windows(cfg: dict, bed: BedRegions, reason: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = cfg["output-length"]
    mode = cfg["resize-mode"]
    if mode == "start":
        starts = bed.start.copy()
    elif mode == "none":
        starts = bed.start.copy()
        wrong = ((bed.end - bed.start) != out) & (reason == None)  # noqa: E711
        reason[wrong] = "wrong-width"
    else:
        centre = (bed.start + bed.end) // 2
        if mode == "summit":
            centre = np.where(bed.summit >= 0, bed.summit, centre)
        starts = centre - out // 2
    return starts, starts + out


def _remove_overlaps(centres: np.ndarray, chroms: np.ndarray, candidates: np.ndarray, distance: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Of the candidate regions, those to drop so that no two kept centres on a chromosome
    are closer than ``distance``: regions are visited in a seeded random order and kept when
    they conflict with no region kept before."""
    drop = []
    for chrom, idx in iter_chrom_groups(chroms[candidates]):
        members = candidates[idx]
        visit = members[rng.permutation(len(members))]
        kept_sorted: list[int] = []  # sorted centres of kept regions
        for r in visit:
            c = int(centres[r])
            k = bisect.bisect_left(kept_sorted, c)
            near = (k < len(kept_sorted) and kept_sorted[k] - c < distance) or \
                   (k > 0 and c - kept_sorted[k - 1] < distance)
            if near:
                drop.append(r)
            else:
                kept_sorted.insert(k, c)
    return np.array(sorted(drop), dtype=np.int64)


# --------------------------------------------------------------------------------------
# Background
# --------------------------------------------------------------------------------------


def _apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """Integers summing to ``total`` proportional to ``weights`` (largest remainders)."""
    weights = np.asarray(weights, dtype=np.float64)
    if total <= 0 or weights.sum() <= 0:
        return np.zeros(len(weights), dtype=np.int64)
    exact = total * weights / weights.sum()
    base = np.floor(exact).astype(np.int64)
    rest = total - int(base.sum())
    if rest > 0:
        base[np.argsort(-(exact - base), kind="stable")[:rest]] += 1
    return base


def gc_bin(gc: np.ndarray, bins: int) -> np.ndarray:
    """GC-histogram bin of each GC fraction: equal-width bins over [0, 1]."""
    return np.clip(np.floor(np.asarray(gc) * bins).astype(np.int64), 0, bins - 1)


def _sample_background(cfg: dict, target: int, geo: _Geometry, sizes: dict[str, int],
                       chroms: list[str], peak_zone: IntervalSet, blacklist: IntervalSet,
                       peak_gc_hist: np.ndarray, thresholds: np.ndarray | None, handles: _Handles,
                       rng: np.random.Generator) -> tuple[dict, dict]:
    """Background windows of one split: output-length bins of the split's chromosomes drawn in
    a seeded random order, kept when they pass every check and their GC bin still has room.
    Returns ({"chrom", "start", "gc"}, stats)."""
    bg = cfg["background"]
    out = geo.output_length
    bins = bg["gc-bins"] if bg["gc-match"] else 1
    if bg["gc-match"] and peak_gc_hist.sum() > 0:
        quota = _apportion(target, peak_gc_hist)
    else:
        quota = _apportion(target, np.ones(bins))
    stats = {"target": int(target), "kept": 0, "candidates": 0,
             "rejected": collections.Counter(), "gc-quota": quota.tolist()}
    chosen_chrom: list[str] = []
    chosen_start: list[int] = []
    chosen_gc: list[float] = []
    n_bins = np.array([sizes[c] // out for c in chroms], dtype=np.int64)
    total_bins = int(n_bins.sum())
    if target == 0 or total_bins == 0:
        stats["shortfall"] = int(target)
        return {"chrom": chosen_chrom, "start": chosen_start, "gc": chosen_gc}, stats
    cum = np.concatenate([[0], np.cumsum(n_bins)])
    draw = rng.permutation(total_bins)
    filled = np.zeros(len(quota), dtype=np.int64)
    pos = 0
    threads = cfg["num-threads"]
    chrom_arr = np.array(chroms, dtype=object)
    while pos < total_bins and (filled < quota).any():
        need = int((quota - filled).sum())
        take = draw[pos:pos + max(256, 3 * need)]
        pos += len(take)
        which = np.searchsorted(cum, take, side="right") - 1
        starts = (take - cum[which]) * out
        cand_chrom = chrom_arr[which]
        stats["candidates"] += len(take)
        alive = np.ones(len(take), dtype=bool)
        for chrom, idx in iter_chrom_groups(cand_chrom):
            s = starts[idx]
            ok = (s - geo.pad >= 0) & (s + out + geo.pad <= sizes[chrom])
            stats["rejected"]["off-chrom-end"] += int((~ok).sum())
            alive[idx[~ok]] = False
            live = idx[ok]
            bl = blacklist.overlaps(chrom, starts[live] - geo.pad, starts[live] + out + geo.pad)
            stats["rejected"]["blacklist"] += int(bl.sum())
            alive[live[bl]] = False
            live = live[~bl]
            near = peak_zone.overlaps(chrom, starts[live], starts[live] + out)
            stats["rejected"]["near-peak"] += int(near.sum())
            alive[live[near]] = False
        live = np.flatnonzero(alive)
        if len(live) == 0:
            continue
        nonacgt, gc = _sequence_stats(handles, geo, cand_chrom, starts, live, chroms, threads, None)
        bad = nonacgt > cfg["max-non-acgt-fraction"]
        stats["rejected"]["non-acgt"] += int(bad.sum())
        live, gc = live[~bad], gc[~bad]
        b = gc_bin(gc, bins) if bg["gc-match"] else np.zeros(len(live), dtype=np.int64)
        # Visit candidates in draw order.  Coverage is read only for candidates whose GC bin
        # still has room; slots freed by a high-count candidate go to the next ones in order.
        waiting = np.ones(len(live), dtype=bool)
        while True:
            room = quota - filled
            pre = []
            for k in np.flatnonzero(waiting):
                if room[b[k]] > 0:
                    room[b[k]] -= 1
                    pre.append(k)
            if not pre:
                break
            pre = np.array(pre, dtype=np.int64)
            waiting[pre] = False
            accept = np.ones(len(pre), dtype=bool)
            if thresholds is not None:
                sums = _count_sums(handles, geo, cfg["heads"], cand_chrom, starts, live[pre], chroms, threads,
                                   None, windows=("output",))["output"]
                high = (sums >= thresholds[None, :]).any(axis=1)
                stats["rejected"]["high-counts"] += int(high.sum())
                accept = ~high
            for k in pre[accept]:
                j = live[k]
                filled[b[k]] += 1
                chosen_chrom.append(str(cand_chrom[j]))
                chosen_start.append(int(starts[j]))
                chosen_gc.append(float(gc[k]))
        stats["rejected"]["gc-bin-full"] += int(waiting.sum())
    stats["kept"] = len(chosen_start)
    stats["shortfall"] = int(target - len(chosen_start))
    stats["gc-filled"] = filled.tolist()
    stats["rejected"] = dict(stats["rejected"])
    return {"chrom": chosen_chrom, "start": chosen_start, "gc": chosen_gc}, stats


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def _genome_rank(order: list[str]) -> dict[str, int]:
    return {c: i for i, c in enumerate(order)}


def _sorted_index(chroms, starts, order: list[str]) -> np.ndarray:
    rank = _genome_rank(order)
    keys = np.array([rank.get(c, len(rank)) for c in chroms], dtype=np.int64)
    return np.lexsort((np.asarray(starts, dtype=np.int64), keys))


def prepare_regions(config: dict, source: str = "config") -> dict:
    """Run prepare-regions for a config dict (see docs/data.md) and return the summary
    (also written to ``outputs["summary"]``).  Nothing is written when an input is bad."""
    cfg = normalize_regions_config(config, source)
    geo = _Geometry(cfg["input-length"], cfg["output-length"], cfg["max-jitter"])
    threads = cfg["num-threads"]
    rng = np.random.default_rng(cfg["seed"])
    files = [("genome", cfg["genome"])]
    files += [(f"heads/{i}/bigwig-names", p) for i, h in enumerate(cfg["heads"]) for p in h["bigwig-names"]]
    files += [("splits/regions", p) for p in cfg["splits"].get("regions", [])]
    files += [(f"splits/{s}-regions", p) for s in SPLITS for p in cfg["splits"].get(f"{s}-regions", [])]
    files += [("blacklist", p) for p in cfg["blacklist"]]
    for key, path in files:
        if not Path(path).is_file():
            raise BpflowError(f"{source}: key {key}: file not found: {path}")
    bed_files = [p for key, p in files if key.startswith("splits")]

    with FastaFile(cfg["genome"]) as fa:
        genome_sizes = dict(fa.chrom_sizes)
    order = list(genome_sizes)
    bigwig_sizes = []
    for head in cfg["heads"]:
        for path in head["bigwig-names"]:
            with BigWigFile(path) as bw:
                bigwig_sizes.append(dict(bw.chrom_sizes))
    # Usable length of each chromosome: present everywhere, the shortest of its lengths.
    usable = {c: min([n] + [s[c] for s in bigwig_sizes]) for c, n in genome_sizes.items()
              if all(c in s for s in bigwig_sizes)}

    bed, split_of, reason = _load_peaks(cfg)
    blacklist_bed = BedRegions.concat([read_bed(p, extra_columns=False) for p in cfg["blacklist"]])
    blacklist = IntervalSet(blacklist_bed.chrom, blacklist_bed.start, blacklist_bed.end)
    logger.info("prepare-regions: %d input regions from %d BED file(s)", len(bed), len(bed_files))

    out_start, out_end = _output_windows(cfg, bed, reason)
    open_ = reason == None  # noqa: E711
    in_genome = np.array([c in genome_sizes for c in bed.chrom], dtype=bool)
    reason[open_ & ~in_genome] = "chrom-not-in-genome"
    open_ = reason == None  # noqa: E711
    in_bw = np.array([c in usable for c in bed.chrom], dtype=bool)
    reason[open_ & ~in_bw] = "chrom-not-in-bigwig"
    open_ = reason == None  # noqa: E711
    limit = np.array([usable.get(c, 0) for c in bed.chrom], dtype=np.int64)
    off = (out_start - geo.pad < 0) | (out_end + geo.pad > limit)
    reason[open_ & off] = "off-chrom-end"
    open_ = reason == None  # noqa: E711
    for chrom, idx in iter_chrom_groups(bed.chrom[open_]):
        members = np.flatnonzero(open_)[idx]
        hit = blacklist.overlaps(chrom, out_start[members] - geo.pad, out_end[members] + geo.pad)
        reason[members[hit]] = "blacklist"

    handles = _Handles(cfg["genome"], [h["bigwig-names"] for h in cfg["heads"]])
    try:
        live = np.flatnonzero(reason == None)  # noqa: E711
        gc = np.zeros(len(bed), dtype=np.float64)
        if len(live):
            nonacgt, gc_live = _sequence_stats(handles, geo, bed.chrom, out_start, live, order, threads,
                                               "prepare-regions sequence")
            gc[live] = gc_live
            reason[live[nonacgt > cfg["max-non-acgt-fraction"]]] = "non-acgt"

        if cfg["remove-overlaps"]:
            live = np.flatnonzero(reason == None)  # noqa: E711
            centres = out_start + geo.output_length // 2
            drop = _remove_overlaps(centres, bed.chrom, live, cfg["overlap-max-distance"], rng)
            reason[drop] = "overlap"

        thresholds_report = []
        need_counts = any(k in h for h in cfg["heads"] for k in ("max-counts", "max-quantile", "min-counts",
                                                                  "min-quantile")) or "background" in cfg
        live = np.flatnonzero(reason == None)  # noqa: E711
        output_counts = None
        if need_counts and len(live):
            sums = _count_sums(handles, geo, cfg["heads"], bed.chrom, out_start, live, order, threads,
                               "prepare-regions counts")
            keep = np.ones(len(live), dtype=bool)
            for h, head in enumerate(cfg["heads"]):
                entry = {"head": h, "max-counts": None, "min-counts": None}
                if "max-counts" in head or "max-quantile" in head:
                    mx = head.get("max-counts")
                    if mx is None:
                        mx = float(np.quantile(sums["padded"][:, h], head["max-quantile"]))
                    entry["max-counts"] = float(mx)
                    high = keep & (sums["padded"][:, h] > mx)
                    reason[live[high]] = f"max-counts:head_{h}"
                    keep &= ~high
                if "min-counts" in head or "min-quantile" in head:
                    mn = head.get("min-counts")
                    if mn is None:
                        mn = float(np.quantile(sums["min"][:, h], head["min-quantile"]))
                    entry["min-counts"] = float(mn)
                    low = keep & (sums["min"][:, h] < mn)
                    reason[live[low]] = f"min-counts:head_{h}"
                    keep &= ~low
                thresholds_report.append(entry)
            output_counts = sums["output"][keep]
        kept = np.flatnonzero(reason == None)  # noqa: E711

        summary: dict = {"input-regions": int(len(bed)), "splits": {}, "kept": {}, "count-thresholds": thresholds_report,
                         "outputs": cfg["outputs"], "seed": cfg["seed"]}
        for s, split in enumerate(SPLITS + ("none",)):
            label = -1 if split == "none" else s
            members = split_of == label
            rejected = collections.Counter(reason[members & (reason != None)])  # noqa: E711
            summary["splits"][split] = {"regions": int(members.sum()),
                                        "kept": int((members & (reason == None)).sum()),  # noqa: E711
                                        "rejected": dict(sorted(rejected.items()))}
        for s, split in enumerate(SPLITS):
            summary["kept"][split] = int((split_of[kept] == s).sum())
        summary["kept"]["all"] = int(len(kept))

        background = None
        if "background" in cfg:
            background = _background(cfg, geo, bed, split_of, kept, out_start, out_end, gc, output_counts,
                                     usable, order, blacklist, handles, summary, source)
    finally:
        handles.close()

    _write_outputs(cfg, bed, split_of, reason, out_start, out_end, kept, order, background)
    write_json_atomic(cfg["outputs"]["summary"], summary)
    print(format_summary(summary))
    return summary


def _background(cfg, geo, bed, split_of, kept, out_start, out_end, gc, output_counts, usable, order,
                blacklist, handles, summary, source) -> dict:
    bg = cfg["background"]
    # Every input region (whatever its fate) repels background windows: its BED interval and
    # its output window, grown by min-distance.
    on_genome = np.array([c in usable for c in bed.chrom], dtype=bool)
    zone = IntervalSet(bed.chrom[on_genome], np.minimum(bed.start, out_start)[on_genome],
                       np.maximum(bed.end, out_end)[on_genome], expand=bg["min-distance"])
    bins = bg["gc-bins"]
    peak_hist = np.bincount(gc_bin(gc[kept], bins), minlength=bins).astype(np.float64) if len(kept) else np.zeros(bins)
    split_chroms = [[c for c in order if c in usable and c in set(cfg["splits"][f"{s}-chroms"])] for s in SPLITS]
    if "count" in bg:
        lengths = np.array([sum(usable[c] for c in chroms) for chroms in split_chroms], dtype=np.float64)
        targets = _apportion(bg["count"], lengths)
    else:
        targets = [int(round(bg["ratio"] * summary["kept"][s])) for s in SPLITS]
    thresholds = None
    if bg["counts-factor"] is not None and sum(targets) > 0:
        if output_counts is None or len(output_counts) == 0:
            raise BpflowError(f"{source}: key background: no peaks were kept, so the background "
                              "counts threshold (counts-quantile of peak counts x counts-factor) is undefined; "
                              "set counts-factor to null or keep some peaks")
        thresholds = np.quantile(output_counts, bg["counts-quantile"], axis=0) * bg["counts-factor"]
        for h, t in enumerate(thresholds):
            if t <= 0:
                logger.warning("background: counts threshold for head_%d is %g; no window can be below it", h, t)
    result = {}
    report = {"counts-thresholds": None if thresholds is None else thresholds.tolist(),
              "min-distance": bg["min-distance"], "gc-bin-edges": np.linspace(0, 1, bins + 1).tolist(),
              "peak-gc-histogram": peak_hist.astype(np.int64).tolist()}
    for s, split in enumerate(SPLITS):
        rng = np.random.default_rng([cfg["seed"], 1 + s])
        chosen, stats = _sample_background(cfg, int(targets[s]), geo, usable, split_chroms[s], zone, blacklist,
                                           peak_hist, thresholds, handles, rng)
        stats["gc-histogram"] = np.bincount(gc_bin(np.array(chosen["gc"]), bins), minlength=bins).tolist() \
            if chosen["gc"] else [0] * bins
        if stats["shortfall"] > 0:
            logger.warning("background %s: kept %d of %d wanted (%d candidates examined)", split,
                           stats["kept"], stats["target"], stats["candidates"])
        report[split] = stats
        result[split] = chosen
    summary["background"] = report
    return result


def _write_outputs(cfg, bed, split_of, reason, out_start, out_end, kept, order, background) -> None:
    outs = cfg["outputs"]
    names, scores, strands = bed.name, bed.score, bed.strand
    all_idx = kept[_sorted_index(bed.chrom[kept], out_start[kept], order)]
    for s, split in enumerate(SPLITS):
        idx = all_idx[split_of[all_idx] == s]
        write_bed(outs[split], bed.chrom[idx], out_start[idx], out_end[idx], names[idx], scores[idx], strands[idx])
    write_bed(outs["all"], bed.chrom[all_idx], out_start[all_idx], out_end[all_idx], names[all_idx],
              scores[all_idx], strands[all_idx])
    rej = np.flatnonzero(reason != None)  # noqa: E711
    rej = rej[_sorted_index(bed.chrom[rej], out_start[rej], order)]
    # A region whose output window was never meaningful keeps its BED interval.
    use_bed = np.array([r == "wrong-width" for r in reason[rej]], dtype=bool)
    starts = np.where(use_bed, bed.start[rej], out_start[rej])
    ends = np.where(use_bed, bed.end[rej], out_end[rej])
    split_names = np.array(SPLITS + ("none",), dtype=object)[split_of[rej]]
    write_bed(outs["reject"], bed.chrom[rej], starts, ends, reason[rej], names[rej], split_names)
    if background is not None:
        out = cfg["output-length"]
        all_c, all_s = [], []
        for split in SPLITS:
            c = np.array(background[split]["chrom"], dtype=object)
            st = np.array(background[split]["start"], dtype=np.int64)
            o = _sorted_index(c, st, order)
            c, st = c[o], st[o]
            write_bed(outs[f"background-{split}"], c, st, st + out, ["background"] * len(st), [0] * len(st),
                      ["."] * len(st))
            all_c.append(c)
            all_s.append(st)
        c = np.concatenate(all_c) if all_c else np.empty(0, dtype=object)
        st = np.concatenate(all_s) if all_s else np.empty(0, dtype=np.int64)
        o = _sorted_index(c, st, order)
        write_bed(outs["background-all"], c[o], st[o], st[o] + out, ["background"] * len(st), [0] * len(st),
                  ["."] * len(st))


def format_summary(summary: dict) -> str:
    """Human-readable summary table (kept / rejected per reason per split)."""
    lines = [f"prepare-regions: {summary['input-regions']} input regions"]
    width = max(len(s) for s in summary["splits"])
    for split, info in summary["splits"].items():
        if split == "none" and info["regions"] == 0:
            continue
        rej = ", ".join(f"{k} {v}" for k, v in info["rejected"].items()) or "none"
        lines.append(f"  {split:<{width}}  {info['regions']:>8} regions  {info['kept']:>8} kept   rejected: {rej}")
    for t in summary.get("count-thresholds", []):
        if t["max-counts"] is None and t["min-counts"] is None:
            continue
        lines.append(f"  head_{t['head']} counts thresholds: max {t['max-counts']}, min {t['min-counts']}")
    bg = summary.get("background")
    if bg:
        for split in SPLITS:
            st = bg[split]
            rej = ", ".join(f"{k} {v}" for k, v in sorted(st["rejected"].items())) or "none"
            lines.append(f"  background {split:<{width}}  {st['kept']:>6} of {st['target']} wanted "
                         f"({st['candidates']} candidates; rejected: {rej})")
    lines.append(f"  outputs: {summary['outputs']['all']}, {summary['outputs']['reject']}, "
                 f"{summary['outputs']['summary']}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    path, config = read_step_config(
        argv, "bpflow prepare-regions",
        "Split peak regions into train/val/test, filter them, and sample background regions.", "docs/data.md")
    setup_logging(config.get("verbosity", "INFO") if isinstance(config.get("verbosity"), str) else "INFO")
    prepare_regions(config, source=path)
    return 0
