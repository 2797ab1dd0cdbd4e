"""The graph walker: which calls are sites, their names, and f(x, masks)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import keras_pathways as kp
from conftest import images, small_cnn


def names(model, **kwargs):
    return [s.name for s in kp.PathwayGraph(model, **kwargs).sites]


def test_sequential_rectifier_family_and_fused_activations():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            layers.Conv2D(3, 3, activation="relu", name="c"),
            layers.DepthwiseConv2D(3, activation="relu6", name="dw"),
            layers.SeparableConv2D(2, 1, activation="leaky_relu", name="sep"),
            layers.Flatten(),
            layers.Dense(4, name="d"),
            layers.ReLU(name="r"),
            layers.LeakyReLU(name="lr"),
            layers.Activation("relu6", name="a6"),
            layers.Activation("tanh", name="t"),
            layers.Dense(3, activation="softmax", name="out"),
        ]
    )
    graph = kp.PathwayGraph(model)
    assert [s.name for s in graph.sites] == ["c/relu", "dw/relu6", "sep/leaky_relu", "r", "lr", "a6"]
    assert [s.shape for s in graph.sites] == [(4, 4, 3), (2, 2, 3), (2, 2, 2), (4,), (4,), (4,)]
    assert graph.num_neurons == 48 + 12 + 8 + 12
    x = images(3, (6, 6, 2))
    logits = graph(tf.constant(x)).numpy()
    # The softmax head is skipped: softmax(f(x)) is the model's output.
    np.testing.assert_allclose(tf.nn.softmax(logits).numpy(), model(x).numpy(), atol=1e-6)
    assert not np.allclose(logits, model(x).numpy())


def test_residual_nested_and_shared_layer_called_twice():
    inner_in = keras.Input((5,))
    act = layers.ReLU(name="act")
    h = act(layers.Dense(5, name="d1")(inner_in))
    h = layers.Add()([h, inner_in])
    h = act(h)  # the same layer object: a second site
    h = layers.Concatenate()([h, layers.Dense(2, activation="relu", name="d2")(inner_in)])
    backbone = keras.Model(inner_in, h, name="backbone")
    x = keras.Input((5,))
    y = backbone(x)
    y = backbone(y[:, :5])  # the whole backbone called twice
    y = keras.ops.relu(y)  # a raw keras.ops rectifier
    y = layers.Dense(3, name="head")(y)
    model = keras.Model(x, y)
    found = names(model)
    assert found[:3] == ["backbone/act", "backbone/act#1", "backbone/d2/relu"]
    assert found[3:6] == ["backbone#1/act#2", "backbone#1/act#3", "backbone#1/d2/relu#1"]
    assert len(found) == 7 and found[6].startswith("relu")
    graph = kp.PathwayGraph(model)
    data = images(4, (5,))
    np.testing.assert_allclose(graph(tf.constant(data)).numpy(), model(data).numpy(), atol=1e-6)


def test_masks_multiply_the_forward_pass_and_weights_are_shared():
    model = small_cnn(softmax=False)
    graph = kp.PathwayGraph(model)
    x = tf.constant(images(2))
    base = graph(x).numpy()
    np.testing.assert_allclose(base, model(x, training=False).numpy(), atol=1e-5)
    # Zeroing the last hidden site leaves only the logits' bias.
    masks = [None] * (len(graph.sites) - 1) + [tf.zeros((2, 10))]
    bias = model.get_layer("logits").bias.numpy()
    np.testing.assert_allclose(graph(x, masks=masks).numpy(), np.tile(bias, (2, 1)), atol=1e-6)
    # A weight change in the original model is seen by the rewritten function.
    kernel = model.get_layer("logits").kernel
    kernel.assign(kernel * 2.0)
    np.testing.assert_allclose(graph(x).numpy(), model(x, training=False).numpy(), atol=1e-5)
    assert not np.allclose(graph(x).numpy(), base)


def test_sites_inside_a_keras_application_backbone():
    backbone = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), include_top=False, weights=None, pooling="avg"
    )
    x = keras.Input((32, 32, 3))
    model = keras.Model(x, layers.Dense(5)(backbone(x)))
    graph = kp.PathwayGraph(model)
    relus = [l for l in backbone.layers if isinstance(l, layers.ReLU)]
    assert len(graph.sites) == len(relus) == 35
    assert all(s.name.startswith(backbone.name + "/") for s in graph.sites)
    data = images(2, (32, 32, 3))
    np.testing.assert_allclose(graph(tf.constant(data)).numpy(), model(data).numpy(), rtol=1e-4, atol=1e-4)


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.d = layers.Dense(3, activation="relu")
        self.o = layers.Dense(2)

    def call(self, x):
        return self.o(self.d(x))


class _HiddenBlock(layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.d = layers.Dense(3, activation="relu")

    def call(self, x):
        return self.d(x)


def test_models_the_walker_cannot_see_into_are_refused_clearly():
    model = _Subclassed()
    model(np.zeros((1, 4), "float32"))
    with pytest.raises(kp.UnsupportedModelError, match="subclassed model"):
        kp.explain(model, np.zeros((1, 4), "float32"))

    x = keras.Input((4,))
    hidden = keras.Model(x, layers.Dense(2)(_HiddenBlock(name="block")(x)))
    with pytest.raises(kp.UnsupportedModelError, match="'block'.*cannot\\s+see into"):
        kp.PathwayGraph(hidden)

    unbuilt = keras.Sequential([layers.Dense(3, activation="relu"), layers.Dense(2)])
    with pytest.raises(kp.UnsupportedModelError, match="not built"):
        kp.PathwayGraph(unbuilt)

    two_out = keras.Model(x, [layers.Dense(2, activation="relu")(x), layers.Dense(2)(x)])
    with pytest.raises(kp.UnsupportedModelError, match="one input and one output"):
        kp.PathwayGraph(two_out)


def test_model_without_rectifier_names_what_it_found_and_opt_in_works():
    x = keras.Input((4,))
    h = layers.Dense(6, activation="swish", name="s")(x)
    h = layers.Dense(6, activation="gelu", name="g")(h)
    model = keras.Model(x, layers.Dense(3)(h))
    with pytest.raises(kp.UnsupportedModelError, match=r"gelu \(1\), silu \(1\)"):
        kp.explain(model, np.ones((1, 4), "float32"))
    graph = kp.PathwayGraph(model, activations=("relu", "swish", "gelu"))
    assert [s.name for s in graph.sites] == ["s/silu", "g/gelu"]
    result = kp.explain(model, np.ones((2, 4), "float32"), activations=("swish", "gelu"))
    assert result.attributions.shape == (2, 4) and np.isfinite(result.attributions).all()


def test_non_tensorflow_backend_is_refused(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(RuntimeError, match="KERAS_BACKEND=tensorflow"):
        kp.PathwayGraph(small_cnn())
