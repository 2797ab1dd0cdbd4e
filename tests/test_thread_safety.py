"""Explaining a model never modifies it, so threads can share the model.

The rewrite splits fused activations (``Conv2D(activation="relu")``) and drops
a fused final softmax. It once did so by switching the user's layer to a linear
activation while tracing: another thread calling ``model(x)`` meanwhile got
wrong predictions, and two overlapping traces could leave a layer linear for
good. Here several threads explain a fresh model (so every step is traced
while the others run) while other threads predict with it, and every result
is checked against single-threaded references.
"""

import sys
import threading

import keras
import numpy as np
import pytest
from keras import layers

import keras_pathways as kp
from conftest import images

# (method, jit_compile, number of inputs): each combination is a new trace.
CONFIGS = [
    (method, jit, n)
    for n in (1, 2)
    for jit in (False, True)
    for method in ("pathway_gradient", "gradient")
]
EXPLAIN_THREADS = 3


def fused_model(name):
    """Fused relu convolutions and dense layer, fused softmax output, fixed weights."""
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1")(inputs)
    y = layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.Add(name="add")([x, y])
    x = layers.MaxPooling2D(name="pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(12, activation="relu", name="fc1")(x)
    outputs = layers.Dense(4, activation="softmax", name="logits")(x)
    model = keras.Model(inputs, outputs, name=name)
    rng = np.random.default_rng(42)
    model.set_weights([
        rng.standard_normal(w.shape) / np.sqrt(np.prod(w.shape[:-1])) if w.ndim > 1
        else 0.1 * rng.standard_normal(w.shape)
        for w in model.get_weights()
    ])
    return model


def _snapshot(model):
    """Every attribute of every layer (the values' identities)."""
    return {layer.name: dict(vars(layer)) for layer in model.layers}


def _check_same(result, reference, n):
    np.testing.assert_allclose(result.attributions, reference.attributions[:n], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.logits, reference.logits[:n], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(result.targets, reference.targets[:n])
    if reference.pathway is not None:
        for got, want in zip(result.pathway.masks, reference.pathway.masks):
            np.testing.assert_array_equal(got, want[:n])
        np.testing.assert_allclose(result.kept_fraction, reference.kept_fraction[:n])


def test_concurrent_explain_and_predict_never_see_a_modified_model():
    x = images(2, seed=5)
    model = fused_model("shared")
    # References: predictions of this model, explanations of an identical one
    # (explaining this model now would trace its steps before the threads run).
    twin = fused_model("reference")
    expected_call = model(x).numpy()
    expected_predict = model.predict(x, verbose=0)
    # Plain tf.function references; XLA differs from them only by rounding.
    expected = {
        method: kp.explain(twin, x, method=method, jit_compile=False, batch_size=2)
        for method in ("pathway_gradient", "gradient")
    }
    assert np.allclose(expected_call.sum(axis=1), 1.0)  # probabilities, not logits
    activations = {layer.name: getattr(layer, "activation", None) for layer in model.layers}
    before = _snapshot(model)

    failures, done = [], threading.Event()
    start = threading.Barrier(EXPLAIN_THREADS + 2, timeout=120)

    def explainer(k):
        try:
            start.wait()
            for method, jit, n in CONFIGS[k:] + CONFIGS[:k]:
                result = kp.explain(model, x[:n], method=method, jit_compile=jit,
                                    batch_size=n, verbose=False)
                _check_same(result, expected[method], n)
        except Exception as error:  # reported by the main thread
            failures.append(f"explain thread {k}: {type(error).__name__}: {error}")

    def predictor(eager):
        calls = 0
        try:
            start.wait()
            while not done.is_set() or calls < 5:
                got = model(x).numpy() if eager else model.predict(x, verbose=0)
                want = expected_call if eager else expected_predict
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
                calls += 1
        except Exception as error:
            failures.append(f"{'model(x)' if eager else 'predict'} call {calls}: "
                            f"{type(error).__name__}: {error}")

    explainers = [threading.Thread(target=explainer, args=(k,)) for k in range(EXPLAIN_THREADS)]
    predictors = [threading.Thread(target=predictor, args=(eager,)) for eager in (True, False)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)  # switch threads often: races show up every run
    try:
        for thread in explainers + predictors:
            thread.start()
        for thread in explainers:
            thread.join(timeout=300)
        done.set()
        for thread in predictors:
            thread.join(timeout=60)
    finally:
        sys.setswitchinterval(interval)
        done.set()
    assert not any(t.is_alive() for t in explainers + predictors), "a thread hung"
    assert not failures, "\n".join(f[:500] for f in failures[:8])

    # Nothing of the model was changed, not even for a moment.
    assert {layer.name: getattr(layer, "activation", None) for layer in model.layers} == activations
    after = _snapshot(model)
    for name, attributes in before.items():
        changed = sorted(
            key for key in set(attributes) | set(after[name])
            if attributes.get(key, KeyError) is not after[name].get(key, KeyError)
        )
        assert not changed, f"layer {name!r}: attributes {changed} changed"
    np.testing.assert_allclose(model(x).numpy(), expected_call, rtol=1e-5, atol=1e-6)


def test_weights_are_shared_not_copied():
    """The rewrite still reads the model's own variables at every call."""
    model = fused_model("weights")
    graph = kp.pathway_graph(model)
    x = images(2, seed=6)
    before = graph(x).numpy()
    np.testing.assert_allclose(keras.ops.softmax(before).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
    for name in ("conv1", "logits"):  # a split fused relu and the dropped softmax
        kernel = model.get_layer(name).kernel
        kernel.assign(kernel * 0.5)
    after = graph(x).numpy()
    assert not np.allclose(before, after, atol=1e-3)
    np.testing.assert_allclose(keras.ops.softmax(after).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
    assert model.get_layer("conv1").activation is keras.activations.relu
    assert model.get_layer("logits").activation is keras.activations.softmax
