"""Bad input to the training steps and the model builders: one-line errors naming the file and
the key, before any training, and no output a later step (or Snakemake) would take as done.

Items of the bad-input report: out-of-range settings (4), a bias model named like the combined
model's parts (5), broken HDF5 and model inputs of train-transformation / train-combined (6),
a full disk while writing (9); and the same kind of mistake elsewhere (a model file that is not
a .keras file, a bias model that does not fit the config, head names that disagree).
"""

from __future__ import annotations

import errno
import json
import logging
import warnings
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

import bpflow  # noqa: F401  (registers custom objects for load_model)
from bpflow import cli, schemas
from bpflow.models import combinedModel, soloModel, transformationModel
from bpflow.train import loop
from bpflow.train import steps as training
from bpflow.train.settings import check_config
from bpflow.utils import BpflowError

import train_helpers as th
from data_helpers import stderr_lines

HEAD = [{"head-name": "h0", "num-tasks": 2}]
LINEAR = {"name": "simple", "types": ["linear"]}


# --------------------------------------------------------------------------- helpers


def run_cli(step, config, tmp_path, capsys):
    """``bpflow train-<step> c.json``: (exit code, stderr lines, config path)."""
    path = th.write_config(tmp_path / "c.json", config)
    code = cli.main([f"train-{step}", path])
    return code, stderr_lines(capsys.readouterr().err), path


def outputs_left(tmp_path, prefix) -> list[str]:
    """Files of a run with ``prefix`` that a later step or a rerun could take as done, plus
    temporary files."""
    names = [f"{prefix}.keras", f"{prefix}_combined.keras", f"{prefix}_residual.keras"]
    names += [f"{prefix}.history.json", f"{prefix}.loss.png", f"{prefix}.checkpoint"]
    left = [n for n in names if (tmp_path / n).exists()]
    return left + [p.name for p in tmp_path.glob(".*tmp*")]


def solo_file(path, output_length=th.OUTPUT_LENGTH, heads=HEAD, name="solo"):
    """An untrained tiny bias (solo) model saved to ``path``."""
    a = th.BIAS_ARCH
    in_len = th.needed(a, output_length)
    model = soloModel(
        in_len, output_length, a["filters"], a["layers"], a["input_filter_width"], a["output_filter_width"], heads, name
    )
    model.save(path)
    return path


def transformation_file(path, output_length=th.OUTPUT_LENGTH, heads=HEAD):
    """An untrained tiny transformation model (around a solo model) saved to ``path``."""
    a = th.BIAS_ARCH
    in_len = th.needed(a, output_length)
    solo = soloModel(
        in_len,
        output_length,
        a["filters"],
        a["layers"],
        a["input_filter_width"],
        a["output_filter_width"],
        heads,
        "solo",
    )
    transformationModel(solo, LINEAR, LINEAR, heads).save(path)
    return path


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if any model is fitted."""

    def fit(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(keras.Model, "fit", fit)


def transformation_setup(tmp_path, **kw):
    """Tiny data, a saved solo model and a train-transformation config with counts data."""
    bias_in = th.needed(th.BIAS_ARCH)
    files = {
        "train-data": th.synthetic_h5(tmp_path / "train.h5", 32, bias_in, seed=1),
        "val-data": th.synthetic_h5(tmp_path / "val.h5", 16, bias_in, jitter=0, seed=2),
        "counts-train-data": th.synthetic_h5(
            tmp_path / "ctrain.h5", 32, bias_in, jitter=0, seed=3, chunks=8, compression="gzip"
        ),
        "counts-val-data": th.synthetic_h5(tmp_path / "cval.h5", 16, bias_in, jitter=0, seed=4),
    }
    solo = solo_file(tmp_path / "bias.keras")
    config = th.transformation_config(tmp_path, files["train-data"], files["val-data"], solo, epochs=1, **kw)
    config["counts-train-data"] = str(files["counts-train-data"])
    config["counts-val-data"] = str(files["counts-val-data"])
    return config, files


def combined_setup(tmp_path, **kw):
    """Tiny data, a saved transformation model and a train-combined config."""
    res_in = th.needed(th.RESIDUAL_ARCH)
    files = {
        "train-data": th.synthetic_h5(tmp_path / "train.h5", 32, res_in, seed=1, chunks=8, compression="gzip"),
        "val-data": th.synthetic_h5(tmp_path / "val.h5", 16, res_in, jitter=0, seed=2),
    }
    bias = transformation_file(tmp_path / "transformation.keras")
    config = th.combined_config(tmp_path, files["train-data"], files["val-data"], bias, epochs=1, **kw)
    return config, files


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def zero(path):
    path.write_bytes(b"\0" * path.stat().st_size)


def narrow_head(path):
    """head_0 10 bp wide: too narrow for the output length."""
    with h5py.File(path, "a") as f:
        data = f["head_0"][:, :10, :]
        del f["head_0"]
        f["head_0"] = data


def one_task(path):
    """head_0 with 1 task where the config says 2."""
    with h5py.File(path, "a") as f:
        data = f["head_0"][:, :, :1]
        del f["head_0"]
        f["head_0"] = data


def garble_chunk(path, dataset="head_0"):
    """Overwrite the bytes of the first (compressed) chunk of ``dataset``: the file opens, its
    shapes are right, reading that chunk fails."""
    with h5py.File(path) as f:
        info = f[dataset].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(b"\xff" * info.size)


# --------------------------------------------------------------------------- item 4: ranges


@pytest.mark.parametrize(
    "step, edit, key, message",
    [
        ("solo", lambda c: c["settings"].update({"learning-rate": 5}), "settings/learning-rate", "maximum of 1"),
        ("solo", lambda c: c["settings"].update({"learning-rate": 0}), "settings/learning-rate", "minimum of 0"),
        ("solo", lambda c: c["settings"].update({"batch-size": 0}), "settings/batch-size", "minimum of 1"),
        ("solo", lambda c: c["settings"].update({"batch-size": 10**7}), "settings/batch-size", "maximum"),
        ("solo", lambda c: c["settings"].update({"epochs": 0}), "settings/epochs", "minimum of 1"),
        ("solo", lambda c: c["settings"].update({"epochs": 10**6}), "settings/epochs", "maximum"),
        ("solo", lambda c: c["settings"].update({"max-jitter": -1}), "settings/max-jitter", "minimum of 0"),
        ("solo", lambda c: c["settings"].update({"seed": 2**40}), "settings/seed", "maximum"),
        ("solo", lambda c: c["settings"].update({"data-workers": 10**4}), "settings/data-workers", "maximum"),
        (
            "solo",
            lambda c: c["settings"]["architecture"].update({"filters": 10**6}),
            "settings/architecture/filters",
            "maximum",
        ),
        (
            "solo",
            lambda c: c["settings"]["architecture"].update({"layers": 64}),
            "settings/architecture/layers",
            "maximum",
        ),
        (
            "solo",
            lambda c: c["settings"]["architecture"].update({"input-filter-width": 0}),
            "settings/architecture/input-filter-width",
            "minimum of 1",
        ),
        (
            "solo",
            lambda c: c["settings"]["architecture"].update({"output-filter-width": 10**5}),
            "settings/architecture/output-filter-width",
            "maximum",
        ),
        (
            "solo",
            lambda c: c["heads"][0].update({"counts-loss-frac-target": 1.5}),
            "heads/0/counts-loss-frac-target",
            "maximum",
        ),
        ("solo", lambda c: c["heads"][0].update({"num-tasks": 10**5}), "heads/0/num-tasks", "maximum"),
        ("transformation", lambda c: c["settings"].update({"learning-rate": 5}), "settings/learning-rate", "maximum"),
        ("transformation", lambda c: c["settings"].update({"output-length": 0}), "settings/output-length", "minimum"),
        ("combined", lambda c: c["settings"].update({"learning-rate": 5}), "settings/learning-rate", "maximum"),
        (
            "combined",
            lambda c: c["settings"].update({"counts-schedule": "profile-first", "counts-phase-learning-rate": 2}),
            "settings/counts-phase-learning-rate",
            "maximum",
        ),
    ],
)
def test_out_of_range_settings_fail_with_one_line_naming_key_and_file(tmp_path, capsys, step, edit, key, message):
    """Item 4: a learning rate of 5 (and other values no real run needs) is refused by the
    schema before any file is read: one line naming the config file and the key path."""
    bogus = tmp_path / "not_hdf5.h5"
    bogus.write_text("this is not HDF5")  # reading it would fail differently
    model = tmp_path / "model.keras"
    model.write_text("not a model")
    config = {
        "solo": lambda: th.solo_config(tmp_path, bogus, bogus),
        "transformation": lambda: th.transformation_config(tmp_path, bogus, bogus, model),
        "combined": lambda: th.combined_config(tmp_path, bogus, bogus, model),
    }[step]()
    edit(config)
    code, err, path = run_cli(step, config, tmp_path, capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"bpflow train-{step}: error: {path}: key {key}: ") and message in err[0], err[0]
    assert outputs_left(tmp_path, {"solo": "bias"}.get(step, step)) == []


def test_training_schemas_bound_every_number():
    """Every number of the training steps' schemas has an upper bound (item 4)."""

    def numbers(node, path):
        if isinstance(node, dict):
            if node.get("type") in ("integer", "number"):
                yield path, node
            for key, value in node.items():
                yield from numbers(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from numbers(value, f"{path}/{i}")

    for step in ("train-bias", "train-transformation", "train-combined"):
        found = list(numbers(schemas.load_schema(step), step))
        assert len(found) > 15
        for path, node in found:
            assert "maximum" in node or "exclusiveMaximum" in node, path
            assert "minimum" in node or "exclusiveMinimum" in node, path


@pytest.mark.parametrize(
    "step, config, key",
    [
        ("predict", {"batch-size": 10**8}, "batch-size"),
        ("footprints", {"num-backgrounds": 10**9}, "num-backgrounds"),
        ("prepare-regions", {"seed": -1}, "seed"),
        ("prepare-data", {"max-jitter": 10**6}, "max-jitter"),
    ],
)
def test_other_steps_bound_their_numbers(step, config, key):
    """The bounds reach the other steps' schemas (the first error reported is the key's)."""
    good = json.loads((Path(__file__).parent / "schema_examples" / f"{step}.json").read_text())["good"][0]
    with pytest.raises(BpflowError) as err:
        schemas.validate({**good, **config}, step, "x.json")
    assert str(err.value).startswith(f"x.json: key {key}: ") and "\n" not in str(err.value)


def test_a_high_but_legal_learning_rate_warns(tmp_path, caplog):
    config = th.solo_config(tmp_path, tmp_path / "t.h5", tmp_path / "v.h5", **{"learning-rate": 0.2})
    for name in ("t.h5", "v.h5"):
        (tmp_path / name).write_text("")
    with caplog.at_level(logging.WARNING, logger="bpflow.train"):
        check_config(config, "bias", "c.json")
    assert "c.json: key settings/learning-rate: 0.2 is unusually high" in caplog.text
    caplog.clear()
    config["settings"]["learning-rate"] = 0.004
    with caplog.at_level(logging.WARNING, logger="bpflow.train"):
        check_config(config, "bias", "c.json")
    assert "unusually high" not in caplog.text


def test_a_short_combined_counts_phase_warns_before_training(tmp_path, caplog):
    """train-combined warns when profile-first's counts phase gets fewer than 8 epochs: the
    default (a quarter of epochs) under 32, or counts-phase-epochs under 8; not at 8, not for
    a closed-form phase, not under the joint schedule, not for the bias stage."""
    for name in ("t.h5", "v.h5", "tr.keras"):
        (tmp_path / name).write_text("")

    def warned(step="combined", **kw):
        if step == "combined":
            config = th.combined_config(tmp_path, tmp_path / "t.h5", tmp_path / "v.h5", tmp_path / "tr.keras", **kw)
        else:
            config = th.solo_config(tmp_path, tmp_path / "t.h5", tmp_path / "v.h5", **kw)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="bpflow.train"):
            check_config(config, step, "c.json")
        return [r.getMessage() for r in caplog.records if "counts phase gets" in r.getMessage()]

    pf = {"counts-schedule": "profile-first"}
    (message,) = warned(epochs=31, **pf)  # 31 // 4 = 7
    assert message.startswith("c.json: key settings/epochs: the counts phase gets 7 epochs, fewer than the 8")
    assert "(counts-phase-epochs >= 8, or epochs >= 32 with its default of a quarter)" in message
    assert warned(epochs=32, **pf) == []
    (message,) = warned(epochs=60, **{**pf, "counts-phase-epochs": 3})
    assert message.startswith("c.json: key settings/counts-phase-epochs: the counts phase gets 3 epochs")
    assert warned(epochs=60, **{**pf, "counts-phase-epochs": 8}) == []
    assert warned(epochs=12, **{**pf, "counts-phase-trainable": "counts-layers"}) == []
    assert warned(epochs=12, **{"counts-schedule": "joint"}) == []
    assert warned("bias", epochs=12, **pf) == []


# --------------------------------------------------------------------------- item 5: model names


def _build(bias, input_length=None):
    a = th.RESIDUAL_ARCH
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return combinedModel(
            input_length or th.needed(a),
            th.OUTPUT_LENGTH,
            a["filters"],
            a["layers"],
            a["input_filter_width"],
            a["output_filter_width"],
            HEAD,
            bias,
        )


def _run(model, x):
    return [np.asarray(o) for o in model(x, training=False)]


@pytest.mark.backend
@pytest.mark.parametrize("name", ["bias", "residual", "combined", "combined_input", "bias_profile_h0"])
def test_combined_model_accepts_any_bias_model_name(tmp_path, name):
    """Item 5: a bias model named "bias" (BPReveal's example), or like any other part of the
    combined model, builds, compiles, predicts, saves and reloads; the returned models keep their
    names and outputs, the bias weights stay shared and frozen."""
    a = th.BIAS_ARCH
    bias = soloModel(
        th.needed(a),
        th.OUTPUT_LENGTH,
        a["filters"],
        a["layers"],
        a["input_filter_width"],
        a["output_filter_width"],
        HEAD,
        name,
    )
    combined, residual, bias_out = _build(bias)
    assert (combined.name, residual.name, bias_out.name) == ("combined", "residual", "bias")
    assert combined.output_names == ["combined_profile_h0", "combined_logcounts_h0"]
    assert residual.output_names == ["residual_profile_h0", "residual_logcounts_h0"]
    assert bias_out.output_names == ["bias_profile_h0", "bias_logcounts_h0"]
    assert bias.name == name and not bias.trainable and len(bias_out.trainable_weights) == 0

    length = combined.inputs[0].shape[1]
    crop = (length - bias.inputs[0].shape[1]) // 2
    x = np.eye(4, dtype="float32")[np.random.default_rng(0).integers(0, 4, size=(3, length))]
    c, r, b = _run(combined, x), _run(residual, x), _run(bias_out, x)
    expected_bias = _run(bias, x[:, crop : length - crop])
    for got, want in zip(b, expected_bias):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(c[0], b[0] + r[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(c[1], np.logaddexp(b[1], r[1]), rtol=1e-5, atol=1e-5)

    combined.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    y = [np.abs(o) + 1 for o in c]
    before = [np.array(w) for w in bias.weights]
    combined.fit(x, y, epochs=1, batch_size=3, verbose=0)
    for w, w0 in zip(bias.weights, before):
        np.testing.assert_array_equal(np.asarray(w), w0)  # the bias model is frozen
    for model, label in ((combined, "combined"), (residual, "residual"), (bias_out, "bias")):
        path = tmp_path / f"{label}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path, compile=False)
        assert loaded.output_names == model.output_names
        for got, want in zip(_run(loaded, x), _run(model, x)):
            np.testing.assert_array_equal(got, want)


@pytest.mark.backend
@pytest.mark.parametrize("name", ["transformation", "transformation_input", "transformation_logcounts_h0"])
def test_transformation_model_accepts_any_solo_model_name(tmp_path, name):
    """The same for transformationModel (it refused a solo model named "transformation")."""
    a = th.BIAS_ARCH
    solo = soloModel(
        th.needed(a),
        th.OUTPUT_LENGTH,
        a["filters"],
        a["layers"],
        a["input_filter_width"],
        a["output_filter_width"],
        HEAD,
        name,
    )
    model = transformationModel(solo, LINEAR, {"name": "passthrough"}, HEAD)
    assert model.name == "transformation"
    assert model.output_names == ["transformation_profile_h0", "transformation_logcounts_h0"]
    assert isinstance(model.get_layer("transformation_logcounts_h0"), keras.layers.Identity)
    x = np.eye(4, dtype="float32")[np.random.default_rng(1).integers(0, 4, size=(2, th.needed(a)))]
    for got, want in zip(_run(model, x), _run(solo, x)):  # an untrained linear transformation is the identity
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    path = tmp_path / "t.keras"
    model.save(path)
    for got, want in zip(_run(keras.saving.load_model(path), x), _run(model, x)):
        np.testing.assert_array_equal(got, want)
    combined, _, bias_out = _build(model)  # and the transformation serves as a combined model's bias
    assert bias_out(np.zeros((1, combined.inputs[0].shape[1], 4), "float32"))[0].shape == (1, th.OUTPUT_LENGTH, 2)


def test_train_transformation_of_a_solo_model_named_transformation(tmp_path, capsys):
    """Through the step: a bias model trained with model-name "transformation" (refused before)."""
    config, _ = transformation_setup(tmp_path)
    solo_file(tmp_path / "bias.keras", name="transformation")
    code, err, _ = run_cli("transformation", config, tmp_path, capsys)
    assert code == 0, err
    model = keras.saving.load_model(tmp_path / "transformation.keras")
    assert model.output_names == ["transformation_profile_h0", "transformation_logcounts_h0"]


# --------------------------------------------------------------------------- item 6: broken inputs


@pytest.mark.parametrize(
    "step, key, damage, message",
    [
        ("transformation", "counts-train-data", truncate, "not a readable HDF5 file (Unable to synchronously open"),
        ("transformation", "counts-val-data", zero, "not a readable HDF5 file"),
        ("transformation", "counts-train-data", narrow_head, "'head_0' (the model's output-length is 24) is 10 bp"),
        (
            "transformation",
            "counts-val-data",
            one_task,
            "'head_0' has 1 task(s) but the config's head 0 has num-tasks 2",
        ),
        ("transformation", "counts-train-data", garble_chunk, "cannot read 'head_0'"),
        ("transformation", "train-data", truncate, "not a readable HDF5 file"),
        ("combined", "train-data", truncate, "not a readable HDF5 file"),
        ("combined", "val-data", zero, "not a readable HDF5 file"),
        ("combined", "train-data", narrow_head, "'head_0' (the model's output-length is 24) is 10 bp"),
        ("combined", "val-data", one_task, "'head_0' has 1 task(s)"),
    ],
)
def test_broken_hdf5_fails_before_training(tmp_path, capsys, no_training, step, key, damage, message):
    """Item 6: a truncated, zeroed, wrongly shaped or corrupt dataset given to train-transformation
    or train-combined (counts-train-data included, which is read after the profile part is
    trained) fails before anything is fitted, in one line naming the key and the file."""
    config, files = (transformation_setup if step == "transformation" else combined_setup)(tmp_path)
    damage(files[key])
    code, err, _ = run_cli(step, config, tmp_path, capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"bpflow train-{step}: error: {key} {files[key]}: ") and message in err[0], err[0]
    assert outputs_left(tmp_path, step) == []


def test_a_corrupt_chunk_of_training_data_is_one_line(tmp_path, capsys, no_training):
    """A chunk that cannot be decompressed (the file opens, the shapes are right) fails where the
    data are first read, before training, naming the file and the dataset (train-solo)."""
    bias_in = th.needed(th.BIAS_ARCH)
    train = th.synthetic_h5(tmp_path / "train.h5", 32, bias_in, seed=1, chunks=8, compression="gzip")
    val = th.synthetic_h5(tmp_path / "val.h5", 16, bias_in, jitter=0, seed=2)
    garble_chunk(train)
    code, err, _ = run_cli("solo", th.solo_config(tmp_path, train, val, epochs=1), tmp_path, capsys)
    assert code == 2 and len(err) == 1, err
    assert f"{train}: cannot read 'head_0'" in err[0] and "truncated or corrupt" in err[0], err[0]
    assert outputs_left(tmp_path, "bias") == []


@pytest.mark.parametrize(
    "step, damage, message",
    [
        ("transformation", zero, "not a readable .keras model file"),
        ("combined", truncate, "not a readable .keras model file"),
        ("combined", lambda p: p.unlink() or p.write_bytes(b""), "the model file is empty"),
    ],
)
def test_broken_model_file_fails_before_training(tmp_path, capsys, no_training, step, damage, message):
    """A zeroed, truncated or empty model file: one line naming the key and the file (Keras said
    "File not found" of a file that exists)."""
    config, _ = (transformation_setup if step == "transformation" else combined_setup)(tmp_path)
    s = config["settings"]
    key = (
        "settings/solo-model-file"
        if step == "transformation"
        else "settings/transformation-model/transformation-model-file"
    )
    path = Path(
        s["solo-model-file"] if step == "transformation" else s["transformation-model"]["transformation-model-file"]
    )
    damage(path)
    code, err, config_path = run_cli(step, config, tmp_path, capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"bpflow train-{step}: error: {config_path}: key {key}: {path}: {message}"), err[0]
    assert outputs_left(tmp_path, step) == []


# --------------------------------------------------------------------------- item 9: full disk


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_while_writing_a_checkpoint(tmp_path, capsys, monkeypatch, caplog):
    """Item 9: the disk fills while epoch 2's checkpoint is written: one line naming the
    checkpoint and "no space left", exit 2, epoch 1's checkpoint intact, no model or history,
    no temporary file; a rerun resumes after epoch 1 and finishes."""
    bias_in = th.needed(th.BIAS_ARCH)
    train = th.synthetic_h5(tmp_path / "train.h5", 32, bias_in, seed=1)
    val = th.synthetic_h5(tmp_path / "val.h5", 16, bias_in, jitter=0, seed=2)
    config = th.solo_config(tmp_path, train, val, epochs=2)
    checkpoint = tmp_path / "bias.checkpoint" / "checkpoint.npz"
    original = np.savez
    calls = []

    def savez(fh, **arrays):
        calls.append(fh)
        if len(calls) == 1:
            return original(fh, **arrays)
        fh.write(b"PK\x03\x04 half a checkpoint")
        _enospc()

    monkeypatch.setattr(loop.np, "savez", savez)
    code, err, path = run_cli("solo", config, tmp_path, capsys)
    monkeypatch.setattr(loop.np, "savez", original)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"bpflow train-solo: error: {checkpoint}: cannot write the checkpoint: no space left")
    assert "the previous checkpoint is kept" in err[0]
    with np.load(checkpoint) as z:  # epoch 1's checkpoint, whole
        assert json.loads(str(z["meta"]))["state"]["epochs_done"] == 1
    assert outputs_left(tmp_path, "bias") == ["bias.checkpoint"]

    with caplog.at_level(logging.INFO, logger="bpflow.train"):
        assert cli.main(["train-solo", path]) == 0
    assert f"resuming from {checkpoint} after epoch 1" in caplog.text
    record = json.loads((tmp_path / "bias.history.json").read_text())
    assert record["history"]["epoch"] == [1, 2] and (tmp_path / "bias.keras").is_file()
    assert not checkpoint.exists()


@pytest.mark.parametrize("target", ["model", "history"])
def test_full_disk_while_saving_the_model_or_history(tmp_path, capsys, monkeypatch, target):
    """A full disk when the trained model or the history is written: one line naming that
    file, no model, plot or history left (a half-written run is not done), the checkpoint kept
    so that the rerun saves without training again."""
    bias_in = th.needed(th.BIAS_ARCH)
    train = th.synthetic_h5(tmp_path / "train.h5", 32, bias_in, seed=1)
    val = th.synthetic_h5(tmp_path / "val.h5", 16, bias_in, jitter=0, seed=2)
    config = th.solo_config(tmp_path, train, val, epochs=1)
    if target == "model":

        def save(self, filepath, *args, **kwargs):
            with open(filepath, "wb") as fh:
                fh.write(b"PK partial")
            _enospc()

        monkeypatch.setattr(keras.Model, "save", save)
        culprit = tmp_path / "bias.keras"
    else:

        def write_json(path, obj):
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text("{")
            tmp.unlink()
            _enospc()

        monkeypatch.setattr(training, "write_json_atomic", write_json)
        culprit = tmp_path / "bias.history.json"
    code, err, path = run_cli("solo", config, tmp_path, capsys)
    monkeypatch.undo()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"bpflow train-solo: error: {culprit}: cannot write the ") and "no space left" in err[0]
    assert "bias.checkpoint is kept; a rerun resumes from it" in err[0]
    assert outputs_left(tmp_path, "bias") == ["bias.checkpoint"]

    class Fail(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            raise AssertionError("trained again")

    record = training.train_solo(json.loads(json.dumps(config)), callbacks=[Fail()])
    assert record["history"]["epoch"] == [1] and (tmp_path / "bias.keras").is_file()
    assert outputs_left(tmp_path, "bias") == ["bias.keras", "bias.history.json", "bias.loss.png"]


# --------------------------------------------------------------------------- the same kind elsewhere


def test_a_model_file_that_is_not_keras(tmp_path, capsys, no_training):
    """A solo-model-file that is an HDF5 dataset named .h5 / a text file: one line, not Keras's
    legacy-format traceback."""
    config, files = transformation_setup(tmp_path)
    other = tmp_path / "bias.model"
    other.write_text("a BPReveal SavedModel directory would be elsewhere")
    config["settings"]["solo-model-file"] = str(other)
    code, err, path = run_cli("transformation", config, tmp_path, capsys)
    assert code == 2 and len(err) == 1, err
    assert f"key settings/solo-model-file: {other}: not a .keras model file" in err[0]
    config["settings"]["solo-model-file"] = str(tmp_path / "missing.keras")
    code, err, path = run_cli("transformation", config, tmp_path, capsys)
    assert code == 2 and len(err) == 1 and "key settings/solo-model-file: file not found" in err[0], err
    assert outputs_left(tmp_path, "transformation") == []


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda p: transformation_file(p, output_length=th.OUTPUT_LENGTH - 4),
            "the model's profile output of head 0 is 20 bp long, but the config's output-length is 24",
        ),
        (
            lambda p: transformation_file(p, heads=HEAD + [{"head-name": "h1", "num-tasks": 1}]),
            "the model has 4 outputs, but the config has 1 head(s)",
        ),
        (
            lambda p: transformation_file(p, heads=[{"head-name": "h0", "num-tasks": 1}]),
            "the model's head 0 has 1 task(s), but the config's head 'h0' has num-tasks 2",
        ),
    ],
)
def test_a_bias_model_that_does_not_fit_the_combined_config(tmp_path, capsys, no_training, make, message):
    """train-combined with a transformation model of another output length, head count or
    num-tasks: one line naming the key and the model file, before training."""
    config, _ = combined_setup(tmp_path)
    path = make(tmp_path / "transformation.keras")
    code, err, config_path = run_cli("combined", config, tmp_path, capsys)
    assert code == 2 and len(err) == 1, err
    key = "settings/transformation-model/transformation-model-file"
    assert err[0].startswith(f"bpflow train-combined: error: {config_path}: key {key}: {path}: {message}"), err[0]
    assert outputs_left(tmp_path, "combined") == []


def test_heads_in_another_order_than_the_model_or_the_data(tmp_path, capsys, no_training, caplog):
    """Heads named in the model / recorded in the dataset in another order than the config's
    are an error (each head would learn the other's data); other names only a warning."""
    two = [{"head-name": "a", "num-tasks": 2}, {"head-name": "b", "num-tasks": 2}]
    config, files = combined_setup(tmp_path)
    config["heads"] = [th.head("b"), th.head("a")]
    for key in ("train-data", "val-data"):  # two heads in the data
        with h5py.File(files[key], "a") as f:
            f["head_1"] = f["head_0"][...]
    transformation_file(tmp_path / "transformation.keras", heads=two)
    code, err, _ = run_cli("combined", config, tmp_path, capsys)
    assert code == 2 and len(err) == 1, err
    assert "transformation.keras: the model's heads are a, b but the config lists b, a" in err[0], err[0]

    config["heads"] = [th.head("a"), th.head("b")]
    for key in ("train-data", "val-data"):
        with h5py.File(files[key], "a") as f:
            f.require_group("metadata").attrs["head_names"] = json.dumps(["b", "a"])
    code, err, _ = run_cli("combined", config, tmp_path, capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(
        f"bpflow train-combined: error: train-data {files['train-data']}: the file's heads (head_0, head_1, ...) are b, a but the "
        "config lists a, b: the heads are in a different order"
    )

    # other names: a warning, and the inputs pass
    for key in ("train-data", "val-data"):
        with h5py.File(files[key], "a") as f:
            f["metadata"].attrs["head_names"] = json.dumps(["x", "y"])
    filled, _, heads = check_config(config, "combined", "c.json")
    with caplog.at_level(logging.WARNING, logger="bpflow.dataset"):
        training.check_inputs("combined", filled, heads, "c.json")
    assert "heads (head_0, head_1, ...) are named x, y, the config's a, b (matched by position)" in caplog.text
