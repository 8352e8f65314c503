"""Metrics against scipy on hand-made arrays, and ``bpflow metrics`` end to end."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import multinomial, pearsonr, spearmanr

from bpflow.cli import main as cli
from bpflow.evaluate import measures as M
from bpflow.evaluate import metrics
from bpflow.formats.predictions import PredictionWriter

from data_helpers import stderr_lines


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def _profiles(rng, n=6, length=9, tasks=2):
    obs = rng.poisson(2.0, size=(n, length, tasks)).astype(np.float64)
    obs[0, :4] = 0  # some zero positions
    logits = rng.normal(size=(n, length, tasks))
    return obs, logits


def test_softmax_joint_over_positions_and_tasks(rng):
    logits = rng.normal(size=(3, 5, 2))
    p = M.softmax_joint(logits)
    np.testing.assert_allclose(p.sum(axis=(1, 2)), 1.0)
    np.testing.assert_allclose(M.softmax_joint(logits + 7.5), p)
    flat = np.exp(logits[1].ravel()) / np.exp(logits[1].ravel()).sum()
    np.testing.assert_allclose(p[1].ravel(), flat)


def test_jsd_equals_scipy(rng):
    obs, logits = _profiles(rng)
    probs = M.softmax_joint(logits)
    got = M.jensen_shannon_distance(obs, probs)
    want = [jensenshannon(o.ravel(), q.ravel()) for o, q in zip(obs, probs)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # unnormalised inputs are normalised jointly over positions x tasks, like scipy
    np.testing.assert_allclose(M.jensen_shannon_distance(obs, probs * 17.0), want, rtol=1e-12)
    # identical -> 0; disjoint supports -> sqrt(ln 2)
    assert M.jensen_shannon_distance(obs[1:2], obs[1:2])[0] == pytest.approx(0.0, abs=1e-7)
    a = np.array([[1.0, 0.0, 0.0, 0.0]])
    b = np.array([[0.0, 0.0, 3.0, 1.0]])
    assert M.jensen_shannon_distance(a, b)[0] == pytest.approx(math.sqrt(math.log(2)))


def test_normalized_jsd_definition(rng):
    obs, logits = _profiles(rng)
    probs = M.softmax_joint(logits)
    got = M.normalized_jsd(obs, probs)
    uniform = np.full(obs[0].size, 1.0)
    want = [
        np.clip(1 - jensenshannon(o.ravel(), q.ravel()) / jensenshannon(o.ravel(), uniform), 0, 1)
        for o, q in zip(obs, probs)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # perfect prediction -> 1; a prediction worse than uniform clips to 0
    o = np.array([[[4.0], [0.0], [0.0], [0.0]]])
    assert M.normalized_jsd(o, o)[0] == pytest.approx(1.0)
    worse = np.array([[[0.0], [0.0], [0.0], [1.0]]])
    assert M.normalized_jsd(o, worse)[0] == 0.0
    # a uniform observed profile has no scale to normalise by
    assert np.isnan(M.normalized_jsd(np.ones((1, 4, 1)), worse)[0])


def test_multinomial_nll_equals_scipy(rng):
    obs, logits = _profiles(rng)
    probs = M.softmax_joint(logits)
    got = M.multinomial_nll(obs, logits)
    want = [-multinomial.logpmf(o.ravel(), n=o.sum(), p=q.ravel()) for o, q in zip(obs, probs)]
    np.testing.assert_allclose(got, want, rtol=1e-9)
    without = M.multinomial_nll(obs, logits, include_constant=False)
    np.testing.assert_allclose(without, [-(o * np.log(q)).sum() for o, q in zip(obs, probs)], rtol=1e-12)
    # hand value: counts (1, 1) under p = (1/2, 1/2): P = 2!/(1!1!) * 1/4 = 1/2
    assert M.multinomial_nll(np.array([[1.0, 1.0]]), np.zeros((1, 2)))[0] == pytest.approx(math.log(2))


def test_profile_pearson_equals_scipy(rng):
    obs, logits = _profiles(rng)
    probs = M.softmax_joint(logits)
    got = M.profile_pearson(obs, probs)
    want = [pearsonr(o.ravel(), q.ravel())[0] for o, q in zip(obs, probs)]
    np.testing.assert_allclose(got, want, rtol=1e-10)
    assert np.isnan(M.profile_pearson(np.zeros((1, 4, 2)), probs[:1, :4])[0])


def test_counts_metrics_equal_scipy(rng):
    observed = rng.poisson(30, size=40).astype(float)
    observed[:5] = 7.0  # ties for Spearman
    observed[5] = 0.0
    predicted = np.log1p(observed) + rng.normal(scale=0.3, size=40)
    got = M.counts_metrics(observed, predicted)
    obs_log = np.log1p(observed)
    assert got["pearson"] == pytest.approx(pearsonr(obs_log, predicted)[0], rel=1e-12)
    assert got["spearman"] == pytest.approx(spearmanr(obs_log, predicted)[0], rel=1e-12)
    assert got["mse"] == pytest.approx(np.mean((obs_log - predicted) ** 2), rel=1e-12)
    assert got["n"] == 40
    assert math.isnan(M.counts_metrics([1.0, 1.0, 1.0], [0.0, 1.0, 2.0])["pearson"])


def test_region_metrics_zero_regions_and_perfect_prediction():
    obs = np.zeros((3, 4, 2))
    obs[0] = [[1, 0], [2, 0], [0, 0], [1, 4]]
    obs[2] = 3.0  # uniform
    logits = np.log(np.where(obs > 0, obs, 1e-30))
    logits[1] = 0.0
    vals = M.region_metrics(obs, logits, np.log1p(obs.sum(axis=(1, 2))))
    assert vals["jsd"][0] == pytest.approx(0.0, abs=1e-6)
    assert vals["normalized-jsd"][0] == pytest.approx(1.0, abs=1e-6)
    assert vals["pearson"][0] == pytest.approx(1.0)
    for key in M.PROFILE_METRICS:  # all-zero region: undefined
        assert np.isnan(vals[key][1])
    assert vals["jsd"][2] == pytest.approx(0.0, abs=1e-7)
    summary = M.summarize_head(vals)
    assert summary["num-regions"] == 3 and summary["num-zero-observed"] == 1
    assert summary["profile"]["jsd"]["n"] == 2 and summary["profile"]["jsd"]["n-undefined"] == 1
    assert summary["counts"]["mse"] == pytest.approx(0.0)


def test_summarize_known_values():
    s = M.summarize([4.0, 1.0, np.nan, 3.0, 2.0, np.inf])
    assert s == {"median": 2.5, "q1": 1.75, "q3": 3.25, "mean": 2.5, "n": 4, "n-undefined": 2}
    assert math.isnan(M.summarize([np.nan])["median"])


# ----------------------------------------------------------------------------------------------
# bpflow metrics CONFIG.json

OUT, J, TASKS = 8, 2, 2


def _dataset(path, rng, n=6, strands=True, coords=True):
    obs = rng.poisson(3.0, size=(n, OUT + 2 * J, TASKS)).astype(np.float32)
    obs[3] = 0.0  # an all-zero sample
    with h5py.File(path, "w") as f:
        f["sequence"] = np.zeros((n, 20 + 2 * J, 4), np.uint8)
        f["head_0"] = obs
        if coords:
            f.create_dataset(
                "chrom_names", data=np.array(["chr1", "chr2"], dtype=object), dtype=h5py.string_dtype("utf-8")
            )  # as bpflow prepare-data writes it
            f["coords_chrom"] = np.array([0, 0, 1, 1, 0, 0][:n], np.int32)
            f["coords_start"] = np.arange(n, dtype=np.int64) * 100
            f["coords_stop"] = np.arange(n, dtype=np.int64) * 100 + OUT + 2 * J
        if strands:
            f["coords_strand"] = np.array([b"+", b"-"] * (n // 2), dtype="S1")
        f.create_group("metadata").attrs["config"] = json.dumps({"heads": [{"head-name": "nexus"}]})
    return obs[:, J : J + OUT]


def _predictions(path, rng, n=6, shift=0):
    logits = rng.normal(size=(n, OUT, TASKS)).astype(np.float32)
    logcounts = rng.normal(3.0, 0.5, size=n).astype(np.float32)
    w = PredictionWriter(path, n, OUT, [TASKS], ["chr1", "chr2"], [10_000, 10_000])
    starts = np.arange(n) * 100 + J + shift
    w.write(0, np.array([0, 0, 1, 1, 0, 0][:n]), starts, starts + OUT, [logits], [logcounts])
    w.close()
    return logits, logcounts


def _run(tmp_path, config, capsys):
    cfg = tmp_path / "metrics.json"
    cfg.write_text(json.dumps(config))
    code = cli(["metrics", str(cfg)])
    return code, capsys.readouterr().err


def test_metrics_cli_known_values(tmp_path, rng, capsys):
    obs = _dataset(tmp_path / "data.h5", rng)
    combined = _predictions(tmp_path / "combined.h5", rng)
    bias = _predictions(tmp_path / "bias.h5", rng)
    config = {
        "predictions": {"combined": str(tmp_path / "combined.h5"), "bias": str(tmp_path / "bias.h5")},
        "data": str(tmp_path / "data.h5"),
        "region-set": "peaks",
        "output-json": str(tmp_path / "m.json"),
        "output-tsv": str(tmp_path / "m.tsv"),
        "output-regions-tsv": str(tmp_path / "r.tsv"),
    }
    code, err = _run(tmp_path, config, capsys)
    assert code == 0, err
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text
    result = json.loads(text)
    assert result["strands"] == "forward" and result["num-evaluated"] == 3 and result["region-set"] == "peaks"
    fwd = np.array([0, 2, 4])  # coords_strand "+" samples; sample 3 (all zero) is reverse
    for label, (logits, logcounts) in (("combined", combined), ("bias", bias)):
        head = result["models"][label]["heads"]["nexus"]
        o, lg, lc = obs[fwd].astype(np.float64), logits[fwd], logcounts[fwd]
        obs_log = np.log1p(o.sum(axis=(1, 2)))
        assert head["counts"]["pearson"] == pytest.approx(pearsonr(obs_log, lc)[0], rel=1e-6)
        assert head["counts"]["spearman"] == pytest.approx(spearmanr(obs_log, lc)[0], rel=1e-6)
        assert head["counts"]["mse"] == pytest.approx(np.mean((obs_log - lc) ** 2), rel=1e-6)
        probs = M.softmax_joint(lg)
        jsd = [jensenshannon(a.ravel(), b.ravel()) for a, b in zip(o, probs)]
        assert head["profile"]["jsd"]["median"] == pytest.approx(np.median(jsd), rel=1e-6)
        nll = [-multinomial.logpmf(a.ravel(), n=a.sum(), p=b.ravel()) for a, b in zip(o, probs)]
        assert head["profile"]["mnll"]["mean"] == pytest.approx(np.mean(nll), rel=1e-5)
        assert head["num-regions"] == 3 and head["num-zero-observed"] == 0
    tsv = (tmp_path / "m.tsv").read_text().splitlines()
    assert tsv[0].split("\t") == metrics.TSV_COLUMNS
    assert [r.split("\t")[:3] for r in tsv[1:]] == [["peaks", "combined", "nexus"], ["peaks", "bias", "nexus"]]
    regions = (tmp_path / "r.tsv").read_text().splitlines()
    assert len(regions) == 1 + 2 * 3
    first = regions[1].split("\t")
    assert first[:7] == ["peaks", "combined", "nexus", "0", "chr1", str(J), str(J + OUT)]


def test_metrics_all_samples_without_strand(tmp_path, rng, capsys):
    _dataset(tmp_path / "data.h5", rng, strands=False)
    logits, logcounts = _predictions(tmp_path / "p.h5", rng)
    config = {
        "predictions": str(tmp_path / "p.h5"),
        "data": str(tmp_path / "data.h5"),
        "output-json": str(tmp_path / "m.json"),
    }
    assert _run(tmp_path, config, capsys)[0] == 0
    result = json.loads((tmp_path / "m.json").read_text())
    head = result["models"]["p"]["heads"]["nexus"]
    assert result["strands"] == "all" and head["num-regions"] == 6 and head["num-zero-observed"] == 1
    assert head["profile"]["jsd"]["n-undefined"] == 1
    # "forward" without coords_strand is an error
    config["strands"] = "forward"
    code, err = _run(tmp_path, config, capsys)
    assert code == 2 and "coords_strand" in err


@pytest.mark.parametrize("problem", ["shifted", "count", "unknown-key", "no-output", "missing"])
def test_metrics_bad_input_leaves_no_output(tmp_path, rng, capsys, problem):
    _dataset(tmp_path / "data.h5", rng)
    _predictions(tmp_path / "p.h5", rng, n=4 if problem == "count" else 6, shift=1 if problem == "shifted" else 0)
    config = {
        "predictions": {"combined": str(tmp_path / "p.h5")},
        "data": str(tmp_path / "data.h5"),
        "output-json": str(tmp_path / "m.json"),
        "output-tsv": str(tmp_path / "m.tsv"),
    }
    if problem == "unknown-key":
        config["outptu-json"] = "x.json"
    elif problem == "no-output":
        del config["output-json"], config["output-tsv"]
    elif problem == "missing":
        config["predictions"]["bias"] = str(tmp_path / "nope.h5")
    code, err = _run(tmp_path, config, capsys)
    assert code == 2
    lines = stderr_lines(err)
    assert len(lines) == 1 and lines[0].startswith("bpflow metrics: error:")
    if problem == "shifted":
        assert "sample 0" in err and "do not match" in err
    if problem == "count":
        assert "4 samples" in err
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "m.tsv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.h5", "metrics.json", "p.h5"]
