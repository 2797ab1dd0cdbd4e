"""Shared toy models for the tests (small, hand-built, seeded)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import layers  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def small_cnn(input_shape=(8, 8, 3), classes=4, softmax=True, name="small_cnn", dtype="float32"):
    """Conv (fused relu) -> BN -> ReLU6 -> maxpool -> residual add -> dense."""
    d = {"dtype": dtype}
    inputs = keras.Input(input_shape, dtype=dtype)
    x = layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1", **d)(inputs)
    x = layers.BatchNormalization(name="bn1", **d)(x)
    y = layers.Conv2D(6, 3, padding="same", name="conv2", **d)(x)
    y = layers.ReLU(max_value=6, name="relu6", **d)(y)
    x = layers.Add(name="add", **d)([x, y])
    x = layers.MaxPooling2D(name="pool", **d)(x)
    x = layers.Flatten(name="flatten", **d)(x)
    x = layers.Dropout(0.5, name="drop", **d)(x)
    x = layers.Dense(10, activation="relu", name="fc1", **d)(x)
    outputs = layers.Dense(classes, activation="softmax" if softmax else None, name="logits", **d)(x)
    model = keras.Model(inputs, outputs, name=name)
    # Non-trivial BatchNorm statistics so inference mode matters.
    bn = model.get_layer("bn1")
    bn.moving_mean.assign(np.linspace(-0.2, 0.2, 6))
    bn.moving_variance.assign(np.linspace(0.5, 2.0, 6))
    return model


def mlp(weights, name="mlp"):
    """Dense(relu) layers with the given (kernel, bias) pairs; last one linear."""
    inputs = keras.Input((weights[0][0].shape[0],))
    x = inputs
    for i, (kernel, bias) in enumerate(weights):
        last = i == len(weights) - 1
        layer = layers.Dense(kernel.shape[1], activation=None if last else "relu", name=f"dense{i}")
        x = layer(x)
        layer.set_weights([np.asarray(kernel, "float32"), np.asarray(bias, "float32")])
    return keras.Model(inputs, x, name=name)


def random_mlp(sizes=(5, 7, 6, 3), seed=0):
    rng = np.random.default_rng(seed)
    weights = [
        (rng.standard_normal((a, b)) / np.sqrt(a), 0.1 * rng.standard_normal(b))
        for a, b in zip(sizes[:-1], sizes[1:])
    ]
    return mlp(weights), weights


def images(n, shape=(8, 8, 3), seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n,) + shape).astype("float32")
