"""bpflow prepare-data / inspect-data: BPReveal-layout HDF5 from FASTA + bigWig."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from bpflow.cli import main as cli
from bpflow.formats import bigwig, fasta
from bpflow.formats.blocks import plan_blocks
from bpflow.formats.codec import BASE_CODE, COMPLEMENT_CODE, deflate_codes, deflate_one_hot
from bpflow.formats.sequence import revcomp_task_order
from bpflow.prepare.datasets import normalize_data_config, prepare_data
from bpflow.prepare.inspect import inspect_data
from bpflow.utils import BpflowError

from data_helpers import (
    make_dataset_inputs,
    one_hot_reference,
    stderr_lines,
    write_bed,
    write_bigwig,
    write_fasta,
    write_json,
)


def run(tmp_path: Path, cfg: dict, name: str = "data.json") -> int:
    return cli(["prepare-data", str(write_json(tmp_path / name, cfg))])


def leftovers(directory: Path) -> list[str]:
    """HDF5 files and temporaries in a directory (a failed run must leave none)."""
    return sorted(p.name for p in Path(directory).iterdir() if p.suffix == ".h5" or ".tmp" in p.name)


# --------------------------------------------------------------------------------------
# Hand-written known answers
# --------------------------------------------------------------------------------------

# chr1: 24 bases, hand-written with an N and lower case.  Region chr1:10-14, input 8,
# output 4, jitter 2: the sequence window is chr1:6-18 (12 bases), the head window chr1:8-16.
CHR1 = "AAAACCCCGGTTAcgNTGCAATTG"


@pytest.fixture
def hand_files(tmp_path):
    genome = write_fasta(tmp_path / "hand.fa", {"chr1": CHR1}, line_width=7)
    sizes = {"chr1": len(CHR1)}
    plus = np.zeros(24)
    minus = np.zeros(24)
    plus[[8, 9, 12, 15]] = [1, 2, 3, 4]  # head window positions 0, 1, 4, 7
    minus[[10, 14]] = [5, 6]  # head window positions 2, 6
    pbw = write_bigwig(tmp_path / "p.bw", sizes, {"chr1": plus})
    mbw = write_bigwig(tmp_path / "m.bw", sizes, {"chr1": minus})
    bed = write_bed(tmp_path / "r.bed", [("chr1", 10, 14)])
    cfg = {
        "genome": str(genome),
        "input-length": 8,
        "output-length": 4,
        "max-jitter": 2,
        "regions": str(bed),
        "output-h5": str(tmp_path / "hand.h5"),
        "reverse-complement": True,
        "heads": [{"bigwig-files": [str(pbw), str(mbw)], "revcomp-task-order": "auto"}],
    }
    return cfg


def test_hand_written_sequence_coverage_and_reverse_complement(tmp_path, hand_files):
    assert run(tmp_path, hand_files) == 0
    with h5py.File(hand_files["output-h5"], "r") as f:
        seq, head = f["sequence"][:], f["head_0"][:]
        assert seq.shape == (2, 12, 4) and head.shape == (2, 8, 2)
    # chr1:6-18 = "CCGGTTAcgNTG"; its reverse complement written by hand: "CAnCGTAACCGG"
    assert CHR1[6:18] == "CCGGTTAcgNTG"
    np.testing.assert_array_equal(seq[0], one_hot_reference("CCGGTTAcgNTG"))
    np.testing.assert_array_equal(seq[1], one_hot_reference("CANcgTAACCGG"))
    assert not seq[0][9].any() and not seq[1][2].any()  # the N is an all-zero row on both strands
    # Forward: task 0 = plus, task 1 = minus over chr1:8-16; missing bigWig data reads as 0.
    np.testing.assert_array_equal(head[0][:, 0], [1, 2, 0, 0, 3, 0, 0, 4])
    np.testing.assert_array_equal(head[0][:, 1], [0, 0, 5, 0, 0, 0, 6, 0])
    # Reverse complement: positions reversed and the strands swapped ("auto" = [1, 0]).
    np.testing.assert_array_equal(head[1][:, 0], [0, 6, 0, 0, 0, 5, 0, 0])
    np.testing.assert_array_equal(head[1][:, 1], [4, 0, 0, 3, 0, 0, 2, 1])


def test_without_reverse_complement_one_sample_per_region(tmp_path, hand_files):
    cfg = dict(hand_files, **{"reverse-complement": False})
    cfg["heads"] = [{"bigwig-files": cfg["heads"][0]["bigwig-files"]}]
    assert run(tmp_path, cfg) == 0
    with h5py.File(cfg["output-h5"], "r") as f:
        assert f["sequence"].shape == (1, 12, 4)
        np.testing.assert_array_equal(f["head_0"][0][:, 0], [1, 2, 0, 0, 3, 0, 0, 4])
        assert list(f["coords_strand"][:]) == [b"+"]


def test_explicit_task_order_list(tmp_path, hand_files):
    # [0, 1]: reverse the positions but keep each task in place.
    hand_files["heads"][0]["revcomp-task-order"] = [0, 1]
    assert run(tmp_path, hand_files) == 0
    with h5py.File(hand_files["output-h5"], "r") as f:
        head = f["head_0"][:]
    np.testing.assert_array_equal(head[1][:, 0], [4, 0, 0, 3, 0, 0, 2, 1])
    np.testing.assert_array_equal(head[1][:, 1], [0, 6, 0, 0, 0, 5, 0, 0])


def test_three_task_order_maps_forward_task_i_to_reverse_task_order_i(tmp_path, hand_files):
    third = np.zeros(24)
    third[[9, 11]] = [7, 8]  # head window positions 1, 3
    tbw = write_bigwig(tmp_path / "t.bw", {"chr1": 24}, {"chr1": third})
    hand_files["heads"][0]["bigwig-files"].append(str(tbw))
    hand_files["heads"][0]["revcomp-task-order"] = [1, 2, 0]
    assert run(tmp_path, hand_files) == 0
    with h5py.File(hand_files["output-h5"], "r") as f:
        head = f["head_0"][:]
    np.testing.assert_array_equal(head[0][:, 2], [0, 7, 0, 8, 0, 0, 0, 0])
    # reverse[:, order[i]] = flip(forward[:, i]): plus -> task 1, minus -> task 2, third -> task 0.
    np.testing.assert_array_equal(head[1][:, 1], [4, 0, 0, 3, 0, 0, 2, 1])
    np.testing.assert_array_equal(head[1][:, 2], [0, 6, 0, 0, 0, 5, 0, 0])
    np.testing.assert_array_equal(head[1][:, 0], [0, 0, 0, 0, 8, 0, 7, 0])
    report = inspect_data(hand_files["output-h5"])
    assert report["reverse_complement"]["status"] == "ok"


def test_negative_minus_strand_needs_use_absolute_values(tmp_path, hand_files):
    sizes = {"chr1": len(CHR1)}
    minus = np.zeros(24)
    minus[[10, 14]] = [-5, -6]
    nbw = write_bigwig(tmp_path / "neg.bw", sizes, {"chr1": minus})
    hand_files["heads"][0]["bigwig-files"][1] = str(nbw)
    assert run(tmp_path, hand_files) == 2
    assert leftovers(tmp_path) == []
    hand_files["heads"][0]["use-absolute-values"] = True
    assert run(tmp_path, hand_files) == 0
    with h5py.File(hand_files["output-h5"], "r") as f:
        np.testing.assert_array_equal(f["head_0"][0][:, 1], [0, 0, 5, 0, 0, 0, 6, 0])


def test_negative_error_message_names_file_and_position(tmp_path, hand_files, capsys):
    minus = np.zeros(24)
    minus[14] = -6
    nbw = write_bigwig(tmp_path / "neg.bw", {"chr1": 24}, {"chr1": minus})
    hand_files["heads"][0]["bigwig-files"][1] = str(nbw)
    assert run(tmp_path, hand_files) == 2
    err = capsys.readouterr().err.strip()
    assert len(stderr_lines(err)) == 1
    assert "neg.bw" in err and "chr1:14" in err and "use-absolute-values" in err


# --------------------------------------------------------------------------------------
# Random data: every sample against the arrays the files were written from
# --------------------------------------------------------------------------------------


def random_regions(data, n, out, pad, rng):
    rows = []
    for _ in range(n):
        chrom = str(rng.choice(list(data["sizes"])))
        start = int(rng.integers(pad, data["sizes"][chrom] - out - pad + 1))
        rows.append((chrom, start, start + out))
    return rows


@pytest.mark.parametrize("threads", [1, 2])
def test_central_window_equals_region_and_jitter_padding(tmp_path, threads):
    data = make_dataset_inputs(tmp_path, seed=3)
    rng = np.random.default_rng(5)
    inp, out, jitter = 60, 20, 7
    pad = (inp - out) // 2 + jitter
    rows = random_regions(data, 37, out, pad, rng)  # unsorted, both chromosomes, some overlapping
    bed = write_bed(tmp_path / "r.bed", rows)
    cfg = {
        "genome": data["genome"],
        "input-length": inp,
        "output-length": out,
        "max-jitter": jitter,
        "regions": str(bed),
        "output-h5": str(tmp_path / "d.h5"),
        "num-threads": threads,
        "heads": [
            {"bigwig-files": [data["plus_bw"], data["minus_bw"]]},
            {"bigwig-files": [data["minus_bw"]], "head-name": "single"},
        ],
    }
    summary = prepare_data(cfg)
    with h5py.File(cfg["output-h5"], "r") as f:
        seq, h0, h1 = f["sequence"][:], f["head_0"][:], f["head_1"][:]
        names = [c.decode() for c in f["chrom_names"][:]]
        cchrom, cstart, cstop = f["coords_chrom"][:], f["coords_start"][:], f["coords_stop"][:]
        strand = f["coords_strand"][:]
    assert seq.shape == (74, inp + 2 * jitter, 4) and h0.shape == (74, out + 2 * jitter, 2)
    assert h1.shape == (74, out + 2 * jitter, 1)
    total = 0.0
    for k, (chrom, s, e) in enumerate(rows):
        fwd, rev = 2 * k, 2 * k + 1
        # Coordinates of both samples: the region itself.
        for i in (fwd, rev):
            assert (names[cchrom[i]], cstart[i], cstop[i]) == (chrom, s, e)
        assert (strand[fwd], strand[rev]) == (b"+", b"-")
        # Sequence: the full padded window, and its centre is the region's input window.
        np.testing.assert_array_equal(seq[fwd], one_hot_reference(data["seqs"][chrom][s - pad : e + pad]))
        np.testing.assert_array_equal(seq[fwd][pad : pad + out], one_hot_reference(data["seqs"][chrom][s:e]))
        np.testing.assert_array_equal(seq[rev], seq[fwd][::-1, ::-1])
        # Coverage: the central output window is the region; jitter pads each side.
        plus, minus = data["plus"][chrom], data["minus"][chrom]
        np.testing.assert_array_equal(h0[fwd][jitter : jitter + out, 0], plus[s:e])
        np.testing.assert_array_equal(h0[fwd][:, 0], plus[s - jitter : e + jitter])
        np.testing.assert_array_equal(h0[fwd][:, 1], minus[s - jitter : e + jitter])
        np.testing.assert_array_equal(h0[rev][:, 0], minus[s - jitter : e + jitter][::-1])
        np.testing.assert_array_equal(h0[rev][:, 1], plus[s - jitter : e + jitter][::-1])
        np.testing.assert_array_equal(h1[fwd][:, 0], minus[s - jitter : e + jitter])
        np.testing.assert_array_equal(h1[rev][:, 0], minus[s - jitter : e + jitter][::-1])
        total += plus[s:e].sum() + minus[s:e].sum()
    assert summary["total-counts"][0] == pytest.approx(total)
    assert summary["num-regions"] == 37 and summary["num-samples"] == 74


def test_threads_and_compression_give_identical_arrays(tmp_path):
    data = make_dataset_inputs(tmp_path, seed=8)
    rows = random_regions(data, 301, 30, 40, np.random.default_rng(1))
    bed = write_bed(tmp_path / "r.bed", rows)
    base = {
        "genome": data["genome"],
        "input-length": 70,
        "output-length": 30,
        "max-jitter": 20,
        "regions": str(bed),
        "heads": [{"bigwig-files": [data["plus_bw"], data["minus_bw"]]}],
    }
    variants = {
        "a.h5": {"num-threads": 1},
        "b.h5": {"num-threads": 2},
        "c.h5": {"compression": "gzip", "compression-level": 6},
        "d.h5": {"compression": "none"},
    }
    arrays = {}
    for name, extra in variants.items():
        prepare_data(dict(base, **extra, **{"output-h5": str(tmp_path / name)}))
        with h5py.File(tmp_path / name, "r") as f:
            arrays[name] = (f["sequence"][:], f["head_0"][:])
            assert (f["sequence"].compression is None) == (name == "d.h5")
    for name in "bcd":
        np.testing.assert_array_equal(arrays[f"{name}.h5"][0], arrays["a.h5"][0])
        np.testing.assert_array_equal(arrays[f"{name}.h5"][1], arrays["a.h5"][1])


@pytest.mark.parametrize("n", [1, 3])
def test_any_number_of_regions(tmp_path, n):
    data = make_dataset_inputs(tmp_path, seed=2)
    rows = random_regions(data, n, 10, 20, np.random.default_rng(n))
    cfg = {
        "genome": data["genome"],
        "input-length": 30,
        "output-length": 10,
        "max-jitter": 10,
        "regions": str(write_bed(tmp_path / "r.bed", rows)),
        "output-h5": str(tmp_path / "n.h5"),
        "heads": [{"bigwig-files": [data["plus_bw"]]}],
    }
    assert run(tmp_path, cfg) == 0
    with h5py.File(cfg["output-h5"], "r") as f:
        assert f["sequence"].shape == (2 * n, 50, 4)
        assert f["head_0"].shape == (2 * n, 30, 1)
        chrom, s, e = rows[-1]
        np.testing.assert_array_equal(f["head_0"][2 * n - 2][:, 0], data["plus"][chrom][s - 10 : e + 10])


def test_bpreveal_layout_opens_with_plain_h5py(tmp_path, hand_files):
    assert run(tmp_path, hand_files) == 0
    with h5py.File(hand_files["output-h5"], "r") as f:
        datasets = {k for k in f.keys() if isinstance(f[k], h5py.Dataset)}
        assert {"sequence", "head_0"} <= datasets
        # bpflow's additions use BPReveal's prediction-file names; nothing else.
        assert datasets - {"sequence", "head_0"} == {
            "chrom_names",
            "chrom_sizes",
            "coords_chrom",
            "coords_start",
            "coords_stop",
            "coords_strand",
        }
        assert f["sequence"].dtype == np.uint8 and f["head_0"].dtype == np.float32
        assert f["sequence"].shape == (2, 8 + 2 * 2, 4) and f["head_0"].shape == (2, 4 + 2 * 2, 2)
        assert f["sequence"].compression == "gzip"
        config = json.loads(f["metadata"].attrs["config"])
        assert config["heads"][0]["revcomp-task-order"] == [1, 0]
        assert config["regions"] == hand_files["regions"]
        assert list(f["chrom_sizes"][:]) == [len(CHR1)]


# --------------------------------------------------------------------------------------
# Bad inputs: one-line error, non-zero exit, no output file
# --------------------------------------------------------------------------------------


def _bad_cases(tmp_path, cfg):
    """(label, config, words the error must contain)."""
    bw = cfg["heads"][0]["bigwig-files"]
    other = write_fasta(tmp_path / "other.fa", {"chrX": "ACGT" * 10})
    otherbw = write_bigwig(tmp_path / "other.bw", {"chrX": 40}, {"chrX": np.ones(40)})
    cases = [
        ("num-tasks mismatch", {"heads": [{"bigwig-files": bw, "num-tasks": 3}]}, ["num-tasks", "heads/0"]),
        ("missing bigwig", {"heads": [{"bigwig-files": [bw[0], str(tmp_path / "nope.bw")]}]}, ["nope.bw"]),
        ("missing genome", {"genome": str(tmp_path / "nope.fa")}, ["nope.fa"]),
        ("missing regions", {"regions": str(tmp_path / "nope.bed")}, ["nope.bed"]),
        ("chrom missing from bigwig", {"heads": [{"bigwig-files": [bw[0], str(otherbw)]}]}, ["other.bw", "chr1"]),
        ("chrom missing from fasta", {"genome": str(other)}, ["other.fa", "chr1"]),
        ("off the end", {"regions": str(write_bed(tmp_path / "end.bed", [("chr1", 18, 22)]))}, ["chr1:18-22", "end"]),
        (
            "wrong width",
            {"regions": str(write_bed(tmp_path / "w.bed", [("chr1", 10, 15)]))},
            ["output-length", "w.bed:1"],
        ),
        ("no regions", {"regions": str(write_bed(tmp_path / "empty.bed", []))}, ["empty.bed", "no regions"]),
        ("auto with 3 tasks", {"heads": [{"bigwig-files": bw + bw[:1]}]}, ["auto", "3"]),
        ("not a permutation", {"heads": [{"bigwig-files": bw, "revcomp-task-order": [0, 0]}]}, ["permutation"]),
        ("order without revcomp", {"reverse-complement": False}, ["reverse-complement"]),
        ("unknown key", {"bigwigs": []}, ["bigwigs"]),
        ("wrong type", {"max-jitter": "2"}, ["max-jitter"]),
        ("odd length difference", {"input-length": 9}, ["input-length", "even"]),
    ]
    missing = dict(cfg)
    del missing["regions"]
    cases.append(("missing key", missing, ["regions"]))
    return cases


def test_every_bad_input_fails_cleanly(tmp_path, hand_files, capsys):
    for label, change, words in _bad_cases(tmp_path, hand_files):
        cfg = change if "genome" in change and "heads" in change else dict(hand_files, **change)
        code = run(tmp_path, cfg)
        err = capsys.readouterr().err.strip()
        assert code == 2, label
        assert len(stderr_lines(err)) == 1, (label, err)
        for word in words:
            assert word in err, (label, word, err)
        assert leftovers(tmp_path) == [], label


def test_failure_mid_write_leaves_no_partial_file(tmp_path):
    """A negative value far into the file: batches were already written when it is found."""
    data = make_dataset_inputs(tmp_path, seed=4, sizes={"chr1": 30000})
    minus = data["minus"]["chr1"].copy()
    minus[29000] = -1
    nbw = write_bigwig(tmp_path / "neg.bw", data["sizes"], {"chr1": minus})
    rows = [("chr1", s, s + 20) for s in range(100, 29500, 20)]  # 1470 regions, 2940 samples
    cfg = {
        "genome": data["genome"],
        "input-length": 40,
        "output-length": 20,
        "max-jitter": 5,
        "regions": str(write_bed(tmp_path / "r.bed", rows)),
        "output-h5": str(tmp_path / "x.h5"),
        "heads": [{"bigwig-files": [data["plus_bw"], str(nbw)]}],
    }
    assert run(tmp_path, cfg) == 2
    assert leftovers(tmp_path) == []
    assert not any(".tmp" in p for p in os.listdir(tmp_path))


def test_revcomp_task_order():
    assert revcomp_task_order("auto", 1, "x") == [0]
    assert revcomp_task_order("auto", 2, "x") == [1, 0]
    assert revcomp_task_order([1, 0, 2], 3, "x") == [1, 0, 2]
    with pytest.raises(BpflowError):
        revcomp_task_order([0, 1], 3, "x")


def test_normalize_fills_defaults(hand_files):
    cfg = normalize_data_config({k: v for k, v in hand_files.items() if k != "reverse-complement"})
    assert cfg["reverse-complement"] is True and cfg["num-threads"] == 1 and cfg["compression"] == "fast"
    assert cfg["heads"][0]["num-tasks"] == 2 and cfg["heads"][0]["use-absolute-values"] is False


# --------------------------------------------------------------------------------------
# inspect-data
# --------------------------------------------------------------------------------------


def test_inspect_reports_counts_and_pairing(tmp_path, hand_files, capsys):
    assert run(tmp_path, hand_files) == 0
    report = inspect_data(hand_files["output-h5"])
    assert report["num_samples"] == 2
    head = report["heads"][0]
    # Hand sums over the head window: plus 1+2+3+4, minus 5+6, on each strand.
    assert head["task_totals"] == [21.0, 21.0] and head["total_counts"] == 42.0
    # Output window chr1:10-14: plus 3 at 12, minus 5 at 10 -> 8.
    assert head["output_window_counts"]["total"] == 8.0
    assert report["reverse_complement"]["status"] == "ok"
    assert report["reverse_complement"]["task_orders"] == [[1, 0]]
    capsys.readouterr()
    assert cli(["inspect-data", hand_files["output-h5"]]) == 0
    out = capsys.readouterr().out
    assert "samples: 2" in out and "reverse-complement pairs: OK" in out and "total counts 42" in out
    assert cli(["inspect-data", hand_files["output-h5"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["heads"][0]["total_counts"] == 42.0


def test_inspect_detects_a_broken_pair(tmp_path, capsys):
    data = make_dataset_inputs(tmp_path, seed=6)
    rows = random_regions(data, 9, 10, 20, np.random.default_rng(2))
    cfg = {
        "genome": data["genome"],
        "input-length": 30,
        "output-length": 10,
        "max-jitter": 10,
        "regions": str(write_bed(tmp_path / "r.bed", rows)),
        "output-h5": str(tmp_path / "b.h5"),
        "heads": [{"bigwig-files": [data["plus_bw"], data["minus_bw"]]}],
    }
    prepare_data(cfg)
    with h5py.File(cfg["output-h5"], "r+") as f:
        h = f["head_0"][11]
        f["head_0"][11] = h[:, ::-1]  # region 5's reverse sample: tasks not swapped any more
    report = inspect_data(cfg["output-h5"], block=4)
    rc = report["reverse_complement"]
    assert rc["status"] == "broken" and rc["bad_pairs"] == 1 and rc["first_bad_pair"] == 5
    assert rc["pairs_checked"] == 9
    assert cli(["inspect-data", cfg["output-h5"]]) == 1
    assert "BROKEN" in capsys.readouterr().out


def test_inspect_bpreveal_file_without_metadata(tmp_path):
    """A file with only BPReveal's datasets: the task order is inferred from the data."""
    rng = np.random.default_rng(0)
    seq = np.eye(4, dtype=np.uint8)[rng.integers(0, 4, (3, 16))]
    prof = rng.integers(0, 3, (3, 8, 2)).astype(np.float32)
    prof[0] = 0  # a first pair without signal must not fix the wrong order
    with h5py.File(tmp_path / "bp.h5", "w") as f:
        s = np.empty((6, 16, 4), np.uint8)
        s[0::2], s[1::2] = seq, seq[:, ::-1, ::-1]
        p = np.empty((6, 8, 2), np.float32)
        p[0::2], p[1::2] = prof, prof[:, ::-1, ::-1]
        f["sequence"], f["head_0"] = s, p
    report = inspect_data(tmp_path / "bp.h5")
    assert report["reverse_complement"]["status"] == "ok"
    assert report["reverse_complement"]["task_orders"] == [[1, 0]]
    assert report["heads"][0]["total_counts"] == pytest.approx(2 * float(prof.sum()))
    assert not report["coordinates"]


def test_inspect_not_a_dataset(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["foo"] = np.zeros(3)
    assert cli(["inspect-data", str(tmp_path / "x.h5")]) == 2


# --------------------------------------------------------------------------------------
# coverage helpers
# --------------------------------------------------------------------------------------


def test_plan_blocks_merges_close_windows_only():
    starts = np.array([500, 0, 100, 10_000, 10_050])
    blocks = plan_blocks(starts, starts + 50, max_gap=1000, max_span=100_000)
    assert [(b.start, b.end, sorted(b.index.tolist())) for b in blocks] == [
        (0, 550, [0, 1, 2]),
        (10_000, 10_100, [3, 4]),
    ]
    small = plan_blocks(starts, starts + 50, max_gap=1000, max_span=200)
    assert all(b.end - b.start <= 200 for b in small)
    assert sorted(i for b in small for i in b.index.tolist()) == [0, 1, 2, 3, 4]


def test_padded_reads_outside_chromosome(tmp_path):
    write_fasta(tmp_path / "g.fa", {"c": "ACGTACGTAC"})
    write_bigwig(tmp_path / "v.bw", {"c": 10}, {"c": np.arange(1, 11)})
    with fasta.FastaFile(tmp_path / "g.fa") as fa:
        assert fa.fetch("c", -2, 3, pad=True) == b"NNACG"
        assert fa.fetch("c", 8, 13, pad=True) == b"ACNNN"
        assert fa.fetch("c", 12, 14, pad=True) == b"NN" and fa.fetch("c", -4, -1, pad=True) == b"NNN"
        with pytest.raises(BpflowError, match="runs off the end"):
            fa.fetch("c", 8, 13)
    with bigwig.BigWigFile(tmp_path / "v.bw") as bw:
        np.testing.assert_array_equal(bw.values("c", -2, 2, pad=True), [0, 0, 1, 2])
        np.testing.assert_array_equal(bw.values("c", 8, 12, pad=True), [9, 10, 0, 0])
        np.testing.assert_array_equal(bw.values("c", 12, 15, pad=True), [0, 0, 0])
        np.testing.assert_array_equal(bw.values("c", -5, -2, pad=True), [0, 0, 0])
    # A bigWig without any data (pyBigWig then returns no values at all) reads as zeros.
    write_bigwig(tmp_path / "empty.bw", {"c": 10}, {})
    with bigwig.BigWigFile(tmp_path / "empty.bw") as bw:
        np.testing.assert_array_equal(bw.values("c", 2, 6), [0, 0, 0, 0])


def test_window_sums_match_direct_sums():
    rng = np.random.default_rng(0)
    vals = rng.random((5, 40)).astype(np.float32)
    sums = bigwig.window_sums(vals, 7, 11)
    np.testing.assert_allclose(sums, vals[:, 7:18].sum(axis=1, dtype=np.float64), rtol=1e-12)


def test_direct_one_hot_deflate_round_trips_through_zlib():
    rng = np.random.default_rng(0)
    for rows in [0, 1, 7, 8, 9, 17, 1001]:  # whole and partial groups of 8 rows
        x = np.eye(4, dtype=np.uint8)[rng.integers(0, 4, rows)]
        packed = deflate_one_hot(x.tobytes())
        assert zlib.decompress(packed) == x.tobytes()
    assert len(packed) < 1001 * 5 / 8 + 30  # 5 bits per base plus headers
    for rows in [1, 8, 13, 1001]:  # with N (all-zero) rows, 4 bits each
        x = np.eye(4, dtype=np.uint8)[rng.integers(0, 4, rows)]
        x[rng.random(rows) < 0.3] = 0
        x[-1] = 0
        assert zlib.decompress(deflate_one_hot(x.tobytes())) == x.tobytes()
    x = np.eye(4, dtype=np.uint8)[rng.integers(0, 4, 64)]
    for bad in ([1, 1, 0, 0], [2, 0, 0, 0]):  # two bases in a row, a byte other than 0/1
        y = x.copy()
        y[9] = bad
        assert deflate_one_hot(y.tobytes()) is None
    assert deflate_one_hot(b"\x01\x00\x00") is None  # not whole rows


def test_deflate_from_base_codes_matches_one_hot():
    """Sequence chunks are coded from 1-byte base codes; the stream (Adler-32 included, which
    zlib verifies) must inflate to exactly the one-hot bytes, N rows and all."""
    seq = b"ACGTNacgtnRYK" * 7 + b"A"
    codes = BASE_CODE[np.frombuffer(seq, np.uint8)]
    assert codes[:5].tolist() == [1, 2, 4, 8, 0]
    assert zlib.decompress(deflate_codes(codes)) == one_hot_reference(seq.decode()).tobytes()
    rc = COMPLEMENT_CODE[codes[::-1]]
    assert zlib.decompress(deflate_codes(rc)) == one_hot_reference(seq.decode())[::-1, ::-1].tobytes()
    assert zlib.decompress(deflate_codes(codes[:8])) == one_hot_reference(seq[:8].decode()).tobytes()
