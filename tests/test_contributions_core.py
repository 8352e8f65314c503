"""DeepLIFT / DeepSHAP contribution scores (bpflow.interpret.deepshap), under every Keras backend."""

import itertools
import math

import keras
import numpy as np
import pytest

from bpflow.interpret.deepshap import contributions, deepshap, hypothetical_contributions, iter_deepshap
from bpflow.models import combinedModel, soloModel

from train_helpers import predicted_targets

pytestmark = pytest.mark.backend

HEADS = [{"head-name": "a", "num-tasks": 2}, {"head-name": "b", "num-tasks": 1}]


def _one_hot(rng, shape):
    return np.eye(4, dtype=np.float32)[rng.integers(0, 4, shape)]


def _randomize(model, rng):
    """Larger random weights and biases than the initializers give, so that the ReLUs switch."""
    model.set_weights([rng.normal(0, 0.4, w.shape).astype(np.float32) for w in model.get_weights()])


def _check_summation_to_delta(model, rng, length):
    n, r = 5, 3
    x = _one_hot(rng, (n, length))
    refs = _one_hot(rng, (n, r, length))
    for head in range(len(model.outputs) // 2):
        for target in ("counts", "profile"):
            result = deepshap(model, x, refs, target, head=head, batch_size=2)
            f_x, f_ref = predicted_targets(model, x, refs, target, head)
            np.testing.assert_allclose(result.prediction, f_x, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(result.reference_prediction, f_ref, rtol=1e-4, atol=1e-5)
            assert result.hypothetical.dtype == np.float32 and result.hypothetical.shape == x.shape
            total = (result.hypothetical * x).sum((1, 2))
            delta = f_x - f_ref
            scale = np.maximum(1.0, np.maximum(np.abs(f_x), np.abs(f_ref)))
            assert np.all(np.abs(total - delta) <= 1e-4 * scale), (target, head, total, delta)
            assert np.any(np.abs(delta) > 1e-3)  # the check is not vacuous


def test_summation_to_delta_solo_model():
    rng = np.random.default_rng(0)
    model = soloModel(40, 20, 8, 2, 5, 5, HEADS, "solo")
    _randomize(model, rng)
    _check_summation_to_delta(model, rng, 40)


def test_summation_to_delta_combined_model_with_bias_counts():
    rng = np.random.default_rng(1)
    bias = soloModel(32, 20, 4, 1, 5, 5, HEADS, "biasnet")
    _randomize(bias, rng)
    heads = [dict(HEADS[0], **{"use-bias-counts": True}), dict(HEADS[1], **{"use-bias-counts": False})]
    combined, _, _ = combinedModel(40, 20, 8, 2, 5, 5, heads, bias)
    _randomize(combined, rng)
    assert any(type(layer).__name__ == "LogAddExp" for layer in combined.layers)
    _check_summation_to_delta(combined, rng, 40)


def test_product_counts_are_the_bias_plus_the_residual_with_the_overlap_held_at_the_input():
    """``counts-combination: product``: the overlap term log(sum p_bias p_residual) is held at
    the input's value, so a product head's counts contributions are the bias model's plus the
    residual's (DeepLIFT is additive over the Add), and they sum to f(x) minus the references'
    bias + residual log counts plus the input's overlap term."""
    rng = np.random.default_rng(2)
    bias = soloModel(32, 20, 4, 1, 5, 5, HEADS[:1], "biasnet")
    _randomize(bias, rng)
    heads = [dict(HEADS[0], **{"use-bias-counts": True, "counts-combination": "product"})]
    combined, residual, cropped_bias = combinedModel(40, 20, 8, 2, 5, 5, heads, bias)
    _randomize(combined, rng)
    assert any(type(layer).__name__ == "ProductLogCounts" for layer in combined.layers)
    n, r = 4, 3
    x = _one_hot(rng, (n, 40))
    refs = _one_hot(rng, (n, r, 40))
    got = deepshap(combined, x, refs, "counts", batch_size=3)
    parts = [hypothetical_contributions(m, x, refs, "counts", batch_size=3) for m in (residual, cropped_bias)]
    np.testing.assert_allclose(got.hypothetical, parts[0] + parts[1], rtol=1e-4, atol=1e-5)

    def lc(model, seqs):
        return model.predict(seqs.reshape(-1, 40, 4), verbose=0)[1][:, 0]

    f_x = lc(combined, x)
    overlap = f_x - lc(residual, x) - lc(cropped_bias, x)
    assert np.all(np.abs(overlap - np.log(1.0 / 40)) > 1e-3)  # not a flat product: the term matters
    f_ref = (lc(residual, refs) + lc(cropped_bias, refs)).reshape(n, r).mean(1) + overlap
    np.testing.assert_allclose(got.prediction, f_x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got.reference_prediction, f_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose((got.hypothetical * x).sum((1, 2)), f_x - f_ref, rtol=1e-4, atol=1e-4)


def test_mixed_precision_model_is_explained_in_float32():
    rng = np.random.default_rng(2)
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = soloModel(40, 20, 8, 2, 5, 5, HEADS[:1], "solo")
    finally:
        keras.config.set_dtype_policy("float32")
    x = _one_hot(rng, (3, 40))
    refs = _one_hot(rng, (3, 2, 40))
    result = deepshap(model, x, refs, "counts")
    assert result.hypothetical.dtype == np.float32
    total = (result.hypothetical * x).sum((1, 2))
    np.testing.assert_allclose(total, result.prediction - result.reference_prediction, atol=1e-5)
    f_x, _ = predicted_targets(model, x, refs, "counts", 0)
    np.testing.assert_allclose(result.prediction, f_x, atol=2e-2)  # the model itself runs in float16


def test_batches_stream_and_references_may_be_a_function():
    rng = np.random.default_rng(3)
    model = soloModel(40, 20, 8, 2, 5, 5, HEADS, "solo")
    _randomize(model, rng)
    x = _one_hot(rng, (5, 40))
    refs = _one_hot(rng, (5, 3, 40))
    whole = hypothetical_contributions(model, x, refs, "profile", head=1, batch_size=8)
    batches = list(iter_deepshap(model, x, refs, "profile", head=1, batch_size=2))
    assert [b.start for b in batches] == [0, 2, 4]
    np.testing.assert_allclose(np.concatenate([b.hypothetical for b in batches]), whole, rtol=1e-4, atol=1e-6)
    called = []

    def make_refs(batch, start):
        called.append(start)
        np.testing.assert_array_equal(batch, x[start : start + len(batch)])
        return refs[start : start + len(batch)]

    from_fn = hypothetical_contributions(model, x, make_refs, "profile", head=1, batch_size=2)
    assert called == [0, 2, 4]
    np.testing.assert_allclose(from_fn, whole, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(contributions(model, x, refs, "profile", head=1), whole * x, rtol=1e-4, atol=1e-6)


def test_bad_arguments():
    model = soloModel(40, 20, 8, 2, 5, 5, HEADS, "solo")
    x = np.zeros((2, 40, 4), np.float32)
    refs = np.zeros((2, 1, 40, 4), np.float32)
    with pytest.raises(ValueError, match="unknown target"):
        deepshap(model, x, refs, "shape")
    with pytest.raises(ValueError, match="head must be"):
        deepshap(model, x, refs, "counts", head=2)
    with pytest.raises(ValueError, match="references"):
        deepshap(model, x, refs[:, :, :30], "counts")
    with pytest.raises(ValueError, match="one-hot of shape"):
        deepshap(model, x[:, :30], refs, "counts")


def test_unsupported_nonlinearity_is_an_error():
    inp = keras.Input((4, 4))
    h = keras.layers.MaxPooling1D(2)(keras.layers.Conv1D(2, 1)(inp))
    model = keras.Model(inp, [keras.layers.Conv1D(1, 1)(h), keras.layers.Dense(1)(keras.layers.Flatten()(h))])
    with pytest.raises(NotImplementedError, match="MaxPooling1D"):
        deepshap(model, np.zeros((1, 4, 4), np.float32), np.zeros((1, 1, 4, 4), np.float32), "counts")


# --------------------------------------------------------------------------- a hand-built network

# One position, input x in R^4 (A, C, G, T); two hidden ReLUs; counts = 3 h1 - 2 h2 + 0.1.
#   h1 = relu(2 x_A + x_C - 1),   h2 = relu(-x_A + x_G + 0.5)
W1 = np.array([[2.0, -1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], np.float32)
B1 = np.array([-1.0, 0.5], np.float32)
W2 = np.array([[3.0], [-2.0]], np.float32)
B2 = np.array([0.1], np.float32)


def _hand_model(w1=W1, b1=B1, w2=W2, b2=B2):
    inp = keras.Input((1, 4))
    hidden = keras.layers.Conv1D(w1.shape[1], 1, activation="relu", name="hidden")(inp)
    profile = keras.layers.Conv1D(1, 1, name="profile")(hidden)
    counts = keras.layers.Dense(1, name="counts")(keras.layers.Flatten()(hidden))
    model = keras.Model(inp, [profile, counts])
    model.get_layer("hidden").set_weights([w1[None], b1])
    model.get_layer("counts").set_weights([w2, b2])
    return model


def _hand_f(x, w1=W1, b1=B1, w2=W2, b2=B2):
    return float(np.maximum(x @ w1 + b1, 0) @ w2[:, 0] + b2[0])


def _shapley(f, x, ref):
    """Exact Shapley values of the 4 features (absent features at the reference)."""
    n = len(x)
    values = np.zeros(n)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for k in range(n):
            for subset in itertools.combinations(others, k):
                z = ref.copy()
                z[list(subset)] = x[list(subset)]
                without = f(z)
                z[i] = x[i]
                weight = math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
                values[i] += weight * (f(z) - without)
    return values


def test_hand_built_relu_network_matches_deeplift_rescale():
    x = np.array([1.0, 0.0, 0.0, 0.0], np.float32)  # A
    ref = np.full(4, 0.25, np.float32)
    # by hand: h1 pre-activation 1 (x) vs -0.25 (ref): multiplier 1 / 1.25 = 0.8;
    #          h2 pre-activation -0.5 (x) vs 0.5 (ref): multiplier -0.5 / -1 = 0.5
    # input multipliers m = 3 * 0.8 * W1[:, 0] - 2 * 0.5 * W1[:, 1] = (5.8, 2.4, -1, 0)
    m = np.array([5.8, 2.4, -1.0, 0.0])
    deeplift = m * (x - ref)  # (4.35, -0.6, 0.25, 0)
    assert _hand_f(x) - _hand_f(ref) == pytest.approx(4.0)
    assert deeplift.sum() == pytest.approx(4.0)
    # gradient at x: only h1 is active, 3 * W1[:, 0] = (6, 3, 0, 0)
    gradient_x_delta = np.array([6.0, 3.0, 0.0, 0.0]) * (x - ref)  # (4.5, -0.75, 0, 0): sums to 3.75
    gradient_x_input = np.array([6.0, 3.0, 0.0, 0.0]) * x
    shapley = _shapley(_hand_f, x.astype(np.float64), ref.astype(np.float64))
    assert shapley.sum() == pytest.approx(4.0)

    model = _hand_model()
    result = deepshap(model, x[None, None], ref[None, None, None], "counts")
    actual = (result.hypothetical * x)[0, 0]
    np.testing.assert_allclose(actual, [4.0, 0, 0, 0], atol=1e-5)  # the observed base holds the whole delta
    # hypothetical[b] = m[b] - m . ref: the contribution each base would have had
    np.testing.assert_allclose(result.hypothetical[0, 0], m - m @ ref, atol=1e-5)
    np.testing.assert_allclose(result.hypothetical[0, 0, 0], deeplift.sum(), atol=1e-5)
    assert result.prediction[0] == pytest.approx(3.1, abs=1e-5)
    assert result.reference_prediction[0] == pytest.approx(-0.9, abs=1e-5)
    # per-feature DeepLIFT (the reference is not one-hot, so look at the features one by one):
    # the hypothetical of base A minus that of the reference "mixture" gives m * (x - ref)
    per_feature = (result.hypothetical[0, 0] + m @ ref) * (x - ref)
    np.testing.assert_allclose(per_feature, deeplift, atol=1e-5)
    assert np.abs(per_feature - gradient_x_delta).max() > 0.1
    assert np.abs(per_feature - gradient_x_input).max() > 0.1
    assert np.abs(per_feature - shapley).max() > 0.1  # DeepLIFT only approximates Shapley values here


def _multipliers(hypothetical, ref):
    """m from h = m - (m . ref): h . ref = (m . ref)(1 - sum(ref)), so m needs sum(ref) != 1."""
    return hypothetical + (hypothetical @ ref) / (1.0 - ref.sum())


def test_additive_network_deeplift_equals_shapley():
    # each hidden unit sees one feature, so the network is additive and DeepLIFT is exactly Shapley
    #   u0 = relu(2 x_A - 0.5), u1 = relu(-x_C + 0.4), u2 = relu(1.5 x_G - 0.2), u3 = 0
    #   counts = u0 + 2 u1 - u2
    w1 = np.diag([2.0, -1.0, 1.5, 0.0]).astype(np.float32)
    b1 = np.array([-0.5, 0.4, -0.2, 0.0], np.float32)
    w2 = np.array([[1.0], [2.0], [-1.0], [0.0]], np.float32)
    b2 = np.zeros(1, np.float32)
    x = np.array([0.0, 0.0, 1.0, 0.0], np.float32)  # G
    ref = np.array([0.1, 0.2, 0.3, 0.1], np.float32)  # sums to 0.7, so m can be read back
    # by hand: u0 is 0 at x and ref: 0; u1 0.4 at x, 0.2 at ref: 2 * 0.2 = 0.4;
    #          u2 1.3 at x, 0.25 at ref: -1 * 1.05 = -1.05
    by_hand = np.array([0.0, 0.4, -1.05, 0.0])
    shapley = _shapley(lambda z: _hand_f(z, w1, b1, w2, b2), x.astype(np.float64), ref.astype(np.float64))
    np.testing.assert_allclose(shapley, by_hand, atol=1e-6)

    result = deepshap(_hand_model(w1, b1, w2, b2), x[None, None], ref[None, None, None], "counts")
    per_feature = _multipliers(result.hypothetical[0, 0].astype(np.float64), ref) * (x - ref)
    np.testing.assert_allclose(per_feature, by_hand, atol=1e-5)
    assert (result.hypothetical * x).sum() == pytest.approx(by_hand.sum(), abs=1e-5)
