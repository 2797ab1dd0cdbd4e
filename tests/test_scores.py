"""Contribution scores against independent computations."""

import keras
import numpy as np
import tensorflow as tf

import keras_pathways as kp
from keras_pathways.pathways import scores as scores_lib
from conftest import random_mlp


def numpy_forward(weights, x):
    """Activations, pre-activations and logits of a relu MLP in float64."""
    acts, pres, h = [], [], x.astype(np.float64)
    for kernel, bias in weights[:-1]:
        z = h @ kernel + bias
        h = np.maximum(z, 0.0)
        pres.append(z)
        acts.append(h)
    return acts, pres, h @ weights[-1][0] + weights[-1][1]


def numpy_mct(weights, x, target):
    """|a * dy/da| per hidden layer by hand-written backprop."""
    acts, pres, _ = numpy_forward(weights, x)
    grad = np.asarray(weights[-1][0])[:, target]  # dy/da of the last hidden layer
    scores = [None] * len(acts)
    for layer in range(len(acts) - 1, -1, -1):
        scores[layer] = np.abs(acts[layer] * grad)
        if layer:
            grad = (grad * (pres[layer] > 0)) @ np.asarray(weights[layer][0]).T
    return scores


def test_mct_equals_activation_times_gradient():
    model, weights = random_mlp()
    x = np.random.default_rng(3).standard_normal((4, 5)).astype("float32")
    graph = kp.pathway_graph(model)
    targets = tf.constant([0, 1, 2, -1])
    scores, logits, resolved = scores_lib.mct(graph, tf.constant(x), targets)
    _, _, ref_logits = numpy_forward(weights, x)
    np.testing.assert_allclose(logits.numpy(), ref_logits, rtol=1e-5, atol=1e-5)
    assert resolved.numpy()[3] == np.argmax(ref_logits[3])
    for i in range(4):
        expected = numpy_mct(weights, x[i], int(resolved[i]))
        for got, want in zip(scores, expected):
            np.testing.assert_allclose(got.numpy()[i], want, rtol=1e-5, atol=1e-6)


def test_intgrad_completeness_per_site():
    """Sum of signed NeuronIntGrad over a site -> y(full) - y(site at 0)."""
    model, _ = random_mlp(sizes=(5, 8, 8, 3), seed=4)
    graph = kp.pathway_graph(model)
    x = tf.constant(np.random.default_rng(5).standard_normal((3, 5)).astype("float32"))
    targets = tf.constant([2, 0, 1])
    signed, logits, _ = scores_lib.intgrad_signed(graph, x, targets, steps=400)
    y_full = scores_lib.target_logit(logits, targets).numpy()
    for j in range(len(graph.sites)):
        masks = [None] * len(graph.sites)
        masks[j] = tf.zeros(())
        y_cut = scores_lib.target_logit(graph(x, masks=masks), targets).numpy()
        total = signed[j].numpy().sum(axis=1)
        np.testing.assert_allclose(total, y_full - y_cut, rtol=0.01, atol=1e-3)


def test_intgrad_of_the_last_site_is_exact_for_any_steps():
    """y is linear in the last hidden site's scale, so every grid point agrees."""
    model, _ = random_mlp(seed=6)
    graph = kp.pathway_graph(model)
    x = tf.constant(np.random.default_rng(6).standard_normal((2, 5)).astype("float32"))
    targets = tf.constant([-1, -1])
    mct, _, _ = scores_lib.mct(graph, x, targets)
    for steps in (1, 3, 10):
        intgrad, _, _ = scores_lib.intgrad(graph, x, targets, steps=steps)
        np.testing.assert_allclose(intgrad[-1].numpy(), mct[-1].numpy(), rtol=1e-5, atol=1e-6)
    # The earlier site is not linear: its scores differ from MCT in general.
    assert not np.allclose(intgrad[0].numpy(), mct[0].numpy(), atol=1e-6)


def test_intgrad_uses_the_even_grid():
    """With K = 1 the grid is {0, 1}: the mean of the two end-point gradients."""
    model, _ = random_mlp(seed=8)
    graph = kp.pathway_graph(model)
    x = tf.constant(np.random.default_rng(8).standard_normal((2, 5)).astype("float32"))
    targets = tf.constant([1, 1])
    signed, _, _ = scores_lib.intgrad_signed(graph, x, targets, steps=1)
    expected = 0.0
    for alpha in (0.0, 1.0):
        masks = [tf.constant(alpha), None]
        with tf.GradientTape() as tape:
            logits, acts, masked = graph(x, masks=masks, capture=True)
            y = scores_lib.target_logit(logits, targets)
        expected = expected + (acts[0] * tape.gradient(y, masked[0])).numpy() / 2
    np.testing.assert_allclose(signed[0].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_neuron_intgrad_on_a_size_agnostic_model_equals_the_fixed_size_one():
    # Sites of a model built on Input((None, None, C)) have no static height
    # and width; NeuronIntGrad used to build its accumulators from them.
    import keras_pathways
    from keras import layers

    inputs = keras.Input((None, None, 1))
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = layers.ReLU()(layers.Conv2D(4, 3, padding="same")(x))
    model = keras.Model(inputs, layers.Dense(3)(layers.GlobalAveragePooling2D()(x)))
    fixed_input = keras.Input((10, 12, 1))
    fixed = keras.Model(fixed_input, model(fixed_input))
    x = np.random.default_rng(0).uniform(size=(3, 10, 12, 1)).astype("float32")
    agnostic = keras_pathways.explain(model, x, method="pathway_intgrad", intgrad_steps=3, jit_compile=False)
    reference = keras_pathways.explain(fixed, x, method="pathway_intgrad", intgrad_steps=3, jit_compile=False)
    assert agnostic.pathway.kind == reference.pathway.kind == "intgrad"  # was recorded as "mct"
    np.testing.assert_allclose(agnostic.attributions, reference.attributions, atol=1e-5)
