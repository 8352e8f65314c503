"""Bad signal / genome inputs of the data steps (prepare-regions, prepare-data, inspect-data):
a one-line error naming the file and the culprit (chromosome, position, dataset index), a
non-zero exit and no output that a later step or Snakemake would take as done."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from bpflow import utils as utils_module
from bpflow.cli import main as cli
from bpflow.formats import fasta as fasta_module
from bpflow.formats.fasta import FastaFile

from data_helpers import (
    one_hot_reference,
    random_sequence,
    stderr_lines,
    write_bed,
    write_bigwig,
    write_fasta,
    write_json,
)

IN, OUT, JIT = 40, 20, 5
REGIONS = [("chr1", 100, 120), ("chr1", 300, 320), ("chr2", 150, 170)]


def leftovers(directory: Path) -> list[str]:
    """Outputs and temporaries a failed step must not leave (HDF5, BED, JSON summaries)."""
    directory = Path(directory)
    if not directory.exists():
        return []
    return sorted(p.name for p in directory.iterdir() if p.suffix in (".h5", ".bed", ".json") or ".tmp" in p.name)


def one_error_line(capfd) -> str:
    """The step's error: besides log lines, stderr must hold exactly one line, the error
    (C libraries' own messages, written to file descriptor 2, would be more lines)."""
    err = capfd.readouterr().err
    other = stderr_lines(err)
    assert len(other) == 1 and other[0].startswith("bpflow "), err
    return other[0]


@pytest.fixture
def inputs(tmp_path):
    """A two-chromosome genome, plus / minus bigWigs with a few counts, three regions and a
    prepare-data config writing into tmp_path / "out"."""
    rng = np.random.default_rng(3)
    sizes = {"chr1": 500, "chr2": 400}
    seqs = {c: random_sequence(n, rng) for c, n in sizes.items()}
    plus = {c: np.where(rng.random(n) < 0.2, rng.integers(1, 4, n), 0).astype(float) for c, n in sizes.items()}
    minus = {c: np.where(rng.random(n) < 0.2, rng.integers(1, 4, n), 0).astype(float) for c, n in sizes.items()}
    data = tmp_path / "data"
    data.mkdir()
    cfg = {
        "genome": str(write_fasta(data / "genome.fa", seqs)),
        "input-length": IN,
        "output-length": OUT,
        "max-jitter": JIT,
        "regions": str(write_bed(data / "regions.bed", REGIONS)),
        "output-h5": str(tmp_path / "out" / "train.h5"),
        "heads": [
            {
                "bigwig-files": [
                    str(write_bigwig(data / "plus.bw", sizes, plus)),
                    str(write_bigwig(data / "minus.bw", sizes, minus)),
                ]
            }
        ],
    }
    return {"cfg": cfg, "seqs": seqs, "sizes": sizes, "plus": plus, "minus": minus, "data": data, "tmp": tmp_path}


def prepare_data(tmp_path: Path, cfg: dict) -> int:
    return cli(["prepare-data", str(write_json(tmp_path / "data.json", cfg))])


def regions_config(inputs) -> dict:
    """A prepare-regions config over the same files, with a count filter so it reads counts."""
    cfg = inputs["cfg"]
    return {
        "genome": cfg["genome"],
        "input-length": IN,
        "output-length": OUT,
        "max-jitter": JIT,
        "heads": [{"bigwig-names": cfg["heads"][0]["bigwig-files"], "min-counts": 0}],
        "splits": {"regions": [cfg["regions"]], "train-chroms": ["chr1"], "val-chroms": ["chr2"], "test-chroms": []},
        "output-prefix": str(inputs["tmp"] / "out" / "peaks"),
    }


def with_value(inputs, name: str, chrom: str, pos: int, value: float) -> str:
    """The plus-strand bigWig rewritten with ``value`` at chrom:pos."""
    plus = {c: v.copy() for c, v in inputs["plus"].items()}
    plus[chrom][pos] = value
    return str(write_bigwig(inputs["data"] / name, inputs["sizes"], plus))


# --------------------------------------------------------------------------------------
# Item 2: infinite / NaN / negative bigWig values
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, absolute", [(np.inf, False), (-np.inf, False), (-np.inf, True)], ids=["inf", "-inf", "-inf-abs"]
)
def test_infinite_bigwig_value_fails_prepare_data(inputs, capfd, value, absolute):
    cfg = inputs["cfg"]
    bw = with_value(inputs, "inf.bw", "chr1", 310, value)
    cfg["heads"][0]["bigwig-files"][0] = bw
    cfg["heads"][0]["use-absolute-values"] = absolute  # abs(-inf) is no way out
    assert prepare_data(inputs["tmp"], cfg) == 2
    err = one_error_line(capfd)
    assert err.startswith("bpflow prepare-data: error: ")
    assert bw in err and "chr1:310" in err and "inf" in err and "finite" in err
    assert leftovers(inputs["tmp"] / "out") == []


def test_infinite_bigwig_value_fails_prepare_regions(inputs, capfd):
    cfg = regions_config(inputs)
    bw = with_value(inputs, "inf.bw", "chr2", 160, np.inf)
    cfg["heads"][0]["bigwig-names"][1] = bw
    code = cli(["prepare-regions", str(write_json(inputs["tmp"] / "regions.json", cfg))])
    err = one_error_line(capfd)
    assert code == 2
    assert bw in err and "chr2:160" in err and "inf" in err
    assert leftovers(inputs["tmp"] / "out") == []


def test_nan_bigwig_value_reads_as_no_data(inputs):
    """A NaN stored in a bigWig cannot be told from "no data": it reads as 0, as documented."""
    cfg = inputs["cfg"]
    inputs["plus"]["chr1"][105] = 7.0
    cfg["heads"][0]["bigwig-files"][0] = with_value(inputs, "nan.bw", "chr1", 106, np.nan)
    assert prepare_data(inputs["tmp"], cfg) == 0
    with h5py.File(cfg["output-h5"], "r") as f:
        head = f["head_0"][0]  # region chr1:100-120, bigWig window chr1:95-125
    assert head[105 - 95, 0] == 7.0 and head[106 - 95, 0] == 0.0
    assert np.isfinite(head).all()


@pytest.mark.parametrize(
    "value, index, words",
    [
        (np.inf, (3, 7, 1), ["inf", "not a finite number"]),
        (np.nan, (4, 0, 0), ["nan", "not a finite number"]),
        (-2.0, (1, 29, 1), ["-2", "negative"]),
    ],
    ids=["inf", "nan", "negative"],
)
def test_inspect_data_reports_a_bad_value_with_its_index(inputs, capfd, value, index, words):
    cfg = inputs["cfg"]
    assert prepare_data(inputs["tmp"], cfg) == 0
    capfd.readouterr()
    with h5py.File(cfg["output-h5"], "r+") as f:
        f["head_0"][index] = value
    assert cli(["inspect-data", cfg["output-h5"]]) == 1
    out, err = capfd.readouterr()
    assert len(stderr_lines(err)) == 1, err
    where = f"head_0[{', '.join(map(str, index))}]"
    for text in (out, err):
        assert where in text and all(w in text for w in words), text
    assert f"sample {index[0]}, position {index[1]}, task {index[2]}" in err


# --------------------------------------------------------------------------------------
# Item 8: compressed FASTA
# --------------------------------------------------------------------------------------


def test_bgzip_fasta_reads_like_the_plain_one(tmp_path):
    from Bio import bgzf

    rng = np.random.default_rng(5)
    # chr1 spans several 64 kB BGZF blocks; lower case, N and IUPAC codes on the way.
    seqs = {"chr1": random_sequence(150_000, rng), "chr2": "acgtNNRYKMacgt" * 50 + random_sequence(3000, rng)}
    plain = write_fasta(tmp_path / "genome.fa", seqs)
    packed = tmp_path / "genome.fa.gz"
    with bgzf.BgzfWriter(str(packed), "wb") as out:
        out.write(plain.read_bytes())
    with FastaFile(plain) as a, FastaFile(packed) as b:
        assert a.chrom_sizes == b.chrom_sizes == {c: len(s) for c, s in seqs.items()}
        for chrom, seq in seqs.items():
            assert b.fetch(chrom, 0, len(seq)).decode() == seq
        for start in (0, 65_000, 65_530, 131_000, 149_990):  # across block boundaries
            assert b.fetch("chr1", start, start + 10) == a.fetch("chr1", start, start + 10)
        np.testing.assert_array_equal(b.windows("chr2", [0, 700], 40), a.windows("chr2", [0, 700], 40))
    assert (tmp_path / "genome.fa.gz.fai").is_file() and (tmp_path / "genome.fa.gz.gzi").is_file()
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]


def test_prepare_data_from_bgzip_fasta_matches_plain(inputs):
    from Bio import bgzf

    cfg = inputs["cfg"]
    packed = inputs["data"] / "genome.fa.bgz"
    with bgzf.BgzfWriter(str(packed), "wb") as out:
        out.write(Path(cfg["genome"]).read_bytes())
    assert prepare_data(inputs["tmp"], cfg) == 0
    with h5py.File(cfg["output-h5"], "r") as f:
        expect = f["sequence"][:]
    cfg["genome"], cfg["output-h5"] = str(packed), str(inputs["tmp"] / "out" / "bgz.h5")
    assert prepare_data(inputs["tmp"], cfg) == 0
    with h5py.File(cfg["output-h5"], "r") as f:
        np.testing.assert_array_equal(f["sequence"][:], expect)
    start = 100 - (IN - OUT) // 2 - JIT  # region chr1:100-120's sequence window
    np.testing.assert_array_equal(expect[0], one_hot_reference(inputs["seqs"]["chr1"][start : start + IN + 2 * JIT]))


@pytest.mark.parametrize("name", ["genome.fa.gz", "genome.fa"])
def test_plain_gzip_fasta_says_recompress_with_bgzip(inputs, capfd, name):
    cfg = inputs["cfg"]
    packed = inputs["data"] / "gz" / name
    packed.parent.mkdir()
    packed.write_bytes(gzip.compress(Path(cfg["genome"]).read_bytes()))
    cfg["genome"] = str(packed)
    assert prepare_data(inputs["tmp"], cfg) == 2
    err = one_error_line(capfd)
    assert str(packed) in err and "plain gzip" in err and "bgzip" in err and "decompress" in err
    assert "BioPython" not in err and "Biopython" not in err
    assert leftovers(inputs["tmp"] / "out") == []
    assert sorted(os.listdir(packed.parent)) == [name]  # no index written next to it


# --------------------------------------------------------------------------------------
# The same class of mistake elsewhere: genome / bigWig files
# --------------------------------------------------------------------------------------


def _bad_fasta(data: Path, case: str) -> tuple[Path, list[str]]:
    """A bad FASTA and the words its error must hold."""
    path = data / f"{case}.fa"
    if case == "empty":
        path.write_text("")
        return path, ["empty"]
    if case == "headers-only":
        path.write_text(">chr1\n>chr2\n")
        return path, ["no sequence"]
    if case == "duplicate":
        path.write_text(">chr1\nACGTACGT\n>chr2\nACGT\n>chr1 again\nACGT\n")
        return path, ["chr1", "more than once"]
    if case == "ragged":
        path.write_text(">chr1\nACGTAC\nACG\nACGTAC\n")
        return path, ["line 3"]
    if case == "binary":
        path.write_bytes(b">chr1\nAC\xe9TACGT\n")
        return path, ["not a text"]
    if case == "bgzip-misnamed":
        from Bio import bgzf

        with bgzf.BgzfWriter(str(path), "wb") as out:
            out.write(b">chr1\nACGT\n")
        return path, ["bgzip", ".gz"]
    if case == "not-compressed-gz":
        path = data / f"{case}.fa.gz"
        path.write_text(">chr1\nACGT\n")
        return path, ["not compressed", ".gz"]
    if case == "bzip2":
        import bz2

        path.write_bytes(bz2.compress(b">chr1\nACGT\n"))
        return path, ["bzip2", "bgzip"]
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    ["empty", "headers-only", "duplicate", "ragged", "binary", "bgzip-misnamed", "not-compressed-gz", "bzip2"],
)
def test_malformed_fasta_fails_with_one_line(inputs, capfd, case):
    cfg = inputs["cfg"]
    path, words = _bad_fasta(inputs["data"], case)
    cfg["genome"] = str(path)
    assert prepare_data(inputs["tmp"], cfg) == 2
    err = one_error_line(capfd)
    assert str(path) in err and all(w in err for w in words), err
    assert leftovers(inputs["tmp"] / "out") == []
    assert not [p for p in os.listdir(inputs["data"]) if ".tmp" in p]  # no half-built index


@pytest.mark.parametrize("char", ["-", " ", "1", "*"])
def test_non_base_character_in_fasta_names_its_position(inputs, capfd, char):
    cfg = inputs["cfg"]
    seqs = dict(inputs["seqs"])
    seqs["chr2"] = seqs["chr2"][:142] + char + seqs["chr2"][143:]  # in chr2:150-170's sequence window
    cfg["genome"] = str(write_fasta(inputs["data"] / "odd.fa", seqs))
    assert prepare_data(inputs["tmp"], cfg) == 2
    err = one_error_line(capfd)
    assert "odd.fa" in err and "chr2:142" in err and repr(char) in err
    assert leftovers(inputs["tmp"] / "out") == []


def test_lower_case_n_and_iupac_codes_are_accepted(inputs):
    """Soft-masked (lower case) bases read as the base; N and IUPAC codes as all-zero rows."""
    cfg = inputs["cfg"]
    seqs = dict(inputs["seqs"])
    window = "acgtNRYSWKMBDHVXnryswkmbdhvx" + "ACGTACGTACGTACGTACGTAC"  # 50 bases: chr1:85-135
    seqs["chr1"] = seqs["chr1"][:85] + window + seqs["chr1"][135:]
    cfg["genome"] = str(write_fasta(inputs["data"] / "masked.fa", seqs))
    assert prepare_data(inputs["tmp"], cfg) == 0
    with h5py.File(cfg["output-h5"], "r") as f:
        seq = f["sequence"][0]
    np.testing.assert_array_equal(seq, one_hot_reference(window))
    assert not seq[4:28].any() and seq[:4].sum() == 4


def test_unreadable_fasta_and_bigwig(inputs, capfd, monkeypatch):
    """No read permission (simulated: the tests may run as root, who can read anything)."""
    cfg = inputs["cfg"]
    real_open = open
    denied = ["genome.fa", "minus.bw"]

    def deny(path, *args, **kwargs):
        if str(path).endswith(tuple(denied)):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    # FASTA and bigWig files are first read through bpflow.utils.read_head
    monkeypatch.setattr(utils_module, "open", deny, raising=False)
    assert prepare_data(inputs["tmp"], cfg) == 2
    err = one_error_line(capfd)
    assert cfg["genome"] in err and "permission denied" in err
    denied.remove("genome.fa")
    assert prepare_data(inputs["tmp"], cfg) == 2
    err = one_error_line(capfd)
    assert cfg["heads"][0]["bigwig-files"][1] in err and "permission denied" in err
    assert leftovers(inputs["tmp"] / "out") == []


def test_fasta_index_in_read_only_folder(inputs, monkeypatch, caplog):
    """A FASTA whose folder cannot be written is indexed in a temporary folder, and an index
    is never left half-written next to the FASTA."""
    cfg = inputs["cfg"]
    monkeypatch.setattr(fasta_module, "_writable", lambda probe: False)
    monkeypatch.setattr(fasta_module, "_TEMPORARY_INDEXES", {})  # forgotten again by undo()
    assert prepare_data(inputs["tmp"], cfg) == 0
    assert not (inputs["data"] / "genome.fa.fai").exists()
    assert "temporary folder" in caplog.text
    monkeypatch.undo()
    cfg["output-h5"] = str(inputs["tmp"] / "out" / "again.h5")
    assert prepare_data(inputs["tmp"], cfg) == 0
    assert (inputs["data"] / "genome.fa.fai").is_file()
    assert not [p for p in os.listdir(inputs["data"]) if ".tmp" in p]
    with h5py.File(inputs["tmp"] / "out" / "train.h5") as a, h5py.File(cfg["output-h5"]) as b:
        np.testing.assert_array_equal(a["sequence"][:], b["sequence"][:])


def test_corrupt_fasta_index_says_delete_it(inputs, capfd):
    cfg = inputs["cfg"]
    Path(cfg["genome"] + ".fai").write_text("chr1\tnot-a-number\n")
    assert prepare_data(inputs["tmp"], cfg) == 2
    err = one_error_line(capfd)
    assert "genome.fa.fai" in err and "delete it" in err
    assert leftovers(inputs["tmp"] / "out") == []


def _bad_bigwig(data: Path, case: str) -> tuple[Path, list[str]]:
    path = data / f"{case}.bw"
    if case == "empty":
        path.write_bytes(b"")
        return path, ["empty"]
    if case == "bedgraph":
        path.write_text("chr1\t0\t10\t1.5\n")
        return path, ["text file", "bedGraphToBigWig"]
    if case == "gzip":
        path.write_bytes(gzip.compress(b"chr1\t0\t10\t1.5\n"))
        return path, ["gzip"]
    if case == "binary":
        path.write_bytes(bytes(range(256)))
        return path, ["not a bigWig"]
    if case == "truncated":
        good = write_bigwig(data / "good.bw", {"chr1": 500, "chr2": 400}, {"chr1": np.ones(500)})
        path.write_bytes(good.read_bytes()[:200])
        return path, ["truncated or corrupt"]
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["empty", "bedgraph", "gzip", "binary", "truncated"])
def test_not_a_bigwig_fails_with_one_line(inputs, capfd, case):
    """Including libBigWig's own stderr messages about a broken file: one line only."""
    cfg = inputs["cfg"]
    path, words = _bad_bigwig(inputs["data"], case)
    cfg["heads"][0]["bigwig-files"][1] = str(path)
    assert prepare_data(inputs["tmp"], cfg) == 2
    err = one_error_line(capfd)
    assert str(path) in err and all(w in err for w in words), err
    assert leftovers(inputs["tmp"] / "out") == []


def test_bigwig_chromosome_length_differs_from_fasta(inputs, capfd):
    """A bigWig made for another assembly: its positions do not match the sequence."""
    cfg = inputs["cfg"]
    sizes = dict(inputs["sizes"], chr2=450)
    bw = write_bigwig(inputs["data"] / "other.bw", sizes, {"chr2": np.ones(450)})
    cfg["heads"][0]["bigwig-files"][1] = str(bw)
    assert prepare_data(inputs["tmp"], cfg) == 2
    err = one_error_line(capfd)
    assert str(bw) in err and "chr2" in err and "450" in err and "400" in err and "regions.bed:3" in err
    assert leftovers(inputs["tmp"] / "out") == []


def test_bigwig_chromosome_length_differs_from_fasta_in_prepare_regions(inputs, capfd):
    """prepare-regions refuses it too (it used to take the shorter length silently), where a
    peak lies; a contig without peaks may differ (e.g. chrM between hg19 and GRCh37)."""
    cfg = regions_config(inputs)
    bw = write_bigwig(inputs["data"] / "other.bw", dict(inputs["sizes"], chr2=450), {"chr2": np.ones(450)})
    cfg["heads"][0]["bigwig-names"][1] = str(bw)
    code = cli(["prepare-regions", str(write_json(inputs["tmp"] / "regions.json", cfg))])
    err = one_error_line(capfd)
    assert code == 2
    assert str(bw) in err and "chr2" in err and "450" in err and "has peaks" in err
    assert leftovers(inputs["tmp"] / "out") == []
