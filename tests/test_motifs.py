"""`bpflow motifs`: TOMTOM's order on known pairs, the q-values against scipy, trimming and
information content by hand, and the step on contribution files with known contents (motifs
planted at known places, their log-odds as the contributions): every planted TF motif comes
back named by its match, the bias model's top pattern is the bias motif, and the factorization
check fires when the residual's contributions are replaced by the bias model's."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from scipy import stats

from bpflow.cli import main as cli
from bpflow.formats.contributions import ContributionWriter
from bpflow.formats.motifs import JASPAR_DATABASE, as_motif, builtin_motifs, read_motif_file, write_meme
from bpflow.formats.sequence import reverse_complement_one_hot
from bpflow.interpret import motifs as M

BIAS = "TACGTC"


def test_trim_bounds_and_information_content_by_hand():
    cwm = np.zeros((8, 4))
    cwm[2, 0], cwm[3, 1], cwm[5, 2], cwm[6, 3] = 0.2, -1.0, 0.5, 0.29
    # 0.3 x 1.0: positions 2 (0.2) and 6 (0.29) fall below, 3 and 5 pass
    assert M.trim_bounds(cwm, 0.3) == (3, 6)
    assert M.trim_bounds(cwm, 0.2) == (2, 7)
    assert M.trim_bounds(np.zeros((5, 4))) == (0, 5)
    # the core grows across gaps of at most two weaker positions, not to a stray far position
    wide = np.zeros((20, 4))
    wide[[8, 9, 12, 17], 0] = [0.5, 1.0, 0.4, 0.9]
    assert M.trim_bounds(wide, 0.3) == (8, 13)
    assert M.trim_bounds(wide, 0.3, max_gap=4) == (8, 18)
    ppm = np.array([[1.0, 0, 0, 0], [0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0, 0]])
    np.testing.assert_allclose(M.information_content(ppm, pseudocount=0), [2.0, 0.0, 1.0], atol=1e-12)


def test_bh_qvalues_match_scipy():
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(size=40), rng.uniform(0, 1e-3, size=10)])
    rng.shuffle(p)
    q = M.bh_qvalues(p[None, :])[0]
    np.testing.assert_allclose(q, stats.false_discovery_control(p, method="bh"), rtol=1e-12)
    assert M.bh_qvalues(np.array([[0.5]]))[0, 0] == 0.5


def test_tomtom_ranks_a_pattern_itself_and_its_reverse_complement_above_a_shuffled_copy():
    ctcf = builtin_motifs()["CTCF"].probabilities
    shuffled = ctcf[np.random.default_rng(1).permutation(len(ctcf))]
    jaspar = [m.probabilities for m in read_motif_file(JASPAR_DATABASE)]
    assert len(jaspar) == 879
    targets = [ctcf, reverse_complement_one_hot(ctcf), shuffled] + jaspar[:100]
    p, offsets, strands = M.tomtom([ctcf], targets, threads=1)
    p_self, p_rc, p_shuffled = p[0, :3]
    # itself and its reverse complement are the same match (the latter on the minus strand)
    assert strands[0, 0] == "+" and strands[0, 1] == "-" and offsets[0, 0] == 0
    assert p_self == pytest.approx(p_rc, rel=1e-6)
    assert max(p_self, p_rc) < 1e-12 < 1e-3 * p_shuffled
    assert np.argsort(p[0])[:2].tolist() in ([0, 1], [1, 0])


def test_write_meme_round_trips_through_the_reader(tmp_path):
    motifs = [builtin_motifs()["Klf4"], as_motif(np.array([[0.7, 0.1, 0.1, 0.1], [0, 0, 0.5, 0.5]]), "p1")]
    path = write_meme(tmp_path / "m.meme", motifs)
    back = read_motif_file(path)
    assert [m.name for m in back] == ["Klf4", "p1"] and back[0].matrix_id == "MA0039.2"
    for a, b in zip(motifs, back):
        # the reader smooths each column by 1e-3 per base
        np.testing.assert_allclose(a.probabilities, (b.probabilities * (1 + 4e-3) - 1e-3), atol=1e-5)


# ----------------------------------------------------------------------------------------------
# The step on contribution files with known contents


def write_planted(path, motifs, n=240, length=160, seed=0):
    """Random sequences, one instance of a motif per window (motifs in turn, random strand,
    sampled from the PWM) whose log-odds are its hypothetical contributions; small noise
    elsewhere."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 4, size=(n, length))
    hyp = rng.normal(0, 0.02, size=(n, length, 4)).astype(np.float32)
    for i in range(n):
        probs = motifs[i % len(motifs)].probabilities
        inst = np.array([rng.choice(4, p=row) for row in probs])
        log_odds = np.log((probs + 0.05) / 1.2 / 0.25)
        if rng.random() < 0.5:
            inst, log_odds = 3 - inst[::-1], log_odds[::-1, ::-1]
        pos = int(rng.integers(40, length - 40 - len(inst)))
        codes[i, pos : pos + len(inst)] = inst
        hyp[i, pos : pos + len(inst)] += log_odds.astype(np.float32)
    with ContributionWriter(path, length, ["chr1"], num_samples=n, head="nexus", target="profile") as w:
        w.write(np.eye(4, dtype=np.uint8)[codes], hyp, 0, np.arange(n) * 1000)
    return path


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    d = tmp_path_factory.mktemp("motifs")
    tfs = builtin_motifs()
    truth = {
        "motifs": [{"name": k, "probabilities": v.probabilities.tolist()} for k, v in tfs.items()],
        "bias": {"motif": BIAS},
    }
    (d / "truth.json").write_text(json.dumps(truth))
    write_planted(d / "residual.h5", [tfs["CTCF"], tfs["Klf4"]])
    write_planted(d / "bias.h5", [as_motif(BIAS)], seed=1)
    return d


def step(d, name, contributions, check, **extra):
    cfg = {
        "contributions-file": str(d / contributions),
        "output-prefix": str(d / "out" / name),
        "model": check,
        "check": check,
        "database": {"simulation-truth": str(d / "truth.json")},
        "leiden-runs": 4,
        "qc-output": str(d / "out" / f"qc_{name}.json"),
        **extra,
    }
    path = d / f"{name}.json"
    path.write_text(json.dumps(cfg))
    assert cli(["motifs", str(path), "--threads", "1"]) == 0
    return json.loads((d / "out" / f"{name}.json").read_text())


def best(pattern: dict) -> dict:
    return min(pattern["matches"], key=lambda m: m["p"])


@pytest.fixture(scope="module")
def bias_run(planted):
    return step(planted, "bias", "bias.h5", "bias")


def test_the_bias_models_top_pattern_is_the_bias_motif(planted, bias_run):
    top = next(p for p in bias_run["patterns"] if p["name"] == bias_run["top-pattern"])
    assert best(top)["label"] == f"{BIAS} (simulation bias motif)" and best(top)["q"] < 1e-3
    assert top["consensus"] in (BIAS, "GACGTA")  # trimmed to the motif, either orientation
    assert bias_run["check"]["verdict"] == "pass" and bias_run["warnings"] == []
    # modisco-lite's own HDF5 layout, readable by its report
    with h5py.File(planted / "out" / "bias.modisco.h5") as f:
        n = int(f["pos_patterns/pattern_0/seqlets/n_seqlets"][0])
    assert n == bias_run["patterns"][0]["num-seqlets"] >= 20


def test_the_residual_recovers_each_planted_motif_by_name_and_passes_the_check(planted, bias_run):
    out = step(planted, "residual", "residual.h5", "residual", **{"bias-motifs-json": str(planted / "out/bias.json")})
    names = {best(p)["label"] for p in out["patterns"] if p["sign"] == "+"}
    assert {"CTCF (simulation)", "Klf4 (simulation)"} <= names
    for p in out["patterns"]:
        assert not p["flag"]
        # the bias model's top pattern is a target of every pattern, however far down it ranks
        (bias_match,) = [m for m in p["matches"] if m["source"] == "bias model"]
        assert bias_match["q"] > 0.05
    assert out["check"]["verdict"] == "pass" and out["warnings"] == []
    assert json.loads((planted / "out" / "qc_residual.json").read_text())["warnings"] == []
    # the outputs: table, MEME of the trimmed patterns, logos, the HTML page
    rows = (planted / "out" / "residual.tsv").read_text().splitlines()
    assert rows[0].split("\t")[:5] == ["pattern", "sign", "num-seqlets", "consensus", "flag"]
    assert len(rows) == 1 + len(out["patterns"])
    meme = read_motif_file(planted / "out" / "residual.meme")
    assert [m.name for m in meme] == [p["name"] for p in out["patterns"]]
    for p in out["patterns"]:
        stem = p["name"].replace(".", "_")
        for kind in ("cwm", "ic"):
            assert (planted / "out" / "residual.logos" / f"{stem}.{kind}.png").read_bytes().startswith(b"\x89PNG")
    html = (planted / "out" / "residual.html").read_text()
    assert "CTCF (simulation)" in html and ">pass<" in html and html.count("data:image/png;base64") == 2 * len(meme)


def test_the_check_fires_when_the_residual_is_replaced_by_the_bias_model(planted, bias_run, capsys):
    out = step(planted, "swapped", "bias.h5", "residual", **{"bias-motifs-json": str(planted / "out/bias.json")})
    assert out["check"]["verdict"] == "fail" and out["warnings"]
    qc = json.loads((planted / "out" / "qc_swapped.json").read_text())
    assert qc["warnings"] == out["warnings"]
    assert "matches the bias motif" in out["warnings"][0]
    assert "QC: motifs of the residual model" in capsys.readouterr().err
    # and a bias model that learned the TF motifs fails its own check
    out = step(planted, "tf-bias", "residual.h5", "bias", **{"max-windows": 200})
    assert out["num-windows"] == 200  # a seeded sample of the 240 windows
    assert out["check"]["verdict"] == "fail"
    assert any("matches the TF motif CTCF" in w for w in out["warnings"])


def test_bad_inputs_fail_with_one_line_naming_the_file(planted, tmp_path, capsys):
    cfg = {
        "contributions-file": str(planted / "residual.h5"),
        "output-prefix": str(tmp_path / "x"),
        "database": {"motif-files": [str(tmp_path / "none.meme")]},
    }
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    assert cli(["motifs", str(tmp_path / "c.json")]) != 0
    err = capsys.readouterr().err
    assert "none.meme" in err
    cfg["database"] = {"jaspar": False}
    cfg["bias-motifs-json"] = str(planted / "truth.json")
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    assert cli(["motifs", str(tmp_path / "c.json")]) != 0
    assert "truth.json: not a bpflow motifs summary" in capsys.readouterr().err
    cfg["contributions-file"] = str(planted / "truth.json")
    del cfg["bias-motifs-json"]
    cfg["database"] = {}
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    assert cli(["motifs", str(tmp_path / "c.json")]) != 0
    assert "truth.json" in capsys.readouterr().err
    assert not list(tmp_path.glob("x*"))  # nothing half-written


def test_low_information_patterns_are_reported_but_not_matched():
    """A pattern whose seqlets share contributions but no sequence (flat frequencies, here
    spread evenly over 30 bp) is low-information; a planted motif's pattern is not."""
    from types import SimpleNamespace

    ctcf = builtin_motifs()["CTCF"].probabilities
    flat = SimpleNamespace(
        sequence=np.full((30, 4), 0.25),
        contrib_scores=np.full((30, 4), 0.01),
        seqlets=[1] * 40,
    )
    motif = SimpleNamespace(sequence=ctcf, contrib_scores=ctcf * 0.1, seqlets=[1] * 25)
    flat_p, motif_p = M.patterns_from_modisco([flat, motif], None, trim_threshold=0.3, min_information=0.5)
    assert flat_p.low_information.startswith("low information (30 bp core, 0.00 bits")
    assert not motif_p.low_information and motif_p.name == "pos_patterns.pattern_1"
    targets = [M.Target(builtin_motifs()[k], "tf", "x") for k in ("CTCF", "Klf4")]
    targets += [M.Target(m, "name", "JASPAR 2024") for m in read_motif_file(JASPAR_DATABASE)[:50]]
    M.match_patterns([flat_p, motif_p], targets, top=3, threads=1)
    assert flat_p.matches == [] and motif_p.matches[0]["motif"] == "CTCF"


def match(kind: str, p: float, q: float) -> dict:
    return {"kind": kind, "p": p, "q": q, "label": f"{kind} motif"}


@pytest.mark.parametrize(
    "check, matches, flagged",
    [
        # a residual pattern is flagged when its best match among TF and bias motifs is a bias motif
        ("residual", [match("tf", 1e-3, 0.02), match("bias", 1e-6, 1e-4)], "matches the bias motif bias motif"),
        ("residual", [match("tf", 1e-9, 1e-7), match("bias", 1e-6, 1e-4)], ""),  # more like a TF motif
        ("residual", [match("bias", 0.01, 0.2)], ""),  # not significant
        ("residual", [match("name", 1e-12, 1e-10), match("bias", 1e-4, 0.01)], "matches the bias motif"),
        ("bias", [match("tf", 1e-6, 1e-4), match("bias", 1e-3, 0.02)], "matches the TF motif tf motif"),
        ("bias", [match("name", 1e-9, 1e-7), match("bias", 1e-3, 0.02)], None),  # no TF motif to check
    ],
)
def test_the_factorization_check_rule(check, matches, flagged):
    x = M.Pattern("pos_patterns.pattern_0", "+", 30, np.eye(4)[[0, 1, 2, 3, 0]], np.ones((5, 4)))
    x.trim, x.matches = (0, 5), matches
    result, warnings = M.factorization_check([x], check, 0.05, "motifs of m")
    if flagged is None:
        assert result["verdict"] == "not run (no TF motif to check against)" and not warnings
        return
    assert x.flagged.startswith(flagged) and bool(flagged) == bool(warnings)
    assert result["verdict"] == ("fail" if flagged else "pass")
    if flagged:
        assert warnings == [f"motifs of m: pattern pos_patterns.pattern_0 (30 seqlets, ACGTA) {x.flagged}"]
