"""The graph walker: which calls are sites, their names, and f(x, masks)."""

import warnings

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
    with pytest.raises(kp.UnsupportedModelError, match=r"has 2 outputs .*choose the one to explain"):
        kp.PathwayGraph(two_out)
    two_in = keras.Model([x, keras.Input((4,))], layers.Dense(2)(x))
    assert kp.PathwayGraph(two_in, require_sites=False).num_inputs == 2  # explain takes it (tests/test_multi_input.py)
    with pytest.raises(kp.UnsupportedModelError, match=r"does not support models with several inputs yet"):
        kp.pathway_graph(two_in)  # the entry points for one-input models refuse it


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


@pytest.mark.parametrize("layer", [
    lambda: keras.layers.SimpleRNN(8, activation="relu"),
    lambda: keras.layers.LSTM(8, activation="relu"),
    lambda: keras.layers.GRU(8, activation="relu"),
    lambda: keras.layers.Bidirectional(keras.layers.SimpleRNN(4, activation="relu")),
])
def test_recurrent_layers_are_not_sites_and_say_so(layer):
    """A recurrent cell's relu runs once per time step inside the layer: not a
    site. The rest of the model's sites work, with a warning naming the layer;
    a model whose only rectifiers are recurrent is refused, saying why."""
    x = keras.Input((5, 3))
    recurrent = layer()
    h = keras.layers.Dense(16, activation="relu", name="head")(recurrent(x))
    model = keras.Model(x, keras.layers.Dense(2)(h))
    data = np.random.default_rng(0).random((3, 5, 3)).astype("float32")
    with pytest.warns(UserWarning, match=rf"not neuron sites: {recurrent.name} \({type(recurrent).__name__}, relu\)"):
        result = kp.explain(model, data, sparsity=0.5, jit_compile=False)
    assert [s.name for s in result.pathway.sites] == ["head/relu"]
    assert result.attributions.shape == data.shape and np.abs(result.attributions).sum() > 0

    only = keras.Model(x, keras.layers.Dense(2)(layer()(x)))
    with pytest.raises(kp.UnsupportedModelError, match=r"no neuron site.*Activations found: .*relu inside .*Recurrent layers"):
        kp.explain(only, data)
    assert kp.explain(only, data, method="gradient").attributions.shape == data.shape


def test_prelu_elu_selu_are_listed_and_can_be_opted_in():
    x = keras.Input((6,))
    h = keras.layers.PReLU(name="prelu")(keras.layers.Dense(8)(x))
    h = keras.layers.ELU(name="elu")(keras.layers.Dense(8)(h))
    h = keras.layers.Dense(8, activation="selu", name="selu")(h)
    model = keras.Model(x, keras.layers.Dense(2)(h))
    data = np.random.default_rng(1).random((2, 6)).astype("float32")
    with pytest.raises(kp.UnsupportedModelError, match=r"Activations found: elu \(1\), prelu \(1\), selu \(1\)"):
        kp.explain(model, data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kp.DisconnectedPathwayWarning)
        result = kp.explain(model, data, sparsity=0.5, activations=("prelu", "elu", "selu"), jit_compile=False)
    assert [s.name for s in result.pathway.sites] == ["prelu", "elu", "selu/selu"]


@pytest.mark.parametrize("head", ["fused", "activation_layer", "ops"])
def test_a_final_sigmoid_is_stripped_like_a_softmax(head):
    """A binary classifier Dense(1, sigmoid) is explained through its pre-sigmoid
    logit (the probability saturates; the logit's sign tells the class)."""
    x = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu")(x)
    dense = keras.layers.Dense(1, activation="sigmoid" if head == "fused" else None, name="out")
    z = dense(h)
    if head == "activation_layer":
        z = keras.layers.Activation("sigmoid")(z)
    elif head == "ops":
        z = keras.ops.sigmoid(z)
    model = keras.Model(x, z)
    data = np.random.default_rng(2).normal(size=(4, 6)).astype("float32")
    result = kp.explain(model, data, method="gradient")
    probabilities = np.asarray(model(data))
    np.testing.assert_allclose(1 / (1 + np.exp(-result.logits)), probabilities, rtol=1e-5, atol=1e-6)
    assert kp.pathway_graph(model).output_activation == "sigmoid"
    # d logit / dx for a linear-relu net, by finite differences of the logit.
    eps = 1e-3
    graph = kp.pathway_graph(model)
    for j in range(6):
        step = np.zeros_like(data)
        step[:, j] = eps
        fd = (np.asarray(graph(tf.constant(data + step)))[:, 0] - np.asarray(graph(tf.constant(data - step)))[:, 0]) / (2 * eps)
        np.testing.assert_allclose(result.attributions[:, j], fd, rtol=1e-2, atol=1e-3)


def test_integer_input_rescaled_in_the_model_is_explained_at_the_first_float_tensor():
    """Input(dtype="uint8") -> Rescaling: explain takes the uint8 images; the
    attributions are w.r.t. the rescaled floats, exactly those of the same
    network given the rescaled floats."""
    conv = keras.layers.Conv2D(4, 3, activation="relu", name="conv")
    head = keras.layers.Dense(3, name="head")
    raw = keras.Input((8, 8, 3), dtype="uint8")
    model = keras.Model(raw, head(keras.layers.Flatten()(conv(keras.layers.Rescaling(1 / 255)(raw)))))
    floats = keras.Input((8, 8, 3))
    reference = keras.Model(floats, head(keras.layers.Flatten()(conv(floats))))
    data = np.random.default_rng(3).integers(0, 256, (3, 8, 8, 3)).astype("uint8")
    for method in ("pathway_gradient", "gradient"):
        got = kp.explain(model, data, method=method, jit_compile=False)
        want = kp.explain(reference, data.astype("float32") / 255, method=method, jit_compile=False)
        np.testing.assert_allclose(got.attributions, want.attributions, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got.logits, want.logits, rtol=1e-5, atol=1e-5)
    dataset = tf.data.Dataset.from_tensor_slices(data).batch(2)
    np.testing.assert_allclose(kp.explain(model, dataset, method="gradient").attributions,
                               kp.explain(model, data, method="gradient").attributions, rtol=1e-5, atol=1e-6)
    with pytest.raises(kp.InputError, match="takes uint8 input .* expected integer inputs. Received dtype float32"):
        kp.explain(model, data.astype("float32"))
    with pytest.raises(kp.InputError, match=r"Expected uint8 values in \[0, 255\]"):
        kp.explain(model, data.astype("int64") - 1)


def test_integer_input_without_one_float_making_layer_is_refused():
    raw = keras.Input((4,), dtype="int32")
    a = keras.layers.Rescaling(0.5)(raw)
    b = keras.layers.Rescaling(2.0)(raw)
    model = keras.Model(raw, keras.layers.Dense(2)(keras.layers.ReLU()(keras.layers.Add()([a, b]))))
    with pytest.raises(kp.UnsupportedModelError, match="takes int32 input; expected exactly one layer right after"):
        kp.explain(model, np.ones((2, 4), "int32"))


class _BlockWithActivationSetting(layers.Layer):
    """A block (as keras-hub's MBConvBlock, TransformerEncoder) that keeps its
    `activation` setting as a function and applies it inside, through sub-layers."""

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = keras.activations.get(activation)
        self.inner = layers.Dense(4, activation=self.activation)
        self.out = layers.Dense(4)

    def call(self, x):
        return self.out(self.inner(x)) + x


def test_a_block_with_an_activation_setting_is_not_a_fused_site():
    """A layer with sub-layers and a callable `activation` is not split as a
    fused activation (which changed the function: relu applied to the block's
    output); the block is opaque and refused, naming what hides inside."""
    x = keras.Input((4,))
    model = keras.Model(x, layers.Dense(2)(_BlockWithActivationSetting("relu", name="block")(x)))
    with pytest.raises(kp.UnsupportedModelError, match=r"'block' \(_BlockWithActivationSetting\) contains "
                       r"rectifiers .*cannot see into: block \(its `activation`: relu\), block/dense.* \(relu\)"):
        kp.PathwayGraph(model)
    graph = kp.PathwayGraph(model, require_sites=False, activations=("silu",))  # no site chosen inside
    data = np.random.default_rng(4).normal(size=(3, 4)).astype("float32")
    np.testing.assert_allclose(graph(tf.constant(data)).numpy(), model(data).numpy(), rtol=1e-5, atol=1e-6)
    # A layer object as a fused activation is still a fused site.
    conv = keras.Sequential([keras.Input((5, 5, 2)), layers.Conv2D(3, 3, activation=layers.ReLU(), name="c"),
                             layers.Flatten(), layers.Dense(2)])
    assert [s.name for s in kp.PathwayGraph(conv).sites] == ["c/relu"]


def test_activations_hidden_in_a_block_are_listed_when_no_site_is_found():
    """A model whose only activations are inside an opaque block (a ViT encoder's
    GELU) is refused naming them, and opting them in refuses the block."""
    x = keras.Input((4,))
    model = keras.Model(x, layers.Dense(2)(_BlockWithActivationSetting("gelu", name="encoder")(x)))
    data = np.ones((2, 4), "float32")
    with pytest.raises(kp.UnsupportedModelError, match=r"Activations found: gelu inside _BlockWithActivationSetting "
                       r"\(2\)\..*inside a layer .*cannot see into \(encoder \(_BlockWithActivationSetting\)\)"):
        kp.explain(model, data)
    with pytest.raises(kp.UnsupportedModelError, match=r"contains site activations inside its own call\(\)"):
        kp.explain(model, data, activations=("relu", "gelu"))


def _visible_and_hidden(dim=4):
    """A visible ReLU site followed by a block that hides its own ReLU."""
    x = keras.Input((dim,))
    h = layers.Dense(5, activation="relu", name="visible")(x)
    return keras.Model(x, layers.Dense(2, name="logits")(_HiddenBlock(name="block")(h)))


def test_hidden_sites_refuse_site_methods_at_every_entry_point_but_not_the_gradient(tmp_path):
    # The rule lives in pathway_graph (require_sites): explain, explain_dataset
    # and the evaluations' forward passes all follow it, not one runner only.
    import tensorflow as tf

    keras.utils.set_random_seed(3)
    model = _visible_and_hidden()
    x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    for method in ("pathway_gradient", "guided_backprop"):
        with pytest.raises(kp.UnsupportedModelError, match=r"'block'.*cannot\s+see into"):
            kp.explain(model, x, method=method)
        with pytest.raises(kp.UnsupportedModelError, match=r"'block'.*cannot\s+see into"):
            kp.explain_dataset(model, x, tmp_path / method, method=method, progress=False)
    direct = kp.explain(model, x, method="gradient")
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = tf.gather(model(xt), tf.constant(direct.targets), axis=1, batch_dims=1)
    np.testing.assert_allclose(direct.attributions, tape.gradient(y, xt).numpy(), rtol=1e-5, atol=1e-7)
    kp.explain_dataset(model, x, tmp_path / "gradient", method="gradient", chunk_size=4, progress=False)
    loaded = kp.load_dataset_explanations(tmp_path / "gradient")
    np.testing.assert_allclose(loaded["attributions"], direct.attributions, rtol=1e-5, atol=1e-7)
