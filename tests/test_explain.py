"""explain / find_pathway / freeze: known answers, linearity, batching, round trips."""

import os
import types
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_pathways as kp
from keras_pathways.attribution import runner
from conftest import images, mlp, small_cnn

# x (2) -> h = relu(W1 x) (3) -> logits = W2^T h (2)
W1 = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, -1.0]])
W2 = np.array([[0.5, 0.0], [3.0, 0.0], [-2.0, 1.0]])


def toy():
    return mlp([(W1, np.zeros(3)), (W2, np.zeros(2))], name="toy")


@pytest.mark.parametrize(
    "sparsity, kept, gradient",
    [
        # h = (2, 1, 1); scores for class 0: |h * W2[:, 0]| = (1, 3, 2).
        (0.5, [False, True, False], [0.0, 3.0]),  # thr = 2: only h2 = x2
        (0.4, [False, True, True], [-2.0, 5.0]),  # thr = 1.8: 3 x2 - 2 (x1 - x2)
        (0.0, [False, True, True], [-2.0, 5.0]),  # thr = min = 1, strict >
    ],
)
def test_toy_pathway_and_gradient_in_closed_form(sparsity, kept, gradient):
    x = np.array([[2.0, 1.0]], "float32")
    result = kp.explain(toy(), x, targets=0, sparsity=sparsity)
    np.testing.assert_array_equal(result.pathway.masks[0][0], kept)
    np.testing.assert_allclose(result.attributions[0], gradient, atol=1e-6)
    np.testing.assert_allclose(result.pathway.kept_fraction, [sum(kept) / 3])
    plain = kp.explain(toy(), x, targets=0, method="gradient")
    np.testing.assert_allclose(plain.attributions[0], [-1.5, 5.0], atol=1e-6)


def test_dead_neuron_drops_the_kept_fraction_below_one_minus_sparsity():
    x = np.array([[0.5, 1.0]], "float32")  # h = (0.5, 1, 0): the third is dead
    path = kp.find_pathway(toy(), x, targets=0, sparsity=0.2)
    # scores (0.25, 3, 0): thr = 0.1, kept {h1, h2} = 2/3 < 0.8
    np.testing.assert_array_equal(path.masks[0][0], [True, True, False])
    assert path.kept_fraction[0] == pytest.approx(2 / 3)
    assert path.threshold[0] == pytest.approx(0.1)


def test_pathway_gradient_is_the_exact_local_slope_of_the_masked_network():
    # float64, so that the finite difference is not drowned in rounding.
    model = small_cnn(softmax=False, dtype="float64")
    graph = kp.pathway_graph(model)
    x = images(3).astype("float64")
    result = kp.explain(model, x, sparsity=0.7)
    assert result.attributions.dtype == np.float32
    rng = np.random.default_rng(1)
    for i in range(3):
        masks = [tf.constant(m[i : i + 1].astype("float64")) for m in result.pathway.masks]
        t = result.targets[i]
        base = graph(tf.constant(x[i : i + 1]), masks=masks).numpy()[0, t]
        for _ in range(3):
            delta = rng.standard_normal(x.shape[1:]) * 1e-4
            moved = graph(tf.constant(x[i : i + 1] + delta), masks=masks).numpy()[0, t]
            predicted = float(np.sum(result.attributions[i].astype("float64") * delta))
            # Affine up to the float32 rounding of the returned attributions.
            assert moved - base == pytest.approx(predicted, rel=1e-5, abs=1e-10)
    # And it is not the plain gradient of the full network.
    plain = kp.explain(model, x, method="gradient")
    assert not np.allclose(plain.attributions, result.attributions, atol=1e-4)


@pytest.mark.parametrize("method, options", [
    ("pathway_gradient", {}), ("pathway_gradient", {"kind": "intgrad", "intgrad_steps": 4}),
    ("gradient", {}), ("integrated_gradients", {"steps": 4}),
])
def test_batch_equals_one_at_a_time(method, options):
    model = small_cnn()
    x = images(5)
    targets = np.array([0, 3, 1, 2, 0])
    batched = kp.explain(model, x, targets=targets, method=method, batch_size=2, **options)
    for i in range(5):
        single = kp.explain(model, x[i], targets=int(targets[i]), method=method, **options)
        np.testing.assert_allclose(single.attributions[0], batched.attributions[i], rtol=1e-4, atol=1e-6)
        if batched.pathway is not None:
            for a, b in zip(single.pathway.masks, batched.pathway.masks):
                np.testing.assert_array_equal(a[0], b[i])
            assert single.pathway.threshold[0] == pytest.approx(batched.pathway.threshold[i], rel=1e-6)
    assert batched.attributions.shape == x.shape and batched.saliency.shape == (5, 8, 8)
    np.testing.assert_array_equal(batched.targets, targets)


def test_dataset_and_tensor_inputs_equal_array_input():
    model = small_cnn()
    x = images(7)
    labels = np.array([0, 1, 2, 3, 0, 1, 2])
    reference = kp.explain(model, x, batch_size=3)
    from_tensor = kp.explain(model, tf.constant(x), batch_size=3)
    unbatched = kp.explain(model, tf.data.Dataset.from_tensor_slices(x), batch_size=3)
    pairs = tf.data.Dataset.from_tensor_slices((x, labels)).batch(4)
    from_pairs = kp.explain(model, pairs, batch_size=3)
    for other in (from_tensor, unbatched, from_pairs):
        np.testing.assert_allclose(other.attributions, reference.attributions, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(other.targets, reference.targets)
    by_label = kp.explain(model, pairs, targets="labels", batch_size=3)
    np.testing.assert_array_equal(by_label.targets, labels)


def test_saliency_is_the_signed_max_abs_channel():
    a = np.array([[[[1.0, -3.0, 2.0], [0.5, 0.1, -0.2]]]], "float32")  # (1, 1, 2, 3)
    np.testing.assert_array_equal(kp.max_abs_reduce(a), [[[-3.0, 0.5]]])


def test_freeze_round_trip_through_keras_file(tmp_path):
    model = small_cnn()
    x = images(4)
    path = kp.find_pathway(model, x, sparsity=0.8)
    frozen = kp.freeze(model, path, index=2)
    file = os.fspath(tmp_path / "pathway.keras")
    frozen.save(file)
    loaded = keras.saving.load_model(file)  # safe_mode=True (the default)
    graph = kp.pathway_graph(model)
    probe = images(6, seed=9)
    masks = [tf.constant(m[2:3].astype("float32")) for m in path.masks]
    expected = graph(tf.constant(probe), masks=masks).numpy()
    np.testing.assert_allclose(frozen(probe).numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loaded(probe).numpy(), expected, rtol=1e-5, atol=1e-5)
    mask_layers = [l for l in loaded.layers if isinstance(l, kp.PathwayMask)]
    assert [l.site for l in mask_layers] == path.site_names
    kept = sum(int(l.mask.numpy().sum()) for l in mask_layers)
    assert kept == int(path.kept[2].sum())
    # The frozen model is independent of the original's weights.
    kernel = model.get_layer("logits").kernel
    kernel.assign(kernel * 0.0)
    np.testing.assert_allclose(loaded(probe).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_freeze_refuses_a_pathway_of_another_model():
    path = kp.find_pathway(small_cnn(), images(1))
    with pytest.raises(ValueError, match="does not belong"):
        kp.freeze(toy(), path)
    with pytest.raises(IndexError, match="input index"):
        kp.freeze(small_cnn(), path, index=3)


def test_pathway_reports_per_site_fractions_and_summary():
    model = small_cnn()
    path = kp.find_pathway(model, images(3), sparsity=0.85)
    assert path.site_names == ["conv1/relu", "relu6", "fc1/relu"]
    np.testing.assert_allclose(
        path.kept_fraction,
        (path.site_kept_fraction * [s.size for s in path.sites]).sum(1) / path.num_neurons,
    )
    # At most one neuron above 1 - sparsity (the interpolated rank is fractional).
    assert (path.kept_fraction <= 0.15 + 1.0 / path.num_neurons).all()
    assert "relu6" in path.summary(1) and path.site_masks("relu6").shape == (3, 8, 8, 6)
    light = kp.find_pathway(model, images(3), return_masks=False)
    np.testing.assert_array_equal(light.kept, path.kept)
    with pytest.raises(ValueError, match="return_masks=True"):
        light.input_masks(0)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "x, match",
    [
        (np.zeros((2, 8, 8), "float32"), r"Expected input of shape \(N, 8, 8, 3\)"),
        (np.zeros((2, 9, 8, 3), "float32"), r"Received: shape \(2, 9, 8, 3\)"),
        (np.zeros((2, 8, 8, 3), "uint8"), "Expected a float input"),
        (np.zeros((0, 8, 8, 3), "float32"), "empty batch"),
        (np.full((2, 8, 8, 3), np.nan, "float32"), r"NaN or Inf: 384 values in input\(s\) \[0, 1\]"),
        ("an image", "Expected a float input"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(x, match):
    with pytest.raises(kp.InputError, match=match):
        kp.explain(small_cnn(), x)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"targets": 4}, kp.InputError, r"Target out of range: the model has 4 classes"),
        ({"targets": [0, -1]}, kp.InputError, "out of range"),
        ({"targets": [0.0, 1.0]}, kp.InputError, "integer class targets"),
        ({"targets": [0, 1, 2]}, kp.InputError, r"one target per input: shape \(2,\)"),
        ({"sparsity": 1.0}, ValueError, r"sparsity in \[0, 1\)"),
        ({"method": "lime"}, ValueError, "Unknown attribution method 'lime'"),
        ({"kind": "magic"}, ValueError, r"Expected kind to be one of \['dgr', 'greedy'"),
        ({"sparsty": 0.5}, ValueError, r"Unknown option 'sparsty' for method 'pathway_gradient'\. Did you mean 'sparsity'\?"),
        ({"method": "gradient", "sparsity": 0.5}, ValueError,
         r"Unknown option 'sparsity' for method 'gradient'\. \('sparsity' is an option of .*pathway_gradient.*method 'gradient' takes no options"),
        ({"method": "integrated_gradients", "step": 5}, ValueError, r"Did you mean 'steps'\?"),
        ({"intgrad_steps": 5}, ValueError, r"intgrad_steps is an option of kind='intgrad' only"),
        ({"seed": -1}, ValueError, r"seed to be an integer in \[0, 2\*\*31\)"),
        ({"batch_size": 0}, ValueError, "positive integer"),
    ],
)
def test_bad_options_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        kp.explain(small_cnn(), images(2), **kwargs)


def test_stream_error_keeps_the_finished_batches():
    x = images(6)
    x[4, 0, 0, 0] = np.inf
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(2)
    model = small_cnn()
    with pytest.raises(kp.InputError, match=r"dataset inputs 4..5") as info:
        kp.explain(model, dataset, batch_size=2)
    partial = info.value.partial
    assert len(partial) == 4 and "explained before it" in str(info.value)
    np.testing.assert_allclose(partial.attributions, kp.explain(model, x[:4]).attributions, atol=1e-6)


def test_xla_failure_falls_back_to_plain_function_with_a_warning():
    calls = []

    def broken(x, t):
        raise tf.errors.UnimplementedError(None, None, "XLA has no kernel for Foo")

    def plain(x, t):
        calls.append(1)
        return {"ok": x}

    compiled = types.SimpleNamespace(jit=broken, parts=False, plain=plain)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = runner.call_step(compiled, np.ones((1, 2), "float32"), np.zeros(1, "int32"))
    assert calls == [1] and compiled.jit is None and "ok" in out
    assert any("XLA could not compile" in str(w.message) for w in caught)


def test_methods_lists_the_public_methods():
    listed = kp.methods()
    assert {"pathway_gradient", "pathway_intgrad", "gradient"} <= set(listed)
    assert not any(name.startswith("_") for name in listed)


def test_size_agnostic_model_gets_concrete_pathway_shapes(tmp_path):
    inputs = keras.Input((None, None, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu", padding="same", name="conv")(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(3)(h))
    assert kp.pathway_graph(model).num_neurons is None
    x = images(2, (10, 12, 3))
    result = kp.explain(model, x)
    assert result.pathway.sites[0].shape == (10, 12, 4)
    assert result.pathway.num_neurons == 480 and result.attributions.shape == x.shape
    frozen = kp.freeze(model, result.pathway, 1)
    masks = [tf.constant(m[1:2].astype("float32")) for m in result.pathway.masks]
    expected = kp.pathway_graph(model)(tf.constant(x[1:2]), masks=masks).numpy()
    np.testing.assert_allclose(frozen(x[1:2]).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_pathway_masks_are_read_only_views_in_one_batch_and_in_several():
    model = small_cnn()
    x = images(5)
    one = kp.explain(model, x, batch_size=8)
    several = kp.explain(model, x, batch_size=2)
    for a, b in zip(one.pathway.masks, several.pathway.masks):
        np.testing.assert_array_equal(a, b)
        for m in (a, b):
            assert m.dtype == bool and not m.flags.writeable
            with pytest.raises(ValueError, match="read-only"):
                m[0] = False
    editable = np.array(one.pathway.masks[0])
    editable[0] = ~editable[0]  # the documented way to edit: the pathway's own masks stay
    np.testing.assert_array_equal(one.pathway.masks[0], several.pathway.masks[0])
    assert not np.array_equal(editable, one.pathway.masks[0])
    frozen = kp.freeze(model, one.pathway, 0)  # read-only masks freeze as before
    assert frozen(x[:1]).shape == (1, 4)
    assert one.attributions.flags.writeable  # attributions stay ordinary arrays
