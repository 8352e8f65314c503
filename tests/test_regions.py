"""bpflow prepare-regions: splits, centring, rejections with reasons, count filters,
overlap removal and GC-matched background sampling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bpflow.cli import main as cli
from bpflow.formats.bed import IntervalSet
from bpflow.prepare.background import apportion, gc_bin
from bpflow.prepare.regions import normalize_regions_config
from bpflow.utils import BpflowError

from data_helpers import random_sequence, read_bed_rows, stderr_lines, write_bed, write_bigwig, write_fasta, write_json

IN, OUT, JIT = 60, 20, 5
PAD = (IN - OUT) // 2 + JIT  # 25: the padded window is [start - 25, end + 25), 70 bases


def run(tmp_path: Path, cfg: dict) -> int:
    return cli(["prepare-regions", str(write_json(tmp_path / "regions.json", cfg))])


def outputs_in(directory: Path) -> list[str]:
    return sorted(p.name for p in Path(directory).iterdir()) if Path(directory).exists() else []


# --------------------------------------------------------------------------------------
# Hand-placed regions, one per rejection reason
# --------------------------------------------------------------------------------------


@pytest.fixture
def hand(tmp_path):
    rng = np.random.default_rng(0)
    seqs = {
        "chr1": random_sequence(8000, rng),
        "chr2": random_sequence(5000, rng),
        "chr3": random_sequence(5000, rng),
        "chrNoBw": random_sequence(2000, rng),
    }
    chr1 = list(seqs["chr1"])
    chr1[5000:5003] = "NNN"  # 3 N in the padded window of the region at 5010-5030
    seqs["chr1"] = "".join(chr1)
    genome = write_fasta(tmp_path / "g.fa", seqs)
    sizes = {c: len(s) for c, s in seqs.items() if c != "chrNoBw"}
    plus = {c: np.zeros(n) for c, n in sizes.items()}
    minus = {c: np.zeros(n) for c, n in sizes.items()}
    pbw = write_bigwig(tmp_path / "p.bw", sizes, plus)
    mbw = write_bigwig(tmp_path / "m.bw", sizes, minus)
    peaks = write_bed(
        tmp_path / "peaks.narrowPeak",
        [
            ("chr1", 1000, 1100, "summit", 50, ".", 1, 1, 1, 30),  # summit 1030 -> [1020, 1040)
            ("chr1", 2000, 2101, "middle", 50, ".", 1, 1, 1, -1),  # no summit: middle 2050 -> [2040, 2060)
            ("chr1", 10, 40, "offend", 50, ".", 1, 1, 1, -1),  # [15, 35) padded from -10
            ("chrUn", 100, 200, "nogenome", 50, ".", 1, 1, 1, -1),
            ("chrNoBw", 500, 600, "nobigwig", 50, ".", 1, 1, 1, -1),
            ("chr1", 3000, 3020, "black", 50, ".", 1, 1, 1, -1),  # padded [2975, 3045) hits 3040-3050
            ("chr1", 3100, 3120, "nearblack", 50, ".", 1, 1, 1, -1),  # padded [3075, 3145): clear
            ("chr1", 5010, 5030, "hasN", 50, ".", 1, 1, 1, -1),  # 3/70 bases are N
            ("chr3", 1000, 1020, "nosplit", 50, ".", 1, 1, 1, -1),
            ("chr2", 4000, 4020, "val1", 50, ".", 1, 1, 1, 4),  # summit 4004 -> [3994, 4014)
            ("chr1", 7960, 7990, "endok", 50, ".", 1, 1, 1, -1),  # [7965, 7985) padded to 8010 > 8000
            ("chr1", 7930, 7950, "endok2", 50, ".", 1, 1, 1, -1),  # padded [7905, 7975): fits
        ],
    )
    black = write_bed(tmp_path / "black.bed", [("chr1", 3040, 3050)])
    cfg = {
        "genome": str(genome),
        "input-length": IN,
        "output-length": OUT,
        "max-jitter": JIT,
        "heads": [{"bigwig-names": [str(pbw), str(mbw)]}],
        "splits": {
            "regions": [str(peaks)],
            "train-chroms": ["chr1", "chrUn", "chrNoBw"],
            "val-chroms": ["chr2"],
            "test-chroms": [],
        },
        "blacklist": str(black),
        "output-prefix": str(tmp_path / "out" / "peaks"),
    }
    return {"cfg": cfg, "seqs": seqs, "sizes": sizes, "tmp": tmp_path}


def test_centring_splits_and_every_reject_reason(hand):
    tmp = hand["tmp"]
    assert run(tmp, hand["cfg"]) == 0
    out = tmp / "out"
    train = read_bed_rows(out / "peaks_train.bed")
    assert [(r[0], int(r[1]), int(r[2]), r[3]) for r in train] == [
        ("chr1", 1020, 1040, "summit"),
        ("chr1", 2040, 2060, "middle"),
        ("chr1", 3100, 3120, "nearblack"),
        ("chr1", 7930, 7950, "endok2"),
    ]
    val = read_bed_rows(out / "peaks_val.bed")
    assert [(r[0], int(r[1]), int(r[2]), r[3]) for r in val] == [("chr2", 3994, 4014, "val1")]
    assert read_bed_rows(out / "peaks_test.bed") == []
    assert len(read_bed_rows(out / "peaks_all.bed")) == 5
    rejects = {r[4]: (r[3], r[5]) for r in read_bed_rows(out / "peaks_reject.bed")}
    assert rejects == {
        "offend": ("off-chrom-start", "train"),
        "nogenome": ("chrom-not-in-genome", "train"),
        "nobigwig": ("chrom-not-in-bigwig", "train"),
        "black": ("blacklist", "train"),
        "hasN": ("non-acgt", "train"),
        "nosplit": ("not-in-split", "none"),
        "endok": ("off-chrom-end", "train"),
    }
    summary = json.loads((out / "peaks_summary.json").read_text())
    assert summary["splits"]["train"] == {
        "regions": 10,
        "kept": 4,
        "rejected": {
            "blacklist": 1,
            "chrom-not-in-bigwig": 1,
            "chrom-not-in-genome": 1,
            "non-acgt": 1,
            "off-chrom-end": 1,
            "off-chrom-start": 1,
        },
    }
    assert summary["splits"]["none"]["rejected"] == {"not-in-split": 1}
    assert summary["kept"] == {"train": 4, "val": 1, "test": 0, "all": 5}
    for row in train + val:
        assert int(row[2]) - int(row[1]) == OUT


def test_non_acgt_fraction_threshold_and_resize_modes(hand):
    tmp, cfg = hand["tmp"], hand["cfg"]
    cfg["max-non-acgt-fraction"] = 3 / 70  # exactly the region's fraction: kept
    cfg["resize-mode"] = "center"  # ignore the summit column
    assert run(tmp, cfg) == 0
    train = {r[3]: (int(r[1]), int(r[2])) for r in read_bed_rows(tmp / "out" / "peaks_train.bed")}
    assert train["hasN"] == (5010, 5030)
    assert train["summit"] == (1040, 1060)  # middle of 1000-1100
    cfg["resize-mode"] = "start"
    assert run(tmp, cfg) == 0
    train = {r[3]: (int(r[1]), int(r[2])) for r in read_bed_rows(tmp / "out" / "peaks_train.bed")}
    assert train["summit"] == (1000, 1020) and train["middle"] == (2000, 2020)


def test_regex_splits(hand):
    tmp, cfg = hand["tmp"], hand["cfg"]
    cfg["splits"] = {
        "regions": cfg["splits"]["regions"],
        "train-regex": "^(summit|middle)$",
        "val-regex": "^val",
        "test-regex": "near",
    }
    assert run(tmp, cfg) == 0
    names = {s: [r[3] for r in read_bed_rows(tmp / "out" / f"peaks_{s}.bed")] for s in ("train", "val", "test")}
    assert names == {"train": ["summit", "middle"], "val": ["val1"], "test": ["nearblack"]}
    cfg["splits"]["test-regex"] = "e"  # "middle" matches train and test
    assert run(tmp, cfg) == 2


def test_split_by_bed_files(hand):
    tmp, cfg = hand["tmp"], hand["cfg"]
    a = write_bed(tmp / "a.bed", [("chr1", 1000, 1100)])
    b = write_bed(tmp / "b.bed", [("chr1", 2000, 2100), ("chr2", 100, 200)])
    cfg["splits"] = {"train-regions": [str(a)], "val-regions": [], "test-regions": [str(b)]}
    assert run(tmp, cfg) == 0
    assert [r[1] for r in read_bed_rows(tmp / "out" / "peaks_train.bed")] == ["1040"]
    assert [(r[0], r[1]) for r in read_bed_rows(tmp / "out" / "peaks_test.bed")] == [("chr1", "2040"), ("chr2", "140")]


# --------------------------------------------------------------------------------------
# Count filters
# --------------------------------------------------------------------------------------


@pytest.fixture
def counted(tmp_path):
    """Ten regions on chr1 with known counts: region i has i+1 reads at its centre (plus
    strand) and region 9 has 100 extra reads in its jitter margin (minus strand)."""
    rng = np.random.default_rng(1)
    seq = random_sequence(3000, rng)
    genome = write_fasta(tmp_path / "g.fa", {"chr1": seq})
    plus, minus = np.zeros(3000), np.zeros(3000)
    rows = []
    for i in range(10):
        start = 100 + 250 * i
        plus[start + 10] = i + 1
        rows.append(("chr1", start, start + OUT, f"r{i}"))
    minus[100 + 250 * 9 - 22] = 100  # inside the padded window [start - 25, end + 25), outside the output
    pbw = write_bigwig(tmp_path / "p.bw", {"chr1": 3000}, {"chr1": plus})
    mbw = write_bigwig(tmp_path / "m.bw", {"chr1": 3000}, {"chr1": minus})
    peaks = write_bed(tmp_path / "peaks.bed", rows)
    cfg = {
        "genome": str(genome),
        "input-length": IN,
        "output-length": OUT,
        "max-jitter": JIT,
        "heads": [{"bigwig-names": [str(pbw), str(mbw)]}],
        "splits": {"regions": [str(peaks)], "train-chroms": ["chr1"], "val-chroms": [], "test-chroms": []},
        "output-prefix": str(tmp_path / "out" / "peaks"),
    }
    return cfg, tmp_path


def _kept_and_reasons(tmp):
    kept = [r[3] for r in read_bed_rows(tmp / "out" / "peaks_train.bed")]
    reasons = {r[4]: r[3] for r in read_bed_rows(tmp / "out" / "peaks_reject.bed")}
    return kept, reasons


def test_max_and_min_counts(counted):
    cfg, tmp = counted
    # Padded-window counts: r0..r8 = 1..9, r9 = 10 + 100 = 110.  Min window (output - 2*jitter
    # = 10 bases at offset 5) holds the centre read: r_i = i + 1.
    cfg["heads"][0].update({"max-counts": 9, "min-counts": 3})
    assert run(tmp, cfg) == 0
    kept, reasons = _kept_and_reasons(tmp)
    assert kept == [f"r{i}" for i in range(2, 9)]
    assert reasons == {"r0": "min-counts:head_0", "r1": "min-counts:head_0", "r9": "max-counts:head_0"}
    summary = json.loads((tmp / "out" / "peaks_summary.json").read_text())
    assert summary["count-thresholds"] == [{"head": 0, "max-counts": 9.0, "min-counts": 3.0}]


def test_quantile_thresholds(counted):
    cfg, tmp = counted
    cfg["heads"][0].update({"max-quantile": 0.85, "min-quantile": 0.25})
    assert run(tmp, cfg) == 0
    summary = json.loads((tmp / "out" / "peaks_summary.json").read_text())
    padded = [1, 2, 3, 4, 5, 6, 7, 8, 9, 110]
    small = list(range(1, 11))
    expect_max, expect_min = float(np.quantile(padded, 0.85)), float(np.quantile(small, 0.25))
    assert summary["count-thresholds"][0]["max-counts"] == pytest.approx(expect_max)
    assert summary["count-thresholds"][0]["min-counts"] == pytest.approx(expect_min)
    kept, _ = _kept_and_reasons(tmp)
    assert kept == [f"r{i}" for i in range(10) if padded[i] <= expect_max and small[i] >= expect_min]


def test_negative_coverage_in_count_filter(counted):
    cfg, tmp = counted
    minus = np.zeros(3000)
    minus[110] = -4
    nbw = write_bigwig(tmp / "neg.bw", {"chr1": 3000}, {"chr1": minus})
    cfg["heads"][0].update({"bigwig-names": [cfg["heads"][0]["bigwig-names"][0], str(nbw)], "min-counts": 5})
    assert run(tmp, cfg) == 2
    assert outputs_in(tmp / "out") == []
    cfg["heads"][0]["use-absolute-values"] = True  # r0 then has 1 + 4 = 5 reads: kept
    assert run(tmp, cfg) == 0
    kept, _ = _kept_and_reasons(tmp)
    assert kept[0] == "r0"


# --------------------------------------------------------------------------------------
# Overlap removal
# --------------------------------------------------------------------------------------


def test_remove_overlaps_keeps_a_maximal_spaced_set(tmp_path):
    rng = np.random.default_rng(2)
    seq = random_sequence(20000, rng)
    genome = write_fasta(tmp_path / "g.fa", {"chr1": seq})
    bw = write_bigwig(tmp_path / "p.bw", {"chr1": 20000}, {"chr1": np.ones(20000)})
    centres = rng.integers(100, 19900, 300)
    peaks = write_bed(tmp_path / "p.bed", [("chr1", c - 10, c + 10, f"p{k}") for k, c in enumerate(centres)])
    cfg = {
        "genome": str(genome),
        "input-length": IN,
        "output-length": OUT,
        "max-jitter": JIT,
        "heads": [{"bigwig-names": [str(bw)]}],
        "splits": {"regions": [str(peaks)], "train-chroms": ["chr1"], "val-chroms": [], "test-chroms": []},
        "remove-overlaps": True,
        "overlap-max-distance": 150,
        "seed": 7,
        "output-prefix": str(tmp_path / "out" / "peaks"),
    }
    assert run(tmp_path, cfg) == 0
    kept_rows = read_bed_rows(tmp_path / "out" / "peaks_train.bed")
    kept = np.array(sorted(int(r[1]) + OUT // 2 for r in kept_rows))
    assert len(kept) > 20 and np.all(np.diff(kept) >= 150)
    dropped = [int(r[1]) + OUT // 2 for r in read_bed_rows(tmp_path / "out" / "peaks_reject.bed") if r[3] == "overlap"]
    assert len(dropped) + len(kept) == 300
    for c in dropped:  # every dropped region conflicts with a kept one (nothing dropped needlessly)
        assert np.abs(kept - c).min() < 150
    first = (tmp_path / "out" / "peaks_train.bed").read_text()
    assert run(tmp_path, cfg) == 0
    assert (tmp_path / "out" / "peaks_train.bed").read_text() == first


# --------------------------------------------------------------------------------------
# Background
# --------------------------------------------------------------------------------------


@pytest.fixture
def bg_setup(tmp_path):
    """Chromosomes of 250 bp segments with GC 0.3, 0.5 or 0.7; peaks in GC-rich segments with
    high coverage, low coverage elsewhere plus a few high-count spots."""
    rng = np.random.default_rng(3)
    seqs, plus, minus = {}, {}, {}
    sizes = {"chr1": 40000, "chr2": 20000, "chr3": 20000}
    rows = []
    for chrom, n in sizes.items():
        gcs = rng.choice([0.3, 0.5, 0.7], n // 250, p=[0.4, 0.3, 0.3])
        seqs[chrom] = "".join(random_sequence(250, rng, gc) for gc in gcs)
        plus[chrom] = rng.poisson(0.05, n).astype(float)
        minus[chrom] = rng.poisson(0.05, n).astype(float)
        rich = np.flatnonzero(gcs == 0.7)
        # High-count spots where GC-matched background is drawn from, away from the peaks.
        spots = rng.choice(rich[len(rich) // 2 :], 25) * 250 + rng.integers(0, 250, 25)
        plus[chrom][spots] += 100
        for seg in rng.choice(rich, min(len(rich), 12 if chrom == "chr1" else 5), replace=False):
            centre = seg * 250 + 125
            plus[chrom][centre - 5 : centre + 5] += rng.integers(5, 20, 10)
            rows.append((chrom, centre - 40, centre + 40, f"{chrom}_{seg}", 100, ".", 1, 1, 1, 40))
    genome = write_fasta(tmp_path / "g.fa", seqs)
    pbw = write_bigwig(tmp_path / "p.bw", sizes, plus)
    mbw = write_bigwig(tmp_path / "m.bw", sizes, minus)
    peaks = write_bed(tmp_path / "peaks.narrowPeak", rows)
    cfg = {
        "genome": str(genome),
        "input-length": IN,
        "output-length": OUT,
        "max-jitter": JIT,
        "heads": [{"bigwig-names": [str(pbw), str(mbw)]}],
        "splits": {"regions": [str(peaks)], "train-chroms": ["chr1"], "val-chroms": ["chr2"], "test-chroms": ["chr3"]},
        "background": {"ratio": 4, "min-distance": 100, "gc-bins": 10, "counts-factor": 0.8},
        "output-prefix": str(tmp_path / "out" / "peaks"),
        "seed": 11,
    }
    return {"cfg": cfg, "tmp": tmp_path, "seqs": seqs, "plus": plus, "minus": minus, "peaks": rows}


def _gc(seq: str) -> float:
    acgt = sum(seq.count(b) for b in "ACGT")
    return (seq.count("G") + seq.count("C")) / acgt


def test_background_distance_gc_match_counts_and_seed(bg_setup):
    cfg, tmp = bg_setup["cfg"], bg_setup["tmp"]
    assert run(tmp, cfg) == 0
    out = tmp / "out"
    summary = json.loads((out / "peaks_summary.json").read_text())
    bg = {s: read_bed_rows(out / f"peaks_background_{s}.bed") for s in ("train", "val", "test")}
    kept_peaks = read_bed_rows(out / "peaks_all.bed")
    peak_gc = np.array([_gc(bg_setup["seqs"][r[0]][int(r[1]) - 20 : int(r[2]) + 20]) for r in kept_peaks])
    peak_hist = np.bincount(gc_bin(peak_gc, 10), minlength=10)
    assert summary["background"]["peak-gc-histogram"] == peak_hist.tolist()
    # Independent threshold: 1% quantile of kept-peak output-window counts x 0.8.
    counts = [
        bg_setup["plus"][r[0]][int(r[1]) : int(r[2])].sum() + bg_setup["minus"][r[0]][int(r[1]) : int(r[2])].sum()
        for r in kept_peaks
    ]
    threshold = np.quantile(counts, 0.01) * 0.8
    assert summary["background"]["counts-thresholds"] == pytest.approx([threshold])
    split_chroms = {"train": "chr1", "val": "chr2", "test": "chr3"}
    for split, rows in bg.items():
        target = 4 * summary["kept"][split]
        assert summary["background"][split]["target"] == target
        assert summary["background"][split]["shortfall"] == 0 and len(rows) == target
        assert summary["background"][split]["rejected"]["near-peak"] > 0
        starts = np.array([int(r[1]) for r in rows])
        assert all(r[0] == split_chroms[split] for r in rows)
        assert all(int(r[2]) - int(r[1]) == OUT for r in rows)
        assert np.all(np.diff(np.sort(starts)) >= OUT)  # no two background windows overlap
        chrom = split_chroms[split]
        for s in starts:
            # Far enough from every input peak (its BED interval and its output window).
            for p in bg_setup["peaks"]:
                if p[0] != chrom:
                    continue
                lo, hi = min(p[1], p[1] + 40 - OUT // 2), max(p[2], p[1] + 40 + OUT // 2)
                gap = max(lo - (s + OUT), s - hi, 0)
                assert gap >= 100
            total = bg_setup["plus"][chrom][s : s + OUT].sum() + bg_setup["minus"][chrom][s : s + OUT].sum()
            assert total < threshold
        # GC histogram: exactly the peaks' histogram scaled to the target (largest remainders).
        gc = np.array([_gc(bg_setup["seqs"][chrom][s - 20 : s + OUT + 20]) for s in starts])
        hist = np.bincount(gc_bin(gc, 10), minlength=10)
        np.testing.assert_array_equal(hist, apportion(target, peak_hist))
        assert np.abs(hist / target - peak_hist / peak_hist.sum()).max() <= 1 / target + 1e-9
    assert sum(summary["background"][s]["rejected"]["high-counts"] for s in bg) > 0
    # Same seed: same regions; another seed: different ones.
    first = (out / "peaks_background_all.bed").read_text()
    cfg["num-threads"] = 2  # threads change nothing
    assert run(tmp, cfg) == 0
    assert (out / "peaks_background_all.bed").read_text() == first
    cfg["seed"] = 12
    assert run(tmp, cfg) == 0
    assert (out / "peaks_background_all.bed").read_text() != first


def test_background_without_gc_match_is_not_gc_matched(bg_setup):
    """Control for the GC test: plain sampling draws mostly from the AT-rich majority."""
    cfg, tmp = bg_setup["cfg"], bg_setup["tmp"]
    cfg["background"].update({"gc-match": False, "counts-factor": None, "count": 60})
    del cfg["background"]["ratio"]
    assert run(tmp, cfg) == 0
    rows = read_bed_rows(tmp / "out" / "peaks_background_all.bed")
    assert len(rows) == 60
    gc = np.array([_gc(bg_setup["seqs"][r[0]][int(r[1]) - 20 : int(r[2]) + 20]) for r in rows])
    assert np.mean(gc > 0.6) < 0.6  # peaks are all in GC 0.7 segments


def test_interval_set_andapportion():
    s = IntervalSet(np.array(["a", "a", "a"], dtype=object), [10, 15, 40], [20, 30, 50], expand=2)
    # Merged after expansion: [8, 32), [38, 52)
    got = s.overlaps("a", [0, 0, 32, 31, 52, 37], [8, 9, 38, 33, 60, 39])
    assert got.tolist() == [False, True, False, True, False, True]
    assert s.overlaps("b", [0], [100]).tolist() == [False]
    assert apportion(10, np.array([1, 1, 1])).tolist() == [4, 3, 3]
    assert apportion(7, np.array([0, 2, 5])).tolist() == [0, 2, 5]
    assert gc_bin(np.array([0.0, 0.099, 0.1, 0.95, 1.0]), 10).tolist() == [0, 0, 1, 9, 9]


# --------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------


def test_bad_inputs_fail_cleanly(hand, capsys):
    tmp, base = hand["tmp"], hand["cfg"]
    broken = write_bed(tmp / "broken.bed", [("chr1", 100, 200), ("chr1", "x", 300)])
    cases = [
        ({"genome": str(tmp / "none.fa")}, ["none.fa"]),
        ({"blacklist": [str(tmp / "none.bed")]}, ["none.bed", "blacklist"]),
        ({"splits": dict(base["splits"], regions=[str(broken)])}, ["broken.bed:2"]),
        (
            {"heads": [{"bigwig-names": base["heads"][0]["bigwig-names"], "max-counts": 1, "max-quantile": 0.5}]},
            ["max-counts", "max-quantile"],
        ),
        ({"overlap-max-distance": 10}, ["overlap-max-distance"]),
        ({"remove-overlaps": True}, ["overlap-max-distance"]),
        ({"splits": dict(base["splits"], **{"val-chroms": ["chr1"]})}, ["chr1", "val-chroms"]),
        (
            {"splits": {"regions": base["splits"]["regions"], "train-regex": "(", "val-regex": "a", "test-regex": "b"}},
            ["train-regex"],
        ),
        (
            {
                "splits": {
                    "regions": base["splits"]["regions"],
                    "train-regex": "a",
                    "val-regex": "b",
                    "test-regex": "c",
                },
                "background": {},
            },
            ["background"],
        ),
        ({"splits": {"regions": base["splits"]["regions"], "train-chroms": ["chr1"]}}, ["val-chroms"]),
        ({"background": {"count": 5, "ratio": 1}}, ["count", "ratio"]),
        ({"peaks": "x.bed"}, ["peaks"]),
        ({"max-jitter": -1}, ["max-jitter"]),
        ({"heads": [{"bigwig-names": [str(tmp / "none.bw")]}]}, ["none.bw", "heads/0"]),
        ({"output-background-train": "x.bed"}, ["output-background-train"]),
        # Zero coverage everywhere: min-counts rejects every peak, so train and val are empty
        # (refused before background sampling, whose counts threshold would be undefined).
        (
            {
                "heads": [{"bigwig-names": base["heads"][0]["bigwig-names"], "min-counts": 1}],
                "background": {"count": 5},
            },
            ["split train and val are empty", "min-counts:head_0"],
        ),
    ]
    for change, words in cases:
        cfg = dict(base, **change)
        assert run(tmp, cfg) == 2, change
        err = capsys.readouterr().err.strip()
        assert len(stderr_lines(err)) == 1, err
        for w in words:
            assert w in err, (w, err)
        assert outputs_in(tmp / "out") == [], change


def test_normalize_defaults(hand):
    cfg = normalize_regions_config(dict(hand["cfg"], background={"count": 10}))
    assert cfg["resize-mode"] == "summit" and cfg["remove-overlaps"] is False and cfg["seed"] == 0
    assert cfg["max-non-acgt-fraction"] == 0 and cfg["blacklist"] == [hand["cfg"]["blacklist"]]
    assert cfg["background"]["min-distance"] == PAD and cfg["background"]["gc-bins"] == 20
    assert cfg["outputs"]["val"].endswith("peaks_val.bed")
    assert cfg["outputs"]["background-all"].endswith("peaks_background_all.bed")
    with pytest.raises(BpflowError):
        normalize_regions_config(dict(hand["cfg"], **{"input-length": 21}))
