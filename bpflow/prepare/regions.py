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
import logging
import re
from pathlib import Path

import numpy as np

from bpflow import schemas
from bpflow.formats.bed import BedRegions, IntervalSet, iter_chrom_groups, read_bed, write_bed
from bpflow.formats.bigwig import BigWigFile, check_chrom_sizes
from bpflow.formats.fasta import FastaFile
from bpflow.prepare.background import background_regions
from bpflow.prepare.datasets import check_length_arithmetic
from bpflow.prepare.windows import Geometry, Handles, count_sums, sequence_stats
from bpflow.utils import BpflowError, read_step_config, write_json_atomic

logger = logging.getLogger("bpflow.prepare")

SPLITS = ("train", "val", "test")
_STRINGS = {"type": "array", "items": {"type": "string", "minLength": 1}}
_FILES = {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}}

# Reject reasons, in the order the checks run.
REASONS = (
    "not-in-split",
    "wrong-width",
    "chrom-not-in-genome",
    "chrom-not-in-bigwig",
    "off-chrom-start",
    "off-chrom-end",
    "blacklist",
    "non-acgt",
    "overlap",
)  # then "max-counts:head_<i>", "min-counts:head_<i>"

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
        raise BpflowError(
            f"{source}: key splits: give exactly one of train-chroms/val-chroms/test-chroms, "
            "train-regex/val-regex/test-regex or train-regions/val-regions/test-regions"
        )
    mode = used[0]
    missing = [k for k in modes[mode] if k not in splits]
    if missing:
        raise BpflowError(f"{source}: key splits: missing {', '.join(missing)}")
    train_key = modes[mode][0]
    if mode != "regex" and not splits[train_key]:
        raise BpflowError(f"{source}: key splits/{train_key}: empty; the training split needs at least one entry")
    if mode in ("chroms", "regex") and "regions" not in splits:
        raise BpflowError(
            f"{source}: key splits: 'regions' (a list of peak BED files) is required with {modes[mode][0]}"
        )
    if mode == "bed" and "regions" in splits:
        raise BpflowError(f"{source}: key splits/regions: not used with train-regions/val-regions/test-regions")
    return mode


def normalize_regions_config(config: dict, source: str = "config") -> dict:
    """Validate a prepare-regions config (schema and cross-key rules) and return a copy with
    defaults filled in (``splits["mode"]`` = "chroms" | "regex" | "bed", ``blacklist`` a list,
    output paths resolved under ``outputs``).  Reads no data."""
    cfg = schemas.validate(config, "prepare-regions", source)
    check_length_arithmetic(cfg, source)
    for i, head in enumerate(cfg["heads"]):
        for kind in ("max", "min"):
            if f"{kind}-counts" in head and f"{kind}-quantile" in head:
                raise BpflowError(f"{source}: heads/{i}: give {kind}-counts or {kind}-quantile, not both")
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
                    raise BpflowError(
                        f"{source}: key splits: chromosome {chrom} is in both {seen[chrom]}-chroms and {split}-chroms"
                    )
                seen[chrom] = split
    if splits["mode"] == "regex":
        for split in SPLITS:
            try:
                re.compile(splits[f"{split}-regex"])
            except re.error as err:
                raise BpflowError(
                    f"{source}: key splits/{split}-regex: not a valid regular expression: {err}"
                ) from None
    cfg["blacklist"] = [cfg["blacklist"]] if isinstance(cfg["blacklist"], str) else list(cfg["blacklist"])
    if "background" in cfg:
        bg = cfg["background"]
        if "count" in bg and "ratio" in bg:
            raise BpflowError(f"{source}: key background: give count or ratio, not both")
        if "count" not in bg and "ratio" not in bg:
            bg["ratio"] = 1.0
        bg.setdefault("min-distance", (cfg["input-length"] - cfg["output-length"]) // 2 + cfg["max-jitter"])
        if splits["mode"] != "chroms":
            raise BpflowError(
                f"{source}: key background: background sampling needs splits by chromosome "
                "(train-chroms/val-chroms/test-chroms)"
            )
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
                    raise BpflowError(
                        f"{bed.where(k)}: region name {name!r} matches the regexes of "
                        f"{' and '.join(SPLITS[s] for s in hits)}"
                    )
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


def _remove_overlaps(
    centres: np.ndarray, chroms: np.ndarray, candidates: np.ndarray, distance: int, rng: np.random.Generator
) -> np.ndarray:
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
            near = (k < len(kept_sorted) and kept_sorted[k] - c < distance) or (
                k > 0 and c - kept_sorted[k - 1] < distance
            )
            if near:
                drop.append(r)
            else:
                kept_sorted.insert(k, c)
    return np.array(sorted(drop), dtype=np.int64)


# --------------------------------------------------------------------------------------
# Checks of the inputs against each other
# --------------------------------------------------------------------------------------


def _few(names, k: int = 4) -> str:
    """The first ``k`` of some names, for a one-line message."""
    names = [str(n) for n in names]
    if not names:
        return "none"
    shown = ", ".join(names[:k])
    return shown if len(names) <= k else f"{shown}, ... ({len(names)} in all)"


def _check_peaks_on_genome(cfg: dict, bed: BedRegions, genome_sizes: dict[str, int]) -> None:
    """A region that starts at or past the end of its chromosome (in the FASTA) is an error:
    the BED file and the genome disagree (another assembly, a truncated FASTA)."""
    size = np.array([genome_sizes.get(c, -1) for c in bed.chrom], dtype=np.int64)
    past = np.flatnonzero((size >= 0) & (bed.start >= size))
    if len(past):
        k = int(past[0])
        chrom, start, end = bed.chrom[k], int(bed.start[k]), int(bed.end[k])
        more = f" (and {len(past) - 1} more)" if len(past) > 1 else ""
        raise BpflowError(
            f"{bed.where(k)}: region {chrom}:{start}-{end} starts past the end of {chrom}, which is "
            f"{size[k]} bp in {cfg['genome']}{more}; is the BED file for another genome assembly?"
        )


def _check_split_chroms(
    cfg: dict, genome_sizes: dict[str, int], bigwig_sizes: list[tuple[str, dict[str, int]]]
) -> None:
    """Warn about chromosomes of the split lists that are missing from the FASTA or a bigWig
    (a typo, or another naming convention); an empty split is refused later."""
    if cfg["splits"]["mode"] != "chroms":
        return
    for split in SPLITS:
        listed = cfg["splits"][f"{split}-chroms"]
        absent = [c for c in listed if c not in genome_sizes]
        if absent:
            logger.warning(
                "splits/%s-chroms: %s not in the genome FASTA %s (which names %s); every region there is rejected",
                split,
                _few(absent),
                cfg["genome"],
                _few(list(genome_sizes)),
            )
        for path, sizes in bigwig_sizes:
            no_bw = [c for c in listed if c in genome_sizes and c not in sizes]
            if no_bw:
                logger.warning(
                    "splits/%s-chroms: %s not in the bigWig %s (which names %s); every region there is rejected",
                    split,
                    _few(no_bw),
                    path,
                    _few(list(sizes)),
                )
                break


def _check_blacklist_names(cfg: dict, source: str, blacklist: BedRegions, genome_sizes: dict[str, int]) -> None:
    """A blacklist none of whose chromosomes is in the FASTA would silently remove nothing."""
    for f, path in enumerate(blacklist.paths):
        names = sorted(set(blacklist.chrom[blacklist.file == f]))
        if names and not any(c in genome_sizes for c in names):
            raise BpflowError(
                f"{source}: key blacklist: none of the chromosomes of {path} ({_few(names)}) is in the "
                f"genome FASTA {cfg['genome']} (which names {_few(list(genome_sizes))}); check the "
                "chromosome naming (e.g. 1 vs chr1)"
            )


def _no_region_cause(cfg: dict, s: int, bed: BedRegions, genome_sizes: dict[str, int]) -> str:
    """Why no input region falls in split ``s`` (a short diagnosis)."""
    split, splits, mode = SPLITS[s], cfg["splits"], cfg["splits"]["mode"]
    if mode in ("chroms", "regex") and len(bed) == 0:
        return f"the peak file(s) {_few(splits['regions'])} hold no regions"
    if mode == "chroms":
        listed = splits[f"{split}-chroms"]
        if not listed:
            return f"splits/{split}-chroms is empty"
        cause = f"no peak lies on its chromosome(s) {_few(listed)}"
        absent = [c for c in listed if c not in genome_sizes]
        if absent:
            cause += f"; {_few(absent)} not in the FASTA {cfg['genome']}, which names {_few(list(genome_sizes))}"
        return cause + f"; the peaks are on {_few(sorted(set(bed.chrom)))}"
    if mode == "regex":
        cause = f"no region name matches splits/{split}-regex {splits[f'{split}-regex']!r}"
        names = sorted(set(bed.name))
        if names == ["."]:
            return cause + " (the peak files have no name column)"
        return cause + f"; names are like {_few(names, 3)}"
    files = splits[f"{split}-regions"]
    return f"splits/{split}-regions is empty" if not files else f"{_few(files)} hold(s) no regions"


def _rejected_cause(
    cfg: dict,
    members: np.ndarray,
    bed: BedRegions,
    reason: np.ndarray,
    genome_sizes: dict[str, int],
    bigwig_sizes: list[tuple[str, dict[str, int]]],
) -> str:
    """Why every region of ``members`` (a mask) was rejected: the counts per reason, and the
    chromosome names behind chrom-not-in-genome / chrom-not-in-bigwig."""
    counts = collections.Counter(reason[members])
    genome_names = _few(list(genome_sizes))
    cause = f"all {int(members.sum())} regions were rejected ({', '.join(f'{r} {c}' for r, c in counts.most_common())})"
    if counts["chrom-not-in-genome"]:
        names = sorted(set(bed.chrom[members & (reason == "chrom-not-in-genome")]))
        cause += f"; chromosome(s) {_few(names)} of the peaks are not in the FASTA {cfg['genome']}, which names {genome_names}"
    if counts["chrom-not-in-bigwig"]:
        names = sorted(set(bed.chrom[members & (reason == "chrom-not-in-bigwig")]))
        for path, sizes in bigwig_sizes:
            absent = [c for c in names if c not in sizes]
            if absent:
                cause += (
                    f"; chromosome(s) {_few(absent)} are not in the bigWig {path}, which names "
                    f"{_few(list(sizes))} (the FASTA names {genome_names})"
                )
                break
    return cause


def _check_empty_splits(
    cfg: dict,
    source: str,
    bed: BedRegions,
    split_of: np.ndarray,
    reason: np.ndarray,
    genome_sizes: dict[str, int],
    bigwig_sizes: list[tuple[str, dict[str, int]]],
) -> None:
    """Refuse an empty train split, and an empty val split unless the config lists nothing for
    it (``val-chroms: []`` / ``val-regions: []``); warn about an empty test split (the test
    split is only evaluated, never trained on).  The message names the split(s) and the likely
    cause."""
    kept = reason == None  # noqa: E711
    listed = {"chroms": "val-chroms", "bed": "val-regions"}.get(cfg["splits"]["mode"])
    refused = []
    for s, split in enumerate(SPLITS):
        if (kept & (split_of == s)).any():
            continue
        members = split_of == s
        if members.any():
            cause = _rejected_cause(cfg, members, bed, reason, genome_sizes, bigwig_sizes)
        else:
            cause = _no_region_cause(cfg, s, bed, genome_sizes)
        deliberate = split == "val" and listed is not None and not cfg["splits"][listed]
        if split == "test" or deliberate:
            logger.warning("prepare-regions: split %s is empty: %s", split, cause)
        else:
            refused.append((s, cause))
    if not refused:
        return
    names = " and ".join(SPLITS[s] for s, _ in refused)
    verb = "is" if len(refused) == 1 else "are"
    with_regions = [s for s, _ in refused if (split_of == s).any()]
    if len(refused) > 1 and len(with_regions) == len(refused):
        # Every refused split had regions: one diagnosis over all of them.
        text = _rejected_cause(cfg, np.isin(split_of, with_regions), bed, reason, genome_sizes, bigwig_sizes)
    elif len({cause for _, cause in refused}) == 1:
        text = refused[0][1]
    else:
        text = "; ".join(f"{SPLITS[s]}: {cause}" for s, cause in refused)
    raise BpflowError(f"{source}: split {names} {verb} empty: {text}")


def reject_coordinates(
    bed: BedRegions,
    reason: np.ndarray,
    out_start: np.ndarray,
    out_end: np.ndarray,
    index: np.ndarray,
    genome_sizes: dict[str, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Start and end of rejected regions ``index`` in the reject BED: the output window (the
    BED interval for ``wrong-width``) clipped to the chromosome, so that 0 <= start < end <=
    its FASTA length (only start >= 0 on a chromosome missing from the FASTA).  A window
    wholly past the chromosome end (a summit past it) falls back to the clipped BED interval."""
    use_bed = reason[index] == "wrong-width"
    start = np.where(use_bed, bed.start[index], out_start[index])
    end = np.where(use_bed, bed.end[index], out_end[index])
    size = np.array([genome_sizes.get(c, -1) for c in bed.chrom[index]], dtype=np.int64)
    known = size >= 0

    def clip(s, e):
        return np.maximum(s, 0), np.where(known, np.minimum(e, size), e)

    start, end = clip(start, end)
    empty = end <= start
    bed_start, bed_end = clip(bed.start[index], bed.end[index])
    return np.where(empty, bed_start, start), np.where(empty, bed_end, end)


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
    geo = Geometry(cfg["input-length"], cfg["output-length"], cfg["max-jitter"])
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
    bigwig_sizes = []  # (path, chromosome sizes) of each bigWig
    for head in cfg["heads"]:
        for path in head["bigwig-names"]:
            with BigWigFile(path) as bw:
                bigwig_sizes.append((path, dict(bw.chrom_sizes)))
    # Usable length of each chromosome: present everywhere, the shortest of its lengths.
    usable = {
        c: min([n] + [s[c] for _, s in bigwig_sizes])
        for c, n in genome_sizes.items()
        if all(c in s for _, s in bigwig_sizes)
    }

    bed, split_of, reason = _load_peaks(cfg)
    _check_peaks_on_genome(cfg, bed, genome_sizes)
    # a bigWig of another assembly: refused where a peak lies (other contigs, e.g. chrM of
    # hg19 vs GRCh37, may legitimately differ and are not used)
    for path, sizes in bigwig_sizes:
        check_chrom_sizes(path, sizes, cfg["genome"], genome_sizes, chroms=sorted(set(bed.chrom)), where="has peaks")
    _check_split_chroms(cfg, genome_sizes, bigwig_sizes)
    blacklist_bed = BedRegions.concat([read_bed(p, extra_columns=False) for p in cfg["blacklist"]])
    _check_blacklist_names(cfg, source, blacklist_bed, genome_sizes)
    blacklist = IntervalSet(blacklist_bed.chrom, blacklist_bed.start, blacklist_bed.end)
    logger.info("prepare-regions: %d input regions from %d BED file(s)", len(bed), len(bed_files))
    if cfg["resize-mode"] == "summit":
        for path, is_np in zip(bed.paths, bed.narrowpeak):
            if not is_np:
                logger.info("%s: not narrowPeak, so no summits: windows are centred on each interval's middle", path)

    out_start, out_end = _output_windows(cfg, bed, reason)
    open_ = reason == None  # noqa: E711
    in_genome = np.array([c in genome_sizes for c in bed.chrom], dtype=bool)
    reason[open_ & ~in_genome] = "chrom-not-in-genome"
    open_ = reason == None  # noqa: E711
    in_bw = np.array([c in usable for c in bed.chrom], dtype=bool)
    reason[open_ & ~in_bw] = "chrom-not-in-bigwig"
    open_ = reason == None  # noqa: E711
    limit = np.array([usable.get(c, 0) for c in bed.chrom], dtype=np.int64)
    off_start = out_start - geo.pad < 0
    reason[open_ & off_start] = "off-chrom-start"
    reason[open_ & ~off_start & (out_end + geo.pad > limit)] = "off-chrom-end"
    open_ = reason == None  # noqa: E711
    for chrom, idx in iter_chrom_groups(bed.chrom[open_]):
        members = np.flatnonzero(open_)[idx]
        hit = blacklist.overlaps(chrom, out_start[members] - geo.pad, out_end[members] + geo.pad)
        reason[members[hit]] = "blacklist"

    handles = Handles(cfg["genome"], [h["bigwig-names"] for h in cfg["heads"]])
    try:
        live = np.flatnonzero(reason == None)  # noqa: E711
        gc = np.zeros(len(bed), dtype=np.float64)
        if len(live):
            nonacgt, gc_live = sequence_stats(
                handles, geo, bed.chrom, out_start, live, order, threads, "prepare-regions sequence"
            )
            gc[live] = gc_live
            reason[live[nonacgt > cfg["max-non-acgt-fraction"]]] = "non-acgt"

        if cfg["remove-overlaps"]:
            live = np.flatnonzero(reason == None)  # noqa: E711
            centres = out_start + geo.output_length // 2
            drop = _remove_overlaps(centres, bed.chrom, live, cfg["overlap-max-distance"], rng)
            reason[drop] = "overlap"

        thresholds_report = []
        need_counts = (
            any(k in h for h in cfg["heads"] for k in ("max-counts", "max-quantile", "min-counts", "min-quantile"))
            or "background" in cfg
        )
        live = np.flatnonzero(reason == None)  # noqa: E711
        output_counts = None
        if need_counts and len(live):
            sums = count_sums(
                handles, geo, cfg["heads"], bed.chrom, out_start, live, order, threads, "prepare-regions counts"
            )
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
        _check_empty_splits(cfg, source, bed, split_of, reason, genome_sizes, bigwig_sizes)

        summary: dict = {
            "input-regions": int(len(bed)),
            "splits": {},
            "kept": {},
            "count-thresholds": thresholds_report,
            "outputs": cfg["outputs"],
            "seed": cfg["seed"],
        }
        for s, split in enumerate(SPLITS + ("none",)):
            label = -1 if split == "none" else s
            members = split_of == label
            rejected = collections.Counter(reason[members & (reason != None)])  # noqa: E711
            summary["splits"][split] = {
                "regions": int(members.sum()),
                "kept": int((members & (reason == None)).sum()),  # noqa: E711
                "rejected": dict(sorted(rejected.items())),
            }
        for s, split in enumerate(SPLITS):
            summary["kept"][split] = int((split_of[kept] == s).sum())
        summary["kept"]["all"] = int(len(kept))

        background = None
        if "background" in cfg:
            background = background_regions(
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
            )
    finally:
        handles.close()

    _write_outputs(cfg, bed, split_of, reason, out_start, out_end, kept, order, genome_sizes, background)
    write_json_atomic(cfg["outputs"]["summary"], summary)
    print(format_summary(summary))
    return summary


def _write_outputs(cfg, bed, split_of, reason, out_start, out_end, kept, order, genome_sizes, background) -> None:
    outs = cfg["outputs"]
    names, scores, strands = bed.name, bed.score, bed.strand
    all_idx = kept[_sorted_index(bed.chrom[kept], out_start[kept], order)]
    for s, split in enumerate(SPLITS):
        idx = all_idx[split_of[all_idx] == s]
        write_bed(outs[split], bed.chrom[idx], out_start[idx], out_end[idx], names[idx], scores[idx], strands[idx])
    write_bed(
        outs["all"],
        bed.chrom[all_idx],
        out_start[all_idx],
        out_end[all_idx],
        names[all_idx],
        scores[all_idx],
        strands[all_idx],
    )
    rej = np.flatnonzero(reason != None)  # noqa: E711
    rej = rej[_sorted_index(bed.chrom[rej], out_start[rej], order)]
    starts, ends = reject_coordinates(bed, reason, out_start, out_end, rej, genome_sizes)
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
            write_bed(
                outs[f"background-{split}"], c, st, st + out, ["background"] * len(st), [0] * len(st), ["."] * len(st)
            )
            all_c.append(c)
            all_s.append(st)
        c = np.concatenate(all_c) if all_c else np.empty(0, dtype=object)
        st = np.concatenate(all_s) if all_s else np.empty(0, dtype=np.int64)
        o = _sorted_index(c, st, order)
        write_bed(
            outs["background-all"], c[o], st[o], st[o] + out, ["background"] * len(st), [0] * len(st), ["."] * len(st)
        )


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
            lines.append(
                f"  background {split:<{width}}  {st['kept']:>6} of {st['target']} wanted "
                f"({st['candidates']} candidates; rejected: {rej})"
            )
    lines.append(
        f"  outputs: {summary['outputs']['all']}, {summary['outputs']['reject']}, {summary['outputs']['summary']}"
    )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    path, config, _ = read_step_config(
        argv,
        "prepare-regions",
        "Split peak regions into train/val/test, filter them, and sample background regions.",
        "docs/data.md",
    )
    prepare_regions(config, source=path)
    return 0
