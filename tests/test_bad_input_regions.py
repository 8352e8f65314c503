"""Bad inputs of bpflow prepare-regions: BED variants read as what they are, empty splits
refused with their likely cause, valid coordinates in the reject BED, malformed BED lines and
files that disagree with the genome.  Each case exits 2 with one line naming the culprit and
leaves no output behind, or exits 0 with known windows."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from bpflow.cli import main as cli

from data_helpers import random_sequence, read_bed_rows, write_bed, write_bigwig, write_fasta, write_json

IN, OUT, JIT = 60, 20, 5  # padded window: output window grown by 25 on each side
SIZE = 2000  # every chromosome
SPLITS = ("train", "val", "test")


def run(tmp_path: Path, cfg: dict) -> int:
    return cli(["prepare-regions", str(write_json(tmp_path / "regions.json", cfg))])


def error_line(capsys) -> str:
    """The CLI's error: exactly one line, the last one on stderr (log lines may precede it)."""
    err = capsys.readouterr().err
    assert err.count("error:") == 1, err
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith("bpflow prepare-regions: error: "), err
    return last


def leftovers(directory: Path) -> list[str]:
    """Every file left in the output folder (temporary names included)."""
    return sorted(p.name for p in Path(directory).iterdir()) if Path(directory).exists() else []


def rows_of(path: Path) -> list[tuple]:
    return [(r[0], int(r[1]), int(r[2]), *r[3:]) for r in read_bed_rows(path)]


@pytest.fixture
def genome(tmp_path):
    """chr1-chr3 of SIZE bases; stranded bigWigs with one read per base (coverage plays no part)."""
    rng = np.random.default_rng(5)
    seqs = {c: random_sequence(SIZE, rng) for c in ("chr1", "chr2", "chr3")}
    fasta = write_fasta(tmp_path / "g.fa", seqs)
    sizes = {c: SIZE for c in seqs}
    ones = {c: np.ones(SIZE) for c in seqs}
    bws = [str(write_bigwig(tmp_path / f"{s}.bw", sizes, ones)) for s in ("plus", "minus")]

    def config(splits: dict, **extra) -> dict:
        cfg = {
            "genome": str(fasta),
            "input-length": IN,
            "output-length": OUT,
            "max-jitter": JIT,
            "heads": [{"bigwig-names": bws}],
            "splits": splits,
            "output-prefix": str(tmp_path / "out" / "peaks"),
        }
        cfg.update(extra)
        return cfg

    return {"tmp": tmp_path, "config": config, "bigwigs": bws, "fasta": fasta}


def by_chroms(peaks: Path, train=("chr1",), val=("chr2",), test=("chr3",)) -> dict:
    return {"regions": [str(peaks)], "train-chroms": list(train), "val-chroms": list(val), "test-chroms": list(test)}


# --------------------------------------------------------------------------------------
# Item 1: column 10 is a summit only in narrowPeak files
# --------------------------------------------------------------------------------------


def test_summits_only_from_narrowpeak_files(genome):
    """BED12 and gappedPeak (column 10 = blockCount) and broadPeak (9 columns) are centred on
    the interval middle; a narrowPeak file, whatever its name, on its summit."""
    tmp = genome["tmp"]
    # BED12: column 10 is blockCount 1; read as a summit it put the window at [991, 1011).
    bed12 = write_bed(tmp / "peaks12.bed", [("chr1", 1000, 1100, "b12", 0, "+", 1000, 1100, "0", 1, "100,", "0,")])
    gapped = write_bed(
        tmp / "peaks.gappedPeak",
        [("chr1", 1500, 1600, "gap", 0, ".", 1500, 1600, "0", 2, "10,10", "0,90", 3.5, 2.0, 1.0)],
    )
    # narrowPeak content in a .bed file: summit offset 30 -> centre 1030.
    narrow = write_bed(tmp / "np.bed", [("chr2", 1000, 1100, "np", 50, ".", 2.5, 3.1, 1.2, 30)])
    broad = write_bed(tmp / "peaks.broadPeak", [("chr3", 1000, 1101, "bp", 50, ".", 2.5, 3.1, 1.2)])
    splits = {"train-regions": [str(bed12), str(gapped)], "val-regions": [str(narrow)], "test-regions": [str(broad)]}
    assert run(tmp, genome["config"](splits)) == 0
    out = tmp / "out"
    assert rows_of(out / "peaks_train.bed") == [
        ("chr1", 1040, 1060, "b12", "0", "+"),  # middle of 1000-1100
        ("chr1", 1540, 1560, "gap", "0", "."),
    ]
    assert rows_of(out / "peaks_val.bed") == [("chr2", 1020, 1040, "np", "50", ".")]
    assert rows_of(out / "peaks_test.bed") == [("chr3", 1040, 1060, "bp", "50", ".")]  # (1000 + 1101) // 2


@pytest.mark.parametrize(
    "bad_line, words",
    [
        (("chr1", 1000, 1100, "far", 50, ".", 1, 1, 1, 100), ["summit offset 100", "chr1:1000-1100"]),
        (("chr1", 1000, 1100, "neg", 50, ".", 1, 1, 1, -7), ["summit offset -7", "outside the peak"]),
        (("chr1", 1000, 1100, "b12", 0, "+", 1000, 1100, 0, 1, "100,", "0,"), ["exactly 10 columns", "has 12"]),
        (("chr1", 1000, 1100, "txt", 50, ".", "high", 1, 1, 30), ["column 7", "signalValue"]),
    ],
)
def test_bad_narrowpeak_line_is_refused_with_its_line(genome, capsys, bad_line, words):
    tmp = genome["tmp"]
    peaks = tmp / "peaks.narrowPeak"
    good = ("chr1", 500, 600, "ok", 50, ".", 1, 1, 1, 50)
    peaks.write_text("# peaks\ntrack name=peaks\n" + "\t".join(map(str, good)) + "\n")
    with open(peaks, "a") as fh:
        fh.write("\t".join(map(str, bad_line)) + "\n")  # line 4
    assert run(tmp, genome["config"](by_chroms(peaks))) == 2
    err = error_line(capsys)
    assert f"{peaks}:4:" in err
    for w in words:
        assert w in err, (w, err)
    assert leftovers(tmp / "out") == []


# --------------------------------------------------------------------------------------
# Item 7: empty splits
# --------------------------------------------------------------------------------------


def test_bigwig_chromosome_names_that_differ_from_the_fasta(genome, capsys):
    """bigWigs naming chromosomes 1, 2, 3 against FASTA chr1, chr2, chr3: every peak is
    rejected; train and val are refused and the message shows both naming conventions."""
    tmp = genome["tmp"]
    sizes = {"1": SIZE, "2": SIZE, "3": SIZE}
    bw = write_bigwig(tmp / "ensembl.bw", sizes, {c: np.ones(SIZE) for c in sizes})
    peaks = write_bed(tmp / "p.bed", [("chr1", 1000, 1020), ("chr2", 1000, 1020), ("chr3", 1000, 1020)])
    cfg = genome["config"](by_chroms(peaks), heads=[{"bigwig-names": [str(bw)]}])
    assert run(tmp, cfg) == 2
    err = error_line(capsys)
    for w in [
        "regions.json: split train and val are empty",
        "all 2 regions were rejected (chrom-not-in-bigwig 2)",
        f"chromosome(s) chr1, chr2 are not in the bigWig {bw}, which names 1, 2, 3",
        "the FASTA names chr1, chr2, chr3",
    ]:
        assert w in err, (w, err)
    assert leftovers(tmp / "out") == []


def test_typo_in_a_split_chromosome_list(genome, capsys):
    tmp = genome["tmp"]
    peaks = write_bed(tmp / "p.bed", [("chr1", 1000, 1020), ("chr2", 1000, 1020), ("chr3", 1000, 1020)])
    assert run(tmp, genome["config"](by_chroms(peaks, val=["Chr2"]))) == 2
    err = error_line(capsys)
    for w in [
        "split val is empty",
        "no peak lies on its chromosome(s) Chr2",
        "Chr2 not in the FASTA",
        "chr1, chr2, chr3",
    ]:
        assert w in err, (w, err)
    assert "regions.json: split val is empty:" in err  # train is fine
    assert leftovers(tmp / "out") == []


def test_empty_peak_file(genome, capsys):
    tmp = genome["tmp"]
    peaks = tmp / "p.narrowPeak"
    peaks.write_text("# no peaks called\n")
    assert run(tmp, genome["config"](by_chroms(peaks))) == 2
    err = error_line(capsys)
    assert "split train and val are empty" in err and f"{peaks} hold no regions" in err, err
    assert leftovers(tmp / "out") == []


def test_empty_test_split_and_unlisted_val_are_warnings(genome, caplog):
    """An empty test split is a warning (it is only evaluated); so is an empty val split when
    the config lists nothing for it.  A train list that is empty is a config error."""
    tmp = genome["tmp"]
    peaks = write_bed(tmp / "p.bed", [("chr1", 1000, 1020), ("chr2", 1000, 1020)])
    with caplog.at_level(logging.WARNING):
        assert run(tmp, genome["config"](by_chroms(peaks))) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("split test is empty" in w and "no peak lies on its chromosome(s) chr3" in w for w in warnings), warnings
    assert rows_of(tmp / "out" / "peaks_test.bed") == []
    assert rows_of(tmp / "out" / "peaks_val.bed") == [("chr2", 1000, 1020, ".", "0", ".")]
    summary = json.loads((tmp / "out" / "peaks_summary.json").read_text())
    assert summary["kept"] == {"train": 1, "val": 1, "test": 0, "all": 2}

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert run(tmp, genome["config"](by_chroms(peaks, val=[]))) == 0
    assert any("split val is empty: splits/val-chroms is empty" in r.getMessage() for r in caplog.records)


def test_empty_train_list_is_a_config_error(genome, capsys):
    tmp = genome["tmp"]
    peaks = write_bed(tmp / "p.bed", [("chr1", 1000, 1020)])
    assert run(tmp, genome["config"](by_chroms(peaks, train=[]))) == 2
    assert "key splits/train-chroms: empty" in error_line(capsys)
    assert leftovers(tmp / "out") == []


def test_split_list_naming_a_chromosome_missing_from_the_fasta_warns(genome, caplog):
    tmp = genome["tmp"]
    peaks = write_bed(tmp / "p.bed", [("chr1", 1000, 1020), ("chr2", 1000, 1020), ("chr3", 1000, 1020)])
    with caplog.at_level(logging.WARNING):
        assert run(tmp, genome["config"](by_chroms(peaks, train=["chr1", "chrX"]))) == 0
    assert any("splits/train-chroms: chrX not in the genome FASTA" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------------------
# Item 11: the reject BED is valid BED and names the edge
# --------------------------------------------------------------------------------------


def test_reject_bed_is_clipped_to_the_chromosome_and_names_the_edge(genome):
    tmp = genome["tmp"]
    peaks = write_bed(
        tmp / "p.narrowPeak",
        [
            ("chr1", 2, 12, "left", 0, ".", 1, 1, 1, -1),  # window [-3, 17)
            ("chr1", 20, 40, "nearleft", 0, ".", 1, 1, 1, -1),  # window [20, 40), padded from -5
            ("chr1", 1000, 1020, "kept", 0, ".", 1, 1, 1, -1),
            ("chr1", 1990, 2000, "right", 0, ".", 1, 1, 1, -1),  # window [1985, 2005)
            ("chr1", 1999, 2050, "past", 0, ".", 1, 1, 1, 40),  # summit 2039: window [2029, 2049)
            ("chrUn", 0, 10, "nogenome", 0, ".", 1, 1, 1, -1),  # window [-5, 15)
            ("chr2", 1000, 1020, "val", 0, ".", 1, 1, 1, -1),
        ],
    )
    cfg = genome["config"](by_chroms(peaks, train=["chr1", "chrUn"]))
    assert run(tmp, cfg) == 0
    rejects = {r[4]: (r[0], r[1], r[2], r[3]) for r in rows_of(tmp / "out" / "peaks_reject.bed")}
    assert rejects == {
        "left": ("chr1", 0, 17, "off-chrom-start"),
        "nearleft": ("chr1", 20, 40, "off-chrom-start"),
        "right": ("chr1", 1985, 2000, "off-chrom-end"),
        "past": ("chr1", 1999, 2000, "off-chrom-end"),  # window wholly past the end: the clipped peak
        "nogenome": ("chrUn", 0, 15, "chrom-not-in-genome"),
    }
    for chrom, start, end, _ in rejects.values():
        assert 0 <= start < end <= SIZE
    summary = json.loads((tmp / "out" / "peaks_summary.json").read_text())
    assert summary["splits"]["train"]["rejected"] == {
        "chrom-not-in-genome": 1,
        "off-chrom-end": 2,
        "off-chrom-start": 2,
    }


# --------------------------------------------------------------------------------------
# The same class of mistake elsewhere: malformed lines, BEDs that disagree with the genome
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, words",
    [
        ("chrom\tstart\tend", ["start and end must be integers", "header line must start with '#'"]),
        ("chr1\t1100\t1000", ["end must be greater than start", "chr1:1100-1000"]),
        ("chr1\t1000\t1000", ["end must be greater than start"]),
        ("chr1\t-5\t10", ["negative start"]),
        ("chr1\t1000.5\t1100", ["must be integers", "'1000.5'"]),
        ("chr1\t1_000\t1100", ["must be integers"]),
        ("chr1\t1000", ["at least 3 columns"]),
    ],
)
def test_malformed_bed_line_names_file_and_line(genome, capsys, line, words):
    tmp = genome["tmp"]
    peaks = tmp / "p.bed"
    peaks.write_text(f"browser position chr1:1-100\ntrack name=x\n#comment\nchr1\t500\t520\n{line}\n")  # line 5
    assert run(tmp, genome["config"](by_chroms(peaks))) == 2
    err = error_line(capsys)
    assert f"{peaks}:5:" in err, err
    for w in words:
        assert w in err, (w, err)
    assert leftovers(tmp / "out") == []


def test_track_browser_and_comment_lines_are_skipped(genome):
    tmp = genome["tmp"]
    peaks = tmp / "p.bed"
    peaks.write_text("browser hide all\ntrack name=x\n# c\n\nchr1\t1000\t1020\tA\nchr2\t1000\t1020\tB\n")
    assert run(tmp, genome["config"](by_chroms(peaks))) == 0
    assert [r[3] for r in rows_of(tmp / "out" / "peaks_all.bed")] == ["A", "B"]


def test_region_past_the_chromosome_end_is_refused(genome, capsys):
    """A peak starting at or past its chromosome's end: the BED is for another assembly."""
    tmp = genome["tmp"]
    peaks = write_bed(tmp / "p.bed", [("chr1", 1000, 1020), ("chr1", SIZE, SIZE + 100), ("chr2", 1000, 1020)])
    assert run(tmp, genome["config"](by_chroms(peaks))) == 2
    err = error_line(capsys)
    for w in [f"{peaks}:2:", f"chr1:{SIZE}-{SIZE + 100} starts past the end of chr1", f"{SIZE} bp", "assembly"]:
        assert w in err, (w, err)
    assert leftovers(tmp / "out") == []


def test_blacklist_with_other_chromosome_names_is_refused(genome, capsys):
    tmp = genome["tmp"]
    peaks = write_bed(tmp / "p.bed", [("chr1", 1000, 1020), ("chr2", 1000, 1020)])
    black = write_bed(tmp / "black.bed", [("1", 990, 1030), ("2", 0, 50)])
    assert run(tmp, genome["config"](by_chroms(peaks), blacklist=str(black))) == 2
    err = error_line(capsys)
    for w in ["key blacklist", str(black), "(1, 2)", "chr1, chr2, chr3"]:
        assert w in err, (w, err)
    assert leftovers(tmp / "out") == []
