"""Background regions for the bias model: GC-matched windows away from the peaks.

Per split, output-length bins of the split's chromosomes are drawn in a seeded random order and
kept when they lie on the chromosome with their padded window, off the blacklist, away from
every input region (``min-distance``), with few enough non-ACGT bases, below the counts
threshold (``counts-quantile`` of the kept peaks' counts x ``counts-factor``), and while their
GC bin (the peaks' GC histogram) still has room.  docs/data.md has the keys.
"""

from __future__ import annotations

import collections
import logging

import numpy as np

from bpflow.formats.bed import IntervalSet, iter_chrom_groups
from bpflow.prepare.windows import Geometry, Handles, count_sums, sequence_stats
from bpflow.utils import BpflowError

logger = logging.getLogger("bpflow.prepare")

SPLITS = ("train", "val", "test")


def apportion(total: int, weights: np.ndarray) -> np.ndarray:
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


def sample_background(
    cfg: dict,
    target: int,
    geo: Geometry,
    sizes: dict[str, int],
    chroms: list[str],
    peak_zone: IntervalSet,
    blacklist: IntervalSet,
    peak_gc_hist: np.ndarray,
    thresholds: np.ndarray | None,
    handles: Handles,
    rng: np.random.Generator,
) -> tuple[dict, dict]:
    """Background windows of one split: output-length bins of the split's chromosomes drawn in
    a seeded random order, kept when they pass every check and their GC bin still has room.
    Returns ({"chrom", "start", "gc"}, stats)."""
    bg = cfg["background"]
    out = geo.output_length
    bins = bg["gc-bins"] if bg["gc-match"] else 1
    if bg["gc-match"] and peak_gc_hist.sum() > 0:
        quota = apportion(target, peak_gc_hist)
    else:
        quota = apportion(target, np.ones(bins))
    stats = {
        "target": int(target),
        "kept": 0,
        "candidates": 0,
        "rejected": collections.Counter(),
        "gc-quota": quota.tolist(),
    }
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
        take = draw[pos : pos + max(256, 3 * need)]
        pos += len(take)
        which = np.searchsorted(cum, take, side="right") - 1
        starts = (take - cum[which]) * out
        cand_chrom = chrom_arr[which]
        stats["candidates"] += len(take)
        alive = np.ones(len(take), dtype=bool)
        for chrom, idx in iter_chrom_groups(cand_chrom):
            s = starts[idx]
            left = s - geo.pad < 0
            right = ~left & (s + out + geo.pad > sizes[chrom])
            stats["rejected"]["off-chrom-start"] += int(left.sum())
            stats["rejected"]["off-chrom-end"] += int(right.sum())
            ok = ~(left | right)
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
        nonacgt, gc = sequence_stats(handles, geo, cand_chrom, starts, live, chroms, threads, None)
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
                sums = count_sums(
                    handles,
                    geo,
                    cfg["heads"],
                    cand_chrom,
                    starts,
                    live[pre],
                    chroms,
                    threads,
                    None,
                    windows=("output",),
                )["output"]
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


def background_regions(
    cfg,
    geo,
    bed,
    split_of,
    kept,
    out_start,
    out_end,
    gc,
    output_counts,
    usable,
    order,
    blacklist,
    handles,
    summary,
    source,
) -> dict:
    bg = cfg["background"]
    # Every input region (whatever its fate) repels background windows: its BED interval and
    # its output window, grown by min-distance.
    on_genome = np.array([c in usable for c in bed.chrom], dtype=bool)
    zone = IntervalSet(
        bed.chrom[on_genome],
        np.minimum(bed.start, out_start)[on_genome],
        np.maximum(bed.end, out_end)[on_genome],
        expand=bg["min-distance"],
    )
    bins = bg["gc-bins"]
    peak_hist = np.bincount(gc_bin(gc[kept], bins), minlength=bins).astype(np.float64) if len(kept) else np.zeros(bins)
    split_chroms = [[c for c in order if c in usable and c in set(cfg["splits"][f"{s}-chroms"])] for s in SPLITS]
    if "count" in bg:
        lengths = np.array([sum(usable[c] for c in chroms) for chroms in split_chroms], dtype=np.float64)
        targets = apportion(bg["count"], lengths)
    else:
        targets = [int(round(bg["ratio"] * summary["kept"][s])) for s in SPLITS]
    thresholds = None
    if bg["counts-factor"] is not None and sum(targets) > 0:
        if output_counts is None or len(output_counts) == 0:
            raise BpflowError(
                f"{source}: key background: no peaks were kept, so the background "
                "counts threshold (counts-quantile of peak counts x counts-factor) is undefined; "
                "set counts-factor to null or keep some peaks"
            )
        thresholds = np.quantile(output_counts, bg["counts-quantile"], axis=0) * bg["counts-factor"]
        for h, t in enumerate(thresholds):
            if t <= 0:
                logger.warning("background: counts threshold for head_%d is %g; no window can be below it", h, t)
    result = {}
    report = {
        "counts-thresholds": None if thresholds is None else thresholds.tolist(),
        "min-distance": bg["min-distance"],
        "gc-bin-edges": np.linspace(0, 1, bins + 1).tolist(),
        "peak-gc-histogram": peak_hist.astype(np.int64).tolist(),
    }
    for s, split in enumerate(SPLITS):
        rng = np.random.default_rng([cfg["seed"], 1 + s])
        chosen, stats = sample_background(
            cfg, int(targets[s]), geo, usable, split_chroms[s], zone, blacklist, peak_hist, thresholds, handles, rng
        )
        stats["gc-histogram"] = (
            np.bincount(gc_bin(np.array(chosen["gc"]), bins), minlength=bins).tolist() if chosen["gc"] else [0] * bins
        )
        if stats["shortfall"] > 0:
            logger.warning(
                "background %s: kept %d of %d wanted (%d candidates examined)",
                split,
                stats["kept"],
                stats["target"],
                stats["candidates"],
            )
        report[split] = stats
        result[split] = chosen
    summary["background"] = report
    return result
