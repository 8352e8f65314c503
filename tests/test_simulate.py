"""bpflow simulate: known answers about the synthetic genome, its bias, footprints and counts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyBigWig
import pyfaidx
import pytest

from bpflow import cli, schemas
from bpflow import simulate as sim
from bpflow.formats import motifs as motif_files
from bpflow.utils import BpflowError

from data_helpers import stderr_lines

# the schema's defaults (bpflow/schemas/simulate.schema.json)
_SCHEMA = schemas.load_schema("simulate")["properties"]
DEFAULTS = {k: v["default"] for k, v in _SCHEMA.items() if "default" in v}
MOTIF_DEFAULTS = {k: v["default"] for k, v in _SCHEMA["motifs"]["items"]["properties"].items() if "default" in v}

TINY = {
    "seed": 7,
    "chromosome-lengths": [60_000, 50_000],
    "motifs": [
        {"name": "CTCF", "num-sites": 15},
        {"name": "Oct4-Sox2", "num-sites": 15},
        {"name": "Klf4", "num-sites": 15},
    ],
    "depth": 0.5,
    "control-depth": 0.3,
}


def _tiny(tmp: Path, **overrides) -> dict:
    config = json.loads(json.dumps(TINY))
    config.update(overrides)
    config["output-dir"] = str(tmp)
    return config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    paths = sim.simulate(_tiny(out))
    truth = json.loads(Path(paths["truth-json"]).read_text())
    return out, paths, truth


def _track(path, chrom) -> np.ndarray:
    bw = pyBigWig.open(str(path))
    try:
        return np.nan_to_num(bw.values(chrom, 0, bw.chroms()[chrom], numpy=True)).astype(np.float64)
    finally:
        bw.close()


def _sites(path) -> list[list[str]]:
    return [line.rstrip("\n").split("\t") for line in open(path)]


# ---------------------------------------------------------------------------------------
# Motif files
# ---------------------------------------------------------------------------------------


def test_builtin_pwms_parse_with_known_consensus_and_rows_summing_to_one():
    motifs = sim.builtin_motifs()
    expected = {
        "CTCF": ("MA0139.1", "CTCF", "TGGCCACCAGGGGGCGCTA"),
        "Oct4-Sox2": ("MA0142.1", "Pou5f1::Sox2", "CTTTGTTATGCAAAT"),
        "Klf4": ("MA0039.2", "Klf4", "TGGGTGGGGC"),
    }
    assert set(motifs) == set(expected)
    for key, (matrix_id, name, consensus) in expected.items():
        motif = motifs[key]
        assert (motif.matrix_id, motif.name, motif.consensus) == (matrix_id, name, consensus)
        assert motif.length == len(consensus)
        np.testing.assert_allclose(motif.probabilities.sum(axis=1), 1.0, atol=1e-12)
        assert (motif.probabilities > 0).all()
        # JASPAR count matrices: every column counts (almost) the same sites; a transcription
        # typo would break this.
        totals = motif.counts.sum(axis=1)
        assert totals.max() / totals.min() < 1.01
    # a hand-checked entry: CTCF position 5 counts A 8, C 903, G 0, T 2 (total 913)
    ctcf = motifs["CTCF"]
    np.testing.assert_array_equal(ctcf.counts[4], [8, 903, 0, 2])
    assert ctcf.probabilities[4, 2] == pytest.approx(0.2 / 913.8)
    assert ctcf.probabilities[4, 1] == pytest.approx(903.2 / 913.8)


def test_readme_names_every_matrix_and_the_licence():
    readme = (motif_files.MOTIF_DIR / "README.md").read_text()
    for file_name in motif_files.BUILTIN_FILES.values():
        assert (motif_files.MOTIF_DIR / file_name).is_file()
        assert file_name in readme
    assert "CC BY 4.0" in readme


def test_read_motif_file_jaspar_without_brackets_and_meme(tmp_path):
    jaspar = tmp_path / "m.jaspar"
    jaspar.write_text(">X1\tToy\n9 0\n0 10\n0 0\n1 0\n")
    (motif,) = motif_files.read_motif_file(jaspar)
    assert (motif.matrix_id, motif.name, motif.consensus) == ("X1", "Toy", "AC")
    assert motif.probabilities[0, 0] == pytest.approx(9.2 / 10.8)
    assert motif.probabilities[1, 3] == pytest.approx(0.2 / 10.8)

    meme = tmp_path / "m.meme"
    meme.write_text(
        "MEME version 4\n\nALPHABET= ACGT\n\nMOTIF M1 first\n"
        "letter-probability matrix: alength= 4 w= 2 nsites= 20 E= 0\n"
        " 0.7 0.1 0.1 0.1\n 0.0 0.0 1.0 0.0\n\n"
        "MOTIF M2\nletter-probability matrix: alength= 4 w= 1\n 0.25 0.25 0.25 0.25\n"
    )
    first, second = motif_files.read_motif_file(meme)
    assert (first.matrix_id, first.name, first.consensus) == ("M1", "first", "AG")
    assert second.matrix_id == "M2" and second.length == 1
    np.testing.assert_allclose(first.probabilities.sum(axis=1), 1.0)
    assert first.probabilities[1, 2] == pytest.approx(1.001 / 1.004)

    bad = tmp_path / "bad.jaspar"
    bad.write_text(">X\nA [ 1 2 ]\nC [ 1 ]\nG [ 1 2 ]\nT [ 1 2 ]\n")
    with pytest.raises(BpflowError, match="4 rows"):
        motif_files.read_motif_file(bad)


# ---------------------------------------------------------------------------------------
# Bias model
# ---------------------------------------------------------------------------------------


def test_bias_by_hand_and_strand_mirror():
    params = {
        "kmer-offsets": [-1, 1],
        "kmer-weights": [[0.1, 0.2, 0.3, 0.4], [1.0, 2.0, 3.0, 4.0], [0.01, 0.02, 0.03, 0.04]],
        "kmer-log-shift": 0.5,
        "motif": "GGGGGG",
        "motif-reverse-complement": "CCCCCC",
        "motif-factor": 10.0,
        "motif-cut-offset": 2,
    }
    codes = sim.encode("AACGT")
    plus, minus = sim.compute_bias(codes, params)
    # plus at i=2 (C): d=-1 A 0.1, d=0 C 2.0, d=+1 G 0.03
    assert plus[2] == pytest.approx(math.exp(0.1 + 2.0 + 0.03 - 0.5))
    # minus at i=2 reads the complement leftwards: d=-1 comp(G)=C 0.2, d=0 comp(C)=G 3.0,
    # d=+1 comp(A)=T 0.04
    assert minus[2] == pytest.approx(math.exp(0.2 + 3.0 + 0.04 - 0.5))
    # windows leaving the sequence give 0
    assert plus[0] == 0 and plus[4] == 0 and minus[0] == 0 and minus[4] == 0
    # an N in the window gives 0
    plus_n, minus_n = sim.compute_bias(sim.encode("AANGT"), params)
    assert plus_n[1:4].tolist() == [0, 0, 0] and minus_n[1:4].tolist() == [0, 0, 0]

    # the minus strand of a genome is the plus strand of its reverse complement, mirrored
    rng = np.random.default_rng(3)
    params["kmer-offsets"] = [-4, 3]
    params["kmer-weights"] = rng.standard_normal((8, 4)).tolist()
    params["motif"], params["motif-reverse-complement"] = "TACGTC", "GACGTA"
    seq = rng.integers(0, 4, 5000).astype(np.uint8)
    seq[100:106] = sim.encode("TACGTC")
    seq[300:306] = sim.encode("GACGTA")
    plus, minus = sim.compute_bias(seq, params)
    rc_plus, rc_minus = sim.compute_bias(sim.reverse_complement_codes(seq), params)
    np.testing.assert_allclose(minus, rc_plus[::-1], rtol=1e-12)
    np.testing.assert_allclose(plus, rc_minus[::-1], rtol=1e-12)
    # the planted bias motif: plus cut at start + offset, minus cut mirrored inside the rc copy
    cut_plus, cut_minus = sim.bias_motif_cut_positions(seq, params)
    assert 100 + 2 in cut_plus and 300 + 5 - 2 in cut_minus


def test_bias_track_recomputes_from_truth_json_and_motif_factor(tiny):
    out, paths, truth = tiny
    params = truth["bias"]
    fasta = pyfaidx.Fasta(paths["fasta"])
    factor = params["motif-factor"]
    assert factor == DEFAULTS["bias-motif-factor"]
    n_occurrences = 0
    for chrom in truth["chromosomes"]:
        codes = sim.encode(str(fasta[chrom][:]))
        plus, minus = sim.compute_bias(codes, params)
        kmer_plus, kmer_minus = sim.compute_bias(codes, params, with_motif=False)
        cut_plus, cut_minus = sim.bias_motif_cut_positions(codes, params)
        for strand, full, kmer, cuts in (("plus", plus, kmer_plus, cut_plus), ("minus", minus, kmer_minus, cut_minus)):
            stored = _track(paths[f"truth-bias-{strand}"], chrom)
            np.testing.assert_allclose(stored, full, rtol=1e-6)
            ratio = np.divide(stored, kmer, out=np.ones_like(stored), where=kmer > 0)
            at = np.zeros(len(stored), bool)
            at[cuts] = True
            assert len(cuts) > 0
            np.testing.assert_allclose(ratio[at], factor, rtol=1e-5)
            np.testing.assert_allclose(ratio[~at], 1.0, rtol=1e-5)
            n_occurrences += len(cuts)
        # the motif's occurrences in the sequence, found independently by string search
        text = str(fasta[chrom][:])
        starts = [i for i in range(len(text)) if text.startswith(params["motif"], i)]
        assert sorted(s + params["motif-cut-offset"] for s in starts) == sorted(cut_plus.tolist())
    assert n_occurrences > 20
    # the k-mer bias is normalised: its mean over the genome is about 1
    bias = _track(paths["truth-bias-plus"], "chr1")
    assert 0.9 < bias.mean() < 1.1


# ---------------------------------------------------------------------------------------
# Whole simulation
# ---------------------------------------------------------------------------------------


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path):
    small = {
        "chromosome-lengths": [20_000, 15_000],
        "motifs": [{"name": "CTCF", "num-sites": 4}, {"name": "Klf4", "num-sites": 4}],
    }
    a = sim.simulate(_tiny(tmp_path / "a", **small))
    b = sim.simulate(_tiny(tmp_path / "b", **small))
    c = sim.simulate(_tiny(tmp_path / "c", seed=8, **small))
    assert Path(a["fasta"]).read_bytes() == Path(b["fasta"]).read_bytes()
    assert Path(a["fasta"]).read_bytes() != Path(c["fasta"]).read_bytes()
    for key in a:
        if key.endswith(("-plus", "-minus")):
            for chrom in ("chr1", "chr2"):
                np.testing.assert_array_equal(_track(a[key], chrom), _track(b[key], chrom))
        if key != "truth-json":
            assert Path(a[key]).read_bytes() == Path(b[key]).read_bytes(), key
    assert not np.array_equal(_track(a["experiment-plus"], "chr1"), _track(c["experiment-plus"], "chr1"))
    # no temporary files are left behind
    assert not [p for p in (tmp_path / "a").rglob(".*")]


def test_markov_sequence_has_the_chains_transition_frequencies():
    """sequence-model markov: the empirical P(base | previous 2 bases) of a long draw matches
    the chain's transition table (binomial standard errors), and local GC is a windowed mean."""
    cfg = {"seed": 4, "markov-order": 2, "markov-concentration": 0.5}
    table = sim.markov_transitions(cfg)
    assert table.shape == (16, 4) and np.allclose(table.sum(axis=1), 1)
    np.testing.assert_array_equal(table, sim.markov_transitions(dict(cfg)))  # seeded
    codes = sim._markov_sequence(200_000, table, np.random.default_rng(1)).astype(np.int64)
    context = 4 * codes[:-2] + codes[1:-1]
    counts = np.zeros((16, 4))
    np.add.at(counts, (context, codes[2:]), 1)
    n = counts.sum(axis=1, keepdims=True)
    se = np.sqrt(table * (1 - table) / n) + 1e-9
    assert np.max(np.abs(counts / n - table) / se) < 5
    gc = sim._local_gc(np.array([1, 2, 0, 3, 1, 1], dtype=np.uint8), 2)
    np.testing.assert_allclose(gc, [1.0, 1.0, 0.5, 0.0, 0.5, 1.0])


def test_random_motifs_are_seeded_by_name_and_planted(tmp_path):
    a, b = sim.random_motif("m1", 9, seed=3), sim.random_motif("m1", 9, seed=3)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    assert a.probabilities.shape == (9, 4) and np.allclose(a.probabilities.sum(axis=1), 1)
    assert not np.array_equal(a.probabilities, sim.random_motif("m2", 9, seed=3).probabilities)
    assert not np.array_equal(a.probabilities, sim.random_motif("m1", 9, seed=4).probabilities)
    paths = sim.simulate(
        _tiny(
            tmp_path,
            **{
                "chromosome-lengths": [30_000],
                "sequence-model": "markov",
                "motifs": [{"name": "short", "num-sites": 5, "random-length": 7}],
            },
        )
    )
    rows = _sites(paths["sites"])
    assert len(rows) == 5 and {int(r[2]) - int(r[1]) for r in rows} == {7}
    with pytest.raises(BpflowError, match="random-length"):
        sim.resolve_config({"output-dir": str(tmp_path), "motifs": [{"name": "nosuch", "num-sites": 1}]})


def _scan_by_hand(seq: np.ndarray, motif, background) -> np.ndarray:
    """Best log-odds of either strand at every start, one window at a time (N scores -inf)."""
    out = []
    for p in range(len(seq) - motif.length + 1):
        window = seq[p : p + motif.length]
        if (window > 3).any():
            out.append(-np.inf)
            continue
        out.append(
            max(
                float(motif.score(window, background)),
                float(motif.score(sim.reverse_complement_codes(window), background)),
            )
        )
    return np.array(out)


def test_native_hits_bind_every_position_that_scores_and_planted_sites_score(tmp_path):
    """native-hits-min-z: binding is a function of sequence - every genome position scoring
    z >= min-z (either strand, outside edge-margin) lies in a site, every site of the motif
    scores that much, and the native sites' strengths follow the same rule as planted ones."""
    min_z = -1.0
    paths = sim.simulate(
        _tiny(
            tmp_path,
            **{
                "chromosome-lengths": [40_000, 30_000],
                "motifs": [
                    {
                        "name": "short",
                        "num-sites": 10,
                        "random-length": 6,
                        "random-concentration": 0.05,
                        "native-hits-min-z": min_z,
                    },
                    {"name": "Klf4", "num-sites": 10},
                ],
            },
        )
    )
    truth = json.loads(Path(paths["truth-json"]).read_text())
    entry = truth["motifs"][0]
    assert entry["native-hits-min-z"] == min_z and entry["native-sites"] > 10  # a 6-mer: many look-alikes
    assert entry["num-sites"] == 10 + entry["native-sites"] and truth["motifs"][1]["native-sites"] == 0
    motif = motif_files.Motif("short", np.asarray(entry["probabilities"]))
    background = entry["log-odds-background"]
    z_of = lambda score: (score - entry["log-odds-mean"]) / entry["log-odds-sd"]  # noqa: E731
    rows = _sites(paths["sites"])
    fasta = pyfaidx.Fasta(paths["fasta"])
    margin = truth["config"]["edge-margin"]
    for chrom, length in truth["chromosomes"].items():
        seq = sim.encode(str(fasta[chrom][:]))
        covered = np.zeros(length, bool)
        for r in rows:
            if r[0] == chrom:
                covered[int(r[1]) : int(r[2])] = True
        z = z_of(_scan_by_hand(seq, motif, background))
        hits = np.flatnonzero(z >= min_z)
        hits = hits[(hits >= margin) & (hits + motif.length <= length - margin)]
        assert len(hits) and all(covered[p : p + motif.length].any() for p in hits)
    mine = [r for r in rows if r[3] == "short"]
    z = z_of(np.array([float(r[7]) for r in mine]))
    assert len(mine) == entry["num-sites"] and (z >= min_z - 1e-6).all()
    residual = np.log([float(r[6]) for r in mine]) - math.log(entry["strength-median"]) - entry["strength-score-sd"] * z
    assert abs(residual.mean()) < 4 * entry["strength-noise-sd"] / math.sqrt(len(mine))
    assert 0.5 * entry["strength-noise-sd"] < residual.std() < 1.5 * entry["strength-noise-sd"]
    # one peak per site, natives included
    assert truth["num-peaks"] == len(rows) == truth["num-sites"]


def test_random_concentration_and_native_hits_checks(tmp_path):
    information = lambda m: float((2 + (m.probabilities * np.log2(m.probabilities)).sum(axis=1)).sum())  # noqa: E731
    assert information(sim.random_motif("m", 8, 0, 0.05)) > information(sim.random_motif("m", 8, 0, 0.3)) + 3
    # a resolved config (truth.json's) resolves again: no concentration is filled in for CTCF
    resolved = sim.resolve_config({"output-dir": str(tmp_path), "motifs": [{"name": "CTCF", "num-sites": 1}]})
    again = sim.resolve_config({k: v for k, v in resolved.items() if k != "preset"})
    assert again["motifs"] == resolved["motifs"]
    with pytest.raises(BpflowError, match="random-concentration needs random-length"):
        sim.resolve_config({"output-dir": str(tmp_path), "motifs": [{"name": "CTCF", "random-concentration": 1}]})
    config = _tiny(tmp_path, motifs=[{"name": "Klf4", "num-sites": 3, "native-hits-min-z": 9}])
    with pytest.raises(BpflowError, match="native-hits-min-z 9 is above the z of its best instance"):
        sim.simulate(config)
    assert not (tmp_path / "truth.json").exists()


def test_planted_sites_match_their_motif_in_the_bed_orientation(tiny):
    out, paths, truth = tiny
    motifs = sim.builtin_motifs()
    fasta = pyfaidx.Fasta(paths["fasta"])
    background = truth["motifs"][0]["log-odds-background"]
    rows = _sites(paths["sites"])
    assert len(rows) == 45
    assert {r[3] for r in rows} == {"CTCF", "Oct4-Sox2", "Klf4"}
    assert sorted((r[0], int(r[1])) for r in rows) == [(r[0], int(r[1])) for r in rows]
    right_way = 0
    for chrom, start, end, name, score, strand, strength, log_odds in rows:
        motif = motifs[name]
        start, end = int(start), int(end)
        assert end - start == motif.length
        codes = sim.encode(str(fasta[chrom][start:end]))
        forward = codes if strand == "+" else sim.reverse_complement_codes(codes)
        other = sim.reverse_complement_codes(forward)
        s_forward = float(motif.score(forward, background))
        s_other = float(motif.score(other, background))
        assert s_forward == pytest.approx(float(log_odds), abs=2e-3)
        lo = motif.log_odds(background)
        best, worst = lo.max(axis=1).sum(), lo.min(axis=1).sum()
        assert (s_forward - worst) / (best - worst) > 0.7
        right_way += s_forward > s_other
        assert 0 <= int(score) <= 1000 and float(strength) > 0
    assert right_way >= 0.95 * len(rows)


def test_strength_follows_the_pwm_score(tiny):
    out, paths, truth = tiny
    rows = [r for r in _sites(paths["sites"]) if r[3] == "CTCF"]
    entry = next(m for m in truth["motifs"] if m["name"] == "CTCF")
    z = (np.array([float(r[7]) for r in rows]) - entry["log-odds-mean"]) / entry["log-odds-sd"]
    log_strength = np.log([float(r[6]) for r in rows])
    residual = log_strength - math.log(entry["strength-median"]) - entry["strength-score-sd"] * z
    # what is left is the unexplained noise, N(0, strength-noise-sd)
    assert abs(residual.mean()) < 4 * entry["strength-noise-sd"] / math.sqrt(len(rows))
    assert 0.4 * entry["strength-noise-sd"] < residual.std() < 1.8 * entry["strength-noise-sd"]


def test_truth_identity_and_signal_mass(tiny):
    out, paths, truth = tiny
    depth = truth["depth"]
    rows = _sites(paths["sites"])
    by_name = {m["name"]: m for m in truth["motifs"]}
    for chrom in truth["chromosomes"]:
        for strand in ("plus", "minus"):
            bias = _track(paths[f"truth-bias-{strand}"], chrom)
            signal = _track(paths[f"truth-signal-{strand}"], chrom)
            expected = _track(paths[f"truth-expected-{strand}"], chrom)
            np.testing.assert_allclose(expected, depth * bias * (1 + signal), rtol=1e-6, atol=1e-9)
            near = np.zeros(len(signal), bool)
            for r in rows:
                if r[0] != chrom:
                    continue
                entry = by_name[r[3]]
                widest = max(entry["broad-sigma"], entry["footprint-sigma"])
                reach = int(max(entry["footprint-offsets"]) + 4 * widest + 30)
                lo, hi = int(r[1]) - reach, int(r[2]) + reach
                near[lo:hi] = True
                # isolated sites: the footprint on each strand sums to the site's strength
                assert signal[lo:hi].sum() == pytest.approx(float(r[6]), rel=1e-4)
            assert (signal[~near] == 0).all()
            assert (signal[near] >= 0).all()


def test_footprints_plus_upstream_minus_downstream(tiny):
    out, paths, truth = tiny
    by_name = {m["name"]: m for m in truth["motifs"]}
    agg = {"plus": np.zeros(201), "minus": np.zeros(201)}
    for chrom, start, end, name, _, strand, *_ in _sites(paths["sites"]):
        entry = by_name[name]
        centre = int(start) + (entry["length"] - 1) / 2
        a, b = entry["footprint-offsets"]
        want_plus, want_minus = (centre - a, centre + b) if strand == "+" else (centre - b, centre + a)
        for track, want in (("plus", want_plus), ("minus", want_minus)):
            signal = _track(paths[f"truth-signal-{track}"], chrom)
            window = signal[int(start) - 60 : int(end) + 60]
            peak = int(start) - 60 + int(window.argmax())
            assert abs(peak - want) <= 0.5
            assert (peak < centre) if track == "plus" else (peak > centre)
            observed = _track(paths[f"experiment-{track}"], chrom)
            c = int(round(centre))
            agg[track] += observed[c - 100 : c + 101]
    # in the observed counts too: plus-strand reads left of the sites, minus-strand right
    for track, sign in (("plus", -1), ("minus", 1)):
        left, right = agg[track][70:100].sum(), agg[track][101:131].sum()
        assert (right - left) * sign > 5 * math.sqrt(left + right)


def test_observed_counts_are_poisson_around_expected(tiny):
    out, paths, truth = tiny
    for kind in ("experiment", "control"):
        obs_all, exp_all = [], []
        for chrom in truth["chromosomes"]:
            for strand in ("plus", "minus"):
                observed = _track(paths[f"{kind}-{strand}"], chrom)
                if kind == "experiment":
                    expected = _track(paths[f"truth-expected-{strand}"], chrom)
                else:
                    expected = truth["control-depth"] * _track(paths[f"truth-bias-{strand}"], chrom)
                assert (observed == np.round(observed)).all() and (observed >= 0).all()
                assert (observed[expected == 0] == 0).all()
                obs_all.append(observed)
                exp_all.append(expected)
        obs, exp = np.concatenate(obs_all), np.concatenate(exp_all)
        assert abs(obs.sum() - exp.sum()) < 5 * math.sqrt(exp.sum())
        # per decile of the expected rate, the mean count matches the mean rate
        keep = exp > 0
        obs, exp = obs[keep], exp[keep]
        order = np.argsort(exp, kind="stable")
        for chunk in np.array_split(order, 10):
            assert abs(obs[chunk].mean() - exp[chunk].mean()) < 5 * math.sqrt(exp[chunk].mean() / len(chunk))
        # Poisson: the dispersion index sum((o - e)^2 / e) / n is 1
        dispersion = float(((obs - exp) ** 2 / exp).mean())
        assert abs(dispersion - 1) < 5 * math.sqrt(2 / len(obs)) + 0.02
        assert truth["total-counts"][f"{kind}-plus"] + truth["total-counts"][f"{kind}-minus"] == obs.sum()


def test_peaks_are_narrowpeak_at_the_sites(tiny):
    out, paths, truth = tiny
    sites = _sites(paths["sites"])
    peaks = _sites(paths["peaks"])
    assert len(peaks) == len(sites) == truth["num-peaks"]
    sd = DEFAULTS["summit-jitter-sd"]
    low, high = DEFAULTS["peak-width"]
    assert sorted(peaks, key=lambda p: (p[0], int(p[1]))) == peaks
    offsets = []
    for peak in peaks:
        site = sites[int(peak[3].split("_")[1]) - 1]  # peak_K belongs to the K-th site
        assert len(peak) == 10
        chrom, start, end, summit = peak[0], int(peak[1]), int(peak[2]), int(peak[9])
        assert chrom == site[0]
        assert low <= end - start <= high and 0 < summit < end - start
        centre = (int(site[1]) + int(site[2]) - 1) / 2
        assert abs(start + summit - centre) <= 3 * sd + 1
        offsets.append(start + summit - centre)
        assert float(peak[6]) == pytest.approx(float(site[6]), rel=1e-6)
    assert np.std(offsets) > 0.3 * sd  # the summits are jittered, not all at the centre


def test_outputs_load_and_truth_json_describes_them(tiny):
    out, paths, truth = tiny
    fasta = pyfaidx.Fasta(paths["fasta"])
    assert {k: len(fasta[k]) for k in fasta.keys()} == {"chr1": 60_000, "chr2": 50_000}
    assert Path(paths["chrom-sizes"]).read_text() == "chr1\t60000\nchr2\t50000\n"
    assert Path(paths["fasta-index"]).read_text().splitlines()[1].split("\t")[:2] == ["chr2", "50000"]
    for key, name in truth["files"].items():
        assert (out / name).is_file() and paths[key] == str(out / name)
        if name.endswith(".bw"):
            bw = pyBigWig.open(str(out / name))
            assert bw.chroms() == {"chr1": 60_000, "chr2": 50_000}
            bw.close()
    assert set(truth) >= {
        "model",
        "seed",
        "depth",
        "control-depth",
        "chromosomes",
        "splits",
        "motifs",
        "bias",
        "files",
        "config",
        "num-sites",
        "num-peaks",
        "total-counts",
    }
    assert truth["bias"]["motif"] == DEFAULTS["bias-motif"]
    assert truth["splits"] == {"train": ["chr1", "chr2"], "val": [], "test": []}
    gc = sim._gc_of(sim.encode(str(fasta["chr1"][:])))
    assert abs(gc - 0.41) < 0.05 and truth["gc"]["realized"]["chr1"] == pytest.approx(gc, abs=1e-6)
    consensus = [m["consensus"] for m in truth["motifs"]]
    assert consensus == ["TGGCCACCAGGGGGCGCTA", "CTTTGTTATGCAAAT", "TGGGTGGGGC"]


def test_n_gaps_have_no_bias_counts_or_sites(tmp_path):
    config = _tiny(
        tmp_path,
        **{
            "chromosome-lengths": [40_000],
            "n-gaps-per-chromosome": 1,
            "n-gap-length": 2000,
            "motifs": [{"name": "Klf4", "num-sites": 5}],
        },
    )
    paths = sim.simulate(config)
    text = str(pyfaidx.Fasta(paths["fasta"])["chr1"][:])
    gap = text.index("N" * 2000)
    assert text.count("N") == 2000
    bias = _track(paths["truth-bias-plus"], "chr1")
    observed = _track(paths["experiment-plus"], "chr1") + _track(paths["control-minus"], "chr1")
    assert (bias[gap : gap + 2000] == 0).all() and (observed[gap : gap + 2000] == 0).all()
    for site in _sites(paths["sites"]):
        assert int(site[2]) < gap - 3000 or int(site[1]) > gap + 2000 + 3000


def test_ci_preset_through_the_cli(tmp_path):
    out = tmp_path / "ci"
    assert cli.main(["simulate", "--preset", "ci", "--output-dir", str(out), "--seed", "3"]) == 0
    truth = json.loads((out / "truth.json").read_text())
    assert truth["preset"] == "ci" and truth["seed"] == 3
    assert truth["chromosomes"] == {"chr1": 200_000, "chr2": 200_000, "chr3": 200_000}
    assert truth["splits"] == {"train": ["chr1"], "val": ["chr2"], "test": ["chr3"]}
    assert truth["num-peaks"] == 240 == len((out / "peaks.narrowPeak").read_text().splitlines())
    assert [m["num-sites"] for m in truth["motifs"]] == [80, 80, 80]
    for name in sim.FILE_NAMES.values():
        assert (out / name).is_file()


def test_config_file_with_preset_and_overrides(tmp_path):
    meme = tmp_path / "own.meme"
    meme.write_text(
        "MEME version 4\n\nMOTIF X9 Mine\nletter-probability matrix: alength= 4 w= 4\n"
        "0.97 0.01 0.01 0.01\n0.01 0.97 0.01 0.01\n0.01 0.01 0.01 0.97\n0.01 0.01 0.97 0.01\n"
    )
    config = tmp_path / "sim.json"
    config.write_text(
        json.dumps(
            {
                "preset": "ci",
                "output-dir": str(tmp_path / "o"),
                "chromosome-lengths": [30_000, 30_000, 30_000],
                "motifs": [
                    {"name": "CTCF", "num-sites": 3, "footprint-offsets": [9, 4]},
                    {"name": "Mine", "file": str(meme), "num-sites": 4},
                ],
                "write-control": False,
            }
        )
    )
    assert cli.main(["simulate", str(config)]) == 0
    truth = json.loads((tmp_path / "o" / "truth.json").read_text())
    assert truth["motifs"][0]["footprint-offsets"] == [9, 4]
    assert truth["motifs"][0]["footprint-sigma"] == sim.BUILTIN_SETTINGS["CTCF"]["footprint-sigma"]
    assert truth["motifs"][1]["consensus"] == "ACTG" and truth["motifs"][1]["num-sites"] == 4
    assert truth["motifs"][1]["footprint-offsets"] == MOTIF_DEFAULTS["footprint-offsets"]
    fasta = pyfaidx.Fasta(str(tmp_path / "o" / "genome.fa"))
    mine = [r for r in _sites(tmp_path / "o" / "sites.bed") if r[3] == "Mine"]
    planted = [sim.encode(str(fasta[r[0]][int(r[1]) : int(r[2])])) for r in mine]
    forward = [
        sim.decode(codes if r[5] == "+" else sim.reverse_complement_codes(codes)) for r, codes in zip(mine, planted)
    ]
    assert sum(seq == "ACTG" for seq in forward) >= 2  # each instance is ACTG with p = 0.97^4
    # new chromosome lengths without splits: the default splits, not the preset's
    assert truth["splits"] == {"train": ["chr1"], "val": ["chr2"], "test": ["chr3"]}
    assert "control-plus" not in truth["files"] and not (tmp_path / "o" / "control.plus.bw").exists()


@pytest.mark.parametrize(
    "config, message",
    [
        ({"depth": "high"}, "key depth"),
        ({"dpeth": 0.1}, "dpeth"),
        ({"motifs": [{"name": "NoSuchTF"}]}, "NoSuchTF"),
        ({"motifs": [{"name": "CTCF", "num-sites": -1}]}, "motifs/0/num-sites"),
        ({"splits": {"test": ["chr9"]}}, "chr9"),
        ({"bias-motif": "ACGN"}, "bias-motif"),
        ({"chromosome-lengths": [5000]}, "chromosome-lengths"),
        ({"motifs": [{"name": "CTCF", "num-sites": 500}], "chromosome-lengths": [20000]}, "could place only"),
    ],
)
def test_bad_config_exits_nonzero_with_one_line(tmp_path, capsys, config, message):
    path = tmp_path / "bad.json"
    config = {"output-dir": str(tmp_path / "o"), **config}
    path.write_text(json.dumps(config))
    assert cli.main(["simulate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        stderr_lines(err) == [err.splitlines()[-1]]
        and message in err
        and err.splitlines()[-1].startswith("bpflow simulate: error:")
    )
    assert not (tmp_path / "o" / "truth.json").exists()


def test_cli_argument_errors(tmp_path, capsys):
    assert cli.main(["simulate", "--preset", "ci"]) == 2
    assert "--output-dir" in capsys.readouterr().err
    assert cli.main(["simulate"]) == 2
    assert cli.main(["simulate", str(tmp_path / "missing.json")]) == 2
    assert "not found" in capsys.readouterr().err
    assert cli.main(["simulate", "--show-preset", "benchmark"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert len(shown["chromosome-lengths"]) == 8 and sum(m["num-sites"] for m in shown["motifs"]) == 4500
