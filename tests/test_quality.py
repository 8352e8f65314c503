"""Bias factorization against a known answer (issue 7): the closed-form counts fit of the
transformation, the QC checks, and a tiny version of benchmarks/quality.py.

The tiny simulation: a k-mer "enzyme bias" everywhere (the rate rises at every TA), and in
the peaks 1-3 copies of a "TF motif" each adding a footprint; observed = Poisson(bias x (1 +
signal)).  Background windows have no motif.  The default recipe (profile transformation on
the peaks, counts shift on the background) must give a combined model whose validation counts
beat the bias branch alone, and a residual that responds less to the bias k-mer than to the
motif.
"""

import argparse
import json
import os
import sys

import numpy as np
import pytest

import bpflow  # noqa: F401  (registers custom objects)
from bpflow.cli import main as cli
from bpflow.evaluate import qc
from bpflow.formats.dataset import read_windows
from bpflow.layers import SimpleTransform
from bpflow.models import combinedModel, soloModel
from bpflow.report import figures as report
from bpflow.train import recipes, settings, steps
from bpflow.utils import BpflowError

import train_helpers as th

MOTIF = "GCCGGC"  # the "TF motif" (free of the bias k-mer)
BIAS_KMER = "TA"
RES_ARGS = (
    th.RESIDUAL_ARCH["filters"],
    th.RESIDUAL_ARCH["layers"],
    th.RESIDUAL_ARCH["input_filter_width"],
    th.RESIDUAL_ARCH["output_filter_width"],
)


# --------------------------------------------------------------------------- closed-form fits


def test_counts_offset_is_the_mean_difference():
    x = np.array([1.0, 2.0, 3.0, 0.5])
    y = np.array([2.0, 2.0, 5.0, 0.5])
    slope, offset = recipes.fit_counts_offset(x, y)
    assert slope == 1.0
    assert offset == pytest.approx(np.mean(np.log1p(np.expm1(y)) - x))  # (1 + 0 + 2 + 0) / 4
    assert offset == pytest.approx(0.75)


def test_counts_linear_recovers_a_line_and_falls_back_to_a_shift():
    x = np.linspace(-1, 3, 9)
    slope, offset = recipes.fit_counts_linear(x, 2.5 * x - 0.25)
    assert slope == pytest.approx(2.5) and offset == pytest.approx(-0.25)
    # noisy: the least-squares line, checked against numpy's polyfit
    rng = np.random.default_rng(0)
    y = 0.7 * x + 1.0 + rng.normal(0, 0.3, x.size)
    assert recipes.fit_counts_linear(x, y) == pytest.approx(tuple(np.polyfit(x, y, 1)))
    # predictions that do not vary: only the shift is identifiable
    assert recipes.fit_counts_linear(np.full(4, 2.0), [1.0, 2.0, 3.0, 4.0]) == pytest.approx((1.0, 0.5))
    with pytest.raises(BpflowError):
        recipes.fit_counts_offset([], [])


def test_set_linear_transform_makes_the_layer_exactly_linear():
    layer = SimpleTransform(["linear", "sigmoid"])
    x = np.array([[-2.0], [0.0], [3.0]], dtype=np.float32)
    layer(x)  # build
    for term in layer._terms:  # make the sigmoid term non-zero first
        if term[0] == "sigmoid":
            term[1].assign(2.0)
            term[4].assign(1.0)
    recipes.set_linear_transform(layer, 0.5, 1.25)
    np.testing.assert_allclose(np.asarray(layer(x)), 0.5 * x + 1.25, rtol=1e-6)
    with pytest.raises(BpflowError, match="linear"):
        recipes.set_linear_transform(SimpleTransform(["sigmoid"]), 1.0, 0.0)


def test_ridge_counts_matches_least_squares_with_and_without_bias_counts():
    """recipes.ridge_counts: without bias counts, numpy's least squares on the stacked ridge
    system; with them (log(exp(bias) + exp(x @ w))), scipy's least_squares on the same
    objective, and the noise-free weights when there is no noise and no ridge."""
    from scipy.optimize import least_squares

    rng = np.random.default_rng(0)
    n, k = 400, 5
    x = np.concatenate([rng.normal(size=(n, k)) * [1, 2, 0.5, 1, 3], np.ones((n, 1))], axis=1)
    w_true = np.array([0.3, -0.2, 0.5, 0.0, 0.1, 3.0])
    added = rng.normal(2.0, 0.7, size=n)
    noise = rng.normal(0, 0.2, size=n)
    # linear
    y = x @ w_true + noise
    ridge = 0.1
    scale = n * np.mean(np.var(x[:, :-1], axis=0))
    stacked = np.concatenate([x, np.sqrt(ridge * scale) * np.eye(k + 1)[:-1]])
    reference = np.linalg.lstsq(stacked, np.concatenate([y, np.zeros(k)]), rcond=None)[0]
    np.testing.assert_allclose(recipes.ridge_counts(x, y, None, ridge), reference, rtol=1e-8, atol=1e-10)
    # with bias counts: noise-free recovery, then the penalised objective against scipy
    y = np.logaddexp(added, x @ w_true)
    np.testing.assert_allclose(recipes.ridge_counts(x, y, added, 0.0), w_true, atol=1e-6)
    y = y + noise
    penalty = np.sqrt(ridge * scale)

    def residuals(w):
        return np.concatenate([y - np.logaddexp(added, x @ w), penalty * w[:-1]])

    reference = least_squares(residuals, np.zeros(k + 1), xtol=1e-12, ftol=1e-12, gtol=1e-12).x
    np.testing.assert_allclose(recipes.ridge_counts(x, y, added, ridge), reference, atol=1e-5)


def test_read_windows_center_crops_and_sums(tmp_path):
    seq = np.zeros((2, 10, 4), np.uint8)
    seq[:, :, 0] = 1
    seq[1, 5, :] = [0, 0, 0, 1]
    prof = np.arange(2 * 8 * 2, dtype=np.float32).reshape(2, 8, 2)
    path = th.write_h5(tmp_path / "d.h5", seq, [prof])
    s, t = read_windows(path, 6, 4, 1)
    assert s.shape == (2, 6, 4) and s[1, 3, 3] == 1  # position 5 of 10 is 3 of the central 6
    assert t[:, 0] == pytest.approx(prof[:, 2:6, :].sum(axis=(1, 2)))
    with pytest.raises(BpflowError, match="center-crop"):
        read_windows(path, 7, 4, 1)


# --------------------------------------------------------------------------- tiny simulation


def simulate(n: int, seq_width: int, prof_width: int, peaks: bool, seed: int):
    """(one-hot (n, seq_width, 4), counts (n, prof_width, 1)); windows centered alike."""
    rng = np.random.default_rng(seed)
    master = 160
    bases = rng.integers(0, 4, size=(n, master))
    center = master // 2
    signal = np.zeros((n, master))
    pos = np.arange(master)
    if peaks:
        motif = np.array(["ACGT".index(c) for c in MOTIF])
        copies = rng.integers(1, 4, size=n)
        for i in range(n):
            for c in range(copies[i]):
                at = center - 9 + 7 * c + rng.integers(-1, 2)
                bases[i, at : at + len(motif)] = motif
                signal[i] += 10.0 * np.exp(-0.5 * ((pos - at - 3) / 2.0) ** 2)
    kmer = np.array(["ACGT".index(c) for c in BIAS_KMER])
    is_kmer = np.all([bases[:, k : master - len(kmer) + 1 + k] == kmer[k] for k in range(len(kmer))], axis=0)
    bias = 0.1 + 2.5 * np.pad(is_kmer, ((0, 0), (0, len(kmer) - 1))).astype(float)
    counts = rng.poisson(bias * (1.0 + signal))[:, :, None].astype(np.float32)
    s0, p0 = (master - seq_width) // 2, (master - prof_width) // 2
    return th.one_hot(bases[:, s0 : s0 + seq_width]), counts[:, p0 : p0 + prof_width]


def write(path, n, input_length, peaks, seed, jitter=th.JITTER):
    seq, prof = simulate(n, input_length + 2 * jitter, th.OUTPUT_LENGTH + 2 * jitter, peaks, seed)
    return str(th.write_h5(path, seq, [prof]))


def head(**kw):
    return th.head(tasks=1, **{"counts-loss-weight": 10.0, **kw})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Bias model on background, the default transformation recipe, the combined model, with
    the workflow's default counts schedules."""
    tmp = tmp_path_factory.mktemp("quality")
    b_in, r_in = th.needed(th.BIAS_ARCH), th.needed(th.RESIDUAL_ARCH)
    f = {
        "bg_bias_train": write(tmp / "bg_bias_train.h5", 768, b_in, False, 1),
        "bg_bias_val": write(tmp / "bg_bias_val.h5", 96, b_in, False, 2),
        "pk_bias_train": write(tmp / "pk_bias_train.h5", 384, b_in, True, 3),
        "pk_bias_val": write(tmp / "pk_bias_val.h5", 96, b_in, True, 4),
        "pk_train": write(tmp / "pk_train.h5", 384, r_in, True, 3),
        "pk_val": write(tmp / "pk_val.h5", 96, r_in, True, 4),
        "bg_val": write(tmp / "bg_val.h5", 96, r_in, False, 2),
    }
    # the workflow's defaults: counts-schedule profile-first for bias (counts layers only in
    # the counts phase) and combined (every weight)
    solo = th.solo_config(
        tmp,
        f["bg_bias_train"],
        f["bg_bias_val"],
        heads=[head()],
        **{
            "epochs": 30,
            "learning-rate": 0.02,
            "batch-size": 32,
            "seed": 3,
            "early-stopping-patience": 30,
            "counts-schedule": "profile-first",
            "counts-phase-trainable": "counts-layers",
        },
    )
    steps.train_bias(solo)
    tr = th.transformation_config(
        tmp,
        f["pk_bias_train"],
        f["pk_bias_val"],
        tmp / "bias.keras",
        heads=[head()],
        **{"epochs": 4, "batch-size": 32, "seed": 3},
    )
    tr["settings"]["profile-architecture"] = {"name": "simple", "types": ["linear", "sigmoid"]}
    tr["counts-train-data"], tr["counts-val-data"] = f["bg_bias_train"], f["bg_bias_val"]
    tr_record = steps.train_transformation(tr)
    comb = th.combined_config(
        tmp,
        f["pk_train"],
        f["pk_val"],
        tmp / "transformation.keras",
        heads=[head(**{"use-bias-counts": True})],
        **{"epochs": 16, "learning-rate": 0.01, "batch-size": 32, "seed": 3, "counts-schedule": "profile-first"},
    )
    comb_record = steps.train_combined(comb)
    qc_config = {
        "combined-model-file": str(tmp / "combined_combined.keras"),
        "residual-model-file": str(tmp / "combined_residual.keras"),
        "bias-model-file": str(tmp / "transformation.keras"),
        "heads": [{"head-name": "h0"}],
        "data": f["pk_val"],
        "motifs": {"tf": MOTIF},
        "bias-motifs": {"bias-kmer": "TATATA"},
        "background-data": f["bg_val"],
        "num-sequences": 48,
        "seed": 3,
        "output-json": str(tmp / "combined.qc.json"),
    }
    (tmp / "qc.json").write_text(json.dumps(qc_config))
    assert cli(["qc-combined", str(tmp / "qc.json")]) == 0
    return {"tmp": tmp, "files": f, "transformation": tr_record, "combined": comb_record, "configs": (tr, comb)}


def test_default_recipe_counts_fit_is_the_background_shift(tiny):
    """The saved transformation's counts part is exactly the closed-form shift on the background."""
    import keras

    fit = tiny["transformation"]["counts-fit"]
    assert fit["method"] == "shift" and fit["train-samples"] == 768
    h = fit["heads"]["h0"]
    model = keras.saving.load_model(tiny["tmp"] / "transformation.keras", compile=False)
    solo = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    seq, tot = read_windows(tiny["files"]["bg_bias_train"], th.needed(th.BIAS_ARCH), th.OUTPUT_LENGTH, 1)
    pred = qc.predict_logcounts(solo, seq)
    assert h["slope"] == 1.0
    assert h["offset"] == pytest.approx(np.mean(np.log1p(tot[:, 0]) - pred[0]), abs=1e-4)
    transformed = qc.predict_logcounts(model, seq)
    np.testing.assert_allclose(transformed[0], pred[0] + h["offset"], atol=1e-4)
    assert h["train-mse-after"] <= h["train-mse-before"] + 1e-9
    # the profile part was trained on the peaks with the counts loss switched off
    hist = tiny["transformation"]["history"]
    assert hist["h0_counts_weight"] == [0.0] * len(hist["epoch"])
    assert (
        hist["val_h0_profile"][tiny["transformation"]["best-epoch"] - 1]
        < tiny["transformation"]["initial"]["val_h0_profile"]
    )


def test_default_recipe_counts_beat_the_bias_branch(tiny):
    report = json.loads((tiny["tmp"] / "combined.qc.json").read_text())
    c = report["counts"]["heads"]["h0"]
    assert report["counts"]["num-windows"] == 96
    assert c["pearson-combined"] > c["pearson-bias"] + 0.1, c
    assert c["residual-share"] > 0.2, c  # the residual carries the signal's reads
    assert not any("collapsed" in w for w in report["warnings"])
    status = {x["check"]: x["status"] for x in c["checks"]}
    assert status["residual share of the predicted counts (validation peaks, median)"] == "ok"
    assert status["counts Pearson, combined vs bias branch alone"] == "ok"
    # the counts phase started from the residual counts layer fitted with the bias's counts
    # added (log(exp(bias) + exp(residual))), which lowered the validation counts MSE
    fit = tiny["combined"]["counts-fit"]["heads"]["h0"]
    assert fit["bias-counts"] is True and fit["val-mse-after"] < fit["val-mse-before"], fit


def test_residual_ignores_the_bias_kmer(tiny):
    report = json.loads((tiny["tmp"] / "combined.qc.json").read_text())
    m = report["motifs"]["heads"]["h0"]
    assert report["motifs"]["num-sequences"] == 48
    assert m["residual-bias-response"] < 0.5 * m["residual-tf-response"], m
    # and the bias branch responds to the bias k-mer more than the residual does
    assert m["bias-bias-response"] > m["residual-bias-response"], m
    # ratio 0.5 at most, against the default threshold 0.1: the check's status follows the ratio
    (check,) = [x for x in m["checks"] if x["check"].startswith("residual's bias-motif")]
    assert check["threshold"] == "<= 0.1"
    assert check["status"] == ("WARNING" if m["residual-bias-tf-ratio"] > 0.1 else "ok")


def test_qc_flags_a_collapsed_residual_counts_head(tiny):
    """A bias branch whose counts sit far above the data (what a counts transformation
    fitted to peak depth does, exaggerated) leaves the residual no share: flagged."""
    import keras

    tmp = tiny["tmp"]
    model = keras.saving.load_model(tmp / "transformation.keras", compile=False)
    recipes.set_linear_transform(model.get_layer("transformation_logcounts_h0"), 1.0, 12.0)
    combined, residual, bias = combinedModel(
        th.needed(th.RESIDUAL_ARCH), th.OUTPUT_LENGTH, *RES_ARGS, [{"head-name": "h0", "num-tasks": 1}], model
    )
    out = qc.counts_qc(combined, residual, bias, [tiny["files"]["pk_val"]], ["h0"], [True])
    h = out["heads"]["h0"]
    assert h["residual-share"] < 1e-3
    assert any("collapsed residual counts head" in w for w in h["warnings"])
    assert any("collapsed" in w for w in qc.all_warnings({"counts": out}))
    # every check is recorded with its value and threshold; one warning per failed check
    assert [c["check"].split(",")[0] for c in h["checks"]] == [
        "residual share of the predicted counts (validation peaks",
        "counts Pearson",
        "counts Pearson",
    ]
    assert h["checks"][0] | {"check": None} == {
        "check": None,
        "value": f"{h['residual-share']:.3g}",
        "threshold": ">= 0.1",
        "status": "WARNING",
    }
    assert sum(c["status"] == "WARNING" for c in h["checks"]) == len(h["warnings"])
    # the report's table shows exactly these checks
    rows = report.qc_rows({"counts": out})
    assert rows == [["h0", c["check"], c["value"], c["threshold"], c["status"]] for c in h["checks"]]
    # without the bias counts the combined counts are the residual's: only the bias-branch check applies
    out = qc.counts_qc(combined, residual, bias, [tiny["files"]["pk_val"]], ["h0"], [False])
    h = out["heads"]["h0"]
    assert h["residual-share"] == 1.0
    assert [c["check"] for c in h["checks"]] == ["counts Pearson, combined vs bias branch alone"]
    assert not any("collapsed" in w for w in h["warnings"])


def test_bias_model_beats_a_kmer_table_and_an_untrained_one_does_not(tiny, tmp_path):
    """qc-bias: the trained bias model removes more of a flat profile's loss on held-out
    background than a 7-mer table of cut rates fitted on the training background; an
    untrained bias model removes less, and the check warns."""
    f = tiny["files"]
    untrained = soloModel(
        th.needed(th.BIAS_ARCH),
        th.OUTPUT_LENGTH,
        th.BIAS_ARCH["filters"],
        th.BIAS_ARCH["layers"],
        th.BIAS_ARCH["input_filter_width"],
        th.BIAS_ARCH["output_filter_width"],
        [{"head-name": "h0", "num-tasks": 1}],
        "solo",
    )
    untrained.save(tmp_path / "untrained.keras")
    reports = {}
    for name, model in (("trained", tiny["tmp"] / "bias.keras"), ("untrained", tmp_path / "untrained.keras")):
        config = {
            "bias-model-file": str(model),
            "heads": [{"head-name": "h0"}],
            "train-data": f["bg_bias_train"],
            "val-data": f["bg_bias_val"],
            "histories": {"bias": str(tiny["tmp"] / "bias.history.json")},
            "output-json": str(tmp_path / f"{name}.json"),
        }
        (tmp_path / f"{name}-config.json").write_text(json.dumps(config))
        assert cli(["qc-bias", str(tmp_path / f"{name}-config.json")]) == 0
        reports[name] = json.loads((tmp_path / f"{name}.json").read_text())
    trained, untrained = (reports[k]["bias"]["heads"]["h0"] for k in ("trained", "untrained"))
    assert trained["nll"]["kmer"] < trained["nll"]["flat"]  # the table learns the bias k-mer
    assert trained["gain-model"] > trained["gain-kmer"] > 0, trained
    assert untrained["gain-model"] < untrained["gain-kmer"] and untrained["nll"]["kmer"] == trained["nll"]["kmer"]
    assert not any("k-mer table" in w for w in reports["trained"]["warnings"])
    assert any("than a 7-mer table of cut rates" in w for w in reports["untrained"]["warnings"])
    # the epoch-limit check read the bias model's history
    (stage,) = reports["trained"]["training"]["stages"]
    assert stage == "bias" and reports["trained"]["training"]["stages"]["bias"]["checks"]


def test_counts_data_keys_are_checked(tiny, tmp_path):
    tr, _ = tiny["configs"]
    bad = json.loads(json.dumps(tr))
    del bad["counts-val-data"]
    with pytest.raises(BpflowError, match="go together"):
        settings.check_config(bad, "transformation")
    bad = json.loads(json.dumps(tr))
    bad["settings"]["counts-architecture"] = {"name": "passthrough"}
    with pytest.raises(BpflowError, match="linear term"):
        settings.check_config(bad, "transformation")
    bad = json.loads(json.dumps(tr))
    bad["settings"]["counts-fit"] = "median"
    with pytest.raises(BpflowError, match="counts-fit"):
        settings.check_config(bad, "transformation")
    bad = json.loads(json.dumps(tr))
    del bad["counts-train-data"], bad["counts-val-data"]
    bad["settings"]["counts-fit"] = "shift"
    with pytest.raises(BpflowError, match="only used with counts-train-data"):
        settings.check_config(bad, "transformation")


def test_residual_counts_start_at_the_mean_training_total(tiny):
    """center_counts on a residual with bias counts: its mean predicted reads become
    mean(1 + total) - mean bias reads, so the untrained combined model predicts the mean total;
    without bias counts its mean log counts become mean(log(1 + total))."""
    import keras

    model = keras.saving.load_model(tiny["tmp"] / "transformation.keras", compile=False)
    combined, residual, bias = combinedModel(
        th.needed(th.RESIDUAL_ARCH), th.OUTPUT_LENGTH, *RES_ARGS, [{"head-name": "h0", "num-tasks": 1}], model
    )
    heads = [settings.HeadSpec("h0", 1, 1.0, 10.0, None, use_bias_counts=True)]
    seq, tot = read_windows(tiny["files"]["pk_train"], th.needed(th.RESIDUAL_ARCH), th.OUTPUT_LENGTH, 1)
    b = qc.predict_logcounts(bias, seq)[0].astype(np.float64)
    out = recipes.center_counts(residual, heads, [tiny["files"]["pk_train"]], bias=bias)
    expected = np.log(np.mean(1 + tot[:, 0]) - np.mean(np.exp(b)))
    assert out["h0"] == pytest.approx(expected, rel=1e-5)
    r = qc.predict_logcounts(residual, seq)[0].astype(np.float64)
    assert np.log(np.mean(np.exp(r))) == pytest.approx(expected, abs=1e-4)
    c = qc.predict_logcounts(combined, seq)[0].astype(np.float64)
    assert np.mean(np.exp(c)) == pytest.approx(np.mean(1 + tot[:, 0]), rel=1e-4)  # the combined total
    # without bias counts the residual alone starts at the mean log(1 + total)
    heads[0].use_bias_counts = False
    out = recipes.center_counts(residual, heads, [tiny["files"]["pk_train"]], bias=bias)
    assert out["h0"] == pytest.approx(np.mean(np.log1p(tot[:, 0])), rel=1e-6)
    assert np.mean(qc.predict_logcounts(residual, seq)[0]) == pytest.approx(out["h0"], abs=1e-4)
    # the fixture's combined run (profile-first) fits its counts layers by least squares after the
    # profile phase instead: no start at the mean is recorded
    assert "residual-counts-init" not in tiny["combined"] and "h0" in tiny["combined"]["counts-fit"]["heads"]


def test_product_counts_start_at_the_mean_and_fit_by_least_squares(tiny):
    """A residual head with counts-combination "product": center_counts makes the untrained
    combined model's mean log counts the mean of log(1 + total); fit_counts_layers then gives
    the combined model the least-squares counts of its frozen features (the offset of each
    window - bias counts plus the profiles' overlap - is known, so the fit is linear), which no
    other weights beat, and it records MSEs that the combined model reproduces."""
    import keras

    model = keras.saving.load_model(tiny["tmp"] / "transformation.keras", compile=False)
    spec = {"head-name": "h0", "num-tasks": 1, "counts-combination": "product"}
    length = th.needed(th.RESIDUAL_ARCH)
    combined, residual, bias = combinedModel(length, th.OUTPUT_LENGTH, *RES_ARGS, [spec], model)
    heads = [settings.HeadSpec("h0", 1, 1.0, 10.0, None, use_bias_counts=True, counts_combination="product")]
    train, val = tiny["files"]["pk_train"], tiny["files"]["pk_val"]
    seq, tot = read_windows(train, length, th.OUTPUT_LENGTH, 1)
    y = np.log1p(tot[:, 0].astype(np.float64))
    out = recipes.center_counts(residual, heads, [train], bias=bias)
    c = qc.predict_logcounts(combined, seq)[0].astype(np.float64)
    assert np.mean(c) == pytest.approx(np.mean(y), abs=1e-4)
    assert out["h0"] == pytest.approx(np.mean(y - c + qc.predict_logcounts(residual, seq)[0]), abs=1e-4)
    fit = recipes.fit_counts_layers(residual, heads, [train], [val], bias=bias)["heads"]["h0"]
    assert fit["bias-counts"] == "product"
    c = qc.predict_logcounts(combined, seq)[0].astype(np.float64)
    assert np.mean((c - y) ** 2) == pytest.approx(fit["train-mse-after"], rel=1e-4)
    assert fit["train-mse-after"] < fit["train-mse-before"]
    # the least-squares optimum: the normal equations (with the chosen ridge) hold at the fitted weights
    dense = residual.get_layer("residual_logcounts_h0")
    features = keras.Model(residual.inputs, dense.input).predict(seq, verbose=0).astype(np.float64)
    x = np.concatenate([features, np.ones((len(features), 1))], axis=1)
    scale = len(x) * np.mean(np.var(x[:, :-1], axis=0))
    w = np.concatenate([np.asarray(dense.kernel)[:, 0], np.asarray(dense.bias)]).astype(np.float64)
    gradient = x.T @ (c - y) + fit["ridge"] * scale * np.append(w[:-1], 0.0)
    assert np.abs(gradient).max() < 1e-3 * len(x)


# --------------------------------------------------------------------------- the benchmark suite


def _quality_harness(name="quality"):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quality_suite_settings_and_targets(tmp_path):
    """benchmarks/quality.py: each setting changes what it says and nothing else; the BED
    background stays 2 kb clear of every site; the JSD target is relative to bpreveal's."""
    q = _quality_harness()
    ns = argparse.Namespace(
        **{
            **{"preset": "benchmark", "scale": 0.5, "seed": 0, "recipes": ["bpflow", "bpreveal"]},
            **{"background_ratio": 3.0, "output_length": 200, "max_jitter": 64, "counts_frac": 0.1},
            **{"bias_filters": 16, "bias_layers": 3, "residual_filters": 32, "residual_layers": 7},
            **{"bias_epochs": 20, "transformation_epochs": 10, "combined_epochs": 60},
            **{"combined_patience": 10, "combined_plateau_patience": 5, "counts_schedule": None},
            **{"combined_counts_phase_lr": None, "cores": 1},
        }
    )
    base = q.workflow_config(ns, "base")
    for setting in q.SETTINGS:
        cfg = q.workflow_config(ns, setting, "bg.bed")
        for recipe in ("bpflow", "bpreveal"):
            a, b = base["experiments"][recipe], cfg["experiments"][recipe]
            changed = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
            expected = ({"simulate"} if setting != "base" else set()) | (
                {"bias-source", "background-bed", "regions"} if setting == "bed-background" else set()
            )
            expected |= {"regions"} if setting == "few-background" else set()
            assert changed == expected, (setting, changed)
            sim_changed = {
                k for k in b["simulate"]["options"] if b["simulate"]["options"][k] != a["simulate"]["options"].get(k)
            }
            assert sim_changed == set(q.SETTINGS[setting].get("sim", {})) | (
                {"motifs"} if "motifs" in q.SETTINGS[setting] else set()
            )
    # other-motifs: the preset's site counts, and a config `bpflow simulate` accepts
    from bpflow import simulate

    options = q.workflow_config(ns, "other-motifs")["experiments"]["bpflow"]["simulate"]["options"]
    base_options = base["experiments"]["bpflow"]["simulate"]["options"]
    assert [m["num-sites"] for m in options["motifs"]] == [m["num-sites"] for m in base_options["motifs"]]
    resolved = simulate.resolve_config({"output-dir": str(tmp_path), "preset": "benchmark", **options})
    assert [m["native-hits-min-z"] for m in resolved["motifs"]] == [-1.0, -1.0, None]
    # the BED setting's first run (the simulation only, before the BED exists) is a valid config
    # naming the same simulation
    first = q.workflow_config(ns, "bed-background")
    bed_cfg = q.workflow_config(ns, "bed-background", "bg.bed")
    for recipe in ("bpflow", "bpreveal"):
        assert "background-bed" not in first["experiments"][recipe]
        assert first["experiments"][recipe]["simulate"] == bed_cfg["experiments"][recipe]["simulate"]
    assert base["experiments"]["bpreveal"]["training"]["combined"]["counts-schedule"] == "joint"
    # BPReveal trains at the full rate from the first step; bpflow's default warms up
    assert base["experiments"]["bpreveal"]["training"]["combined"]["extra"]["learning-rate-warmup-epochs"] == 0
    assert "extra" not in base["experiments"]["bpflow"]["training"]["combined"]
    # BPReveal's documented learning rate; bpflow's recipe takes the workflow's default
    assert base["experiments"]["bpreveal"]["training"]["combined"]["learning-rate"] == 0.004
    assert "learning-rate" not in base["experiments"]["bpflow"]["training"]["combined"]
    # the BED of background windows
    sim_dir = tmp_path / "sim"
    sim_dir.mkdir()
    (sim_dir / "truth.json").write_text(json.dumps({"chromosomes": {"chr1": 200_000, "chr2": 150_000}}))
    sites = [("chr1", 50_000), ("chr1", 120_000), ("chr2", 70_000)]
    (sim_dir / "sites.bed").write_text("".join(f"{c}\t{s}\t{s + 10}\tm\n" for c, s in sites))
    bed = q.write_background_bed(sim_dir, tmp_path / "bg.bed", 200, 3.0, seed=1)
    rows = [line.split("\t") for line in bed.read_text().splitlines()]
    assert sum(r[0] == "chr1" for r in rows) == 6 and sum(r[0] == "chr2" for r in rows) == 3
    for chrom, start, stop in rows:
        assert int(stop) - int(start) == 200
        assert all(abs(int(start) - s) > 2200 for c, s in sites if c == chrom)
    # targets: the JSD target compares with the bpreveal recipe of the same setting
    results = [
        {
            "recipe": "bpflow",
            "counts-ratio": 0.95,
            "residual-jsd": 0.09,
            "footprint-ratio": 0.005,
            # a weak bias: the k-mer table gains nothing on held-out windows (its ratio is
            # undefined); the model's gain is larger, so the target holds
            "bias-gain": 2.35,
            "kmer-gain": -0.24,
            "qc-warnings": [],
        },
        {
            "recipe": "bpreveal",
            "counts-ratio": 0.7,
            "residual-jsd": 0.08,
            "footprint-ratio": 0.02,
            "bias-gain": 0.9,
            "kmer-gain": 1.0,
            "qc-warnings": ["combined: ended at the epoch limit while still improving"],
        },
    ]
    q.targets_met(results)
    assert results[0]["targets-met"] == {
        "counts": True,
        "residual-jsd": False,
        "footprint-ratio": True,
        "bias-vs-kmer": True,
        "converged": True,
    }
    assert results[1]["targets-met"] == {
        "counts": False,
        "residual-jsd": True,
        "footprint-ratio": False,
        "bias-vs-kmer": False,
        "converged": False,
    }


def _positions(one_hot: np.ndarray, kmer: str) -> np.ndarray:
    """(N, L) mask of the bases covered by occurrences of ``kmer`` (forward strand)."""
    codes = one_hot.argmax(-1)
    k = np.array(["ACGT".index(c) for c in kmer])
    length = codes.shape[1] - len(k) + 1
    hits = np.all([codes[:, i : i + length] == k[i] for i in range(len(k))], axis=0)
    mask = np.zeros(codes.shape, bool)
    for i in range(len(k)):
        mask[:, i : i + length] |= hits
    return mask


@pytest.mark.parametrize("target", ["profile", "counts"])
def test_residual_contributions_sit_on_the_motif_not_on_the_bias_kmer(tiny, target):
    """Issue 14's known answer on a trained residual: its DeepSHAP scores are several-fold
    larger at the planted motif's bases than elsewhere, and not larger at the bias k-mer's."""
    import keras

    from bpflow.interpret.deepshap import deepshap
    from bpflow.interpret.shuffle import references_for

    model = keras.saving.load_model(tiny["tmp"] / "combined_residual.keras", compile=False)
    seq, _ = read_windows(tiny["files"]["pk_val"], th.needed(th.RESIDUAL_ARCH), th.OUTPUT_LENGTH, 1)
    seq = seq.astype(np.float32)
    result = deepshap(model, seq, references_for(seq, 10, seed=0), target)
    score = np.abs((result.hypothetical * seq).sum(-1))
    motif, kmer = _positions(seq, MOTIF), _positions(seq, BIAS_KMER)
    other = ~motif & ~kmer
    assert motif.sum() >= 100 and kmer.sum() >= 100  # the comparison has data
    at_motif, at_kmer, elsewhere = score[motif].mean(), score[kmer].mean(), score[other].mean()
    assert at_motif > 3.0 * elsewhere, (at_motif, elsewhere)
    assert at_kmer < 1.5 * elsewhere, (at_kmer, elsewhere)
    # and the bias model, on the same windows, scores the bias k-mer above the rest
    bias = keras.saving.load_model(tiny["tmp"] / "bias.keras", compile=False)
    trim = (seq.shape[1] - th.needed(th.BIAS_ARCH)) // 2
    bias_seq = seq[:, trim : seq.shape[1] - trim]
    bias_result = deepshap(bias, bias_seq, references_for(bias_seq, 10, seed=0), target)
    bias_score = np.abs((bias_result.hypothetical * bias_seq).sum(-1))
    on, off = _positions(bias_seq, BIAS_KMER), ~_positions(bias_seq, BIAS_KMER)
    assert bias_score[on].mean() > 3.0 * bias_score[off].mean(), (bias_score[on].mean(), bias_score[off].mean())


def test_epoch_limit_check_uses_the_last_improvement_by_more_than_min_delta(tmp_path):
    """A phase that ran out of epochs warns when its last epoch lowered the loss by more than
    min-delta; a best epoch last that only crept down does not; records without the key fall
    back to the best epoch; an early stop never warns; a cosine phase's warning says its
    settling tail may not want more epochs instead of "give it more epochs"."""

    def history(name, **phase):
        rec = {"epochs-run": 30, "best-epoch": 30, "stop-reason": "finished all 30 epochs", **phase}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({**rec, "phases": [dict(rec, phase="profile")]}))
        return str(path)

    paths = {
        "gaining": history("gaining", **{"last-significant-epoch": 30}),
        "creeping": history("creeping", **{"last-significant-epoch": 24}),
        "old-record": history("old-record"),
        "early": history("early", **{"stop-reason": "early stopping: ...", "last-significant-epoch": 30}),
        "cosine": history("cosine", **{"last-significant-epoch": 30, "schedule": "cosine"}),
    }
    stages = qc.training_qc(paths)["stages"]
    warned = {stage: bool(entry["warnings"]) for stage, entry in stages.items()}
    assert warned == {"gaining": True, "creeping": False, "old-record": True, "early": False, "cosine": True}
    assert stages["gaining"]["warnings"][0].startswith("gaining, profile phase: training ended at its epoch limit")
    assert stages["gaining"]["warnings"][0].endswith("give it more epochs")
    # a phase on a cosine (rate near 0 at its end) is still flagged, with advice of its own
    (cosine,) = stages["cosine"]["warnings"]
    assert "on its cosine" in cosine and "give it more epochs" not in cosine
    assert "last improvement by more than min-delta: epoch 24" in stages["creeping"]["checks"][0]["value"]
    # a counts phase's advice names its own key (a larger epochs may not lengthen it)
    path = tmp_path / "counts.json"
    counts = {"phase": "counts", "epochs-run": 15, "best-epoch": 15, "last-significant-epoch": 15}
    counts["stop-reason"] = "finished all 15 epochs"
    path.write_text(json.dumps({"epochs-run": 40, "phases": [counts]}))
    (warning,) = qc.training_qc({"c": str(path)})["stages"]["c"]["warnings"]
    assert warning.startswith("c, counts phase: training ended at its epoch limit (15 epochs)")
    assert warning.endswith(
        "give it more epochs (settings/counts-phase-epochs; its default is a quarter of epochs, at most 15)"
    )


def test_a_short_combined_counts_phase_is_flagged_whatever_its_curve(tmp_path):
    """The combined stage's counts phase trained by epochs warns when it was allowed fewer than
    MIN_COUNTS_PHASE_EPOCHS (8), even when it settled before its end; a closed-form phase (0
    epochs), the bias stage's counts phase and the profile phase are not checked for it."""

    def history(name, allowed, step="train-combined"):
        counts = {
            "phase": "counts",
            "epochs-allowed": allowed,
            "epochs-run": allowed,
            "best-epoch": 1,
            "last-significant-epoch": 1,
            "stop-reason": f"finished all {allowed} epochs",
        }
        profile = {"phase": "profile", "epochs-allowed": 4, "epochs-run": 4, "best-epoch": 2,
                   "last-significant-epoch": 2, "stop-reason": "early stopping: ..."}  # fmt: skip
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"step": step, "epochs-run": 4 + allowed, "phases": [profile, counts]}))
        return str(path)

    paths = {"c7": history("c7", 7), "c8": history("c8", 8), "closed": history("closed", 0)}
    paths["bias"] = history("bias", 3, step="train-bias")
    stages = qc.training_qc(paths)["stages"]
    (warning,) = stages["c7"]["warnings"]
    assert warning.startswith("c7, counts phase: only 7 epochs allowed, fewer than the 8")
    assert warning.endswith("(counts-phase-epochs >= 8, or epochs >= 32 with its default of a quarter)")
    check = stages["c7"]["checks"][-1]
    assert check == {
        "check": "c7, counts phase: epochs",
        "value": "7 allowed",
        "threshold": ">= 8",
        "status": "WARNING",
    }
    assert stages["c8"]["warnings"] == [] and stages["c8"]["checks"][-1]["status"] == "ok"
    assert stages["closed"]["warnings"] == stages["bias"]["warnings"] == []
    assert len(stages["closed"]["checks"]) == len(stages["bias"]["checks"]) == 2  # the epoch-limit checks only


def test_early_stopping_replay_agrees_with_training_state():
    """benchmarks/early_stopping_replay.py: a history recorded with min-delta 0 replayed under
    min-delta d stops where a TrainingState with d stops, keeps the same best epoch, and its
    last significant epoch is the state's; lambdas change every epoch (frac target)."""
    from bpflow.train.loop import TrainingState
    from bpflow.train.settings import HeadSpec

    replay = _quality_harness("early_stopping_replay")
    rng = np.random.default_rng(3)
    epochs = 40
    # a loss that falls fast, then creeps down with noise; counts terms that wander
    profile = 1000 + 400 * np.exp(-np.arange(epochs) / 3) - 0.05 * np.arange(epochs) + rng.normal(0, 0.3, epochs)
    counts = 0.5 + 0.3 * np.exp(-np.arange(epochs) / 5) + rng.normal(0, 0.01, epochs)
    head = HeadSpec("h", 2, profile_weight=2.0, counts_weight=None, frac_target=0.1)

    def run(min_delta, patience=4):
        st = TrainingState(
            [head], [50.0], 0.01, epochs, early_stopping_patience=patience, plateau_patience=3, min_delta=min_delta
        )
        for e in range(epochs):
            terms = {"h_profile": float(profile[e]), "h_counts": float(counts[e])}
            st.end_epoch(e, terms, terms, seconds=1.0)
            if st.stopped and st.epochs_done < epochs:
                break
        return st

    recorded = run(0.0, patience=epochs)  # every epoch recorded (patience changes no epoch's losses)
    assert recorded.epochs_done == epochs
    for delta in (0.0, 1e-4, 1e-3):
        st = run(delta)
        got = replay.replay(recorded.history, [head], 4, delta)
        assert (got["stop"], got["best"], got["significant"]) == (
            st.epochs_done,
            st.best_epoch,
            st.significant_epoch,
        ), delta
        assert got["early"] == st.stop_reason.startswith("early")
    assert replay.replay(recorded.history, [head], 4, 1e-3)["stop"] < epochs  # the creeping tail is cut
    # a hand-computed case (lambda 0): 99 < 100 x (1 - 1e-3) is significant; 98.995, 98.99 are new
    # bests but not below 99 x 0.999 = 98.901, so patience 2 stops at epoch 4 keeping epoch 4
    flat = {"val_loss": [100.0, 99.0, 98.995, 98.99], "val_h_profile": [100.0, 99.0, 98.995, 98.99]}
    flat.update({"val_h_counts": [0.0] * 4, "h_counts_weight": [0.0] * 4})
    one = HeadSpec("h", 2, profile_weight=1.0, counts_weight=None, frac_target=None)
    assert replay.replay(flat, [one], 2, 1e-3) == {"stop": 4, "best": 4, "significant": 2, "early": True}
    assert replay.replay(flat, [one], 2, 0.0) == {"stop": 4, "best": 4, "significant": 4, "early": False}
    assert replay.given_up(flat, [one], 2, 4) == pytest.approx(0.01)


def _default_combined_config() -> dict:
    return {
        "heads": [{"head-name": "nexus", "num-tasks": 2}],
        "train-data": "results/bpflow/data/peaks_train.h5",
        "val-data": "results/bpflow/data/peaks_val.h5",
        "settings": {
            "seed": 0,
            "epochs": 60,
            "output-prefix": "results/bpflow/models/combined",
            "combined-model-file": "results/bpflow/models/combined.keras",
            "residual-model-file": "results/bpflow/models/residual.keras",
            "transformation-model": {"transformation-model-file": "results/bpflow/models/transformation.keras"},
        },
    }


def test_combined_variants_change_the_settings_and_the_outputs_only(tmp_path):
    """benchmarks/combined_variants.py: a variant's train-combined config is the default's with
    the patch merged into its settings and every output under results/NAME (the default's
    config is left as it was); a prediction older than its model is redone."""
    combined_variants = _quality_harness("combined_variants")
    default = _default_combined_config()
    before = json.loads(json.dumps(default))
    out = combined_variants.variant_config(default, "seed1", {"seed": 1, "counts-phase-epochs": 30})
    assert default == before
    changed = {k for k in out["settings"] if out["settings"][k] != default["settings"].get(k)}
    assert changed == {"seed", "counts-phase-epochs", "output-prefix", "combined-model-file", "residual-model-file"}
    assert out["settings"]["seed"] == 1 and out["settings"]["counts-phase-epochs"] == 30
    assert all(
        out["settings"][k].startswith("results/seed1/models/") for k in changed - {"seed", "counts-phase-epochs"}
    )
    assert {k: v for k, v in out.items() if k != "settings"} == {k: v for k, v in default.items() if k != "settings"}
    # "heads" goes into every head, not into the settings
    two_heads = dict(default, heads=[{"head-name": "a", "num-tasks": 2}, {"head-name": "b", "num-tasks": 1}])
    out = combined_variants.variant_config(two_heads, "frac", {"heads": {"counts-loss-frac-target": 0.3}})
    assert out["heads"] == [
        {"head-name": "a", "num-tasks": 2, "counts-loss-frac-target": 0.3},
        {"head-name": "b", "num-tasks": 1, "counts-loss-frac-target": 0.3},
    ]
    assert "heads" not in out["settings"] and two_heads["heads"][0] == {"head-name": "a", "num-tasks": 2}
    # predictions are redone when missing or older than their model (training itself is reused
    # or redone by bpflow's own fingerprint of the config)
    model, pred = tmp_path / "residual.keras", tmp_path / "residual_peaks_test.h5"
    model.touch()
    assert combined_variants.stale(pred, model)
    pred.touch()
    os.utime(model, (1_000, 1_000))
    os.utime(pred, (2_000, 2_000))
    assert not combined_variants.stale(pred, model)
    os.utime(model, (3_000, 3_000))
    assert combined_variants.stale(pred, model)


def test_combined_variants_start_from_the_named_run(tmp_path, monkeypatch, capsys):
    """``--base bpreveal``: a variant of the BPReveal-style recipe's run takes that run's
    train-combined config (its joint schedule and its own transformation) and links that run's
    bias predictions and QC, not the default's; a base without a config is refused."""
    combined_variants = _quality_harness("combined_variants")
    results = tmp_path / "results"
    for run, schedule in (("bpflow", "profile-first"), ("bpreveal", "joint")):
        config = _default_combined_config()
        config["settings"]["counts-schedule"] = schedule
        config["settings"]["transformation-model"]["transformation-model-file"] = f"results/{run}/models/t.keras"
        (results / run / "configs").mkdir(parents=True)
        (results / run / "configs/train_combined.json").write_text(json.dumps(config))
        for kind in ("combined", "residual"):
            predict = {"model-file": "x", "output-h5": "y"}
            (results / run / f"configs/predict_{kind}_peaks.json").write_text(json.dumps(predict))
        for rel in combined_variants.SHARED:
            (results / run / rel).parent.mkdir(parents=True, exist_ok=True)
            (results / run / rel).write_text(run)
    commands = []
    monkeypatch.setattr(combined_variants.subprocess, "run", lambda cmd, **kw: commands.append(cmd))
    monkeypatch.setattr(combined_variants, "score", lambda workdir, name, patch, base: {"base": base})
    assert combined_variants.run_variant(tmp_path, "peer-s1", {"seed": 1}, 2, base="bpreveal") == {"base": "bpreveal"}
    written = json.loads((results / "peer-s1/configs/train_combined.json").read_text())
    assert written["settings"]["counts-schedule"] == "joint" and written["settings"]["seed"] == 1
    assert written["settings"]["transformation-model"]["transformation-model-file"] == "results/bpreveal/models/t.keras"
    assert written["settings"]["combined-model-file"] == "results/peer-s1/models/combined.keras"
    assert all((results / "peer-s1" / rel).read_text() == "bpreveal" for rel in combined_variants.SHARED)
    assert commands[0][1:3] == ["train-combined", "results/peer-s1/configs/train_combined.json"]
    with pytest.raises(SystemExit):
        combined_variants.main([str(tmp_path), "v", "{}", "--base", "peer"])
    assert "no results/peer/configs/train_combined.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a variant may not overwrite the run it starts from
        combined_variants.main([str(tmp_path), "bpreveal", "{}", "--base", "bpreveal"])
    assert "other than 'bpreveal'" in capsys.readouterr().err
    assert len(commands) == 3  # neither refused call ran anything


def test_combined_walltime_recipes_differ_by_the_joint_schedule_only(tmp_path):
    """benchmarks/combined_walltime.py: the packed default reads the packed files and runs the
    workflow's counts phase; the joint recipe is that config with quality.py's bpreveal keys for
    the combined stage and no profile-first keys; both are valid train-combined configs with the
    same inputs, architecture, seed and epoch limit, and outputs of their own."""
    from bpflow import schemas

    walltime = _quality_harness("combined_walltime")
    default = _default_combined_config()
    default["heads"][0].update({"profile-loss-weight": 1, "counts-loss-frac-target": 0.1, "use-bias-counts": True})
    default["heads"][0]["counts-combination"] = "product"
    default["settings"].update(
        {
            "architecture": {
                "architecture-name": "bpnet",
                "filters": 8,
                "input-filter-width": 15,
                "input-length": 746,
                "layers": 7,
                "model-name": "residual",
                "output-filter-width": 25,
                "output-length": 200,
            },
            "batch-size": 64,
            "counts-phase-learning-rate": 0.0004,
            "counts-schedule": "profile-first",
            "early-stopping-patience": 10,
            "learning-rate": 0.008,
            "learning-rate-plateau-patience": 5,
            "max-jitter": 64,
        }
    )
    before = json.loads(json.dumps(default))
    packed = walltime.packed_config(default)
    assert default == before
    assert (packed["train-data"], packed["val-data"]) == ("peaks_train.h5", "peaks_val.h5")
    assert packed["settings"]["transformation-model"] == {"transformation-model-file": "transformation.keras"}
    assert packed["settings"]["counts-phase-learning-rate"] == 0.0008
    assert packed["settings"]["counts-phase-schedule"] == "cosine"
    assert packed["settings"]["profile-phase-patience-after-halving"] == 2
    data = tmp_path / "packed"
    ours = walltime.recipe_config(packed, "default", data)
    joint = walltime.recipe_config(packed, "joint", data, epochs=None)
    for config in (ours, joint):
        assert config["train-data"] == str(data.resolve() / "peaks_train.h5")
        assert config["settings"]["transformation-model"]["transformation-model-file"] == str(
            data.resolve() / "transformation.keras"
        )
        schemas.validate(config, "train-combined")
    assert ours["settings"]["output-prefix"] == "results/default/models/combined"
    assert joint["settings"]["residual-model-file"] == "results/joint/models/residual.keras"
    s, j = ours["settings"], joint["settings"]
    changed = {k for k in set(s) | set(j) if s.get(k) != j.get(k)}
    assert changed == {
        "counts-schedule",
        "learning-rate",
        "learning-rate-warmup-epochs",
        "init-residual-counts",
        "counts-phase-learning-rate",
        "counts-phase-schedule",
        "profile-phase-patience-after-halving",
        "output-prefix",
        "combined-model-file",
        "residual-model-file",
    }
    assert (j["counts-schedule"], j["learning-rate"], j["learning-rate-warmup-epochs"]) == ("joint", 0.004, 0)
    assert j["init-residual-counts"] is False and "counts-phase-schedule" not in j
    assert joint["heads"][0]["counts-combination"] == "sum" and ours["heads"][0]["counts-combination"] == "product"
    assert {k: v for k, v in joint["heads"][0].items() if k != "counts-combination"} == {
        k: v for k, v in ours["heads"][0].items() if k != "counts-combination"
    }
    # one epoch limit for both, the packed one unless given
    assert s["epochs"] == j["epochs"] == 60
    assert walltime.recipe_config(packed, "joint", data, epochs=2)["settings"]["epochs"] == 2
    # one seed for both, the packed one unless given
    assert s["seed"] == j["seed"] == packed["settings"]["seed"]
    other = packed["settings"]["seed"] + 1
    for recipe in ("default", "joint"):
        assert walltime.recipe_config(packed, recipe, data, seed=other)["settings"]["seed"] == other
    with pytest.raises(ValueError, match="unknown recipe"):
        walltime.recipe_config(packed, "peer", data)
    # a row: the process's seconds beside the history's, the median epoch
    history = {"wall-seconds": 30.5, "epochs-run": 3, "best-epoch": 2, "stop-reason": "finished all 3 epochs"}
    history["history"] = {"seconds": [14.0, 8.0, 9.0]}
    row = walltime.summary("joint", 41.26, history)
    assert row["process-seconds"] == 41.3 and row["median-epoch-seconds"] == 9.0 and row["first-epoch-seconds"] == 14.0
    assert walltime.markdown([row]).splitlines()[2].startswith("| joint | 41.3 | 30.5 | 3 (2) | 9.0 | 14.0 |")


def test_combined_walltime_run_passes_seed_and_limit_to_every_recipe(tmp_path, monkeypatch, capsys):
    """combined_walltime.py run --seed 3 --epochs 5: both bpflow recipes' configs, as written
    for their training processes (replaced here by one that writes a history), carry seed 3 and
    limit 5; the JSON rows are the histories'; without the flags the packed values stay."""
    from pathlib import Path

    walltime = _quality_harness("combined_walltime")
    data = tmp_path / "packed"
    data.mkdir()
    (data / "train_combined.json").write_text(json.dumps(walltime.packed_config(_default_combined_config())))
    calls = []

    def fake_training(command, cwd, **kwargs):
        config = json.loads((Path(cwd) / command[-3]).read_text())
        calls.append((command[-3], config["settings"]["seed"], config["settings"]["epochs"]))
        history = {"epochs-run": 1, "best-epoch": 1, "stop-reason": "finished all 1 epochs"}
        history["history"] = {"seconds": [2.5]}
        prefix = Path(cwd) / config["settings"]["output-prefix"]
        prefix.with_name(prefix.name + ".history.json").write_text(json.dumps(history))

    monkeypatch.setattr(walltime.subprocess, "run", fake_training)
    argv = ["run", str(data), "--workdir", str(tmp_path / "w"), "--threads", "1", "--json", str(tmp_path / "r.json")]
    walltime.main([*argv, "--seed", "3", "--epochs", "5"])
    assert calls == [("default.json", 3, 5), ("joint.json", 3, 5)]
    rows = json.loads((tmp_path / "r.json").read_text())
    assert [(r["recipe"], r["epochs-run"], r["median-epoch-seconds"]) for r in rows] == [
        ("default", 1, 2.5),
        ("joint", 1, 2.5),
    ]
    calls.clear()
    walltime.main(argv)
    assert calls == [("default.json", 0, 60), ("joint.json", 0, 60)]
    capsys.readouterr()


def test_combined_walltime_packs_and_configures_the_peer(tmp_path, capsys):
    """combined_walltime.py's peer recipe: pack copies a setting's peer/ combined config and
    transformation when both are there (and says so when not); the peer's config reads the
    packed peaks and its own packed transformation, writes under the working directory and takes
    the common epoch limit; the peer runs under glibc's tunables for bpflow's heap settings; its
    row comes from its Keras history; without --peer-bin the run stops before training."""
    walltime = _quality_harness("combined_walltime")
    src = tmp_path / "setting"
    for rel in ("results/bpflow/data/peaks_train.h5", "results/bpflow/data/peaks_val.h5"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(b"h5")
    (src / "results/bpflow/models").mkdir()
    (src / "results/bpflow/models/transformation.keras").write_bytes(b"ours")
    (src / "results/bpflow/configs").mkdir()
    default = _default_combined_config()
    (src / "results/bpflow/configs/train_combined.json").write_text(json.dumps(default))
    walltime.pack(src, tmp_path / "alone")
    assert "the peer recipe cannot run" in capsys.readouterr().out
    assert not (tmp_path / "alone/peer_combined.json").exists()
    peer = {
        "settings": {"output-prefix": "/elsewhere/combined", "epochs": 60, "learning-rate": 0.004,
                     "transformation-model": {"transformation-model-file": "/elsewhere/transformation.keras"}},
        "train-data": "/elsewhere/peaks_train.h5", "val-data": "/elsewhere/peaks_val.h5", "heads": [],
    }  # fmt: skip
    (src / "peer").mkdir()
    (src / "peer/combined.json").write_text(json.dumps(peer))
    (src / "peer/transformation.keras").write_bytes(b"theirs")
    data = tmp_path / "packed"
    walltime.pack(src, data)
    assert (data / "peer_transformation.keras").read_bytes() == b"theirs"
    assert (data / "transformation.keras").read_bytes() == b"ours"
    packed_peer = json.loads((data / "peer_combined.json").read_text())
    assert packed_peer == peer
    config = walltime.peer_config(packed_peer, data, tmp_path / "w", epochs=2)
    assert packed_peer == peer  # not changed in place
    assert (config["train-data"], config["val-data"]) == (
        str(data.resolve() / "peaks_train.h5"),
        str(data.resolve() / "peaks_val.h5"),
    )
    assert config["settings"]["transformation-model"] == {
        "transformation-model-file": str(data.resolve() / "peer_transformation.keras")
    }
    assert config["settings"]["output-prefix"] == str((tmp_path / "w").resolve() / "results/peer/models/combined")
    assert config["settings"]["epochs"] == 2 and config["settings"]["learning-rate"] == 0.004
    assert walltime.peer_config(packed_peer, data, tmp_path / "w")["settings"]["epochs"] == 60
    # bpflow.allocator's mallopt settings, as glibc reads them from the environment
    assert walltime.glibc_tunables() == (
        "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
        "glibc.malloc.trim_threshold=2147483647:glibc.malloc.top_pad=67108864"
    )
    # the best epoch is the one Keras restored (not the history's lowest val_loss: 4 here)
    log = "Epoch 5: early stopping\nRestoring model weights from the end of the best epoch: 2.\n"
    row = walltime.peer_summary(100.0, {"val_loss": [9.0, 7.5, 8.0, 7.0, 7.25]}, 60, log)
    assert (row["recipe"], row["epochs-run"], row["best-epoch"], row["process-seconds"]) == ("peer", 5, 2, 100.0)
    assert row["stop-reason"] == "BPReveal: early stopping, 5 of 60 epochs; 20.00 process s an epoch"
    assert walltime.markdown([row]).splitlines()[2].startswith("| peer | 100.0 | None | 5 (2) |")
    row = walltime.peer_summary(90.0, {"val_loss": [9.0, 7.5, 8.0]}, 3, "Epoch 3/3\n")
    assert row["best-epoch"] is None and row["stop-reason"].startswith("BPReveal: no early stop, 3 of 3 epochs; 30.00")
    with pytest.raises(SystemExit, match="--peer-bin must name"):
        walltime.run(data, tmp_path / "w", ["default", "peer"], 2, sys.executable)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "trainCombinedModel").write_text("")
    with pytest.raises(SystemExit, match="no peer_combined.json"):
        walltime.run(tmp_path / "alone", tmp_path / "w", ["peer"], 2, sys.executable, peer_bin=fake_bin)
    assert not (tmp_path / "w").exists()  # nothing ran


def test_noise_free_simulation_keeps_the_genome_and_sets_strengths_by_sequence(tmp_path):
    """quality.py's sequence ceiling: the same simulation without its strength noise has the
    same genome, sites and bias, and every site's strength is the median x exp(sd x z) of its
    PWM score - hand-computed from the *noisy* run's scores - so only the noise is gone."""
    import math

    import pyBigWig

    from bpflow import simulate

    q = _quality_harness()
    config = {
        "seed": 5,
        "chromosome-lengths": [60_000],
        "motifs": [{"name": "CTCF", "num-sites": 12, "strength-noise-sd": 0.5}, {"name": "Klf4", "num-sites": 12}],
        "output-dir": str(tmp_path / "noisy"),
    }
    simulate.simulate(config)
    noisy = tmp_path / "noisy"
    clean = q.noise_free_simulation(noisy, tmp_path / "clean")
    assert (clean / "genome.fa").read_bytes() == (noisy / "genome.fa").read_bytes()
    truth = json.loads((clean / "truth.json").read_text())
    assert [m["strength-noise-sd"] for m in truth["config"]["motifs"]] == [0.0, 0.0]

    def rows(d):
        return [line.rstrip("\n").split("\t") for line in open(d / "sites.bed")]

    def track(path):
        with pyBigWig.open(str(path)) as bw:
            return np.nan_to_num(bw.values("chr1", 0, 60_000, numpy=True)).astype(np.float64)

    before, after = rows(noisy), rows(clean)
    assert [r[:4] + r[5:6] + r[7:8] for r in before] == [r[:4] + r[5:6] + r[7:8] for r in after]
    by_name = {m["name"]: m for m in truth["motifs"]}
    moved = []
    for b, a in zip(before, after):
        m = by_name[b[3]]
        z = (float(b[7]) - m["log-odds-mean"]) / m["log-odds-sd"]
        want = m["strength-median"] * math.exp(m["strength-score-sd"] * z)
        # sites.bed writes the score to 3 decimals: z is known to 5e-4 / log-odds-sd
        assert float(a[6]) == pytest.approx(want, rel=m["strength-score-sd"] * 5e-4 / m["log-odds-sd"] + 1e-6)
        moved.append(abs(math.log(float(b[6]) / want)))
    assert max(moved) > 0.1  # the noisy run's strengths did carry noise
    for strand in ("plus", "minus"):
        np.testing.assert_array_equal(
            track(clean / f"truth/bias.{strand}.bw"), track(noisy / f"truth/bias.{strand}.bw")
        )
        # isolated sites: each strand's footprint sums to the site's (noise-free) strength
        signal = track(clean / f"truth/signal.{strand}.bw")
        assert signal.sum() == pytest.approx(sum(float(a[6]) for a in after), rel=1e-4)
    # kept: a second call reuses the run
    stamp = (clean / "truth.json").stat().st_mtime_ns
    assert q.noise_free_simulation(noisy, tmp_path / "clean") == tmp_path / "clean"
    assert (clean / "truth.json").stat().st_mtime_ns == stamp


def test_combined_variants_report_a_variant_still_improving_at_its_limit(tmp_path):
    """A variant's score carries its combined stage's training warning (it has no
    qc/combined.json of its own): the counts phase whose last epoch was its last significant
    one is flagged, the same phase with an earlier one is not, and an early stop never is."""
    combined_variants = _quality_harness("combined_variants")

    def history(last_significant, stop="finished all 15 epochs"):
        path = tmp_path / f"h{last_significant}-{len(stop)}.json"
        phases = [
            {"phase": "profile", "epochs-run": 39, "best-epoch": 29, "last-significant-epoch": 29,
             "stop-reason": "early stopping: no improvement (best: epoch 29)"},
            {"phase": "counts", "epochs-run": 15, "best-epoch": 15, "last-significant-epoch": last_significant,
             "stop-reason": stop},
        ]  # fmt: skip
        path.write_text(json.dumps({"epochs-run": 54, "best-epoch": 15, "stop-reason": "x", "phases": phases}))
        return path

    (warning,) = combined_variants.training_warnings(history(15))
    assert "counts phase" in warning and "still improving" in warning and "(15 epochs)" in warning
    assert combined_variants.training_warnings(history(8)) == []
    assert combined_variants.training_warnings(history(15, "early stopping: best epoch 15")) == []


def test_background_share_is_one_for_a_perfect_residual_and_under_one_for_a_sharper_one():
    """quality.background_share, by hand: signal [0, 0, 4, 4] gives 1 + signal [1, 1, 5, 5],
    1/6 of its mass where the signal is under 1; a profile with 0.1 there keeps 0.6 of that, the
    perfect residual 1; the median over windows leaves out a window without such positions,
    and with none left there is no share."""
    q = _quality_harness()
    signal = np.array([0.0, 0.0, 4.0, 4.0]).reshape(1, 4, 1)
    sharp = np.array([0.05, 0.05, 0.45, 0.45]).reshape(1, 4, 1)
    perfect = (1.0 + signal) / 12.0
    assert q.background_share(sharp, signal) == pytest.approx(0.6)
    assert q.background_share(perfect, signal) == pytest.approx(1.0)
    # shares 0.6 and 1.0, and a window with no position under 1 (counted as 0 it would make
    # the median 0.6): the median of the two is 0.8
    everywhere = np.full((1, 4, 1), 2.0)
    signals = np.concatenate([signal, signal, everywhere])
    profiles = np.concatenate([sharp, perfect, np.full((1, 4, 1), 0.25)])
    assert q.background_share(profiles, signals) == pytest.approx(0.8)
    assert np.isnan(q.background_share(np.full((1, 4, 1), 0.25), everywhere))


def test_counts_ratio_interval_matches_scipy_bootstrap():
    """quality.py's counts-ratio interval and the paired interval of two predictions' difference
    are scipy.stats.bootstrap's paired percentile intervals of the same statistics (within the
    Monte Carlo error of 2,000 draws); the ratio's contains the full sample's, is exactly 1 when
    the prediction is the oracle, and narrows ~1/sqrt(n)."""
    from scipy import stats

    q = _quality_harness()
    rng = np.random.default_rng(11)

    def sample(n):
        truth = rng.normal(2.5, 0.8, n)
        observed = truth + rng.normal(0, 0.3, n)
        return truth + rng.normal(0, 0.4, n), truth, observed

    predicted, oracle, observed = sample(400)
    ratio = np.corrcoef(predicted, observed)[0, 1] / np.corrcoef(oracle, observed)[0, 1]
    lo, hi = q.counts_ratio_interval(predicted, oracle, observed, draws=2000, seed=0)
    assert lo < ratio < hi

    def scipy_interval(statistic, arrays):
        return stats.bootstrap(
            arrays, statistic, paired=True, vectorized=False, method="percentile", n_resamples=2000, random_state=1
        ).confidence_interval

    def r(x, y):
        return np.corrcoef(x, y)[0, 1]

    ref = scipy_interval(lambda p, o, y: r(p, y) / r(o, y), (predicted, oracle, observed))
    assert abs(lo - ref.low) < 0.01 and abs(hi - ref.high) < 0.01, ((lo, hi), ref)
    assert q.counts_ratio_interval(oracle, oracle, observed, draws=200) == [1.0, 1.0]
    # the paired difference of two predictions: scipy's interval too, far narrower than either
    # ratio's when their errors go together, and exactly 0 for a prediction against itself
    other = predicted + rng.normal(0, 0.1, len(predicted))
    dlo, dhi = q.counts_ratio_difference_interval(other, predicted, oracle, observed, draws=2000, seed=0)
    ref = scipy_interval(lambda a, b, o, y: (r(a, y) - r(b, y)) / r(o, y), (other, predicted, oracle, observed))
    assert abs(dlo - ref.low) < 0.005 and abs(dhi - ref.high) < 0.005, ((dlo, dhi), ref)
    assert dhi - dlo < 0.5 * (hi - lo)
    assert q.counts_ratio_difference_interval(predicted, predicted, oracle, observed, draws=200) == [0.0, 0.0]
    wide = hi - lo
    p4, o4, y4 = sample(6400)
    lo4, hi4 = q.counts_ratio_interval(p4, o4, y4, draws=500, seed=0)
    assert 0.15 < (hi4 - lo4) / wide < 0.4  # 16x the peaks: a quarter of the width
