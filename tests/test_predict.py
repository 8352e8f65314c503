"""Predictions over regions / chromosomes / datasets, reverse-complement averaging, bigWigs."""

from __future__ import annotations

import json
import math

import h5py
import keras
import numpy as np
import pyBigWig
import pytest

from bpflow.cli import main as cli
from bpflow.evaluate import bigwig, inference
from bpflow.evaluate import predict as P
from bpflow.formats.fasta import FastaFile
from bpflow.formats.predictions import PredictionFile, PredictionWriter
from bpflow.formats.sequence import one_hot_encode, revcomp_task_order, reverse_complement_one_hot
from bpflow.utils import BpflowError

from data_helpers import stderr_lines

pytestmark = pytest.mark.backend  # runs models: checked under every Keras backend

IN, OUT, TASKS = 20, 10, 2  # flanks of 5 bases


def tiny_model(seed=0, tasks=TASKS):
    """A BPNet-shaped model: 20 bp in, 10 bp x tasks logits + (batch, 1) log counts."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((IN, 4))
    body = keras.layers.Conv1D(3, 5, activation="relu")(inp)
    profile = keras.layers.Conv1D(tasks, 7)(body)
    counts = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(body))
    return keras.Model(inp, [profile, counts])


def rc_symmetric_model(seed=0):
    """Average of f(x) and f(rc(x)) flipped back (positions reversed, tasks swapped)."""
    f = tiny_model(seed)
    inp = keras.Input((IN, 4))
    rc = keras.layers.Lambda(lambda x: keras.ops.flip(keras.ops.flip(x, axis=1), axis=2))(inp)
    p_fwd, c_fwd = f(inp)
    p_rc, c_rc = f(rc)
    p_back = keras.layers.Lambda(lambda p: keras.ops.flip(keras.ops.flip(p, axis=1), axis=2))(p_rc)
    profile = keras.layers.Average()([p_fwd, p_back])
    counts = keras.layers.Average()([c_fwd, c_rc])
    return keras.Model(inp, [profile, counts])


def direct(model, x):
    out = model.predict_on_batch(np.asarray(x, np.float32))
    return np.asarray(out[0]), np.asarray(out[1]).reshape(-1)


@pytest.fixture
def genome(tmp_path):
    rng = np.random.default_rng(7)
    seqs = {"chr1": "".join(rng.choice(list("ACGT"), 120)), "chr2": "".join(rng.choice(list("ACGTN"), 47))}
    path = tmp_path / "genome.fa"
    path.write_text("".join(f">{c}\n{s}\n" for c, s in seqs.items()))
    return path, seqs


def test_model_shape_and_task_orders():
    shape = inference.model_shape(tiny_model())
    assert (shape.input_length, shape.output_length, shape.num_tasks) == (IN, OUT, [TASKS])
    assert (shape.left_flank, shape.right_flank) == (5, 5)
    assert revcomp_task_order("auto", 1, "x") == [0] and revcomp_task_order("auto", 2, "x") == [1, 0]
    with pytest.raises(BpflowError, match="needs 1 or 2 tasks"):
        revcomp_task_order("auto", 3, "x")
    names, orders = inference.resolve_task_orders(
        [{"head-name": "x", "num-tasks": 2, "revcomp-task-order": [0, 1]}], shape, "cfg"
    )
    assert names == ["x"] and orders == [[0, 1]]
    with pytest.raises(BpflowError, match="not a permutation"):
        inference.resolve_task_orders([{"revcomp-task-order": [0, 0]}], shape, "cfg")
    with pytest.raises(BpflowError, match="num-tasks is 3"):
        inference.resolve_task_orders([{"num-tasks": 3}], shape, "cfg")


def test_tile_starts_known_answer():
    shape = inference.ModelShape(IN, OUT, [TASKS])
    # first output start = left flank 5; last = 47 - 5 - 10 = 32, added after the stride grid
    assert P.tile_starts(47, shape, 4).tolist() == [5, 9, 13, 17, 21, 25, 29, 32]
    assert P.tile_starts(47, shape, 9).tolist() == [5, 14, 23, 32]
    assert P.tile_starts(20, shape, 5).tolist() == [5]
    assert P.tile_starts(19, shape, 5).tolist() == []


def test_revcomp_average_of_symmetric_model_changes_nothing():
    model = rc_symmetric_model()
    x = one_hot_encode("".join(np.random.default_rng(3).choice(list("ACGT"), 5 * IN))).reshape(5, IN, 4)
    plain = inference.predict_arrays(model, x, batch_size=2)
    averaged = inference.predict_arrays(model, x, batch_size=2, revcomp_average=True)
    # the model really is symmetric, and not trivially (profiles vary along the window)
    lg, _ = direct(model, reverse_complement_one_hot(x))
    np.testing.assert_allclose(lg[:, ::-1, ::-1], plain[0][0], atol=1e-5)
    assert np.ptp(plain[0][0]) > 1e-3
    np.testing.assert_allclose(averaged[0][0], plain[0][0], atol=1e-5)
    np.testing.assert_allclose(averaged[1][0], plain[1][0], atol=1e-5)


def test_revcomp_average_flips_positions_and_tasks():
    model = tiny_model(seed=1)
    x = one_hot_encode("".join(np.random.default_rng(4).choice(list("ACGT"), 3 * IN))).reshape(3, IN, 4)
    fl, fc = direct(model, x)
    rl, rc = direct(model, reverse_complement_one_hot(x))
    logits, logcounts = inference.predict_arrays(model, x, revcomp_average=True)
    np.testing.assert_allclose(logits[0], (fl + rl[:, ::-1, [1, 0]]) / 2, atol=1e-6)
    np.testing.assert_allclose(logcounts[0], (fc + rc) / 2, atol=1e-6)
    # an explicit identity order keeps the tasks in place
    logits, _ = inference.predict_arrays(model, x, revcomp_average=True, task_orders=[[0, 1]])
    np.testing.assert_allclose(logits[0], (fl + rl[:, ::-1, :]) / 2, atol=1e-6)


def test_predict_regions_equals_model_on_extracted_windows(tmp_path, genome):
    fasta, seqs = genome
    bed = tmp_path / "r.bed"
    # region 2 is 30 bp wide (centered to 10 bp); region 3 runs off chr1's start (left out)
    bed.write_text("chr1\t40\t50\tpeak1\nchr2\t10\t40\n#comment\nchr1\t2\t12\nchr1\t100\t110\n")
    model = tiny_model()
    P.predict_regions(model, fasta, bed, tmp_path / "p.h5", batch_size=2)
    windows = [("chr1", 40), ("chr2", 20), ("chr1", 100)]
    x = np.stack([one_hot_encode(seqs[c][s - 5 : s + OUT + 5]) for c, s in windows])
    want_logits, want_counts = direct(model, x)
    with PredictionFile(tmp_path / "p.h5") as pf:
        assert pf.num_samples == 3 and pf.output_length == OUT
        np.testing.assert_allclose(pf.logits(0), want_logits, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(pf.logcounts(0), want_counts, rtol=1e-6, atol=1e-6)
        coords = pf.coords()
        assert coords.names().tolist() == ["chr1", "chr2", "chr1"]
        assert coords.start.tolist() == [40, 20, 100] and coords.stop.tolist() == [50, 30, 110]
        assert pf.chrom_sizes == {"chr1": 120, "chr2": 47}
        assert pf.file.attrs["output-length"] == OUT and not pf.file.attrs["revcomp-average"]
    with pytest.raises(BpflowError, match=r"bed:2: .*30 bp wide"):
        P.predict_regions(model, fasta, bed, tmp_path / "q.h5", resize_regions=False)
    assert not (tmp_path / "q.h5").exists()


def test_predict_chromosomes_tiles(tmp_path, genome):
    fasta, seqs = genome
    model = tiny_model()
    P.predict_chromosomes(model, fasta, tmp_path / "t.h5", ["chr2", "chr1"], stride=8, batch_size=3)
    starts = {
        "chr2": P.tile_starts(47, inference.model_shape(model), 8),
        "chr1": P.tile_starts(120, inference.model_shape(model), 8),
    }
    assert starts["chr2"].tolist() == [5, 13, 21, 29, 32]
    windows = [(c, int(s)) for c in ("chr2", "chr1") for s in starts[c]]
    x = np.stack([one_hot_encode(seqs[c][s - 5 : s + OUT + 5]) for c, s in windows])
    want_logits, want_counts = direct(model, x)
    with PredictionFile(tmp_path / "t.h5") as pf:
        coords = pf.coords()
        assert list(zip(coords.names().tolist(), coords.start.tolist())) == windows
        np.testing.assert_allclose(pf.logits(0), want_logits, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(pf.logcounts(0), want_counts, rtol=1e-6, atol=1e-6)


def test_predict_dataset_crops_and_keeps_samples(tmp_path):
    rng = np.random.default_rng(5)
    jitter, n = 3, 5
    seq = np.eye(4, dtype=np.uint8)[rng.integers(0, 4, size=(n, IN + 2 * jitter))]
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["sequence"] = seq
        f["head_0"] = np.zeros((n, OUT + 2 * jitter, TASKS), np.float32)
        f["chrom_names"] = np.array([b"chrA"])
        f["chrom_sizes"] = np.array([1000])
        f["coords_chrom"] = np.zeros(n, np.int32)
        f["coords_start"] = np.arange(n) * 50
        f["coords_stop"] = np.arange(n) * 50 + OUT + 2 * jitter
        f["coords_strand"] = np.array([b"+", b"-", b"+", b"-", b"+"])
    model = tiny_model()
    P.predict_dataset(model, tmp_path / "d.h5", tmp_path / "p.h5", batch_size=2)
    want_logits, want_counts = direct(model, seq[:, jitter : jitter + IN])
    with PredictionFile(tmp_path / "p.h5") as pf:
        np.testing.assert_allclose(pf.logits(0), want_logits, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(pf.logcounts(0), want_counts, rtol=1e-6, atol=1e-6)
        assert pf.coords().start.tolist() == (np.arange(n) * 50 + jitter).tolist()
        assert pf.strands().tolist() == [False, True, False, True, False]
        assert pf.chrom_sizes == {"chrA": 1000}


def test_prefetch_keeps_order_and_reraises():
    assert list(inference.prefetch(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise BpflowError("chrZ: boom")

    got = []
    with pytest.raises(BpflowError, match="boom"):
        for item in inference.prefetch(failing()):
            got.append(item)
    assert got == [1]
    # leaving early stops the producer (an endless one) without hanging
    it = inference.prefetch(iter(int, 1))
    assert next(it) == 0
    it.close()


def test_failure_mid_run_leaves_no_output(tmp_path, genome, monkeypatch):
    fasta, _ = genome
    (tmp_path / "r.bed").write_text("".join(f"chr1\t{s}\t{s + OUT}\n" for s in range(10, 100, 10)))
    g = FastaFile(fasta)
    calls = []
    real = g.one_hot_windows

    def flaky(*args):
        calls.append(1)
        if len(calls) == 3:
            raise BpflowError("disk went away")
        return real(*args)

    monkeypatch.setattr(g, "one_hot_windows", flaky)
    with pytest.raises(BpflowError, match="disk went away"):
        P.predict_regions(tiny_model(), g, tmp_path / "r.bed", tmp_path / "p.h5", batch_size=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["genome.fa", "genome.fa.fai", "r.bed"]


# ----------------------------------------------------------------------------------------------
# predictions-to-bigwig


def _fake_predictions(path, strand=False):
    """Windows of 4 bp: chr1 [2,6) and [4,8) overlap at 4-5; chr1 [20,24); chr2 [0,4) first in file."""
    logits = np.zeros((4, 4, 2), np.float32)
    logcounts = np.zeros(4, np.float32)
    logcounts[0] = math.log(8)  # uniform over 8 cells -> 1 per base and task
    logits[1, :, 1] = np.log([1, 1, 1, 5])  # probabilities (1,1,1,1 | 1,1,1,5) / 12
    logcounts[1] = math.log(24)  # task 0: 2 2 2 2, task 1: 2 2 2 10
    logits[2, :, 0] = [1, 2, 3, 4]
    logcounts[2] = math.log(4)
    logcounts[3] = math.log(80)
    rows = [3, 0, 1, 2]  # chr2 row first, then chr1 unsorted
    w = PredictionWriter(
        path, 4, 4, [2], ["chr1", "chr2"], [30, 10], strand_dtype=h5py.string_dtype() if strand else None
    )
    chrom = np.array([0, 0, 0, 1])[rows]
    start = np.array([2, 4, 20, 0])[rows]
    w.write(
        0,
        chrom,
        start,
        start + 4,
        [logits[rows]],
        [logcounts[rows]],
        np.array(["-", "+", "+", "+"]) if strand else None,
    )
    w.close()
    return logits


def _values(path, chrom, start, stop):
    with pyBigWig.open(str(path)) as bw:
        return np.array(bw.values(chrom, start, stop))


def test_bigwig_profile_mode_averages_overlaps(tmp_path):
    _fake_predictions(tmp_path / "p.h5")
    out = [tmp_path / "t0.bw", tmp_path / "t1.bw"]
    bigwig.predictions_to_bigwig(tmp_path / "p.h5", out, head=0, mode="profile")
    nan = np.nan
    t0 = _values(out[0], "chr1", 0, 26)
    t1 = _values(out[1], "chr1", 0, 26)
    p2 = np.exp([1, 2, 3, 4]) / (np.exp([1, 2, 3, 4]).sum() + 4) * 4
    want0 = [nan, nan, 1, 1, 1.5, 1.5, 2, 2] + [nan] * 12 + list(p2) + [nan, nan]
    want1 = [nan, nan, 1, 1, 1.5, 1.5, 2, 10] + [nan] * 12 + [4 / (np.exp([1, 2, 3, 4]).sum() + 4)] * 4 + [nan] * 2
    np.testing.assert_allclose(t0, want0, rtol=1e-6)
    np.testing.assert_allclose(t1, want1, rtol=1e-6)
    np.testing.assert_allclose(_values(out[0], "chr2", 0, 10), [10] * 4 + [nan] * 6, rtol=1e-6)
    with pyBigWig.open(str(out[0])) as bw:
        assert bw.chroms() == {"chr1": 30, "chr2": 10}


def test_bigwig_logits_and_counts_modes(tmp_path, genome):
    fasta, _ = genome  # sizes from the FASTA index instead of the file
    logits = _fake_predictions(tmp_path / "p.h5")
    bigwig.predictions_to_bigwig(
        tmp_path / "p.h5", [tmp_path / "l0.bw", tmp_path / "l1.bw"], mode="logits", genome=fasta
    )
    l1 = _values(tmp_path / "l1.bw", "chr1", 2, 8)
    np.testing.assert_allclose(l1, [0, 0, 0, 0, 0, math.log(5)], atol=1e-6)
    np.testing.assert_allclose(_values(tmp_path / "l0.bw", "chr1", 20, 24), logits[2, :, 0], atol=1e-6)
    with pyBigWig.open(str(tmp_path / "l0.bw")) as bw:
        assert bw.chroms() == {"chr1": 120, "chr2": 47}
    bigwig.predictions_to_bigwig(tmp_path / "p.h5", [tmp_path / "c.bw"], mode="counts")
    # exp(logcounts) / 4 per base: 2 on [2,6), 6 on [4,8), mean 4 where they overlap
    np.testing.assert_allclose(_values(tmp_path / "c.bw", "chr1", 2, 8), [2, 2, 4, 4, 6, 6], rtol=1e-6)
    np.testing.assert_allclose(_values(tmp_path / "c.bw", "chr2", 0, 4), [20] * 4, rtol=1e-6)


def test_bigwig_skips_reverse_strand_samples(tmp_path):
    _fake_predictions(tmp_path / "p.h5", strand=True)  # the chr2 window is "-"
    bigwig.predictions_to_bigwig(tmp_path / "p.h5", [tmp_path / "c.bw"], mode="counts")
    assert np.isnan(_values(tmp_path / "c.bw", "chr2", 0, 4)).all()
    np.testing.assert_allclose(_values(tmp_path / "c.bw", "chr1", 2, 4), [2, 2], rtol=1e-6)


def test_bigwig_cli_prefix(tmp_path, capsys):
    _fake_predictions(tmp_path / "p.h5")
    cfg = tmp_path / "bw.json"
    cfg.write_text(json.dumps({"h5": str(tmp_path / "p.h5"), "output-prefix": str(tmp_path / "out" / "x")}))
    assert cli(["predictions-to-bigwig", str(cfg)]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.task0.bw", "x.task1.bw"]
    np.testing.assert_allclose(_values(tmp_path / "out" / "x.task1.bw", "chr1", 6, 8), [2, 10], rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# bpflow predict CONFIG.json and bad configs


def _run(tmp_path, step, config, capsys):
    cfg = tmp_path / f"{step}.json"
    cfg.write_text(json.dumps(config))
    code = cli([step, str(cfg)])
    return code, capsys.readouterr().err


def test_predict_cli_with_saved_model_and_revcomp(tmp_path, genome, capsys):
    fasta, seqs = genome
    model = tiny_model()
    model.save(tmp_path / "m.keras")
    (tmp_path / "r.bed").write_text("chr1\t40\t50\nchr1\t60\t70\n")
    config = {
        "model-file": str(tmp_path / "m.keras"),
        "genome": str(fasta),
        "regions": str(tmp_path / "r.bed"),
        "output-h5": str(tmp_path / "p.h5"),
        "batch-size": 1,
        "revcomp-average": True,
        "heads": [{"head-name": "nexus", "num-tasks": 2, "revcomp-task-order": "auto", "profile-loss-weight": 1}],
    }
    code, err = _run(tmp_path, "predict", config, capsys)
    assert code == 0, err
    x = np.stack([one_hot_encode(seqs["chr1"][s - 5 : s + OUT + 5]) for s in (40, 60)])
    fl, fc = direct(model, x)
    rl, rc = direct(model, reverse_complement_one_hot(x))
    with PredictionFile(tmp_path / "p.h5") as pf:
        assert pf.head_name(0) == "nexus" and pf.file.attrs["revcomp-average"]
        np.testing.assert_allclose(pf.logits(0), (fl + rl[:, ::-1, ::-1]) / 2, atol=1e-5)
        np.testing.assert_allclose(pf.logcounts(0), (fc + rc) / 2, atol=1e-5)


@pytest.mark.parametrize(
    "problem",
    ["unknown-key", "two-sources", "no-genome", "missing-model", "bad-chrom", "wrong-heads", "stride-too-big"],
)
def test_predict_bad_config_exits_without_output(tmp_path, genome, capsys, problem):
    fasta, _ = genome
    tiny_model().save(tmp_path / "m.keras")
    (tmp_path / "r.bed").write_text("chr1\t40\t50\n" + ("chrX\t10\t20\n" if problem == "bad-chrom" else ""))
    config = {
        "model-file": str(tmp_path / "m.keras"),
        "genome": str(fasta),
        "regions": str(tmp_path / "r.bed"),
        "output-h5": str(tmp_path / "out" / "p.h5"),
    }
    if problem == "unknown-key":
        config["batch_size"] = 4
    elif problem == "two-sources":
        config["chromosomes"] = "all"
    elif problem == "no-genome":
        del config["genome"]
    elif problem == "missing-model":
        config["model-file"] = str(tmp_path / "nope.keras")
    elif problem == "wrong-heads":
        config["heads"] = [{"head-name": "a", "num-tasks": 1}]
    elif problem == "stride-too-big":
        del config["regions"]
        config.update(chromosomes=["chr1"], stride=11)
    code, err = _run(tmp_path, "predict", config, capsys)
    assert code == 2
    lines = stderr_lines(err)
    assert len(lines) == 1 and lines[0].startswith("bpflow predict: error:"), err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("problem", ["wrong-count", "both-outputs", "bad-mode", "off-chromosome"])
def test_bigwig_bad_config_exits_without_output(tmp_path, capsys, problem):
    _fake_predictions(tmp_path / "p.h5")
    config = {"h5": str(tmp_path / "p.h5"), "output-bigwigs": [str(tmp_path / "a.bw"), str(tmp_path / "b.bw")]}
    if problem == "wrong-count":
        config["output-bigwigs"] = config["output-bigwigs"][:1]
    elif problem == "both-outputs":
        config["output-prefix"] = str(tmp_path / "x")
    elif problem == "bad-mode":
        config["mode"] = "probability"
    else:
        with h5py.File(tmp_path / "p.h5", "a") as f:
            f["chrom_sizes"][0] = 22  # chr1 [20, 24) no longer fits
    code, err = _run(tmp_path, "predictions-to-bigwig", config, capsys)
    assert code == 2
    lines = stderr_lines(err)
    assert len(lines) == 1 and lines[0].startswith("bpflow predictions-to-bigwig: error:"), err
    assert not list(tmp_path.glob("*.bw")) and not list(tmp_path.glob(".*"))
