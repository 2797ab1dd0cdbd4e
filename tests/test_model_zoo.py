"""explain on keras.applications architectures (random weights, small inputs)."""

import keras
import numpy as np
import pytest

import keras_pathways as kp

SIZE = 75  # the smallest input InceptionV3 accepts
ZOO = {
    "VGG16": keras.applications.VGG16,
    "ResNet50": keras.applications.ResNet50,
    "ResNet50V2": keras.applications.ResNet50V2,
    "MobileNetV2": keras.applications.MobileNetV2,
    "DenseNet121": keras.applications.DenseNet121,
    "InceptionV3": keras.applications.InceptionV3,
    "Xception": keras.applications.Xception,
}


def check(model, sparsity=0.85):
    x = np.random.default_rng(0).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype("float32")
    result = kp.explain(model, x, sparsity=sparsity, batch_size=2)
    assert result.attributions.shape == x.shape
    assert np.isfinite(result.attributions).all() and np.abs(result.attributions).max() > 0
    kept = result.pathway.kept_fraction
    # The rule: at most 1 - sparsity (plus one neuron of rounding), never more.
    assert (kept > 0).all() and (kept <= 1 - sparsity + 1.0 / result.pathway.num_neurons).all()
    return result


@pytest.mark.parametrize("name", sorted(ZOO))
def test_explain_on_keras_applications(name):
    model = ZOO[name](weights=None, input_shape=(SIZE, SIZE, 3), classes=10)
    result = check(model)
    relu_like = [
        l for l in model.layers
        if isinstance(l, keras.layers.ReLU)
        or getattr(getattr(l, "activation", None), "__name__", "") == "relu"
    ]
    assert len(result.pathway.sites) == len(relu_like)


def test_backbone_nested_inside_a_classifier():
    backbone = keras.applications.ResNet50V2(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    x = keras.Input((SIZE, SIZE, 3))
    h = keras.layers.GlobalAveragePooling2D()(backbone(x))
    h = keras.layers.Dense(32, activation="relu", name="fc")(h)
    model = keras.Model(x, keras.layers.Dense(5, activation="softmax")(h))
    result = check(model, sparsity=0.9)
    names = result.pathway.site_names
    assert names[-1] == "fc/relu" and all(n.startswith(backbone.name + "/") for n in names[:-1])


@pytest.mark.parametrize(
    "factory, found",
    [
        (lambda: keras.applications.EfficientNetB0(weights=None, input_shape=(32, 32, 3), classes=10), r"silu \(\d+\)"),
        (lambda: keras.applications.ConvNeXtTiny(weights=None, input_shape=(32, 32, 3), classes=10), r"gelu \(\d+\)"),
    ],
)
def test_models_without_rectifiers_name_their_activations(factory, found):
    model = factory()
    x = np.zeros((1, 32, 32, 3), "float32")
    with pytest.raises(kp.UnsupportedModelError, match=f"Activations found: .*{found}"):
        kp.explain(model, x)


def test_other_activations_can_be_opted_in():
    model = keras.applications.EfficientNetB0(weights=None, input_shape=(32, 32, 3), classes=10)
    x = np.random.default_rng(1).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    result = kp.explain(model, x, activations=("swish",), sparsity=0.5)
    assert np.isfinite(result.attributions).all()
    assert {s.activation for s in result.pathway.sites} == {"silu"}
