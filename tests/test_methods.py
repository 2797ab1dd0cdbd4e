"""Baseline attribution methods: known answers, one interface, batch = loop."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import keras_pathways as kp
from conftest import images, mlp, random_mlp, small_cnn

ALL = sorted(kp.methods())
_FAST = {"integrated_gradients": {"steps": 4}, "smoothgrad": {"samples": 3},
         "pathway_intgrad": {"intgrad_steps": 4}}


def fast(method):
    """Cheap options of ``method`` (each method takes only its own options)."""
    return _FAST.get(method, {})


def test_every_builtin_method_is_listed_with_a_description():
    expected = {
        "pathway_gradient", "pathway_intgrad", "gradient", "input_x_gradient",
        "integrated_gradients", "smoothgrad", "guided_backprop", "grad_cam", "random",
    }
    assert expected <= set(ALL)
    assert all(len(kp.methods()[m]) > 20 for m in expected)


def linear_relu_model():
    """Positive weights and inputs keep the ReLU active: the model is linear."""
    w1 = np.array([[1.0, 2.0], [0.5, 1.0], [2.0, 0.25]])
    w2 = np.array([[1.0, 3.0], [2.0, 1.0]])
    return mlp([(w1, np.zeros(2)), (w2, np.zeros(2))]), w1 @ w2


def test_gradient_and_input_x_gradient_on_a_linear_model():
    model, weight = linear_relu_model()
    x = np.array([[1.0, 2.0, 0.5], [0.2, 0.1, 3.0]], "float32")
    for target in (0, 1):
        grad = kp.explain(model, x, targets=target, method="gradient").attributions
        np.testing.assert_allclose(grad, np.tile(weight[:, target], (2, 1)), rtol=1e-6)
        ixg = kp.explain(model, x, targets=target, method="input_x_gradient").attributions
        np.testing.assert_allclose(ixg, x * weight[:, target], rtol=1e-6)
        # Linear model: Input x Gradient sums to the logit (no bias).
        np.testing.assert_allclose(ixg.sum(1), x @ weight[:, target], rtol=1e-5)


def test_gradient_methods_need_no_rectifier():
    x = keras.Input((3,))
    model = keras.Model(x, layers.Dense(2, activation="tanh")(layers.Dense(4)(x)))
    data = np.random.default_rng(0).normal(size=(2, 3)).astype("float32")
    for method in ("gradient", "integrated_gradients", "smoothgrad", "random"):
        assert kp.explain(model, data, method=method, **fast(method)).attributions.shape == (2, 3)
    with pytest.raises(kp.UnsupportedModelError, match="no neuron site"):
        kp.explain(model, data, method="smoothgrad", inner="pathway_gradient", samples=3)


def smooth_model():
    x = keras.Input((6,))
    h = layers.Dense(16, activation="tanh")(x)
    h = layers.Dense(16, activation="softplus")(h)
    return keras.Model(x, layers.Dense(3)(h))


@pytest.mark.parametrize("baseline", [None, 0.3])
def test_integrated_gradients_completeness(baseline):
    """Sum of attributions = f(x) - f(baseline) within 1 % at 50 steps."""
    model = smooth_model()
    x = np.random.default_rng(2).normal(size=(4, 6)).astype("float32") * 2
    result = kp.explain(model, x, method="integrated_gradients", baseline=baseline)
    base = np.zeros_like(x) if baseline is None else np.full_like(x, baseline)
    gap = (model(x).numpy() - model(base).numpy())[np.arange(4), result.targets]
    assert np.abs(gap).min() > 0.05  # a gap worth measuring
    np.testing.assert_allclose(result.attributions.sum(1), gap, rtol=0.01)


def test_integrated_gradients_completeness_on_a_relu_net():
    """Kinks make the Riemann sum first-order; still close at 50 steps."""
    model, _ = random_mlp(sizes=(6, 16, 16, 3), seed=2)
    x = np.random.default_rng(2).normal(size=(4, 6)).astype("float32")
    result = kp.explain(model, x, method="integrated_gradients")
    gap = (model(x).numpy() - model(np.zeros_like(x)).numpy())[np.arange(4), result.targets]
    np.testing.assert_allclose(result.attributions.sum(1), gap, atol=0.01 * np.abs(gap).max())


def test_guided_backprop_zeroes_negative_gradients():
    w1 = np.array([[1.0, -1.0, 2.0], [0.5, 1.0, -1.0]])  # 2 -> 3 relu
    w2 = np.array([[1.0], [-2.0], [3.0]])  # 3 -> 1
    model = mlp([(w1, np.zeros(3)), (w2, np.zeros(1))])
    x = np.array([[1.0, 1.0], [-1.0, 2.0]], "float32")
    gbp = kp.explain(model, x, targets=0, method="guided_backprop").attributions
    grad = kp.explain(model, x, targets=0, method="gradient").attributions
    z = x @ w1
    expected = ((z > 0) * np.maximum(w2[:, 0], 0)) @ w1.T
    np.testing.assert_allclose(gbp, expected, rtol=1e-6)
    np.testing.assert_allclose(grad, ((z > 0) * w2[:, 0]) @ w1.T, rtol=1e-6)
    assert not np.allclose(gbp, grad)
    # The user's model is untouched: its own gradient is still the plain one.
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = model(xt)[:, 0]
    np.testing.assert_allclose(tape.gradient(y, xt).numpy(), grad, rtol=1e-6)


def corner_cnn():
    """Channel 0 fires on bright pixels, channel 1 on dark ones; class 1 = bright."""
    x = keras.Input((8, 8, 1))
    features = layers.Conv2D(2, 1, activation="relu", name="detect")(x)
    pooled = layers.GlobalAveragePooling2D()(features)
    model = keras.Model(x, layers.Dense(2, name="logits")(pooled))
    model.get_layer("detect").set_weights([np.array([[[[1.0, -1.0]]]]), np.array([-0.5, 0.5])])
    model.get_layer("logits").set_weights([np.array([[0.0, 1.0], [1.0, 0.0]]), np.zeros(2)])
    return model


def test_grad_cam_finds_the_class_evidence_in_its_corner():
    image = np.zeros((1, 8, 8, 1), "float32")
    image[0, :3, :3] = 1.0  # the bright evidence for class 1 sits top-left
    model = corner_cnn()
    bright = kp.explain(model, image, targets=1, method="grad_cam").saliency[0]
    assert bright[:3, :3].min() > 0 and bright[4:, :].max() == 0 and bright[:, 4:].max() == 0
    dark = kp.explain(model, image, targets=0, method="grad_cam").saliency[0]
    assert dark[:2, :2].max() == 0 and dark[5:, 5:].min() > 0
    named = kp.explain(model, image, targets=1, method="grad_cam", layer="detect").saliency
    np.testing.assert_allclose(named[0], bright)
    with pytest.raises(ValueError, match="No neuron site or layer named 'nope'"):
        kp.explain(model, image, method="grad_cam", layer="nope")


def test_grad_cam_upsamples_to_the_input():
    result = kp.explain(small_cnn(), images(2), method="grad_cam")
    assert result.attributions.shape == (2, 8, 8, 3) and (result.attributions >= 0).all()
    np.testing.assert_array_equal(result.attributions[..., 0], result.attributions[..., 2])


@pytest.mark.parametrize("inner", ["gradient", "pathway_gradient", "integrated_gradients"])
def test_smoothgrad_without_noise_equals_its_inner_method(inner):
    model = small_cnn()
    x = images(3)
    options = {"steps": 5} if inner == "integrated_gradients" else {}
    smooth = kp.explain(model, x, method="smoothgrad", inner=inner, noise=0.0, samples=3, **options)
    plain = kp.explain(model, x, method=inner, **options)
    np.testing.assert_allclose(smooth.attributions, plain.attributions, rtol=1e-5, atol=1e-7)


def test_smoothgrad_noise_changes_the_result_and_is_seeded():
    model, x = small_cnn(), images(2)
    a = kp.explain(model, x, method="smoothgrad", samples=4, seed=1).attributions
    b = kp.explain(model, x, method="smoothgrad", samples=4, seed=1).attributions
    c = kp.explain(model, x, method="smoothgrad", samples=4, seed=2).attributions
    plain = kp.explain(model, x, method="gradient").attributions
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, plain)


def test_random_is_reproducible_by_seed():
    model, x = small_cnn(), images(3)
    a = kp.explain(model, x, method="random", seed=5).attributions
    np.testing.assert_array_equal(a, kp.explain(model, x, method="random", seed=5).attributions)
    assert not np.allclose(a, kp.explain(model, x, method="random", seed=6).attributions)
    assert -1 <= a.min() and a.max() < 1 and a.std() > 0.4


@pytest.mark.parametrize("method", ALL)
def test_batch_equals_loop_for_every_method(method):
    model = small_cnn()
    x = images(5)
    batched = kp.explain(model, x, method=method, batch_size=2, **fast(method))
    assert batched.attributions.shape == x.shape and batched.saliency.shape == (5, 8, 8)
    for i in (0, 4):
        single = kp.explain(model, x[i], method=method, **fast(method))
        np.testing.assert_allclose(single.attributions[0], batched.attributions[i], rtol=1e-4, atol=1e-6)
        assert single.targets[0] == batched.targets[i]


def test_a_registered_method_works_everywhere():
    @kp.register("gradient_squared", "Squared input gradient (a test method).", needs_sites=False)
    def build(graph, **options):
        gradient = kp.get_method("gradient").build(graph, **options)

        def step(x, targets):
            out = gradient(x, targets)
            return {**out, "attributions": out["attributions"] ** 2}

        return step

    try:
        assert "gradient_squared" in kp.methods()
        model, x = small_cnn(), images(2)
        squared = kp.explain(model, x, method="gradient_squared").attributions
        plain = kp.explain(model, x, method="gradient").attributions
        np.testing.assert_allclose(squared, plain**2, rtol=1e-5, atol=1e-9)
        smooth = kp.explain(model, x, method="smoothgrad", inner="gradient_squared", noise=0.0, samples=2)
        np.testing.assert_allclose(smooth.attributions, squared, rtol=1e-5, atol=1e-9)
    finally:
        kp.unregister("gradient_squared")
    assert "gradient_squared" not in kp.methods()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "integrated_gradients", "steps": 0}, "positive integer"),
        ({"method": "smoothgrad", "samples": 0}, r"Expected samples to be a positive integer\. Received: samples=0"),
        ({"method": "smoothgrad", "noise": -1.0}, r"Expected noise to be a finite number >= 0"),
        ({"method": "smoothgrad", "inner": "smoothgrad"}, "cannot wrap itself"),
        ({"method": "smoothgrad", "inner": "nope"}, "Unknown attribution method 'nope'"),
        ({"method": "integrated_gradients", "baseline": np.nan}, "baseline contains NaN"),
    ],
)
def test_bad_method_options_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kp.explain(small_cnn(), images(1), **kwargs)
