"""Dinucleotide-shuffled references, contribution files, their modisco export and bigWigs."""

from __future__ import annotations

import itertools
import os

import h5py
import numpy as np
import pytest
from scipy.stats import chisquare

from bpflow.formats import contributions as contrib
from bpflow.formats.contributions import (
    ContributionFile,
    ContributionWriter,
    export_modisco_inputs,
    write_projected_bigwig,
)
from bpflow.formats.sequence import one_hot_encode
from bpflow.interpret.shuffle import dinucleotide_shuffle, references_for, sequence_rng
from bpflow.utils import BpflowError

# ----------------------------------------------------------------------------------------------
# Helpers


def tokens_of(one_hot: np.ndarray) -> np.ndarray:
    """Symbols 0..3 (A, C, G, T) and 4 (all-zero row) of (..., L, 4) one-hot arrays."""
    one_hot = np.asarray(one_hot)
    return np.where(one_hot.any(axis=-1), one_hot.argmax(axis=-1), 4)


def dinucleotide_counts(one_hot: np.ndarray) -> np.ndarray:
    """5 x 5 matrix of dinucleotide counts (N = symbol 4)."""
    t = tokens_of(one_hot)
    return np.bincount(t[:-1] * 5 + t[1:], minlength=25).reshape(5, 5)


def random_one_hot(rng, length: int, n_fraction: float = 0.0) -> np.ndarray:
    seq = np.eye(4, dtype=np.uint8)[rng.integers(0, 4, length)]
    seq[rng.random(length) < n_fraction] = 0
    return seq


def all_arrangements(tokens: np.ndarray, alphabet: int) -> list[tuple]:
    """Every sequence over ``alphabet`` symbols with the dinucleotide counts and first symbol
    of ``tokens`` (brute force)."""
    length = len(tokens)
    grid = np.array(list(itertools.product(range(alphabet), repeat=length)))
    pairs = grid[:, :-1] * 5 + grid[:, 1:]
    counts = np.zeros((len(grid), 25), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(len(grid)), length - 1), pairs.ravel()), 1)
    target = np.bincount(tokens[:-1] * 5 + tokens[1:], minlength=25)
    keep = (counts == target).all(axis=1) & (grid[:, 0] == tokens[0])
    return [tuple(row) for row in grid[keep]]


# ----------------------------------------------------------------------------------------------
# Dinucleotide shuffles


@pytest.mark.parametrize("n_fraction", [0.0, 0.05])
def test_shuffles_keep_dinucleotide_counts_and_ends(n_fraction):
    rng = np.random.default_rng(7)
    seq = random_one_hot(rng, 300, n_fraction)
    shuffles = dinucleotide_shuffle(seq, 20, np.random.default_rng(1))
    assert shuffles.shape == (20, 300, 4) and shuffles.dtype == seq.dtype
    assert set(np.unique(shuffles)) <= {0, 1} and (shuffles.sum(axis=-1) <= 1).all()
    counts = dinucleotide_counts(seq)
    for shuffle in shuffles:
        np.testing.assert_array_equal(dinucleotide_counts(shuffle), counts)
        np.testing.assert_array_equal(shuffle[0], seq[0])
        np.testing.assert_array_equal(shuffle[-1], seq[-1])
        assert (~shuffle.any(axis=1)).sum() == (~seq.any(axis=1)).sum()  # as many N rows


def test_shuffles_differ_from_the_input_and_each_other():
    seq = random_one_hot(np.random.default_rng(3), 200)
    shuffles = dinucleotide_shuffle(seq, 20, np.random.default_rng(0))
    assert all((s != seq).any() for s in shuffles)
    assert len({s.tobytes() for s in shuffles}) == 20


def test_shuffles_are_deterministic_given_the_seed():
    seq = random_one_hot(np.random.default_rng(5), 150, 0.02)
    a = dinucleotide_shuffle(seq, 10, np.random.default_rng(42))
    b = dinucleotide_shuffle(seq, 10, np.random.default_rng(42))
    c = dinucleotide_shuffle(seq, 10, np.random.default_rng(43))
    np.testing.assert_array_equal(a, b)
    assert all((x != y).any() for x, y in zip(a, c))


@pytest.mark.parametrize("text, alphabet", [("ACGCAGAC", 4), ("ACGAGCAG", 4), ("NAANCA", 5)])
def test_shuffles_are_uniform_over_all_arrangements(text, alphabet):
    """Chi-square of 6000 draws against the uniform distribution over every sequence with the
    same dinucleotide counts and first base.  (Keeping the input's own last exit from each
    base, as DeepLIFT's dinuc_shuffle does, reaches only 1-2 of these.)"""
    seq = one_hot_encode(text)
    valid = all_arrangements(tokens_of(seq), alphabet)
    assert len(valid) >= 4
    draws = [tuple(t) for t in tokens_of(dinucleotide_shuffle(seq, 6000, np.random.default_rng(11)))]
    assert set(draws) == set(valid)  # every arrangement and nothing else
    observed = np.array([draws.count(v) for v in valid])
    assert chisquare(observed).pvalue > 1e-3


def test_degenerate_sequences_come_back_unchanged():
    for text in ("", "A", "AC", "AAAAAA", "NNNN"):
        seq = one_hot_encode(text)
        out = dinucleotide_shuffle(seq, 3, np.random.default_rng(0))
        assert out.shape == (3, len(text), 4)
        for s in out:
            np.testing.assert_array_equal(s, seq)
    assert dinucleotide_shuffle(one_hot_encode("ACGT"), 0, np.random.default_rng(0)).shape == (0, 4, 4)


def test_shuffle_refuses_what_is_not_one_hot():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="shape"):
        dinucleotide_shuffle(np.zeros((5, 3)), 2, rng)
    with pytest.raises(ValueError, match="one-hot"):
        dinucleotide_shuffle(np.ones((5, 4)), 2, rng)
    with pytest.raises(ValueError, match="shape"):
        references_for(np.zeros((5, 4)), 2, 0)


def test_references_do_not_depend_on_batching():
    rng = np.random.default_rng(9)
    batch = np.stack([random_one_hot(rng, 120, 0.01) for _ in range(7)]).astype(np.float32)
    whole = references_for(batch, 5, seed=123)
    assert whole.shape == (7, 5, 120, 4) and whole.dtype == np.float32
    parts = np.concatenate([references_for(batch[a : a + 3], 5, seed=123, start=a) for a in range(0, 7, 3)])
    np.testing.assert_array_equal(whole, parts)
    for i in range(7):
        np.testing.assert_array_equal(whole[i], dinucleotide_shuffle(batch[i], 5, sequence_rng(123, i)))
        for ref in whole[i]:
            np.testing.assert_array_equal(dinucleotide_counts(ref), dinucleotide_counts(batch[i]))
    other = references_for(batch, 5, seed=124)
    assert all((x != y).any() for x, y in zip(whole.reshape(35, -1), other.reshape(35, -1)))


# ----------------------------------------------------------------------------------------------
# Contribution files


def example_rows(n: int = 5, length: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    seq = np.stack([random_one_hot(rng, length, 0.1) for _ in range(n)])
    hyp = rng.normal(size=(n, length, 4)).astype(np.float32)
    return seq, hyp


def leftovers(directory) -> list[str]:
    return sorted(os.listdir(directory))


def test_writer_and_reader_round_trip(tmp_path):
    seq, hyp = example_rows()
    path = tmp_path / "contrib.h5"
    with ContributionWriter(
        path,
        12,
        ["chr1", "chr2"],
        num_samples=5,
        chrom_sizes={"chr1": 1000, "chr2": 500},
        model_file="model.keras",
        head="atac",
        target="profile",
        num_references=20,
        seed=7,
        backend="tensorflow",
        regions=True,
    ) as writer:
        writer.write(seq[:2], hyp[:2], "chr1", [100, 200], region_start=[104, 204], region_stop=[108, 208])
        writer.write(seq[2:], hyp[2:], ["chr2", "chr1", "chr2"], [0, 300, 40], region_start=[4, 304, 44], region_stop=8)
    assert leftovers(tmp_path) == ["contrib.h5"]
    with ContributionFile(path) as cf:
        assert (cf.num_samples, cf.input_length) == (5, 12)
        attrs = cf.attrs
        assert attrs["format"] == "bpflow-contributions" and attrs["format-version"] == 1
        assert attrs["model-file"] == "model.keras" and cf.head == "atac" and cf.target == "profile"
        assert (attrs["num-references"], attrs["seed"], attrs["backend"]) == (20, 7, "tensorflow")
        assert attrs["input-length"] == 12 and "bpflow-version" in attrs
        assert cf.chrom_sizes == {"chr1": 1000, "chr2": 500}
        seq_read = cf.sequence()
        assert seq_read.dtype == np.uint8 and cf.hypothetical().dtype == np.float32
        np.testing.assert_array_equal(seq_read, seq)
        np.testing.assert_array_equal(cf.hypothetical(), hyp)
        np.testing.assert_allclose(cf.projected(), (hyp * seq).sum(axis=-1), rtol=1e-6)
        coords = cf.coords()
        assert list(coords.names()) == ["chr1", "chr1", "chr2", "chr1", "chr2"]
        np.testing.assert_array_equal(coords.start, [100, 200, 0, 300, 40])
        np.testing.assert_array_equal(coords.stop, [112, 212, 12, 312, 52])
        region_start, region_stop = cf.regions()
        np.testing.assert_array_equal(region_start, [104, 204, 4, 304, 44])
        np.testing.assert_array_equal(region_stop, [108, 208, 8, 8, 8])


def test_resizable_writer_without_regions(tmp_path):
    seq, hyp = example_rows(7)
    path = tmp_path / "grow.h5"
    with ContributionWriter(path, 12, ["chrX"], target="counts") as writer:
        for a in range(0, 7, 3):
            writer.write(seq[a : a + 3], hyp[a : a + 3], 0, np.arange(a, min(a + 3, 7)) * 20)
    with ContributionFile(path) as cf:
        assert cf.num_samples == 7 and cf.regions() is None and cf.chrom_sizes == {}
        np.testing.assert_array_equal(cf.sequence(), seq)
        np.testing.assert_array_equal(cf.hypothetical(slice(2, 5)), hyp[2:5])
        np.testing.assert_array_equal(cf.coords().start, np.arange(7) * 20)


def test_failed_writes_leave_no_file(tmp_path):
    seq, hyp = example_rows(3)
    with pytest.raises(RuntimeError, match="boom"):
        with ContributionWriter(tmp_path / "a.h5", 12, ["chr1"], num_samples=3) as writer:
            writer.write(seq, hyp, "chr1", [0, 10, 20])
            raise RuntimeError("boom")
    with pytest.raises(BpflowError, match="2 of 3 rows written"):
        with ContributionWriter(tmp_path / "b.h5", 12, ["chr1"], num_samples=3) as writer:
            writer.write(seq[:2], hyp[:2], "chr1", [0, 10])
    with pytest.raises(BpflowError, match="'chr9' is not in chrom_names"):
        with ContributionWriter(tmp_path / "c.h5", 12, ["chr1"]) as writer:
            writer.write(seq, hyp, "chr9", 0)
    bad = hyp.copy()
    bad[1, 3, 2] = np.nan
    with pytest.raises(BpflowError, match=r"non-finite .* chr1:10-22 \(row 1\)"):
        with ContributionWriter(tmp_path / "d.h5", 12, ["chr1"]) as writer:
            writer.write(seq, bad, "chr1", [0, 10, 20])
    writer = ContributionWriter(tmp_path / "e.h5", 12, ["chr1"])
    writer.write(seq, hyp, "chr1", 0)
    writer.abort()
    with pytest.raises(ValueError, match="target"):
        ContributionWriter(tmp_path / "f.h5", 12, ["chr1"], target="logits")
    assert leftovers(tmp_path) == []


def test_reader_errors_name_the_file_and_key(tmp_path):
    with pytest.raises(BpflowError, match="missing.h5: contribution file not found"):
        ContributionFile(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("not hdf5\n")
    with pytest.raises(BpflowError, match="text.h5: cannot open as HDF5"):
        ContributionFile(tmp_path / "text.h5")
    seq, hyp = example_rows(2)
    path = tmp_path / "ok.h5"
    with ContributionWriter(path, 12, ["chr1"]) as writer:
        writer.write(seq, hyp, "chr1", [0, 5])
    with h5py.File(path, "a") as f:
        del f["hypothetical"]
        f.create_dataset("hypothetical", data=np.zeros((2, 11, 4), np.float32))
    with pytest.raises(BpflowError, match=r"ok.h5: hypothetical has shape \(2, 11, 4\)"):
        ContributionFile(path)
    with h5py.File(path, "a") as f:
        del f["hypothetical"]
    with pytest.raises(BpflowError, match="ok.h5: not a contribution file \\(no hypothetical dataset\\)"):
        ContributionFile(path)


def test_modisco_export_is_n_4_l(tmp_path):
    seq, hyp = example_rows(5)
    path = tmp_path / "contrib.h5"
    with ContributionWriter(path, 12, ["chr1"]) as writer:
        writer.write(seq, hyp, "chr1", np.arange(5) * 100)
    export_modisco_inputs(path, tmp_path / "ohe.npz", tmp_path / "shap.npz", batch_size=2)
    with np.load(tmp_path / "ohe.npz") as ohe, np.load(tmp_path / "shap.npz") as shap:
        assert list(ohe.keys()) == ["arr_0"] and list(shap.keys()) == ["arr_0"]
        ohe_arr, shap_arr = ohe["arr_0"], shap["arr_0"]
    assert ohe_arr.shape == shap_arr.shape == (5, 4, 12)
    assert ohe_arr.dtype == np.uint8 and shap_arr.dtype == np.float32
    np.testing.assert_array_equal(ohe_arr, seq.transpose(0, 2, 1))
    np.testing.assert_array_equal(shap_arr, hyp.transpose(0, 2, 1))
    # what modisco-lite does with them: back to (N, L, 4)
    np.testing.assert_array_equal(shap_arr.transpose(0, 2, 1), hyp)


# ----------------------------------------------------------------------------------------------
# bigWig of projected contributions


def arrays_with_projection(projections, chroms, starts, seed: int = 0) -> dict:
    """Contribution arrays whose projected values are ``projections`` (rows of equal
    length); the bases not in the sequence get other (ignored) scores."""
    projections = np.asarray(projections, dtype=np.float32)
    n, length = projections.shape
    rng = np.random.default_rng(seed)
    bases = rng.integers(0, 4, (n, length))
    seq = np.eye(4, dtype=np.uint8)[bases]
    hyp = rng.normal(size=(n, length, 4)).astype(np.float32) * 100
    np.put_along_axis(hyp, bases[..., None], projections[..., None], axis=2)
    return {"sequence": seq, "hypothetical": hyp, "chrom": list(chroms), "start": list(starts)}


def bigwig_entries(path) -> dict:
    import pyBigWig

    bw = pyBigWig.open(str(path))
    try:
        out = {"chroms": list(bw.chroms().items())}
        for chrom in bw.chroms():
            out[chrom] = [(s, e, v) for s, e, v in (bw.intervals(chrom) or ())]
        return out
    finally:
        bw.close()


def per_base(intervals) -> dict:
    return {p: v for s, e, v in intervals for p in range(s, e)}


def test_projected_bigwig_averages_overlaps_exactly(tmp_path):
    arrays = arrays_with_projection(
        [[1, 2, 3, 4], [10, 20, 30, 40], [5, 6, 7, 8], [0.5, 0.25, -1, 2]],
        ["chr1", "chr1", "chr1", "chr1"],
        [12, 10, 30, 13],
    )
    out = write_projected_bigwig(tmp_path / "p.bw", arrays, {"chr1": 100})
    assert out == tmp_path / "p.bw" and leftovers(tmp_path) == ["p.bw"]
    entries = bigwig_entries(out)
    assert entries["chroms"] == [("chr1", 100)]
    # chr1:10-14 [10, 20, 30, 40], chr1:12-16 [1, 2, 3, 4], chr1:13-17 [0.5, 0.25, -1, 2]
    expected = {10: 10, 11: 20, 12: (30 + 1) / 2, 13: (40 + 2 + 0.5) / 3, 14: (3 + 0.25) / 2, 15: (4 - 1) / 2, 16: 2}
    expected.update({30: 5, 31: 6, 32: 7, 33: 8})  # no overlap: passed through
    got = per_base(entries["chr1"])
    assert sorted(got) == sorted(expected)  # uncovered bases have no entry
    for pos, value in expected.items():
        assert got[pos] == pytest.approx(value, rel=1e-6), pos


def test_projected_bigwig_from_a_file_keeps_the_chromosome_order(tmp_path):
    arrays = arrays_with_projection([[1, 2, 3], [4, 5, 6], [7, 8, 9]], ["chrA", "chrB", "chrA"], [0, 5, 47])
    path = tmp_path / "contrib.h5"
    with ContributionWriter(path, 3, ["chrA", "chrB"], chrom_sizes=[49, 20]) as writer:
        writer.write(arrays["sequence"], arrays["hypothetical"], arrays["chrom"], arrays["start"])
    # the header's order (chrB before chrA), not the rows' or the file's
    write_projected_bigwig(tmp_path / "b.bw", path, [("chrB", 20), ("chrA", 49)])
    entries = bigwig_entries(tmp_path / "b.bw")
    assert entries["chroms"] == [("chrB", 20), ("chrA", 49)]
    assert per_base(entries["chrB"]) == {5: 4, 6: 5, 7: 6}
    # chrA:47-50 runs off the end of chrA (49 bp): the base outside is left out
    assert per_base(entries["chrA"]) == {0: 1, 1: 2, 2: 3, 47: 7, 48: 8}
    # default: the file's own chromosome sizes, in its order
    write_projected_bigwig(tmp_path / "f.bw", path)
    entries = bigwig_entries(tmp_path / "f.bw")
    assert entries["chroms"] == [("chrA", 49), ("chrB", 20)]
    assert per_base(entries["chrB"]) == {5: 4, 6: 5, 7: 6}


def test_projected_bigwig_failures_leave_no_file(tmp_path, monkeypatch):
    arrays = arrays_with_projection([[1, 2], [3, 4]], ["chr1", "chr2"], [0, 0])
    with pytest.raises(BpflowError, match="'chr2' is not in the chromosome sizes"):
        write_projected_bigwig(tmp_path / "x.bw", arrays, {"chr1": 10})
    assert leftovers(tmp_path) == []

    def fail(self, upto=None):
        raise OSError("disk full")

    monkeypatch.setattr(contrib.TrackAccumulator, "flush", fail)
    with pytest.raises(OSError, match="disk full"):
        write_projected_bigwig(tmp_path / "y.bw", arrays, {"chr1": 10, "chr2": 10})
    assert leftovers(tmp_path) == []
