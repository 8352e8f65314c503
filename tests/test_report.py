"""Report figures and tables on hand-made prediction and dataset files."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from scipy import stats

from bpflow.evaluate import footprints as F
from bpflow.formats.predictions import PredictionWriter
from bpflow.report import figures as R
from bpflow.utils import BpflowError

OUT, JITTER, TASKS = 10, 2, 2
WIDTH = OUT + 2 * JITTER
PNG = b"\x89PNG\r\n\x1a\n"

# observed totals of the central OUT bases per sample; odd samples are reverse complements.
# Forward samples 0, 2, 4, 6, 8: totals 5, 30, 12, 30, 1 -> the rule picks 2, 6 (tie: lower index
# first), then 4.  Reverse samples carry larger totals that must not be picked.
TOTALS = [5, 100, 30, 100, 12, 100, 30, 100, 1, 100]


def make_dataset(path):
    n = len(TOTALS)
    rng = np.random.default_rng(0)
    head = np.zeros((n, WIDTH, TASKS), np.float32)
    for i, total in enumerate(TOTALS):
        head[i, JITTER + 3, 0] = total - 1  # inside the output window
        head[i, JITTER + 7, 1] = 1
        head[i, 0, 0] = 1000  # jitter margin: cropped away
        head[i, WIDTH - 1, 1] = np.nan  # NaN counts as 0
    with h5py.File(path, "w") as f:
        f["sequence"] = np.eye(4, dtype=np.uint8)[rng.integers(0, 4, (n, 20 + 2 * JITTER))]
        f["head_0"] = head
        f["chrom_names"] = np.array([b"chr1", b"chr2"])
        f["coords_chrom"] = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1], np.int32)
        starts = np.repeat(np.arange(n // 2) * 100, 2)
        f["coords_start"] = starts
        f["coords_stop"] = starts + WIDTH
        f["coords_strand"] = np.array([b"+", b"-"] * (n // 2))
    return path


def make_predictions(path, logcounts, seed=1):
    n = len(TOTALS)
    rng = np.random.default_rng(seed)
    starts = np.repeat(np.arange(n // 2) * 100, 2) + JITTER
    writer = PredictionWriter(path, n, OUT, [TASKS], ["chr1", "chr2"], [1000, 1000], ["nexus"])
    writer.write(
        0,
        np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1]),
        starts,
        starts + OUT,
        [rng.normal(size=(n, OUT, TASKS)).astype(np.float32)],
        [np.asarray(logcounts, np.float32)],
    )
    writer.close()
    return path


@pytest.fixture
def files(tmp_path):
    data = make_dataset(tmp_path / "data.h5")
    obs = np.log1p(TOTALS)
    preds = {
        "combined": make_predictions(tmp_path / "combined.h5", obs + np.linspace(-0.5, 0.4, len(TOTALS)) ** 2),
        "residual": make_predictions(tmp_path / "residual.h5", -obs, seed=2),
        "bias": make_predictions(tmp_path / "bias.h5", np.zeros(len(TOTALS)), seed=3),
    }
    return data, preds


def is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data.startswith(PNG)


def test_observed_totals_crop_the_jitter_and_ignore_nan(files):
    data, _ = files
    np.testing.assert_allclose(R.observed_totals(data, output_length=OUT), TOTALS)
    assert R.observed_totals(data)[0] == pytest.approx(TOTALS[0] + 1000)  # uncropped (NaN -> 0)


def test_example_region_rule(files, tmp_path):
    data, preds = files
    assert R.pick_example_regions(data, 3, output_length=OUT) == [2, 6, 4]
    assert R.pick_example_regions(data, 10, output_length=OUT) == [2, 6, 4, 0, 8]
    assert R.pick_example_regions(data, 2, output_length=OUT, strands="all")[:2] == [1, 3]
    out = tmp_path / "examples.png"
    assert R.plot_example_regions(data, preds, out, num=3) == [2, 6, 4]
    assert is_png(out)
    assert not list(tmp_path.glob(".examples*"))  # no temporary left behind
    with pytest.raises(BpflowError, match="does not exist"):
        R.plot_example_regions(data, preds, tmp_path / "x.png", indices=[99])
    assert not (tmp_path / "x.png").exists() and not list(tmp_path.glob(".x*"))


def test_counts_scatter_pearson_and_png(files, tmp_path):
    data, preds = files
    out = tmp_path / "scatter.png"
    r = R.counts_scatter_from_files(preds, data, out, region_set="test peaks")
    forward = np.arange(0, len(TOTALS), 2)
    obs = np.log1p(np.array(TOTALS, float))[forward]
    with h5py.File(preds["combined"]) as f:
        comb = f["head_0/logcounts"][...][forward]
    assert r["combined"] == pytest.approx(stats.pearsonr(obs, comb)[0], rel=1e-6)
    assert r["residual"] == pytest.approx(-1.0) and np.isnan(r["bias"])  # constant predictions: undefined
    assert is_png(out)
    svg = tmp_path / "one.svg"
    R.plot_counts_scatter([0, 1, 2], [0, 1, 2.5], svg, title="t")
    assert svg.read_text().lstrip().startswith("<?xml") and "Pearson r = 0.99" in svg.read_text()


def test_mismatched_prediction_file_is_an_error(files, tmp_path):
    data, preds = files
    bad = tmp_path / "bad.h5"
    writer = PredictionWriter(bad, 3, OUT, [TASKS], ["chr1"], [1000])
    writer.write(0, np.zeros(3, int), np.arange(3), np.arange(3) + OUT, [np.zeros((3, OUT, TASKS))], [np.zeros(3)])
    writer.close()
    with pytest.raises(BpflowError, match="3 samples"):
        R.counts_scatter_from_files({"x": bad}, data, tmp_path / "s.png")
    assert not (tmp_path / "s.png").exists()
    with pytest.raises(BpflowError, match="must end in"):
        R.plot_counts_scatter([0, 1], [0, 1], tmp_path / "s.txt")


def footprint_table():
    def entry(scale):
        fp = [[0.0, scale, 2 * scale, scale], [0.0, 0.0, -scale, 0.0]]
        return {
            "profile-response": 4 * scale / 10,
            "shape-response": 0.1,
            "counts-response": 0.5 * scale,
            "chrombpnet-score": 0.01,
            "mean-total-without": 10.0,
            "profiles": {"positions": [-2, -1, 0, 1], "with": fp, "without": fp, "footprint": fp},
        }

    return {
        "motifs": {"CTCF": {}, "bias": {}},
        "models": {
            m: {"heads": {"nexus": {"CTCF": entry(1.0), "bias": entry(0.0 if m == "residual" else 2.0)}}}
            for m in ("residual", "bias")
        },
    }


def test_footprint_plot_and_tables(tmp_path):
    table = footprint_table()
    out = tmp_path / "fp.png"
    R.plot_footprints(table, out)
    assert is_png(out)
    F.footprint_tsv(table, tmp_path / "fp.tsv")
    lines = (tmp_path / "fp.tsv").read_text().splitlines()
    assert lines[0].split("\t") == F.FOOTPRINT_COLUMNS
    assert lines[2].split("\t")[:4] == ["residual", "nexus", "bias", "0"]
    assert lines[1].split("\t")[3] == "0.4"
    R.footprint_table_html(table, tmp_path / "fp.html", caption="a < b")
    text = (tmp_path / "fp.html").read_text()
    assert text.count("<tr>") == 5 and "a &lt; b" in text
    with pytest.raises(BpflowError, match="no model 'combined'"):
        R.plot_footprints(table, tmp_path / "x.png", models=["combined"])


def test_metrics_html_and_loss_curves(tmp_path):
    result = {
        "region-set": "peaks",
        "models": {
            "combined": {
                "heads": {
                    "nexus": {
                        "num-regions": 12,
                        "counts": {"pearson": 0.81234, "spearman": 0.7, "mse": None},
                        "profile": {
                            "jsd": {"median": 0.5},
                            "normalized-jsd": {"median": 0.2},
                            "mnll": {"median": 30.0},
                            "pearson": {"median": 0.4},
                        },
                    }
                }
            }
        },
    }
    path = tmp_path / "m.json"
    path.write_text(json.dumps(result))
    rows = R.metrics_rows([path, result])
    assert rows[0] == ["peaks", "combined", "nexus", "12", "0.812", "0.7", "NA", "0.5", "0.2", "30", "0.4"]
    assert len(rows) == 2
    R.metrics_table_html([path], tmp_path / "m.html")
    assert "0.812" in (tmp_path / "m.html").read_text()
    hist = tmp_path / "h.json"
    hist.write_text(json.dumps({"loss": [3, 2, 1.5], "val_loss": [3.2, 2.5, None], "lr": [1, 1, 1]}))
    out = tmp_path / "loss.png"
    R.plot_loss_curves({"bias": hist, "combined": {"history": {"loss": [1, 0.5]}}}, out)
    assert is_png(out)


def test_qc_table_shows_the_recorded_checks(tmp_path):
    # a collapsed residual counts head and a bias model that learned a TF motif, as bpflow.qc
    # records them (tests/test_quality.py checks that it does); warnings are escaped
    def check(name, value, threshold, status):
        return {"check": name, "value": value, "threshold": threshold, "status": status}

    qc = {
        "warnings": ["head nexus: collapsed residual counts head <&>", "head nexus: TF motifs"],
        "counts": {
            "heads": {
                "nexus": {
                    "checks": [
                        check("share", "0.025", ">= 0.1", "WARNING"),
                        check("vs bias", "0.75 vs 0.01", "combined > bias", "ok"),
                    ]
                }
            }
        },
        "motifs": {"heads": {"nexus": {"checks": [check("bias TF", "0.5", "<= 0.2", "WARNING")]}}},
    }
    assert R.qc_rows(qc) == [
        ["nexus", "share", "0.025", ">= 0.1", "WARNING"],
        ["nexus", "vs bias", "0.75 vs 0.01", "combined > bias", "ok"],
        ["nexus", "bias TF", "0.5", "<= 0.2", "WARNING"],
    ]
    path = tmp_path / "qc.json"
    path.write_text(json.dumps(qc))
    text = R.qc_table_html(path, tmp_path / "qc.html").read_text()
    assert "QC warnings" in text and "&lt;&amp;&gt;" in text and text.count("<li>") == 2
    assert text.count(">WARNING<") == 2 and text.count(">ok<") == 1
    # no warnings; and a report whose checks were switched off
    (tmp_path / "ok.json").write_text(json.dumps({"warnings": [], "counts": qc["counts"], "motifs": None}))
    assert "QC: no warnings" in R.qc_table_html(tmp_path / "ok.json", tmp_path / "ok.html").read_text()
    (tmp_path / "off.json").write_text(json.dumps({"warnings": [], "counts": None, "motifs": None, "disabled": True}))
    off = R.qc_table_html(tmp_path / "off.json", tmp_path / "off.html").read_text()
    assert "disabled" in off and R.qc_rows({"counts": None, "motifs": None}) == []
    # qc-bias's report beside qc-combined's: one table, training stages then bias heads, and
    # the warnings of both
    bias_qc = {
        "step": "qc-bias",
        "warnings": ["bias model weaker than the k-mer table"],
        "training": {"stages": {"bias": {"checks": [check("epoch limit", "best 9 of 10", "stopped", "ok")]}}},
        "bias": {"heads": {"nexus": {"checks": [check("vs k-mer", "0.4 vs 0.6", "model > k-mer", "WARNING")]}}},
    }
    assert R.qc_rows(bias_qc) == [
        ["bias", "epoch limit", "best 9 of 10", "stopped", "ok"],
        ["nexus", "vs k-mer", "0.4 vs 0.6", "model > k-mer", "WARNING"],
    ]
    (tmp_path / "bias.json").write_text(json.dumps(bias_qc))
    both = R.qc_table_html([tmp_path / "bias.json", path], tmp_path / "both.html").read_text()
    assert both.count("<li>") == 3 and "k-mer table" in both and both.count(">WARNING<") == 3
    assert both.index("epoch limit") < both.index("vs k-mer") < both.index("vs bias")
