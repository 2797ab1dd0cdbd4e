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


# --------------------------------------------------------------------- KerasHub
# keras-hub image classifiers (a Functional backbone nested in a Functional
# task model), built offline from their constructors with random weights. See
# README "KerasHub image classifiers" for what works and what is refused.
HUB_SIZE = 32


@pytest.fixture(scope="module")
def hub():
    return pytest.importorskip("keras_hub")


def _resnet(hub, **head):
    backbone = hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3],  # the first stack must have 64 filters
        stackwise_num_filters=[64, 16], stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2],
        block_type="basic_block", image_shape=(HUB_SIZE, HUB_SIZE, 3))
    return hub.models.ResNetImageClassifier(backbone=backbone, num_classes=5, **head)


def _resnet_v2(hub):
    backbone = hub.models.ResNetBackbone(
        input_conv_filters=[16], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="bottleneck_block",
        use_pre_activation=True, image_shape=(HUB_SIZE, HUB_SIZE, 3))
    return hub.models.ResNetImageClassifier(backbone=backbone, num_classes=4)


def _cspnet(hub, stage_type="dark", **options):
    backbone = hub.models.CSPNetBackbone(
        stem_filters=8, stem_kernel_size=3, stem_strides=2, stackwise_depth=[1, 2],
        stackwise_strides=[1, 2], stackwise_num_filters=[16, 32], block_type="dark_block",
        stage_type=stage_type, image_shape=(HUB_SIZE, HUB_SIZE, 3), **options)  # leaky_relu
    return hub.models.CSPNetImageClassifier(backbone=backbone, num_classes=6)


def _cspdarknet(hub):
    # CSPDarkNet's stage layout (csp_darknet_53): cross-stage stages of dark blocks.
    return _cspnet(hub, "csp", expand_ratio=[2.0], bottle_ratio=[0.5], block_ratio=[1.0],
                   cross_linear=True, down_growth=True)


def _efficientnet(hub, activation="relu", block_types=("v1", "v1")):
    backbone = hub.models.EfficientNetBackbone(
        stackwise_width_coefficients=[1.0, 1.0], stackwise_depth_coefficients=[1.0, 1.0],
        stackwise_kernel_sizes=[3, 3], stackwise_num_repeats=[1, 1],
        stackwise_input_filters=[8, 8], stackwise_output_filters=[8, 16],
        stackwise_expansion_ratios=[1, 2], stackwise_squeeze_and_excite_ratios=[0.25, 0.25],
        stackwise_strides=[1, 2], stackwise_block_types=list(block_types),
        stackwise_force_input_filters=[0, 0], stackwise_nores_option=[False, False],
        activation=activation, num_features=32, dropout=0.0, input_shape=(HUB_SIZE, HUB_SIZE, 3))
    return hub.models.EfficientNetImageClassifier(backbone=backbone, num_classes=3)


def _mobilenet(hub):
    backbone = hub.models.MobileNetBackbone(
        stackwise_expansion=[[16], [32]], stackwise_num_blocks=[1, 1],
        stackwise_num_filters=[[8], [16]], stackwise_kernel_size=[[3], [3]],
        stackwise_num_strides=[[2], [1]], stackwise_se_ratio=[[None], [None]],
        stackwise_activation=[["relu"], ["relu"]], stackwise_padding=[[1], [1]],
        output_num_filters=32, depthwise_filters=8, depthwise_stride=1, depthwise_residual=False,
        last_layer_filter=32, input_activation="relu", output_activation="relu",
        input_num_filters=8, image_shape=(HUB_SIZE, HUB_SIZE, 3))
    return hub.models.MobileNetImageClassifier(backbone=backbone, num_classes=5, num_features=16)


def _vit(hub):
    backbone = hub.models.ViTBackbone(
        image_shape=(HUB_SIZE, HUB_SIZE, 3), patch_size=8, num_layers=2, num_heads=2,
        hidden_dim=16, mlp_dim=32)
    return hub.models.ViTImageClassifier(backbone=backbone, num_classes=10)


def _hub_images(seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (2, HUB_SIZE, HUB_SIZE, 3)).astype("float32")


def _rectifier_layers(model):
    return [
        l for l in model.layers
        if isinstance(l, (keras.layers.ReLU, keras.layers.LeakyReLU))
        or getattr(getattr(l, "activation", None), "__name__", "") in ("relu", "leaky_relu")
    ]


def check_hub(model, method, sparsity=0.85, **options):
    """explain on a keras-hub classifier: right shapes, finite, the model's own
    argmax as targets, the kept fraction of the rule, the model untouched."""
    x = _hub_images()
    before = [w.copy() for w in model.get_weights()]
    predictions = np.asarray(model(x))
    if method == "pathway_gradient":
        options["sparsity"] = sparsity
    result = kp.explain(model, x, method=method, batch_size=2, **options)
    assert result.attributions.shape == x.shape
    assert np.isfinite(result.attributions).all() and np.abs(result.attributions).max() > 0
    np.testing.assert_array_equal(result.targets, predictions.argmax(-1))
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    if method == "pathway_gradient":
        kept = result.pathway.kept_fraction
        assert (kept > 0).all() and (kept <= 1 - sparsity + 1.0 / result.pathway.num_neurons).all()
    return result, predictions


HUB_WORKS = {
    "ResNet": _resnet,
    "ResNetV2": _resnet_v2,
    "CSPNet": _cspnet,
    "CSPDarkNet": _cspdarknet,
    "EfficientNet-relu": _efficientnet,
}


@pytest.mark.parametrize("method", ["pathway_gradient", "gradient"])
@pytest.mark.parametrize("name", sorted(HUB_WORKS))
def test_explain_on_keras_hub_image_classifiers(hub, name, method):
    model = HUB_WORKS[name](hub)
    result, predictions = check_hub(model, method)
    np.testing.assert_allclose(result.logits, predictions, rtol=1e-4, atol=1e-5)  # activation=None: logits
    if method == "pathway_gradient":
        backbone = model.backbone
        names = result.pathway.site_names
        assert len(names) == len(_rectifier_layers(backbone)) > 0
        assert all(n.startswith(backbone.name + "/") for n in names)


def test_keras_hub_softmax_head_is_explained_through_its_logits(hub):
    model = _resnet(hub, activation="softmax")
    result, probabilities = check_hub(model, "pathway_gradient")
    assert np.allclose(probabilities.sum(-1), 1, atol=1e-5)
    z = np.exp(result.logits - result.logits.max(-1, keepdims=True))
    np.testing.assert_allclose(z / z.sum(-1, keepdims=True), probabilities, rtol=1e-4, atol=1e-6)


def test_keras_hub_efficientnet_swish_is_refused_unless_opted_in(hub):
    model = _efficientnet(hub, activation="swish")  # keras-hub's default
    with pytest.raises(kp.UnsupportedModelError, match=r"no neuron site.*Activations found: .*silu \(\d+\)"):
        kp.explain(model, _hub_images())
    result, _ = check_hub(model, "pathway_gradient", sparsity=0.5, activations=("swish",))
    assert {s.activation for s in result.pathway.sites} == {"silu"}


@pytest.mark.parametrize("method", ["pathway_gradient", "guided_backprop", "grad_cam"])
@pytest.mark.parametrize(
    "factory, message",
    [
        # Its blocks are subclassed layers (DepthwiseConvBlock, InvertedResidualBlock, ...).
        (_mobilenet, r"'mobile_net_backbone\w*/block_0_0' \(DepthwiseConvBlock\) contains rectifiers "
                     r"inside its own call\(\) that the graph walker cannot see into: .*\(relu\)"),
        # EfficientNetV2's fused / unfused blocks are subclassed layers as well.
        (lambda hub: _efficientnet(hub, block_types=("fused", "unfused")),
         r"\(FusedMBConvBlock\) contains rectifiers inside its own call\(\) that the graph walker cannot see into"),
    ],
    ids=["MobileNet", "EfficientNetV2-relu"],
)
def test_keras_hub_blocks_hiding_rectifiers_are_refused(hub, factory, message, method):
    """Methods that read the sites are refused: some rectifiers cannot be seen."""
    with pytest.raises(kp.UnsupportedModelError, match=message):
        kp.explain(factory(hub), _hub_images(), method=method)


@pytest.mark.parametrize("factory", [_mobilenet, lambda hub: _efficientnet(hub, block_types=("fused", "unfused"))],
                         ids=["MobileNet", "EfficientNetV2-relu"])
def test_keras_hub_blocks_hiding_rectifiers_still_get_the_gradient_family(hub, factory):
    """The input-gradient family only calls the layers: exact on these models."""
    import tensorflow as tf

    model = factory(hub)
    x = _hub_images()
    result = kp.explain(model, x, method="gradient")
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        logits = model(xt, training=False)
        y = tf.gather(logits, tf.constant(result.targets), axis=1, batch_dims=1)
    np.testing.assert_allclose(result.attributions, tape.gradient(y, xt).numpy(), rtol=1e-4, atol=1e-6)
    ixg = kp.explain(model, x, method="input_x_gradient")
    np.testing.assert_allclose(ixg.attributions, result.attributions * x, rtol=1e-4, atol=1e-6)


def test_keras_hub_vit_gelu_is_refused_and_the_gradient_works(hub):
    """ViT's GELU runs inside ViTEncoder, a subclassed layer: refused by default
    (naming the GELU hidden there) and when GELU is opted in (the encoder cannot
    be seen into); methods that need no site work."""
    model = _vit(hub)
    x = _hub_images()
    with pytest.raises(kp.UnsupportedModelError,
                       match=r"no neuron site.*Activations found: gelu inside ViTEncoder \(2\)\..*"
                             r"cannot see into \(vi_t_backbone\w*/vit_encoder \(ViTEncoder\)\)"):
        kp.explain(model, x)
    with pytest.raises(kp.UnsupportedModelError,
                       match=r"\(ViTEncoder\) contains site activations inside its own call\(\).*"
                             r"transformer_block_1/mlp/dense_1 \(gelu\)"):
        kp.explain(model, x, activations=("relu", "gelu"))
    result, predictions = check_hub(model, "gradient")
    np.testing.assert_allclose(result.logits, predictions, rtol=1e-4, atol=1e-5)
