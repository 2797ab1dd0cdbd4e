"""Targets as scores: regression units, a binary head's logit, any traceable score."""

import keras
import numpy as np
import pytest

import keras_pathways as kp
from keras_pathways import targets
from conftest import images, small_cnn


def regression_model():
    x = keras.Input((5,))
    h = keras.layers.Dense(16, activation="relu", name="hidden")(x)
    return keras.Model(x, keras.layers.Dense(2, name="out")(h))


def finite_differences(fn, x, eps=1e-3):
    return np.stack([(fn(x + eps * np.eye(x.shape[1])[j]) - fn(x - eps * np.eye(x.shape[1])[j])) / (2 * eps)
                     for j in range(x.shape[1])], axis=1)


def test_logit_score_equals_an_int_target():
    model, x = small_cnn(), images(3)
    by_int = kp.explain(model, x, targets=2, sparsity=0.5)
    by_score = kp.explain(model, x, targets=targets.logit(2), sparsity=0.5)
    np.testing.assert_allclose(by_score.attributions, by_int.attributions, rtol=1e-6, atol=1e-8)
    for a, b in zip(by_score.pathway.masks, by_int.pathway.masks):
        np.testing.assert_array_equal(a, b)
    assert (by_score.targets == -1).all()


@pytest.mark.parametrize("unit", [0, 1])
def test_regression_unit_gradient_is_the_derivative_of_that_output(unit):
    model = regression_model()
    x = np.random.default_rng(unit).normal(size=(4, 5)).astype("float32")
    result = kp.explain(model, x, targets=targets.regression(unit), method="gradient", jit_compile=False)
    expected = finite_differences(lambda v: np.asarray(model(v.astype("float32")))[:, unit], x.astype(np.float64))
    np.testing.assert_allclose(result.attributions, expected, rtol=1e-3, atol=1e-3)


def test_the_pathway_is_chosen_for_the_score():
    """NeuronMCT scores of unit u are |a * d out_u / d a| = |a * W[:, u]|: each
    output's pathway is the top 20 % of its own contributions, so they differ."""
    model = regression_model()
    x = np.random.default_rng(5).normal(size=(3, 5)).astype("float32")
    first = kp.find_pathway(model, x, targets=targets.regression(0), sparsity=0.8, jit_compile=False)
    second = kp.find_pathway(model, x, targets=targets.regression(1), sparsity=0.8, jit_compile=False)
    weights = model.get_layer("out").get_weights()[0]  # (16, 2)
    hidden = keras.Model(model.input, model.get_layer("hidden").output)(x).numpy()
    for unit, pathway in ((0, first), (1, second)):
        contribution = np.abs(hidden * weights[:, unit])
        for i in range(len(x)):
            threshold = np.percentile(contribution[i], 80)
            np.testing.assert_array_equal(pathway.masks[0][i], contribution[i] > threshold)
    assert not np.array_equal(first.masks[0], second.masks[0])


def test_binary_score_explains_the_pre_sigmoid_logit():
    x = keras.Input((4,))
    h = keras.layers.Dense(8, activation="relu")(x)
    model = keras.Model(x, keras.layers.Dense(1, activation="sigmoid")(h))
    data = np.random.default_rng(2).normal(size=(3, 4)).astype("float32")
    result = kp.explain(model, data, targets=targets.binary(), method="gradient", jit_compile=False)
    logit = lambda v: np.log(np.asarray(model(v.astype("float32")))[:, 0]) - np.log1p(-np.asarray(model(v.astype("float32")))[:, 0])  # noqa: E731
    np.testing.assert_allclose(result.attributions, finite_differences(logit, data.astype(np.float64)),
                               rtol=2e-2, atol=2e-3)


def test_every_method_runs_with_a_score_and_scores_do_not_share_steps():
    model = regression_model()
    x = np.random.default_rng(3).normal(size=(3, 5)).astype("float32")
    for method in ("pathway_gradient", "gradient", "input_x_gradient", "integrated_gradients",
                   "smoothgrad", "guided_backprop", "random"):
        options = {"steps": 3} if method == "integrated_gradients" else {"samples": 2} if method == "smoothgrad" else {}
        assert kp.explain(model, x, targets=targets.regression(1), method=method, **options).attributions.shape == x.shape
    a = kp.explain(model, x, targets=targets.regression(0), method="gradient").attributions
    b = kp.explain(model, x, targets=targets.regression(1), method="gradient").attributions
    assert not np.allclose(a, b)


def test_a_bad_score_is_named():
    model = regression_model()
    x = np.ones((2, 5), "float32")
    with pytest.raises(ValueError, match=r"The score whole must return one value per input, shape \(N,\)"):
        kp.explain(model, x, targets=targets.Score(lambda outputs: outputs, "whole"), method="gradient")
    with pytest.raises(ValueError, match="Expected a callable score"):
        targets.Score(3, "three")


def test_conv1d_time_series_and_tabular_models_get_per_rank_saliency(tmp_path):
    from keras_pathways import viz

    x = keras.Input((32, 2))
    h = keras.layers.Conv1D(8, 5, padding="same", activation="relu")(x)
    series_model = keras.Model(x, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(h)))
    series = np.random.default_rng(0).normal(size=(3, 32, 2)).astype("float32")
    result = kp.explain(series_model, series, sparsity=0.5, jit_compile=False)
    assert result.attributions.shape == (3, 32, 2) and result.saliency.shape == (3, 32)
    pick = np.argmax(np.abs(result.attributions), axis=-1)[..., None]
    np.testing.assert_array_equal(result.saliency, np.take_along_axis(result.attributions, pick, -1)[..., 0])
    figure = viz.signal(series[0], result.saliency[0], title="series")
    viz.save(figure, tmp_path / "signal.png")

    table = regression_model()
    rows = np.random.default_rng(1).normal(size=(2, 5)).astype("float32")
    tab = kp.explain(table, rows, targets=targets.regression(0), method="input_x_gradient")
    assert tab.saliency.shape == (2, 5)
    np.testing.assert_array_equal(tab.saliency, tab.attributions)
    viz.save(viz.features(tab.attributions[0], names=list("abcde")), tmp_path / "features.png")
    assert (tmp_path / "signal.png").stat().st_size > 0 and (tmp_path / "features.png").stat().st_size > 0
    with pytest.raises(ValueError, match="same length"):
        viz.signal(series[0], result.saliency[0][:10])
    with pytest.raises(ValueError, match="Expected 5 feature names"):
        viz.features(tab.attributions[0], names=["a"])


def test_token_ids_through_an_embedding_are_explained_per_token():
    """Integer token ids -> Embedding: the attributions are w.r.t. the embedding
    output (N, T, D) and a token's saliency is their sum over D."""
    ids = keras.Input((6,), dtype="int32")
    h = keras.layers.Embedding(20, 4, name="embed")(ids)
    h = keras.layers.Conv1D(8, 3, padding="same", activation="relu")(h)
    model = keras.Model(ids, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(h)))
    tokens = np.random.default_rng(0).integers(0, 20, (3, 6)).astype("int32")
    result = kp.explain(model, tokens, method="input_x_gradient", jit_compile=False)
    assert result.attributions.shape == (3, 6, 4) and result.saliency.shape == (3, 6)
    np.testing.assert_allclose(result.saliency, result.attributions.sum(axis=-1), rtol=1e-6)
    # A linear head on the embeddings: token t's input x gradient is exactly
    # sum_d e[t, d] * W[t * D + d, c].
    linear = keras.Model(ids, keras.layers.Dense(2, name="head")(keras.layers.Flatten()(model.get_layer("embed")(ids))))
    exact = kp.explain(linear, tokens, targets=1, method="input_x_gradient", jit_compile=False)
    vectors = np.asarray(model.get_layer("embed")(tokens))  # (3, 6, 4)
    weights = linear.get_layer("head").get_weights()[0][:, 1].reshape(6, 4)
    np.testing.assert_allclose(exact.saliency, (vectors * weights).sum(axis=-1), rtol=1e-5, atol=1e-6)
    with pytest.raises(kp.InputError, match="takes int32 input"):
        kp.explain(model, tokens.astype("float32"))


def two_output_model():
    """A classifier head "kind" (3 classes) and a regression head "size" on shared features."""
    x = keras.Input((5,))
    h = keras.layers.Dense(16, activation="relu", name="shared")(x)
    kind = keras.layers.Dense(3, activation="softmax", name="kind")(h)
    size = keras.layers.Dense(1, name="size")(keras.layers.Dense(8, activation="relu", name="size_hidden")(h))
    return keras.Model(x, [kind, size]), x, kind, size


def test_a_model_with_two_outputs_is_explained_through_the_chosen_one():
    model, x, kind, size = two_output_model()
    data = np.random.default_rng(4).normal(size=(3, 5)).astype("float32")
    with pytest.raises(kp.UnsupportedModelError, match=r"has 2 outputs .* targets=keras_pathways.targets.output"):
        kp.explain(model, data)
    by_size = kp.explain(model, data, targets=targets.output("size", targets.regression(0)), method="gradient",
                         jit_compile=False)
    expected = finite_differences(lambda v: np.asarray(model(v.astype("float32"))[1])[:, 0], data.astype(np.float64))
    np.testing.assert_allclose(by_size.attributions, expected, rtol=1e-3, atol=1e-3)
    by_kind = kp.explain(model, data, targets=targets.output("kind"), sparsity=0.5, jit_compile=False)
    assert [s.name for s in by_kind.pathway.sites] == ["shared/relu"]  # size_hidden is not on kind's path
    pre_softmax = keras.Model(x, model.get_layer("kind").output)  # same weights, output softmax stripped below
    logits = kp.pathway_graph(pre_softmax)(data).numpy()
    np.testing.assert_allclose(by_kind.logits, logits, rtol=1e-5, atol=1e-6)
    with pytest.raises(kp.UnsupportedModelError, match="has no output 'colour'"):
        kp.explain(model, data, targets=targets.output("colour"))


def segmentation_model():
    x = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="features")(x)
    return keras.Model(x, keras.layers.Conv2D(3, 1, activation="softmax", name="classes")(h))


def test_a_segmentation_score_is_the_mean_class_logit_over_the_region(tmp_path):
    model = segmentation_model()
    data = np.random.default_rng(6).normal(size=(2, 6, 6, 2)).astype("float32")
    region = np.zeros((6, 6), bool)
    region[1:4, 2:5] = True
    graph = kp.pathway_graph(model)
    assert graph.output_rank == 4 and graph.output_activation == "softmax"

    def mean_logit(v):
        logits = np.asarray(graph(v.astype("float32")))
        return logits[..., 1][:, region].mean(axis=1)

    result = kp.explain(model, data, targets=targets.segmentation(1, region), method="gradient", jit_compile=False)
    flat = data.reshape(2, -1).astype(np.float64)
    expected = finite_differences(lambda v: mean_logit(v.reshape(-1, 6, 6, 2)), flat).reshape(data.shape)
    np.testing.assert_allclose(result.attributions, expected, rtol=2e-3, atol=2e-3)
    assert result.logits.shape == (2, 6, 6, 3)
    pathway = kp.explain(model, data, targets=targets.segmentation(1), sparsity=0.5, jit_compile=False)
    assert pathway.attributions.shape == data.shape and (pathway.targets == -1).all()
    with pytest.raises(kp.InputError, match=r"predicts a map .* targets=keras_pathways.targets.segmentation"):
        kp.explain(model, data)
    from keras_pathways.export import ExportError
    with pytest.raises(ExportError, match=r"predicts a map of rank 4: .* targets=keras_pathways.targets.segmentation"):
        kp.export_explainer(model, tmp_path / "seg", methods=("gradient",))


# ------------------------------------------------- scores in freeze and export
def binary_model():
    x = keras.Input((4,))
    h = keras.layers.Dense(8, activation="relu", name="hidden")(x)
    return keras.Model(x, keras.layers.Dense(1, activation="sigmoid", name="head")(h))


def test_export_with_a_score_serves_that_score_and_says_so(tmp_path):
    import tensorflow as tf

    model = binary_model()
    data = np.random.default_rng(8).normal(size=(3, 4)).astype("float32")
    path = kp.export_explainer(model, tmp_path / "binary", methods=("pathway_gradient", "gradient"),
                               targets=targets.binary(), sparsity=0.5)
    signatures = tf.saved_model.load(path).signatures
    # The score defines what is explained: no per-request targets signature.
    assert set(signatures) == {"serving_default", "explain_pathway_gradient", "explain_gradient"}
    probability = np.asarray(model(data))[:, 0]
    for method in ("pathway_gradient", "gradient"):
        served = signatures[f"explain_{method}"](images=tf.constant(data))
        options = {"sparsity": 0.5} if method == "pathway_gradient" else {}
        local = kp.explain(model, data, targets=targets.binary(), method=method, **options)
        np.testing.assert_allclose(served["attributions"].numpy(), local.attributions, rtol=1e-5, atol=1e-7)
        assert [v.decode() for v in served["explained"].numpy()] == ["binary()"] * 3
        np.testing.assert_allclose(served["score"].numpy(), np.log(probability / (1 - probability)),
                                   rtol=1e-4, atol=1e-5)  # the pre-sigmoid logit
        assert "targets" not in served
    from keras_pathways.export import ExportError
    with pytest.raises(ExportError, match=r"targets= takes a score"):
        kp.export_explainer(model, tmp_path / "bad", targets=3)


def test_export_of_a_segmentation_model_with_a_score(tmp_path):
    import tensorflow as tf

    model = segmentation_model()
    data = np.random.default_rng(9).normal(size=(2, 6, 6, 2)).astype("float32")
    path = kp.export_explainer(model, tmp_path / "seg", methods=("gradient",), targets=targets.segmentation(1))
    served = tf.saved_model.load(path).signatures["explain_gradient"](images=tf.constant(data))
    local = kp.explain(model, data, targets=targets.segmentation(1), method="gradient")
    np.testing.assert_allclose(served["attributions"].numpy(), local.attributions, rtol=1e-5, atol=1e-7)
    assert served["score"].shape == (2,) and served["logits"].shape == (2, 6, 6, 3)


def test_freeze_a_pathway_found_for_a_score_of_one_output(tmp_path):
    model, x, kind, size = two_output_model()
    data = np.random.default_rng(10).normal(size=(2, 5)).astype("float32")
    pathway = kp.find_pathway(model, data, targets=targets.output("size", targets.regression(0)), sparsity=0.5)
    assert pathway.output == "size" and pathway.score == "output('size', regression(0))"
    graph = kp.pathway_graph(keras.Model(x, size))  # the size output alone: same layers
    for index in range(2):
        frozen = kp.freeze(model, pathway, index)
        masks = pathway.input_masks(index)
        want = graph(data[index:index + 1], masks=[m[None].astype("float32") for m in masks]).numpy()
        np.testing.assert_allclose(frozen(data[index:index + 1]).numpy(), want, rtol=1e-5, atol=1e-6)
    frozen.save(tmp_path / "frozen.keras")
    again = keras.saving.load_model(tmp_path / "frozen.keras", safe_mode=True)
    np.testing.assert_allclose(again(data).numpy(), frozen(data).numpy(), rtol=1e-6)
    assert kp.find_pathway(model, data, targets=targets.output("kind"), sparsity=0.5).output == "kind"
    assert kp.find_pathway(binary_model(), data[:, :4], sparsity=0.5).output is None  # class targets


# ------------------------------------------- known answers for every task kind
def planted(kind):
    """(model, data, score, informative) where the score depends only on the
    inputs marked True in ``informative`` (shaped like one input)."""
    rng = np.random.default_rng(21)
    keras.utils.set_random_seed(21)
    if kind == "segmentation":  # pointwise network: pixel p's logits depend on pixel p alone
        x = keras.Input((6, 6, 2))
        h = keras.layers.Conv2D(5, 1, activation="relu")(x)
        model = keras.Model(x, keras.layers.Conv2D(3, 1)(h))
        region = np.zeros((6, 6), bool)
        region[:, :3] = True  # the left half
        informative = np.repeat(region[..., None], 2, axis=-1)
        return model, rng.normal(size=(4, 6, 6, 2)).astype("float32"), targets.segmentation(1, region), informative
    if kind == "series":  # only time steps 10..15 reach the output
        x = keras.Input((32, 2))
        h = keras.layers.Conv1D(6, 1, activation="relu")(x)
        flat = keras.layers.Flatten()(h)
        head = keras.layers.Dense(3, name="head")
        model = keras.Model(x, head(flat))
        window = np.zeros((32, 6), bool)
        window[10:16] = True
        kernel = head.get_weights()[0] * window.reshape(-1, 1)
        head.set_weights([kernel, head.get_weights()[1]])
        informative = np.zeros((32, 2), bool)
        informative[10:16] = True
        return model, rng.normal(size=(4, 32, 2)).astype("float32"), targets.logit(2), informative
    if kind == "table":  # only feature 2 enters the network
        x = keras.Input((5,))
        first = keras.layers.Dense(8, activation="relu", name="first")
        model = keras.Model(x, keras.layers.Dense(1, name="out")(first(x)))
        kernel = np.zeros((5, 8), "float32")
        kernel[2] = rng.normal(size=8)
        first.set_weights([kernel, rng.normal(size=8).astype("float32") * 0.1 + 0.5])
        return model, rng.normal(size=(4, 5)).astype("float32"), targets.regression(0), np.arange(5) == 2
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["segmentation", "series", "table"])
@pytest.mark.parametrize("method", ["gradient", "input_x_gradient", "integrated_gradients", "pathway_gradient"])
def test_planted_informative_inputs_get_all_the_attribution(kind, method):
    model, data, score, informative = planted(kind)
    options = {"sparsity": 0.5} if method == "pathway_gradient" else {}
    result = kp.explain(model, data, targets=score, method=method, jit_compile=False, **options)
    assert (result.attributions[:, ~informative] == 0).all()  # exactly: no path reaches them
    assert np.abs(result.attributions[:, informative]).sum() > 0
    # Batch equals loop, for every task kind.
    one_by_one = np.concatenate([
        kp.explain(model, data[i:i + 1], targets=score, method=method, jit_compile=False, **options).attributions
        for i in range(len(data))])
    np.testing.assert_allclose(result.attributions, one_by_one, rtol=1e-5, atol=1e-7)


def test_linear_regression_input_x_gradient_is_w_times_x():
    x = keras.Input((6,))
    model = keras.Model(x, keras.layers.Dense(2, name="linear")(x))
    weights = np.random.default_rng(3).normal(size=(6, 2)).astype("float32")
    model.get_layer("linear").set_weights([weights, np.array([0.5, -1.0], "float32")])
    data = np.random.default_rng(4).normal(size=(3, 6)).astype("float32")
    for unit in (0, 1):
        ixg = kp.explain(model, data, targets=targets.regression(unit), method="input_x_gradient")
        np.testing.assert_allclose(ixg.attributions, data * weights[:, unit], rtol=1e-5, atol=1e-6)
        grad = kp.explain(model, data, targets=targets.regression(unit), method="gradient")
        np.testing.assert_allclose(grad.attributions, np.broadcast_to(weights[:, unit], data.shape), rtol=1e-6)
