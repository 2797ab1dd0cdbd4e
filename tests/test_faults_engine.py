"""Issue 14, the engine: never corrupt, never mislead.

Item 5: pathways that cut the input off (all-zero pathway gradients) are
recorded and warned about; item 8: tf.data edge cases; item 9: options are
checked before tracing; item 10: batch_size="auto". Each test failed before.
"""

import logging
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_pathways as kp
from keras_pathways.attribution import engine
from keras_pathways.attribution import memory
from keras_pathways.attribution import runner
from conftest import images, small_cnn


def _disconnection_warnings(caught):
    return [w for w in caught if w.category.__name__ == "DisconnectedPathwayWarning"]


# ------------------------------------------------ item 5: all-zero gradients
def deep_chain(depth=100, width=8, seed=0):
    """A plain chain of 100 Dense-ReLU sites (the issue's model)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8,))
    h = inputs
    for i in range(depth):
        h = keras.layers.Dense(
            width, activation="relu", kernel_initializer="he_normal",
            bias_initializer=keras.initializers.Constant(0.05), name=f"d{i}",
        )(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(h), name="deep_chain")


def test_pathway_that_empties_sites_of_a_chain_is_recorded_and_warned_about():
    model = deep_chain()
    x = np.random.default_rng(0).normal(size=(2, 8)).astype("float32")
    with pytest.warns(UserWarning, match=r"keeps no neuron in \d+ site\(s\)") as caught:
        result = kp.explain(model, x, jit_compile=False)
    (warned,) = _disconnection_warnings(caught)
    assert warned.filename == __file__  # points at the caller's line
    message = str(warned.message)
    assert "2 of 2 input(s)" in message and "gradient is exactly 0" in message
    assert "sparsity" in message and "intgrad" in message and "more)" in message
    path = result.pathway
    # What the issue saw: a 0.15 kept fraction, yet an all-zero pathway gradient.
    np.testing.assert_allclose(path.kept_fraction, 0.15, atol=0.01)
    assert np.all(result.attributions == 0)
    np.testing.assert_array_equal(path.disconnected, [True, True])
    assert all(path.num_empty_sites > 0)
    assert path.empty_sites[0] == [s.name for s, k in zip(path.sites, path.kept[0]) if k == 0]
    assert "keep no neuron" in path.summary(0) and "disconnected" in path.summary(0)
    # find_pathway computes no gradient but checks the same inputs.
    with pytest.warns(UserWarning, match="keeps no neuron") as caught:
        found = kp.find_pathway(model, x, jit_compile=False)
    assert _disconnection_warnings(caught)
    np.testing.assert_array_equal(found.disconnected, [True, True])
    np.testing.assert_array_equal(found.kept, path.kept)


def test_extreme_sparsity_on_a_small_cnn_is_recorded_and_warned_about():
    model = small_cnn()
    x = images(3)
    with pytest.warns(UserWarning, match=r"3 of 3 input\(s\).*fc1/relu") as caught:
        result = kp.explain(model, x, sparsity=0.999999)  # XLA, as by default
    assert _disconnection_warnings(caught)
    assert np.all(result.attributions == 0)
    assert result.pathway.kept.sum(axis=1).tolist() == [1, 1, 1]  # of 778 neurons
    np.testing.assert_array_equal(result.pathway.disconnected, [True] * 3)
    # fc1 is on every path (the residual block's skip does not bypass it).
    assert all("fc1/relu" in names for names in result.pathway.empty_sites)
    with pytest.warns(UserWarning, match="keeps no neuron"):
        found = kp.find_pathway(model, x, sparsity=0.999999)
    np.testing.assert_array_equal(found.disconnected, [True] * 3)
    # The usual sparsity: nothing empty, nothing said.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        usual = kp.find_pathway(model, x, sparsity=0.5)
    assert not _disconnection_warnings(caught)
    assert not usual.disconnected.any() and usual.empty_sites == [[], [], []]


def test_empty_site_bypassed_by_a_skip_connection_is_recorded_but_not_disconnected():
    # x (2) -> a = relu(A x) (3) -> b = relu(B a) (3, tiny weights) ; a + b -> logits
    inputs = keras.Input((2,))
    a = keras.layers.Dense(3, activation="relu", name="a")(inputs)
    b = keras.layers.Dense(3, activation="relu", name="b")(a)
    logits = keras.layers.Dense(2, name="logits")(keras.layers.Add()([a, b]))
    model = keras.Model(inputs, logits)
    model.get_layer("a").set_weights([np.array([[1.0, 2.0, 1.0], [1.0, 0.0, 3.0]]), np.zeros(3)])
    model.get_layer("b").set_weights([np.full((3, 3), 1e-4), np.zeros(3)])
    model.get_layer("logits").set_weights([np.ones((3, 2)), np.zeros(2)])
    x = np.array([[1.0, 1.0]], "float32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = kp.explain(model, x, targets=0, sparsity=0.5, jit_compile=False)
    path = result.pathway
    assert path.empty_sites == [["b/relu"]]
    np.testing.assert_array_equal(path.disconnected, [False])
    assert not _disconnection_warnings(caught)
    np.testing.assert_allclose(result.attributions, [[4.0, 4.0]], rtol=1e-4)


# ------------------------------------------------------ item 8: tf.data edges
@pytest.mark.parametrize("make", [
    lambda x: tf.data.Dataset.from_tensor_slices(x).take(0),  # known to be empty
    lambda x: tf.data.Dataset.from_tensor_slices(x).filter(lambda e: False),  # found empty
    lambda x: tf.data.Dataset.from_tensor_slices(x).batch(2).filter(lambda e: False),
])
def test_empty_dataset_is_a_clear_input_error(make):
    with pytest.raises(kp.InputError, match=r"Expected at least one input.*Received: an empty dataset"):
        kp.explain(small_cnn(), make(images(2)), jit_compile=False)


def test_dict_datasets_are_read_as_image_and_label():
    model = small_cnn()
    x = images(5)
    labels = np.array([0, 1, 2, 3, 0])
    reference = kp.explain(model, x, jit_compile=False)
    dicts = tf.data.Dataset.from_tensor_slices({"image": x, "label": labels})
    from_dicts = kp.explain(model, dicts, jit_compile=False)
    np.testing.assert_allclose(from_dicts.attributions, reference.attributions, rtol=1e-5, atol=1e-7)
    by_label = kp.explain(model, dicts.batch(2), targets="labels", jit_compile=False)
    np.testing.assert_array_equal(by_label.targets, labels)
    only_images = tf.data.Dataset.from_tensor_slices({"image": x})
    np.testing.assert_array_equal(kp.explain(model, only_images, jit_compile=False).targets,
                                  reference.targets)
    other = tf.data.Dataset.from_tensor_slices({"pixels": x})
    with pytest.raises(kp.InputError, match=r"'image' key.*Received: dicts with keys \['pixels'\]"):
        kp.explain(model, other, jit_compile=False)


def test_stream_failing_with_any_error_keeps_the_finished_batches():
    x = images(6)

    def generate():
        for start in range(0, 6, 2):
            if start == 4:
                raise OSError("disk went away")
            yield x[start : start + 2]

    dataset = tf.data.Dataset.from_generator(
        generate, output_signature=tf.TensorSpec((None, 8, 8, 3), tf.float32)
    )
    model = small_cnn()
    with pytest.raises(kp.InputError, match="OSError: disk went away") as info:
        kp.explain(model, dataset, batch_size=2, jit_compile=False)
    error = info.value
    assert error.__cause__ is not None and "failed after 4 inputs" in str(error)
    assert len(error.partial) == 4 and ".partial" in str(error)
    expected = kp.explain(model, x[:4], batch_size=2, jit_compile=False)
    np.testing.assert_allclose(error.partial.attributions, expected.attributions, atol=1e-6)


def test_more_targets_than_dataset_inputs_is_an_error_naming_both_counts():
    model = small_cnn()
    x = images(3)
    with pytest.raises(kp.InputError, match=r"3 inputs.*Received: 5 targets"):
        kp.explain(model, tf.data.Dataset.from_tensor_slices(x), targets=[0, 1, 2, 3, 0])
    # Batched: the count is known only at the end; the work done is kept.
    batched = tf.data.Dataset.from_tensor_slices(x).batch(2)
    with pytest.raises(kp.InputError, match="Got 5 targets but the dataset has 3 inputs") as info:
        kp.explain(model, batched, targets=[0, 1, 2, 3, 0], batch_size=2, jit_compile=False)
    np.testing.assert_array_equal(info.value.partial.targets, [0, 1, 2])


# ---------------------------------------------- item 9: checks before tracing
@pytest.mark.parametrize("kwargs, match", [
    ({"method": "integrated_gradients", "baseline": np.zeros((4, 4))},
     r"Expected baseline .* broadcastable to one input of shape \(8, 8, 3\).*"
     r"Received: baseline of shape \(4, 4\)"),
    ({"method": "integrated_gradients", "baseline": np.zeros((2, 8, 8, 3))},
     r"Received: baseline of shape \(2, 8, 8, 3\)"),
    ({"method": "random", "seed": 2**70}, r"Expected seed to be an integer in \[0, 2\*\*31\)"),
    ({"method": "random", "seed": -1}, r"Received: seed=-1"),
    ({"method": "random", "seed": 1.5}, r"Received: seed=1.5"),
    ({"return_masks": "no"}, r"Expected return_masks to be True or False. Received: return_masks='no'"),
    ({"jit_compile": "no"}, r"Expected jit_compile to be \"auto\", True or False"),
    ({"activations": 3}, r"Expected activations to be an activation name or a list"),
])
def test_bad_options_are_refused_before_tracing(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kp.explain(small_cnn(), images(2), **kwargs)


def test_good_baselines_and_one_activation_name_are_accepted():
    model = small_cnn()
    x = images(2)
    for baseline in (0.5, np.zeros(3), np.zeros((1, 1, 3)), np.zeros((1, 8, 8, 3))):
        kp.explain(model, x, method="integrated_gradients", steps=2, baseline=baseline,
                   jit_compile=False)
    one = kp.explain(model, x, activations="relu", jit_compile=False)  # not 'r', 'e', 'l', 'u'
    assert one.pathway.activations == frozenset({"relu"})
    assert len(one.pathway.sites) == 3  # ReLU(max_value=6) is a "relu" call too


def test_freeze_refuses_what_is_not_a_model_and_a_pathway():
    model = small_cnn()
    path = kp.find_pathway(model, images(1), jit_compile=False)
    with pytest.raises(TypeError, match=r"Expected a Pathway .* Received: str \('abc'\)"):
        kp.freeze(model, "abc")
    with pytest.raises(TypeError, match=r"Expected freeze\(model, pathway.*Received: model of type str"):
        kp.freeze("abc", path)
    explanation = kp.explain(model, images(1), jit_compile=False)
    with pytest.raises(TypeError, match=r"\.pathway"):
        kp.freeze(model, explanation)


def mixed_precision_cnn():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        inputs = keras.Input((8, 8, 3))
        h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
        h = keras.layers.Dense(6, activation="relu", name="fc")(keras.layers.Flatten()(h))
        model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(h))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("conv").compute_dtype == "float16"
    return model


@pytest.mark.parametrize("kwargs", [
    # (3 steps from all-ones gates move them by 1e-4, which float16 rounds
    # away: every gate ties and nothing is kept; 10 steps separate them.)
    {"kind": "dgr", "dgr_steps": 10},
    {"kind": "dgr", "dgr_steps": 3, "init": "uniform"},
    {"kind": "greedy"},
])
def test_mixed_precision_model_works_with_pruning_pathways(kwargs):
    model = mixed_precision_cnn()
    with warnings.catch_warnings():  # 3 steps of uniform DGR may cut fc off (and say so)
        warnings.simplefilter("ignore", UserWarning)
        result = kp.explain(model, images(2), jit_compile=False, **kwargs)
    assert result.attributions.shape == (2, 8, 8, 3)
    assert np.isfinite(result.attributions).all()
    assert (result.pathway.kept.sum(axis=1) > 0).all()


def test_shape_error_shows_the_shape_the_user_passed():
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(2, 3, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(h)))
    with pytest.raises(kp.InputError, match=r"Received: shape \(4, 8, 8\)\.") as info:
        kp.explain(model, np.zeros((4, 8, 8), "float32"))
    message = str(info.value)
    assert "(1, 4, 8, 8)" not in message and "x[..., None]" in message
    with pytest.raises(kp.InputError, match=r"Received: shape \(4, 8, 8\)\."):
        kp.explain(small_cnn(), np.zeros((4, 8, 8), "float32"))


# --------------------------------------------------- item 10: batch_size="auto"
def test_auto_batch_size_fits_resnet50_in_the_available_memory(monkeypatch):
    monkeypatch.setattr(engine, "available_memory", lambda: 4 * 2**30)
    resnet = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3))
    batch = engine.auto_batch_size(resnet)
    assert 1 <= batch <= 8
    per_input = engine.step_bytes_per_input(kp.pathway_graph(resnet), (224, 224, 3))
    assert 150 * 2**20 < per_input < 1024 * 2**20  # measured: about 265 MB with XLA
    assert engine.auto_batch_size(resnet, memory=64 * 2**30) > batch


def test_auto_batch_size_of_a_model_taking_any_size_follows_the_input_size():
    inputs = keras.Input((None, None, 3))
    h = keras.layers.Conv2D(16, 3, activation="relu", padding="same")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h)))
    graph = kp.pathway_graph(model)
    small = engine.step_bytes_per_input(graph, (32, 32, 3))
    large = engine.step_bytes_per_input(graph, (256, 256, 3))
    assert 32 * 32 * 16 * 4 * 2 < small and large > 50 * small
    assert engine.auto_batch_size(model, (256, 256, 3), memory=1 * 2**30) < 64
    assert engine.auto_batch_size(model) == engine.AUTO_UNKNOWN_SIZE_BATCH  # size unknown


def test_auto_batch_size_is_the_default_and_ints_are_kept(monkeypatch, caplog):
    monkeypatch.setattr(memory, "available_memory", lambda: 4 * 2**30)
    shapes = []
    call_step = runner.call_step

    def recording(compiled, x, targets, runtime=None):
        shapes.append(x.shape[0])
        return call_step(compiled, x, targets, runtime)

    monkeypatch.setattr(runner, "call_step", recording)
    model = small_cnn()
    x = images(5)
    with caplog.at_level(logging.INFO, logger="keras_pathways"):
        auto = kp.explain(model, x, jit_compile=False)
    assert auto.batch_size == 64 and auto.pathway.batch_size == 64 and shapes == [5]
    assert any('batch_size="auto": 64 inputs per step' in r.getMessage() for r in caplog.records)
    shapes.clear()
    explicit = kp.explain(model, x, batch_size=2, jit_compile=False)
    assert explicit.batch_size == 2 and shapes == [2, 2, 2]
    np.testing.assert_allclose(explicit.attributions, auto.attributions, rtol=1e-5, atol=1e-7)
    assert kp.find_pathway(model, x, batch_size=3, jit_compile=False).batch_size == 3


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, "big", True, None])
def test_bad_batch_sizes_are_refused(batch_size):
    with pytest.raises(ValueError, match=r'Expected batch_size to be a positive integer or "auto"'):
        kp.explain(small_cnn(), images(2), batch_size=batch_size)
