"""The model builders against known answers (run under every Keras backend)."""

import warnings

import keras
import numpy as np
import pytest

import bpflow  # noqa: F401  (registers custom objects for load_model)
from bpflow import lengths
from bpflow.layers import SimpleTransform
from bpflow.models import combinedModel, soloModel, transformationModel

pytestmark = pytest.mark.backend

HEADS = [
    {"head-name": "nexus", "num-tasks": 2, "profile-loss-weight": 1, "use-bias-counts": True},
    {"head-name": "cap", "num-tasks": 1, "counts-loss-frac-target": 0.1, "use-bias-counts": False},
]


def one_hot(n, length, seed=0):
    rng = np.random.default_rng(seed)
    return np.eye(4, dtype="float32")[rng.integers(0, 4, size=(n, length))]


def run(model, x):
    return [np.asarray(o) for o in model(x, training=False)]


def small_solo(input_length=None, out=20, layers=2, w_in=5, w_out=3, name="solo", heads=HEADS):
    needed = lengths.needed_input_length(out, layers, w_in, w_out)
    return soloModel(input_length or needed, out, 4, layers, w_in, w_out, heads, name)


# ------------------------------------------------------------------------ solo model


@pytest.mark.parametrize(
    "out, layers, w_in, w_out, expected_in",
    [(1000, 9, 25, 25, 3092), (1000, 8, 21, 75, 2114), (50, 3, 7, 5, 50 + 6 + 28 + 4), (1, 0, 1, 1, 1)],
)
def test_solo_shapes_and_needed_length(out, layers, w_in, w_out, expected_in):
    assert lengths.needed_input_length(out, layers, w_in, w_out) == expected_in
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the exact length must not warn
        model = soloModel(expected_in, out, 2, layers, w_in, w_out, HEADS, "m")
    assert [tuple(o.shape) for o in model.outputs] == [(None, out, 2), (None, out, 1), (None, 1), (None, 1)]
    assert model.inputs[0].shape == (None, expected_in, 4)
    assert [layer.name for layer in model.layers if "crop_input" in layer.name] == []
    # one base less than needed is an error naming the needed length
    if expected_in > 1:
        with pytest.raises(ValueError, match=f"needs an input length of {expected_in}"):
            soloModel(expected_in - 1, out, 2, layers, w_in, w_out, HEADS, "m")


def test_solo_output_names_derive_from_model_and_head():
    model = small_solo(name="bias")
    names = [model.get_layer(f"bias_{kind}_{h['head-name']}") for kind in ("profile", "logcounts") for h in HEADS]
    assert [layer.output for layer in names] == list(model.outputs)


def test_solo_body_is_bpnet():
    """Layer-by-layer check of the architecture against a numpy re-implementation."""
    model = small_solo(out=6, layers=2, w_in=3, w_out=3, heads=[{"head-name": "h", "num-tasks": 1}])
    x = one_hot(2, model.inputs[0].shape[1], seed=3)

    def conv(h, layer, dilation=1):
        k, b = (np.asarray(w) for w in layer.get_weights())
        width = k.shape[0]
        span = (width - 1) * dilation
        outs = [sum(h[:, i + j * dilation, :] @ k[j] for j in range(width)) + b for i in range(h.shape[1] - span)]
        return np.stack(outs, axis=1)

    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    h = relu(conv(x, model.get_layer("solo_conv_input")))
    for d in (2, 4):
        c = relu(conv(h, model.get_layer(f"solo_conv_dil{d}"), d))
        crop = (h.shape[1] - c.shape[1]) // 2
        h = c + h[:, crop : crop + c.shape[1]]
    profile = conv(h, model.get_layer("solo_profile_h"))
    k, b = model.get_layer("solo_logcounts_h").get_weights()
    counts = h.mean(axis=1) @ k + b
    got = run(model, x)
    np.testing.assert_allclose(got[0], profile, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[1], counts, rtol=1e-4, atol=1e-5)


def test_auto_crop_equals_exact_model_on_cropped_input():
    exact = small_solo()
    need = exact.inputs[0].shape[1]
    with pytest.warns(UserWarning, match=f"{need + 10}.*{need}"):
        longer = small_solo(input_length=need + 10)
    longer.set_weights(exact.get_weights())
    x = one_hot(3, need + 10, seed=1)
    for a, b in zip(run(longer, x), run(exact, x[:, 5 : 5 + need])):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_auto_crop_logs_both_lengths(caplog):
    need = small_solo().inputs[0].shape[1]
    with pytest.warns(UserWarning):
        small_solo(input_length=need + 4)
    assert f"inputLength {need + 4}" in caplog.text and f"needed {need}" in caplog.text


def test_odd_difference_and_bad_arguments_raise():
    need = small_solo().inputs[0].shape[1]
    with pytest.raises(ValueError, match="odd"):
        small_solo(input_length=need + 3)
    with pytest.raises(ValueError, match="outputLength"):
        soloModel(100, 0, 4, 2, 5, 3, HEADS, "m")


@pytest.mark.parametrize(
    "heads, message",
    [
        ([{"num-tasks": 1}], "missing the key 'head-name'"),
        ([{"head-name": "a"}], "missing the key 'num-tasks'"),
        ([{"head-name": "a", "num-tasks": 1}, {"head-name": "a", "num-tasks": 2}], "duplicate head-name 'a'"),
        ([{"head-name": "a", "num-tasks": 0}], "num-tasks must be an integer >= 1"),
        ([], "non-empty list"),
    ],
)
def test_head_list_errors(heads, message):
    with pytest.raises(ValueError, match=message):
        soloModel(100, 20, 4, 2, 5, 3, heads, "m")


# ------------------------------------------------------------------------ transformation


def test_passthrough_equals_solo_and_freezes_it():
    solo = small_solo()
    trans = transformationModel(solo, {"name": "passthrough"}, {"name": "passthrough"}, HEADS)
    assert solo.trainable is False
    assert trans.inputs[0].shape == solo.inputs[0].shape
    assert [o.shape for o in trans.outputs] == [o.shape for o in solo.outputs]
    x = one_hot(3, solo.inputs[0].shape[1])
    for a, b in zip(run(trans, x), run(solo, x)):
        np.testing.assert_array_equal(a, b)


def test_untrained_linear_is_identity_and_slope_offset_apply():
    solo = small_solo()
    spec = {"name": "simple", "types": ["linear"]}
    trans = transformationModel(solo, spec, spec, HEADS)
    x = one_hot(3, solo.inputs[0].shape[1])
    expected = run(solo, x)
    for a, b in zip(run(trans, x), expected):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    for layer in trans.layers:
        if isinstance(layer, SimpleTransform):
            slope, offset = layer.weights
            slope.assign(2.0)
            offset.assign(1.0)
    for a, b in zip(run(trans, x), expected):
        np.testing.assert_allclose(a, 2 * b + 1, rtol=1e-5, atol=1e-5)


def test_sigmoid_and_relu_terms_follow_their_formulas():
    solo = small_solo(heads=[{"head-name": "h", "num-tasks": 1}])
    spec = {"name": "simple", "types": ["linear", "sigmoid", "relu"]}
    trans = transformationModel(solo, spec, {"name": "passthrough"}, [{"head-name": "h", "num-tasks": 1}])
    layer = trans.get_layer("transformation_profile_h")
    values = {
        "slope_0": 0.5,
        "offset_0": 0.25,
        "sigmoid_scale_1": 2.0,
        "sigmoid_gain_1": 3.0,
        "sigmoid_shift_1": -1.0,
        "sigmoid_bias_1": 0.1,
        "relu_scale_2": -1.5,
        "relu_gain_2": 0.7,
        "relu_shift_2": 0.2,
        "relu_bias_2": 0.3,
    }
    for w in layer.weights:
        w.assign(values[w.name])
    x = one_hot(2, solo.inputs[0].shape[1])
    s = run(solo, x)[0]
    sig = 1 / (1 + np.exp(-(3.0 * s - 1.0)))
    expected = 0.5 * s + 0.25 + 2.0 * sig + 0.1 - 1.5 * np.maximum(0.7 * s + 0.2, 0) + 0.3
    np.testing.assert_allclose(run(trans, x)[0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("types", [["linear"], ["sigmoid"], ["relu"], ["linear", "sigmoid"]])
def test_transformation_trains_and_solo_weights_stay(types):
    solo = small_solo()
    before = [np.array(w) for w in solo.get_weights()]
    spec = {"name": "simple", "types": types}
    trans = transformationModel(solo, spec, spec, HEADS)
    trans_before = [np.array(w) for w in trans.trainable_weights]
    assert len(trans.trainable_weights) > 0
    x = one_hot(8, solo.inputs[0].shape[1])
    y = [np.abs(o) + 1 for o in run(solo, x)]
    trans.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    history = trans.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    for a, b in zip(solo.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    changed = [not np.array_equal(np.array(w), b) for w, b in zip(trans.trainable_weights, trans_before)]
    assert any(changed)


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"name": "cubic"}, "allowed names: passthrough, simple"),
        ({"name": "simple", "types": ["linear", "tanh"]}, "allowed types: linear, sigmoid, relu"),
        ({"name": "simple", "types": []}, "at least one type"),
        ({"name": "simple"}, "needs 'types'"),
    ],
)
def test_bad_transformation_specs(spec, message):
    solo = small_solo()
    with pytest.raises(ValueError, match=message):
        transformationModel(solo, spec, {"name": "passthrough"}, HEADS)


# ------------------------------------------------------------------------ combined


def build_combined(extra=10):
    solo = small_solo(name="solo")
    bias_in = solo.inputs[0].shape[1]
    spec = {"name": "simple", "types": ["linear"]}
    trans = transformationModel(solo, spec, spec, HEADS)
    # residual needs a different length; give it a longer input so the bias is cropped
    need = lengths.needed_input_length(20, 3, 7, 5)
    input_length = max(need, bias_in) + extra
    if (input_length - bias_in) % 2:
        input_length += 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return combinedModel(input_length, 20, 4, 3, 7, 5, HEADS, trans) + (trans,)


def test_combined_outputs_against_numpy():
    combined, residual, bias, trans = build_combined()
    length = combined.inputs[0].shape[1]
    assert residual.inputs[0].shape[1] == length and bias.inputs[0].shape[1] == length
    x = one_hot(4, length, seed=7)
    c, r, b = run(combined, x), run(residual, x), run(bias, x)
    crop = (length - trans.inputs[0].shape[1]) // 2
    t = run(trans, x[:, crop : length - crop])
    for i in range(2):  # bias model = cropped transformation outputs
        np.testing.assert_allclose(b[i], t[i], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(c[0], b[0] + r[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(c[1], b[1] + r[1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(c[2], np.logaddexp(b[2], r[2]), rtol=1e-5, atol=1e-5)  # use-bias-counts
    np.testing.assert_allclose(c[3], r[3], rtol=1e-6, atol=1e-6)  # use-bias-counts false


def test_logaddexp_is_stable_at_large_log_counts():
    from bpflow.layers import LogAddExp

    a = np.array([[800.0], [-800.0], [3.0]], dtype="float32")
    b = np.array([[799.0], [-801.0], [3.0]], dtype="float32")
    got = np.asarray(LogAddExp()([a, b]))
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, np.logaddexp(a.astype("float64"), b), rtol=1e-6)


def test_combined_training_moves_residual_only():
    combined, residual, bias, _ = build_combined()
    bias_before = [np.array(w) for w in bias.weights]
    res_before = [np.array(w) for w in residual.weights]
    assert len(bias.trainable_weights) == 0
    x = one_hot(8, combined.inputs[0].shape[1])
    y = [np.abs(o) + 1 for o in run(combined, x)]
    combined.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    combined.fit(x, y, epochs=1, batch_size=8, verbose=0)
    for w, before in zip(bias.weights, bias_before):
        np.testing.assert_array_equal(np.array(w), before)
    assert all(not np.array_equal(np.array(w), b) for w, b in zip(residual.weights, res_before))
    # the residual shares its weights with the combined model
    x2 = one_hot(2, combined.inputs[0].shape[1], seed=9)
    np.testing.assert_allclose(run(combined, x2)[3], run(residual, x2)[3], rtol=1e-6, atol=1e-6)


def test_combined_rejects_bias_input_that_cannot_be_cropped():
    solo = small_solo(name="solo")
    bias_in = solo.inputs[0].shape[1]
    need = lengths.needed_input_length(20, 1, 3, 3)
    with pytest.raises(ValueError, match="cannot center-crop"):  # bias input longer than the combined input
        combinedModel(need, 20, 4, 1, 3, 3, HEADS, solo)
    # residual input filter width 4 makes its needed length odd while the bias input is even
    need_odd = lengths.needed_input_length(20, 1, 4, 3)
    assert (bias_in - need_odd) % 2 == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="cannot center-crop"):
            combinedModel(need_odd + 10, 20, 4, 1, 4, 3, HEADS, solo)


# ------------------------------------------------------------------------ save / load


@pytest.mark.parametrize("kind", ["solo", "transformation", "combined", "residual", "bias"])
def test_save_load_round_trip(tmp_path, kind):
    combined, residual, bias, trans = build_combined()
    solo = trans.layers[1]
    models = {"solo": solo, "transformation": trans, "combined": combined, "residual": residual, "bias": bias}
    model = models[kind]
    for w in model.weights:  # move off the initial values so the check means something
        w.assign(np.asarray(w) + 0.01 * np.arange(np.size(w)).reshape(w.shape).astype("float32"))
    path = tmp_path / f"{kind}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = one_hot(3, model.inputs[0].shape[1], seed=11)
    for a, b in zip(run(model, x), run(loaded, x)):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------ counts-combination "product"


def _softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def _product_combined(heads, bias_model):
    """combinedModel (residual 4 filters x 3 layers, output 20) around ``bias_model``, with an
    input 10 bp (or 11) longer than either needs."""
    bias_in = bias_model.inputs[0].shape[1]
    length = max(lengths.needed_input_length(20, 3, 7, 5), bias_in) + 10
    length += (length - bias_in) % 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return combinedModel(length, 20, 4, 3, 7, 5, heads, bias_model)


def test_product_log_counts_against_numpy():
    """The combined total is sum_i bias_i * fold_i, bias_i = exp(bias counts) * p_bias_i and
    fold_i = exp(residual counts) * p_residual_i over the N positions x tasks; a residual of
    fold 1 everywhere (flat, log counts log N) leaves the bias's log counts."""
    from bpflow.layers import ProductLogCounts

    rng = np.random.default_rng(4)
    bl, rl = rng.normal(size=(3, 10, 2)), 2 * rng.normal(size=(3, 10, 2))
    bc, rc = rng.normal(3, 1, size=(3, 1)), rng.normal(size=(3, 1))
    got = np.asarray(ProductLogCounts()([x.astype("float32") for x in (bl, rl, bc, rc)]))
    for k in range(3):
        bias_track = np.exp(bc[k, 0]) * _softmax(bl[k].ravel())
        fold = np.exp(rc[k, 0]) * _softmax(rl[k].ravel())
        assert got[k, 0] == pytest.approx(np.log(np.sum(bias_track * fold)), abs=1e-5)
    one = [x.astype("float32") for x in (bl, np.zeros_like(rl), bc, np.full_like(rc, np.log(20.0)))]
    np.testing.assert_allclose(np.asarray(ProductLogCounts()(one)), bc, atol=1e-5)


def test_combined_product_counts_follow_the_profiles(tmp_path):
    """counts-combination "product": combined profile logits still add, the combined counts are
    ProductLogCounts of the bias and residual outputs; a head without bias counts keeps the
    residual's; the model saves and loads; an unknown combination is refused."""
    heads = [dict(HEADS[0], **{"counts-combination": "product"}), HEADS[1]]
    spec = {"name": "simple", "types": ["linear"]}
    trans = transformationModel(small_solo(name="solo"), spec, spec, HEADS)
    combined, residual, bias = _product_combined(heads, trans)
    length = combined.inputs[0].shape[1]
    x = one_hot(4, length, seed=3)
    c, r, b = run(combined, x), run(residual, x), run(bias, x)
    np.testing.assert_allclose(c[0], b[0] + r[0], rtol=1e-5, atol=1e-5)
    for k in range(4):
        bias_track = np.exp(b[2][k, 0]) * _softmax(b[0][k].ravel().astype(np.float64))
        fold = np.exp(r[2][k, 0]) * _softmax(r[0][k].ravel().astype(np.float64))
        assert c[2][k, 0] == pytest.approx(np.log(np.sum(bias_track * fold)), abs=1e-4)
    np.testing.assert_allclose(c[3], r[3], rtol=1e-6, atol=1e-6)  # use-bias-counts false
    combined.save(tmp_path / "c.keras")
    for a, want in zip(run(keras.saving.load_model(tmp_path / "c.keras"), x), c):
        np.testing.assert_array_equal(a, want)
    with pytest.raises(ValueError, match="counts-combination must be one of sum, product"):
        combinedModel(length, 20, 4, 3, 7, 5, [dict(HEADS[0], **{"counts-combination": "max"})], trans)


@pytest.mark.filterwarnings("ignore:Gradients do not exist")  # TensorFlow says so of the profile layer
def test_product_counts_loss_leaves_the_profile_layers_alone():
    """With counts-combination "product" the counts loss sets totals, not profile shapes: a
    training step on the counts loss alone moves the residual's counts layer and body but not
    its profile layer (the overlap term passes no gradient to the profile logits)."""
    heads = [{"head-name": "nexus", "num-tasks": 2, "counts-combination": "product"}]
    combined, residual, _ = _product_combined(heads, small_solo(name="solo", heads=heads))
    length = combined.inputs[0].shape[1]
    profile, counts = residual.get_layer("residual_profile_nexus"), residual.get_layer("residual_logcounts_nexus")
    before = [np.array(w) for w in profile.weights + counts.weights]
    combined.compile(optimizer=keras.optimizers.SGD(0.1), loss=[None, "mse"])
    x = one_hot(8, length, seed=2)
    combined.fit(x, [np.zeros((8, 20, 2)), np.full((8, 1), 5.0)], epochs=1, batch_size=8, verbose=0)
    after = [np.array(w) for w in profile.weights + counts.weights]
    for a, b in zip(after[:2], before[:2]):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(after[2], before[2])
