"""``bpflow contributions CONFIG.json``: regions from a BED / narrowPeak, a dataset and tiled
chromosomes; scores against the DeepSHAP API called directly (known answer), summation to
delta against the model's own predictions, the bigWig against hand-averaged windows, and bad
input (one line, exit 2, no output)."""

from __future__ import annotations

import json

import h5py
import keras
import numpy as np
import pyBigWig
import pytest

from bpflow.cli import main as cli
from bpflow.formats.contributions import ContributionFile
from bpflow.formats.sequence import one_hot_encode
from bpflow.interpret.deepshap import hypothetical_contributions
from bpflow.interpret.shuffle import references_for
from bpflow.models import soloModel

from data_helpers import random_sequence, stderr_lines, write_fasta
from train_helpers import predicted_targets

pytestmark = pytest.mark.backend  # runs models: checked under every Keras backend

IN, OUT = 40, 20
HEADS = [{"head-name": "a", "num-tasks": 2}, {"head-name": "b", "num-tasks": 1}]
REFS, SEED = 3, 5


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = soloModel(IN, OUT, 4, 2, 5, 5, HEADS, "solo")
    rng = np.random.default_rng(0)  # larger weights than the initializers: the ReLUs switch
    model.set_weights([rng.normal(0, 0.4, w.shape).astype(np.float32) for w in model.get_weights()])
    path = tmp_path_factory.mktemp("model") / "solo.keras"
    model.save(path)
    return path


@pytest.fixture
def genome(tmp_path):
    rng = np.random.default_rng(3)
    seqs = {"chr1": random_sequence(300, rng), "chr2": random_sequence(100, rng)}
    return write_fasta(tmp_path / "genome.fa", seqs), seqs


def _config(tmp_path, model_file, **extra) -> dict:
    config = {
        "model-file": str(model_file),
        "heads": HEADS,
        "num-references": REFS,
        "seed": SEED,
        "batch-size": 2,
        "output-prefix": str(tmp_path / "out" / "solo"),
    }
    config.update(extra)
    return config


def _run(tmp_path, config, capsys):
    path = tmp_path / "contributions.json"
    path.write_text(json.dumps(config))
    code = cli(["contributions", str(path)])
    return code, capsys.readouterr().err


def _check_scores(model_file, h5, x, target, head):
    """The file's sequences are ``x``; its scores are those of the API on the same references
    (known answer), and they sum to f(x) - mean f(ref) from model.predict."""
    model = keras.saving.load_model(model_file, compile=False)
    with ContributionFile(h5) as cf:
        np.testing.assert_array_equal(cf.sequence(), x)
        hyp = cf.hypothetical()
        assert hyp.shape == (len(x), IN, 4) and hyp.dtype == np.float32
        assert cf.target == target and cf.attrs["num-references"] == REFS and cf.attrs["seed"] == SEED
        assert cf.attrs["summation-to-delta-max-error"] < 1e-4

    def refs(batch, start):
        return references_for(batch.astype(np.uint8), REFS, SEED, start=start)

    want = hypothetical_contributions(model, x, refs, target, head=head, batch_size=3)
    np.testing.assert_allclose(hyp, want, rtol=1e-5, atol=1e-6)
    f_x, f_ref = predicted_targets(model, x, references_for(x, REFS, SEED), target, head)
    total = (hyp * x).sum(axis=(1, 2))
    np.testing.assert_allclose(total, f_x - f_ref, rtol=1e-4, atol=1e-4)
    assert np.abs(f_x - f_ref).max() > 1e-3  # not vacuous


def test_bed_and_narrowpeak_windows_and_known_answer(tmp_path, genome, model_file, capsys):
    fasta, seqs = genome
    # BED: centred on the midpoint; the second region's window runs off chr1's start: skipped
    bed = tmp_path / "peaks.bed"
    bed.write_text("chr1\t100\t160\tp1\nchr1\t0\t10\tp2\nchr2\t30\t70\tp3\n")
    code, err = _run(tmp_path, _config(tmp_path, model_file, genome=str(fasta), regions={"bed": str(bed)}), capsys)
    assert code == 0, err
    assert "skipped 1 of 3 region(s)" in err
    assert "summation to delta" in err
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"solo.{h}.{t}.{e}" for h in ("a", "b") for t in ("counts", "profile") for e in ("h5", "bw")
    )
    windows = [("chr1", 110), ("chr2", 30)]  # 100 + (60 - 40) // 2; 30 + (40 - 40) // 2
    x = np.stack([one_hot_encode(seqs[c][s : s + IN]) for c, s in windows])
    with ContributionFile(out / "solo.a.counts.h5") as cf:
        coords = cf.coords()
        assert list(zip(coords.names().tolist(), coords.start.tolist())) == windows
        assert (coords.stop - coords.start).tolist() == [IN, IN]
        assert [r.tolist() for r in cf.regions()] == [[100, 30], [160, 70]]
        assert cf.head == "a" and cf.chrom_sizes == {"chr1": 300, "chr2": 100}
    for head, name in enumerate(("a", "b")):
        for target in ("counts", "profile"):
            _check_scores(model_file, out / f"solo.{name}.{target}.h5", x, target, head)

    # narrowPeak: centred on the summit (start + column 10), where the line has one
    peaks = tmp_path / "peaks.narrowPeak"
    peaks.write_text("chr1\t100\t160\tp1\t0\t.\t1\t1\t1\t10\nchr2\t30\t70\tp3\t0\t.\t1\t1\t1\t-1\n")
    config = _config(
        tmp_path,
        model_file,
        genome=str(fasta),
        regions={"bed": str(peaks)},
        targets=["profile"],
        **{"contribution-heads": ["b"], "output-prefix": str(tmp_path / "np" / "x"), "bigwig": False},
    )
    code, err = _run(tmp_path, config, capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "np").iterdir()) == ["x.b.profile.h5"]
    windows = [("chr1", 110 - IN // 2), ("chr2", 30)]  # summit 110 at index IN // 2; no summit: midpoint
    x = np.stack([one_hot_encode(seqs[c][s : s + IN]) for c, s in windows])
    with ContributionFile(tmp_path / "np" / "x.b.profile.h5") as cf:
        assert cf.coords().start.tolist() == [90, 30]
    _check_scores(model_file, tmp_path / "np" / "x.b.profile.h5", x, "profile", 1)


def test_dataset_regions_forward_samples_cropped(tmp_path, model_file, capsys):
    rng = np.random.default_rng(4)
    jitter, n = 3, 6
    seq = np.eye(4, dtype=np.uint8)[rng.integers(0, 4, size=(n, IN + 2 * jitter))]
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["sequence"] = seq
        f["head_0"] = np.zeros((n, OUT + 2 * jitter, 2), np.float32)
        f["head_1"] = np.zeros((n, OUT + 2 * jitter, 1), np.float32)
        f["chrom_names"] = np.array([b"chrA", b"chrB"])
        f["chrom_sizes"] = np.array([1000, 500])
        f["coords_chrom"] = np.array([0, 0, 1, 1, 0, 0], np.int32)
        f["coords_start"] = np.repeat([100, 200, 300], 2)  # the regions' output windows
        f["coords_stop"] = np.repeat([100, 200, 300], 2) + OUT
        f["coords_strand"] = np.array([b"+", b"-"] * 3)
    config = _config(tmp_path, model_file, regions={"dataset": str(tmp_path / "d.h5")}, targets=["counts"])
    code, err = _run(tmp_path, config, capsys)
    assert code == 0, err
    h5 = tmp_path / "out" / "solo.a.counts.h5"
    x = seq[::2, jitter : jitter + IN]  # forward samples, centre-cropped to the input
    with ContributionFile(h5) as cf:
        coords = cf.coords()
        assert coords.names().tolist() == ["chrA", "chrB", "chrA"]
        assert coords.start.tolist() == [90, 190, 290]  # the input windows around the regions
        assert [r.tolist() for r in cf.regions()] == [[100, 200, 300], [120, 220, 320]]
        assert cf.chrom_sizes == {"chrA": 1000, "chrB": 500}
    _check_scores(model_file, h5, x, "counts", 0)
    with pyBigWig.open(str(tmp_path / "out" / "solo.b.counts.bw")) as bw:
        assert bw.chroms() == {"chrA": 1000, "chrB": 500}


def test_tiled_chromosomes_and_bigwig_averages_windows(tmp_path, genome, model_file, capsys):
    fasta, seqs = genome
    config = _config(
        tmp_path,
        model_file,
        genome=str(fasta),
        regions={"chromosomes": ["chr2"], "stride": 15},
        targets=["counts"],
        **{"contribution-heads": ["a"], "batch-size": 3},
    )
    code, err = _run(tmp_path, config, capsys)
    assert code == 0, err
    # input windows from 0 every 15 bases; the last one ends at the chromosome's end (100)
    starts = [0, 15, 30, 45, 60]
    x = np.stack([one_hot_encode(seqs["chr2"][s : s + IN]) for s in starts])
    h5 = tmp_path / "out" / "solo.a.counts.h5"
    with ContributionFile(h5) as cf:
        assert cf.coords().start.tolist() == starts and cf.regions() is None
        proj = cf.projected()
    _check_scores(model_file, h5, x, "counts", 0)
    with pyBigWig.open(str(tmp_path / "out" / "solo.a.counts.bw")) as bw:
        assert bw.chroms() == {"chr1": 300, "chr2": 100}
        # position 5: window 0 only; 35: windows 0, 15, 30; 99: window 60 only
        assert bw.values("chr2", 5, 6)[0] == pytest.approx(proj[0, 5], rel=1e-5, abs=1e-7)
        want = (proj[0, 35] + proj[1, 20] + proj[2, 5]) / 3
        assert bw.values("chr2", 35, 36)[0] == pytest.approx(want, rel=1e-5, abs=1e-7)
        assert bw.values("chr2", 99, 100)[0] == pytest.approx(proj[4, 39], rel=1e-5, abs=1e-7)
        assert bw.intervals("chr1") is None


def test_max_regions_takes_evenly_spaced_windows(tmp_path, genome, model_file, capsys):
    fasta, seqs = genome
    config = _config(
        tmp_path,
        model_file,
        genome=str(fasta),
        regions={"chromosomes": "all", "stride": 20},
        targets=["counts"],
        **{"contribution-heads": ["b"], "max-regions": 3, "bigwig": False},
    )
    code, err = _run(tmp_path, config, capsys)
    assert code == 0, err
    # chr1: 0, 20, ..., 260 (14 windows); chr2: 0, 20, 40, 60 (4): rows 0, 8.5 -> 8 (np.round), 17
    with ContributionFile(tmp_path / "out" / "solo.b.counts.h5") as cf:
        coords = cf.coords()
        got = list(zip(coords.names().tolist(), coords.start.tolist()))
        seq = cf.sequence()
    assert got == [("chr1", 0), ("chr1", 160), ("chr2", 60)]
    np.testing.assert_array_equal(seq, np.stack([one_hot_encode(seqs[c][s : s + IN]) for c, s in got]))


def test_an_error_midway_leaves_no_output(tmp_path, genome, model_file, capsys, monkeypatch):
    """Outputs are renamed into place together: a failure on the second bigWig leaves none."""
    from bpflow.formats import contributions
    from bpflow.utils import BpflowError

    fasta, _ = genome
    calls = []
    real = contributions.write_projected_bigwig

    def failing(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise BpflowError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(contributions, "write_projected_bigwig", failing)
    config = _config(tmp_path, model_file, genome=str(fasta), regions={"chromosomes": ["chr2"], "stride": 30})
    code, err = _run(tmp_path, config, capsys)
    assert code == 2 and "disk full" in err
    assert len(calls) == 2
    assert not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    "problem", ["missing-model", "unknown-head", "bed-chrom", "narrow-dataset", "no-genome", "wrong-heads", "stride"]
)
def test_bad_input_exits_with_one_line_and_no_output(tmp_path, genome, model_file, capsys, problem):
    fasta, _ = genome
    bed = tmp_path / "r.bed"
    bed.write_text("chr1\t100\t160\n" + ("chrX\t10\t20\n" if problem == "bed-chrom" else ""))
    config = _config(tmp_path, model_file, genome=str(fasta), regions={"bed": str(bed)})
    if problem == "missing-model":
        config["model-file"] = str(tmp_path / "nope.keras")
    elif problem == "unknown-head":
        config["contribution-heads"] = ["a", "c"]
    elif problem == "narrow-dataset":
        with h5py.File(tmp_path / "d.h5", "w") as f:
            f["sequence"] = np.zeros((2, IN - 10, 4), np.uint8)
        config["regions"] = {"dataset": str(tmp_path / "d.h5")}
    elif problem == "no-genome":
        del config["genome"]
    elif problem == "wrong-heads":
        config["heads"] = [{"head-name": "a", "num-tasks": 2}]
    elif problem == "stride":
        config["regions"] = {"chromosomes": ["chr1"], "stride": IN + 1}
    code, err = _run(tmp_path, config, capsys)
    assert code == 2
    lines = stderr_lines(err)
    assert len(lines) == 1 and lines[0].startswith("bpflow contributions: error:"), err
    expected = {
        "missing-model": "model file not found",
        "unknown-head": "head 'c' is not one of the model's heads",
        "bed-chrom": "chromosome 'chrX' is not in the genome",
        "narrow-dataset": "cannot center-crop it to 40",
        "no-genome": "key genome (FASTA) is required",
        "wrong-heads": "lists 1 heads but the model has 2",
        "stride": "larger than the model's input length",
    }[problem]
    assert expected in lines[0], lines[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
