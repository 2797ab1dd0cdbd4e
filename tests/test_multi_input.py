"""Models with several inputs: explain/find_pathway take a list or dict of arrays."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import keras_pathways as kp

#: Every method that works on a model with several inputs, with cheap options.
METHODS = {
    "gradient": {},
    "input_x_gradient": {},
    "integrated_gradients": {"steps": 4},
    "smoothgrad": {"samples": 3},
    "guided_backprop": {},
    "pathway_gradient": {},
    "pathway_intgrad": {"intgrad_steps": 3},
}


def image_table_model(ignore_table=False, name="image_table"):
    """Image branch (Conv2D + ReLU + pool) and table branch (Dense + ReLU), concatenated.

    ``ignore_table``: the table branch's Dense has an all-zero kernel and no
    bias, so the table input reaches the head but never changes it (its
    exact gradient is 0; a variable, so nothing is constant-folded).
    """
    image = keras.Input((6, 6, 2), name="image")
    table = keras.Input((5,), name="table")
    h = layers.Conv2D(4, 3, activation="relu", name="conv")(image)
    h = layers.MaxPooling2D(name="pool")(h)
    h = layers.Flatten(name="flatten")(h)
    t = layers.Dense(3, use_bias=not ignore_table, name="dense_t")(table)
    t = layers.ReLU(name="relu_t")(t)
    c = layers.Concatenate(name="concat")([h, t])
    c = layers.Dense(6, activation="relu", name="fc")(c)
    out = layers.Dense(4, activation="softmax", name="head")(c)
    model = keras.Model([image, table], out, name=name)
    fc = model.get_layer("fc")
    fc.bias.assign(np.full(fc.bias.shape, 0.5, "float32"))  # mostly active: no input is dead
    if ignore_table:
        dense = model.get_layer("dense_t")
        dense.kernel.assign(np.zeros(dense.kernel.shape, "float32"))
    return model


def data(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, 6, 6, 2)).astype("float32"),
            rng.normal(size=(n, 5)).astype("float32")]


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(1)
    return image_table_model()


@pytest.fixture(scope="module")
def ignoring():
    keras.utils.set_random_seed(2)
    return image_table_model(ignore_table=True, name="ignores_table")


# ------------------------------------------------------------------ the maths
@pytest.mark.parametrize("method", sorted(METHODS))
def test_an_input_the_network_ignores_gets_exactly_zero(ignoring, method):
    x = data(3)
    result = kp.explain(ignoring, x, method=method, verbose=False, **METHODS[method])
    image, table = result.attributions
    assert image.shape == (3, 6, 6, 2) and table.shape == (3, 5)
    assert result.saliency[0].shape == (3, 6, 6) and result.saliency[1].shape == (3, 5)
    np.testing.assert_array_equal(table, 0.0)
    np.testing.assert_array_equal(result.saliency[1], 0.0)
    assert np.abs(image).max() > 0  # the image does carry the response
    np.testing.assert_array_equal(result.saliency[0], kp.max_abs_reduce(image))


def test_random_gives_one_random_attribution_per_input(ignoring):
    x = data(3)
    result = kp.explain(ignoring, x, method="random", verbose=False)
    image, table = result.attributions
    assert image.shape == (3, 6, 6, 2) and table.shape == (3, 5)
    for a in (image, table):
        assert np.all(a >= -1) and np.all(a < 1) and np.abs(a).min() > 0
    again = kp.explain(ignoring, x, method="random", verbose=False)
    np.testing.assert_array_equal(again.attributions[1], table)
    other = kp.explain(ignoring, x, method="random", seed=3, verbose=False)
    assert not np.array_equal(other.attributions[1], table)


def linear_model():
    """logits = a @ Wa + flatten(b) @ Wb + bias: a (4,) and b (2, 3) inputs."""
    rng = np.random.default_rng(5)
    wa = rng.normal(size=(4, 3)).astype("float32")
    wb = rng.normal(size=(6, 3)).astype("float32")
    a = keras.Input((4,), name="a")
    b = keras.Input((2, 3), name="b")
    da = layers.Dense(3, name="da")(a)
    db = layers.Dense(3, use_bias=False, name="db")(layers.Flatten(name="fb")(b))
    out = layers.Add(name="logits")([da, db])
    model = keras.Model([a, b], out, name="linear_two_inputs")
    model.get_layer("da").set_weights([wa, np.array([0.1, -0.2, 0.3], "float32")])
    model.get_layer("db").set_weights([wb])
    return model, wa, wb


def test_linear_model_known_answers():
    model, wa, wb = linear_model()
    rng = np.random.default_rng(6)
    x = [rng.normal(size=(5, 4)).astype("float32"), rng.normal(size=(5, 2, 3)).astype("float32")]
    targets = np.array([0, 1, 2, 1, 0])
    ga = wa[:, targets].T  # (5, 4): d logit_c / d a
    gb = wb[:, targets].T.reshape(5, 2, 3)

    grad = kp.explain(model, x, targets=targets, method="gradient").attributions
    np.testing.assert_allclose(grad[0], ga, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(grad[1], gb, rtol=1e-6, atol=1e-6)
    ixg = kp.explain(model, x, targets=targets, method="input_x_gradient").attributions
    np.testing.assert_allclose(ixg[0], ga * x[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ixg[1], gb * x[1], rtol=1e-5, atol=1e-6)
    ig = kp.explain(model, x, targets=targets, method="integrated_gradients", steps=3).attributions
    np.testing.assert_allclose(ig[0], ga * x[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ig[1], gb * x[1], rtol=1e-5, atol=1e-6)

    # A baseline per input (list, dict, and a per-column array for b), or one scalar for all.
    base_a, base_b = np.full(4, 0.5, "float32"), np.array([1.0, -1.0, 2.0], "float32")
    for baseline in ([base_a, base_b], {"b": base_b, "a": base_a}):
        ig = kp.explain(model, x, targets=targets, method="integrated_gradients", steps=3,
                        baseline=baseline).attributions
        np.testing.assert_allclose(ig[0], ga * (x[0] - base_a), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ig[1], gb * (x[1] - base_b), rtol=1e-5, atol=1e-5)
    ig = kp.explain(model, x, targets=targets, method="integrated_gradients", steps=3,
                    baseline=0.25).attributions
    np.testing.assert_allclose(ig[1], gb * (x[1] - 0.25), rtol=1e-5, atol=1e-5)
    # Completeness, summed over both inputs: f(x) - f(0).
    logits = kp.explain(model, x, targets=targets, method="gradient").logits
    bias = np.array([0.1, -0.2, 0.3])[targets]
    ig = kp.explain(model, x, targets=targets, method="integrated_gradients", steps=2).attributions
    total = ig[0].sum(axis=1) + ig[1].reshape(5, -1).sum(axis=1)
    np.testing.assert_allclose(total, logits[np.arange(5), targets] - bias, rtol=1e-5, atol=1e-5)


def test_smoothgrad_noise_is_scaled_per_input():
    """Input a spans ~1e-3 and input b ~1e3: a noise scaled by the pooled
    range would swamp a; per input it stays small (ReLU state kept)."""
    a = keras.Input((3,), name="a")
    b = keras.Input((3,), name="b")
    h = layers.Dense(2, name="ha")(a)
    h = layers.ReLU(name="r")(h)
    out = layers.Add()([layers.Dense(2, name="oa")(h), layers.Dense(2, name="ob")(b)])
    model = keras.Model([a, b], out)
    model.get_layer("ha").set_weights([np.eye(3, 2, dtype="float32"), np.full(2, 1.0, "float32")])
    x = [np.array([[1e-3, -1e-3, 0.0]], "float32"), np.array([[1e3, -1e3, 0.0]], "float32")]
    plain = kp.explain(model, x, targets=0, method="gradient").attributions
    smooth = kp.explain(model, x, targets=0, method="smoothgrad", samples=8, noise=0.5).attributions
    # The pre-activations are ~1 and the noise on a is ~1e-3: the ReLU never switches.
    np.testing.assert_allclose(smooth[0], plain[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(smooth[1], plain[1], rtol=1e-5, atol=1e-6)


def _masked_gradient(model, x, masks, targets):
    """The pathway gradient by hand: the model's own layers with each site's
    output times its mask, d logit / d inputs."""
    image, table = (tf.constant(v) for v in x)
    get = model.get_layer
    with tf.GradientTape() as tape:
        tape.watch([image, table])
        conv = get("conv")
        pre = tf.nn.conv2d(image, conv.kernel, 1, "VALID") + conv.bias
        h = tf.nn.relu(pre) * masks["conv/relu"]
        h = get("flatten")(get("pool")(h))
        t = get("relu_t")(get("dense_t")(table)) * masks["relu_t"]
        fc = get("fc")
        c = tf.concat([h, t], axis=1) @ fc.kernel + fc.bias
        c = tf.nn.relu(c) * masks["fc/relu"]
        head = get("head")
        logits = c @ head.kernel + head.bias
        y = tf.gather(logits, targets, axis=1, batch_dims=1)
    return [g.numpy() for g in tape.gradient(y, [image, table])]


@pytest.mark.parametrize("sparsity", [0.0, 0.6])
def test_pathway_gradient_is_the_masked_networks_gradient(model, sparsity):
    x = data(4)
    result = kp.explain(model, x, sparsity=sparsity, verbose=False)
    path = result.pathway
    assert path.site_names == ["conv/relu", "relu_t", "fc/relu"]
    masks = {name: m.astype("float32") for name, m in zip(path.site_names, path.masks)}
    expected = _masked_gradient(model, x, masks, result.targets.astype("int32"))
    np.testing.assert_allclose(result.attributions[0], expected[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(result.attributions[1], expected[1], rtol=1e-4, atol=1e-6)
    if sparsity == 0.0:  # every active neuron kept: the plain gradient
        plain = kp.explain(model, x, method="gradient", targets=result.targets).attributions
        np.testing.assert_allclose(result.attributions[0], plain[0], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(result.attributions[1], plain[1], rtol=1e-4, atol=1e-6)
    else:
        assert np.all(path.kept_fraction <= 0.4 + 1e-9)


def test_pathway_is_per_neuron_and_find_pathway_matches_explain(model):
    x = data(4)
    result = kp.explain(model, x, sparsity=0.7, verbose=False)
    path = kp.find_pathway(model, {"image": x[0], "table": x[1]}, sparsity=0.7, verbose=False)
    assert path.site_names == result.pathway.site_names
    for a, b in zip(path.masks, result.pathway.masks):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(path.threshold, result.pathway.threshold)
    np.testing.assert_array_equal(path.targets, result.targets)
    assert result.logits.shape == (4, 4) and len(result) == 4
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(tf.nn.softmax(result.logits).numpy(), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["gradient", "pathway_gradient"])
def test_batch_equals_loop(model, method):
    x = data(5, seed=3)
    options = {"sparsity": 0.5} if method == "pathway_gradient" else {}
    whole = kp.explain(model, x, method=method, batch_size=5, verbose=False, **options)
    padded = kp.explain(model, x, method=method, batch_size=2, verbose=False, **options)
    assert np.all(np.abs(whole.attributions[0]).reshape(5, -1).max(axis=1) > 0)  # not vacuous
    for i in range(5):
        one = kp.explain(model, [x[0][i], x[1][i]], method=method, verbose=False,  # no batch axis
                         **options)
        assert one.attributions[0].shape == (1, 6, 6, 2)
        for k in range(2):
            np.testing.assert_allclose(whole.attributions[k][i:i + 1], one.attributions[k],
                                       rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(whole.targets[i:i + 1], one.targets)
    for k in range(2):
        np.testing.assert_allclose(padded.attributions[k], whole.attributions[k], rtol=1e-5, atol=1e-6)
    if method == "pathway_gradient":
        np.testing.assert_array_equal(padded.pathway.kept, whole.pathway.kept)


def test_list_tuple_and_dict_give_the_same_numbers_in_the_form_given(model):
    x = data(3)
    as_list = kp.explain(model, x, method="gradient")
    as_tuple = kp.explain(model, tuple(x), method="gradient")
    as_dict = kp.explain(model, {"table": x[1], "image": x[0]}, method="gradient")
    as_tensors = kp.explain(model, [tf.constant(x[0]), tf.constant(x[1])], method="gradient")
    assert isinstance(as_list.attributions, list) and isinstance(as_list.saliency, list)
    assert isinstance(as_tuple.attributions, tuple) and isinstance(as_tuple.saliency, tuple)
    assert isinstance(as_dict.attributions, dict) and list(as_dict.attributions) == ["image", "table"]
    assert list(as_dict.saliency) == ["image", "table"]
    for k, name in enumerate(["image", "table"]):
        np.testing.assert_array_equal(as_dict.attributions[name], as_list.attributions[k])
        np.testing.assert_array_equal(as_dict.saliency[name], as_list.saliency[k])
        np.testing.assert_array_equal(as_tuple.attributions[k], as_list.attributions[k])
        np.testing.assert_array_equal(as_tensors.attributions[k], as_list.attributions[k])


def test_the_users_model_is_not_changed(model):
    x = data(2)
    weights = [w.copy() for w in model.get_weights()]
    before = model.predict(x, verbose=0)
    for method, options in METHODS.items():
        kp.explain(model, x, method=method, verbose=False, **options)
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model.predict(x, verbose=0), before)
    assert [t.name for t in model.inputs] == ["image", "table"]


# -------------------------------------------------------------- bad input
def test_bad_inputs_are_refused_with_the_problem_and_the_fix(model):
    x = data(3)
    cases = [
        ([x[0]], r"Received 1 input array\(s\) in a list: wrong number of inputs.*"
                 r"Pass a list \[image, table\]"),
        (x + [x[1]], r"Received 3 input array\(s\).*wrong number of inputs"),
        ({"image": x[0], "tabel": x[1]}, r"unknown input name\(s\) \['tabel'\].*dict"),
        ({"image": x[0]}, r"no value for input\(s\) \['table'\]"),
        ([x[0], x[1][:2]], r"mismatched batch sizes: 'image': 3, 'table': 2"),
        ([x[0], x[1][:, :4]], r"Expected input 'table' .* shape \(N, 5\).*Received: shape \(3, 4\) "
                              r"for input 'table'"),
        ([x[0][..., :1], x[1]], r"Expected input 'image' .*\(N, 6, 6, 2\).*for input 'image'"),
        (x[0], r"has 2 inputs \['image', 'table'\]\. Received one array of shape \(3, 6, 6, 2\): "
               r"give one array per input"),
        ([x[0], x[1].astype("int32")], r"Expected a float input.*for input 'table'"),
        ([x[0], np.zeros((0, 5), "float32")], r"mismatched batch sizes"),
        ([x[0][:0], x[1][:0]], r"empty batch"),
        (tf.data.Dataset.from_tensor_slices((x[0], x[1])), r"tf.data.Dataset of several inputs"),
    ]
    for bad, message in cases:
        with pytest.raises(kp.InputError, match=message):
            kp.explain(model, bad, method="gradient")
    nan = [x[0], x[1].copy()]
    nan[1][2, 1] = np.nan
    with pytest.raises(kp.InputError, match=r"Input 'table' contains NaN or Inf: 1 values in input\(s\) \[2\]"):
        kp.explain(model, nan)
    inf = [x[0].copy(), x[1]]
    inf[0][0, 0, 0, 0] = np.inf
    with pytest.raises(kp.InputError, match=r"Input 'image' contains NaN or Inf"):
        kp.find_pathway(model, inf)
    with pytest.raises(kp.InputError, match=r"one target per input"):
        kp.explain(model, x, targets=[0, 1], method="gradient")


def test_bad_baselines_name_the_input(model):
    x = data(2)
    with pytest.raises(ValueError, match=r"one baseline per input. Received: 3 baselines"):
        kp.explain(model, x, method="integrated_gradients", steps=2, baseline=[0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"Received: unknown name\(s\) \['img'\], missing \['image'\]"):
        kp.explain(model, x, method="integrated_gradients", steps=2, baseline={"img": 0.0, "table": 0.0})
    with pytest.raises(ValueError, match=r"Baseline of input 'table'.*Received: baseline of shape \(4,\)"):
        kp.explain(model, x, method="integrated_gradients", steps=2, baseline=[0.0, np.zeros(4)])
    with pytest.raises(ValueError, match=r"one baseline per input. Received: one array of shape \(6, 6, 2\)"):
        kp.explain(model, x, method="integrated_gradients", steps=2, baseline=np.zeros((6, 6, 2)))
    with pytest.raises(ValueError, match=r"baseline contains NaN"):
        kp.explain(model, x, method="integrated_gradients", baseline=[0.0, np.full(5, np.nan)])


def test_what_does_not_take_several_inputs_refuses_clearly(model, tmp_path):
    x = data(2)
    with pytest.raises(kp.UnsupportedModelError,
                       match=r"Method 'grad_cam' .* several inputs.*Use method='pathway_gradient'"):
        kp.explain(model, x, method="grad_cam")
    path = kp.find_pathway(model, x)
    with pytest.raises(kp.UnsupportedModelError, match=r"freeze does not support models with several inputs"):
        kp.freeze(model, path, 0)
    from keras_pathways.export import ExportError

    with pytest.raises(ExportError, match=r"export_explainer .* does not support models with several inputs"):
        kp.export_explainer(model, tmp_path / "served")
    assert not (tmp_path / "served").exists()
    with pytest.raises(kp.InputError, match=r"explain_dataset does not support models with several inputs"):
        kp.explain_dataset(model, x, tmp_path / "chunks", progress=False)
    from keras_pathways import evaluation
    from keras_pathways.evaluation import common

    with pytest.raises(kp.UnsupportedModelError, match=r"evaluate .* does not support models with several"):
        evaluation.evaluate(model, x, methods=["gradient"], metrics=["deletion"], progress=False)
    with pytest.raises(kp.UnsupportedModelError, match=r"does not support models with several inputs"):
        common.logits_function(model)
    with pytest.raises(kp.UnsupportedModelError, match=r"does not support models with several inputs"):
        kp.pathway_graph(model)

    from keras_pathways.models.loading import LoadError, load_model

    path = tmp_path / "two_inputs.keras"
    model.save(path)
    with pytest.raises(LoadError, match=r"takes 2 inputs: the command line does not support models "
                                        r"with several inputs yet"):
        load_model(str(path))


def test_integer_inputs_are_refused_for_several_inputs():
    ids = keras.Input((4,), dtype="int32", name="ids")
    table = keras.Input((3,), name="table")
    e = layers.Flatten()(layers.Embedding(10, 2)(ids))
    out = layers.Dense(2)(layers.ReLU()(layers.Concatenate()([e, table])))
    model = keras.Model([ids, table], out)
    with pytest.raises(kp.UnsupportedModelError,
                       match=r"input 'ids' takes int32: integer inputs .* only for models with one input"):
        kp.explain(model, [np.zeros((1, 4), "int32"), np.zeros((1, 3), "float32")])


def test_any_size_inputs_are_refused_for_several_inputs():
    image = keras.Input((None, None, 1), name="image")
    table = keras.Input((3,), name="table")
    h = layers.GlobalAveragePooling2D()(layers.Conv2D(2, 3, activation="relu")(image))
    model = keras.Model([image, table], layers.Dense(2)(layers.Concatenate()([h, table])))
    with pytest.raises(kp.UnsupportedModelError, match=r"input 'image' takes any size.*fixed shape"):
        kp.explain(model, [np.zeros((1, 5, 5, 1), "float32"), np.zeros((1, 3), "float32")])
