"""Marginal footprints against hand-built models with known answers (every Keras backend)."""

from __future__ import annotations

import json
import math

import h5py
import keras
import numpy as np
import pytest

from bpflow.evaluate import footprints as F
from bpflow.formats.motifs import as_motif, builtin_motifs, load_motifs
from bpflow.formats.sequence import one_hot_decode, one_hot_encode
from bpflow.utils import BpflowError

pytestmark = pytest.mark.backend

IN, OUT, K = 40, 20, 6  # flanks of 10 bases
A_LOGIT, C_COUNTS, B_COUNTS = 3.0, 0.7, 1.5
TF, BIAS = "GACTTC", "TACGTC"  # neither occurs in the other, its reverse complement or A/T-only DNA


def kmer_model(kmer: str) -> keras.Model:
    """Responds to exact copies of ``kmer`` only.

    match(i) = relu(sum of matching bases at i..i+K-1 - (K - 1)) is 1 for an exact copy and 0
    otherwise.  Profile logits: A_LOGIT * match on task 0 at the output position of the copy's
    first base, 0 on task 1.  Log counts: B_COUNTS + C_COUNTS * max(match).
    """
    inp = keras.Input((IN, 4))
    conv = keras.layers.Conv1D(1, K, activation="relu")
    match = conv(inp)  # (IN - K + 1) = 35 positions
    conv.set_weights([one_hot_encode(kmer).astype(np.float32)[:, :, None], np.array([-(K - 1.0)], np.float32)])
    cropped = keras.layers.Cropping1D((10, IN - K + 1 - OUT - 10))(match)  # position j <-> input base j + 10
    head = keras.layers.Conv1D(2, 1)
    logits = head(cropped)
    head.set_weights([np.array([[[A_LOGIT, 0.0]]], np.float32), np.zeros(2, np.float32)])
    dense = keras.layers.Dense(1)
    counts = dense(keras.layers.GlobalMaxPooling1D()(match))
    dense.set_weights([np.array([[C_COUNTS]], np.float32), np.array([B_COUNTS], np.float32)])
    return keras.Model(inp, [logits, counts])


def blind_model() -> keras.Model:
    """Ignores its input: zero kernels, position-dependent constant logits via a bias-only path."""
    inp = keras.Input((IN, 4))
    conv = keras.layers.Conv1D(2, IN - OUT + 1)
    logits = conv(inp)
    conv.set_weights([np.zeros((IN - OUT + 1, 4, 2), np.float32), np.array([0.3, -0.2], np.float32)])
    dense = keras.layers.Dense(1)
    counts = dense(keras.layers.GlobalAveragePooling1D()(inp))
    dense.set_weights([np.zeros((4, 1), np.float32), np.array([2.0], np.float32)])
    return keras.Model(inp, [logits, counts])


def at_backgrounds(n=12, length=IN, seed=3):
    rng = np.random.default_rng(seed)
    return np.stack([one_hot_encode("".join(rng.choice(list("AT"), length))) for _ in range(n)])


def expected_kmer_response(fraction=1.0):
    """Hand-computed responses of kmer_model to its own k-mer (fraction of insertions that match)."""
    z = math.exp(A_LOGIT) + 2 * OUT - 1
    base = 1 / (2 * OUT)  # uniform profile without (x total)
    spike = math.exp(C_COUNTS) * math.exp(A_LOGIT) / z  # with, at the spike (x exp(B))
    rest = math.exp(C_COUNTS) / z
    profile = fraction * (abs(spike - base) + (2 * OUT - 1) * abs(rest - base))
    shape = fraction * (abs(math.exp(A_LOGIT) / z - base) + (2 * OUT - 1) * abs(1 / z - base))
    return profile, shape


def test_insertion_is_the_motif_at_the_center():
    seqs = at_backgrounds(3)
    out = F.insert_motif(seqs, one_hot_encode(TF))
    s = F.motif_start(IN, K)
    assert s == IN // 2 - K // 2 == 17
    assert F.decode_insertion(out, K) == [TF] * 3
    for x, y in zip(out, seqs):
        dx, dy = one_hot_decode(x), one_hot_decode(y)
        assert dx[:s] == dy[:s] and dx[s + K :] == dy[s + K :] and dx[s : s + K] == TF
    # odd motif length: the middle base lands on base L // 2
    out = F.insert_motif(seqs, one_hot_encode("CCGCC"))
    assert one_hot_decode(out[0])[IN // 2] == "G"
    np.testing.assert_array_equal(seqs, at_backgrounds(3))  # input untouched


def test_kmer_model_responds_to_its_motif_with_the_known_size():
    model = kmer_model(TF)
    heads = F.footprint(model, at_backgrounds(), TF, window=100)
    fp = heads["head_0"]
    profile, shape = expected_kmer_response()
    assert fp.profile_response == pytest.approx(profile, rel=1e-5)
    assert fp.shape_response == pytest.approx(shape, rel=1e-5)
    assert fp.counts_response == pytest.approx(C_COUNTS, rel=1e-5)
    assert fp.total_without == pytest.approx(math.exp(B_COUNTS), rel=1e-5)
    assert fp.motif_bounds == (7, 13) and fp.window_bounds == (0, OUT)
    # the spike sits on task 0 at the output position of the motif's first base
    assert np.unravel_index(np.argmax(fp.footprint), fp.footprint.shape) == (7, 0)
    z = math.exp(A_LOGIT) + 2 * OUT - 1
    # task-summed normalised profile: spike (task 0) + flat (task 1) at position 7
    assert fp.chrombpnet_score == pytest.approx((math.exp(A_LOGIT) + 1) / z, rel=1e-5)
    assert fp.chrombpnet_score_without == pytest.approx(2 / (2 * OUT), rel=1e-5)
    # a narrow window: the motif's 6 bases + 1 on each side = output positions 6..13
    narrow = F.footprint(model, at_backgrounds(), TF, window=1)["head_0"]
    assert narrow.window_bounds == (6, 14)
    base = 1 / (2 * OUT)
    e = math.exp(C_COUNTS)
    expect = abs(e * math.exp(A_LOGIT) / z - base) + 15 * abs(e / z - base)
    assert narrow.profile_response == pytest.approx(expect, rel=1e-5)


def test_other_motif_and_blind_model_give_zero():
    seqs = at_backgrounds()
    other = F.footprint(kmer_model(TF), seqs, BIAS, orientations="both")["head_0"]
    assert other.profile_response == 0.0 and other.shape_response == 0.0 and other.counts_response == 0.0
    blind = F.footprint(blind_model(), seqs, TF, orientations="both")["head_0"]
    assert blind.profile_response == 0.0 and blind.counts_response == 0.0
    np.testing.assert_array_equal(blind.footprint, 0.0)


def test_both_orientations_average_and_reverse_alone():
    seqs = at_backgrounds()
    model = kmer_model(TF)
    both = F.footprint(model, seqs, TF, orientations="both")["head_0"]
    profile, shape = expected_kmer_response(fraction=0.5)  # GAAGTC (reverse) does not match
    assert both.profile_response == pytest.approx(profile, rel=1e-5)
    assert both.counts_response == pytest.approx(C_COUNTS / 2, rel=1e-5)
    rev = F.footprint(model, seqs, TF, orientations="reverse")["head_0"]
    assert rev.profile_response == 0.0
    # the reverse complement of the k-mer inserted forward = the k-mer inserted in reverse
    fwd_rc = F.footprint(model, seqs, "GAAGTC", orientations="reverse")["head_0"]
    assert fwd_rc.profile_response == pytest.approx(expected_kmer_response()[0], rel=1e-5)


def test_pwm_motifs_consensus_and_sampling():

    spec = as_motif(builtin_motifs()["Oct4-Sox2"])
    assert spec.consensus == "CTTTGTTATGCAAAT" and not spec.fixed
    pwm = np.array([[1, 0, 0, 0], [0.5, 0, 0.5, 0], [0, 0, 0, 1]], float)
    inst = as_motif(pwm, "x").instances(4000, "sample", seed=5)
    assert inst.shape == (4000, 3, 4) and (inst.sum(axis=2) == 1).all()
    assert (inst[:, 0, 0] == 1).all() and (inst[:, 2, 3] == 1).all()
    assert abs(inst[:, 1, 0].mean() - 0.5) < 0.03 and inst[:, 1, [1, 3]].sum() == 0
    np.testing.assert_array_equal(inst, as_motif(pwm, "x").instances(4000, "sample", seed=5))
    # a PWM whose consensus is the k-mer gives the k-mer's response
    pwm_tf = 0.1 + 0.6 * one_hot_encode(TF)
    fp = F.footprint(kmer_model(TF), at_backgrounds(), pwm_tf)["head_0"]
    assert fp.profile_response == pytest.approx(expected_kmer_response()[0], rel=1e-5)
    with pytest.raises(BpflowError, match="A, C, G, T only"):
        as_motif("GANTC")
    with pytest.raises(BpflowError, match="shape"):
        as_motif(np.ones((3, 5)))


def test_table_crops_longer_backgrounds_chunks_and_is_json():
    long = at_backgrounds(n=10, length=IN + 6)
    table = F.footprint_table(
        {"tf": kmer_model(TF), "bias": kmer_model(BIAS), "blind": blind_model()},
        long,
        {"tf-motif": TF, "bias-motif": BIAS},
        window=100,
        chunk_size=3,
        profile_flank=5,
    )
    json.dumps(table, allow_nan=False)
    heads = table["models"]["tf"]["heads"]["head_0"]
    profile, _ = expected_kmer_response()
    assert heads["tf-motif"]["profile-response"] == pytest.approx(profile, rel=1e-5)
    assert heads["bias-motif"]["profile-response"] == 0.0
    assert table["models"]["bias"]["heads"]["head_0"]["bias-motif"]["profile-response"] == pytest.approx(
        profile, rel=1e-5
    )
    assert F.response_ratio(table, "tf", ["bias-motif"], ["tf-motif"]) == 0.0
    assert math.isnan(F.response_ratio(table, "blind", ["bias-motif"], ["tf-motif"]))
    prof = heads["tf-motif"]["profiles"]
    assert prof["positions"] == list(range(-5, 5))  # center = output position of input base 20 = 10
    assert len(prof["footprint"]) == 2 and len(prof["footprint"][0]) == 10
    assert np.argmax(prof["footprint"][0]) == 2  # spike at output 7 = center - 3
    assert table["motifs"]["tf-motif"] == {"consensus": TF, "length": K, "type": "sequence"}


def test_background_sequences_from_dataset(tmp_path):
    rng = np.random.default_rng(0)
    seq = np.eye(4, dtype=np.uint8)[rng.integers(0, 4, (6, IN + 8))]
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["sequence"] = seq
        f["coords_strand"] = np.array([b"+", b"-"] * 3)
    got = F.background_sequences(path, IN)
    np.testing.assert_array_equal(got, seq[[0, 2, 4], 4 : 4 + IN])
    assert F.background_sequences(path, strands="all").shape == (6, IN + 8, 4)
    sub = F.background_sequences(path, IN, num=2, seed=1)
    assert sub.shape == (2, IN, 4)
    rows = [i for i in (0, 2, 4) if any((seq[i, 4 : 4 + IN] == s).all() for s in sub)]
    assert len(rows) == 2
    with pytest.raises(BpflowError, match="cannot center-crop"):
        F.background_sequences(path, IN + 1)


def test_load_motifs_and_from_files(tmp_path):
    jaspar = tmp_path / "m.jaspar"
    jaspar.write_text(">X1\tmine\nA [0 9 0]\nC [9 0 0]\nG [0 0 9]\nT [0 0 0]\n")
    specs = load_motifs(
        {
            "CTCF": "CTCF",
            "klf": {"builtin": "MA0039.2"},
            "bias": "tacgtc",
            "seq": {"sequence": TF},
            "mine": str(jaspar),
            "mine2": {"file": str(jaspar)},
        }
    )
    assert specs["CTCF"].consensus == "TGGCCACCAGGGGGCGCTA" and specs["klf"].consensus == "TGGGTGGGGC"
    assert specs["bias"].consensus == "TACGTC" and specs["bias"].fixed and specs["seq"].consensus == TF
    assert specs["mine"].consensus == specs["mine2"].consensus == "CAG" and not specs["mine"].fixed
    with pytest.raises(BpflowError, match="exactly one"):
        load_motifs({"x": {"sequence": "A", "builtin": "CTCF"}})
    with pytest.raises(BpflowError, match="not a built-in"):
        load_motifs({"x": {"builtin": "Nanog"}})
    # whole path: dataset backgrounds (A/T only) -> table JSON
    data = tmp_path / "bg.h5"
    with h5py.File(data, "w") as f:
        f["sequence"] = at_backgrounds(n=8, length=IN + 4)
    out = tmp_path / "fp.json"
    table = F.footprints_from_files({"tf": kmer_model(TF)}, data, {"tf": {"sequence": TF}, "b": BIAS}, out, num=5)
    saved = json.loads(out.read_text())
    assert saved["num-sequences"] == 5 and saved["background"]["num-requested"] == 5
    assert saved["models"]["tf"]["heads"]["head_0"]["tf"]["profile-response"] == pytest.approx(
        expected_kmer_response()[0], rel=1e-5
    )
    assert saved["models"]["tf"]["heads"]["head_0"]["b"]["profile-response"] == 0.0
    assert table["motifs"]["b"]["type"] == "sequence"
