"""Deletion / insertion, faithfulness correlation and GridPG, checked against
analytic (linear numpy) models whose exact attributions are known."""

import keras
import numpy as np
import pytest
from keras import layers
from scipy.ndimage import gaussian_filter

from conftest import small_cnn
from keras_pathways.evaluation import common
from keras_pathways.evaluation.faithfulness import default_subset_size
from keras_pathways.evaluation.faithfulness import faithfulness_correlation
from keras_pathways.evaluation.gridpg import grid_model
from keras_pathways.evaluation.gridpg import gridpg
from keras_pathways.evaluation.gridpg import make_grids
from keras_pathways.evaluation.gridpg import resize_for
from keras_pathways.evaluation.perturbation import deletion
from keras_pathways.evaluation.perturbation import insertion

SHAPE = (8, 8, 3)


# ------------------------------------------------------------------ helpers
def linear(classes=2, shape=SHAPE, seed=0, scale=0.1, positive_margin=False):
    """predict(images) = flat(images) @ W (float64 logits) and W (H*W*C, classes).

    With ``positive_margin``, W[:, 0] - W[:, 1] > 0 everywhere (2 classes): for
    positive images every pixel is evidence for class 0.
    """
    rng = np.random.default_rng(seed)
    w = scale * rng.standard_normal((int(np.prod(shape)), classes))
    if positive_margin:
        w[:, 0] = w[:, 1] + scale * np.abs(rng.standard_normal(len(w)))
    calls = []

    def predict(images):
        images = np.asarray(images)
        calls.append(len(images))
        return images.reshape(len(images), -1).astype(np.float64) @ w

    predict.calls = calls
    return predict, w


def contributions(w, x, targets, reference=0.0, against=None):
    """Per-pixel (N, H, W) exact attribution of the target logit (or of the
    logit difference target - ``against``) relative to ``reference``."""
    weights = w[:, targets].T
    if against is not None:
        weights = weights - w[:, against].T
    return (weights.reshape(x.shape) * (x - reference)).sum(axis=-1)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def positive_images(n, seed=1):
    return np.random.default_rng(seed).uniform(0.1, 1.0, (n,) + SHAPE).astype("float32")


def mixed_images(n, seed=1):
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (n,) + SHAPE).astype("float32")


# ------------------------------------------------------- deletion / insertion
def test_deletion_curve_is_the_analytic_one():
    # 2 classes: p_0 = sigmoid(l_0 - l_1), and (w_0 - w_1) * x per pixel is the
    # exact attribution of l_0 - l_1 relative to the zero image.
    predict, w = linear(2)
    x = mixed_images(6)
    targets = np.array([0, 1, 0, 1, 0, 1])
    c = contributions(w, x, targets, against=1 - targets).reshape(6, -1)
    steps = 5
    result = deletion(predict, x, c.reshape(6, 8, 8), targets, steps=steps)
    counts = np.rint(np.arange(steps + 1) * 64 / steps).astype(int)
    np.testing.assert_allclose(result["x"], counts / 64)
    order = np.argsort(-np.abs(c), axis=1, kind="stable")  # distinct |c|: no ties
    expected = np.stack([
        sigmoid(c.sum(1) - np.take_along_axis(c, order[:, :k], axis=1).sum(1)) for k in counts
    ], axis=1)
    np.testing.assert_allclose(result["curves"]["probability"], expected, rtol=1e-9, atol=1e-12)


def test_exact_attribution_deletes_faster_and_inserts_faster_than_random():
    predict, w = linear(2, positive_margin=True, scale=0.025)
    x = positive_images(8)
    targets = np.zeros(8, np.int64)
    exact = contributions(w, x, targets, against=np.ones(8, np.int64))
    assert (exact > 0).all()
    random_order = np.zeros_like(exact)  # all ties: a seeded random order
    reverse = exact.max() - exact + 1e-3  # least relevant first
    auc = {name: deletion(predict, x, s, targets, steps=16)["values"]["auc"]
           for name, s in [("exact", exact), ("random", random_order), ("reverse", reverse)]}
    assert (auc["exact"] < auc["random"] - 0.03).all(), auc
    assert (auc["reverse"] > auc["random"] + 0.03).all(), auc

    # insertion starts from the blurred image: the exact attribution is relative
    # to it. Signed weights and images (the evidence is in the fine detail that
    # the blur removes); rank the positive part (evidence for the target) first.
    predict, w = linear(2, scale=0.05)
    x = mixed_images(8)
    targets = np.array([0, 1] * 4)
    sigma = 1.5
    blurred = gaussian_filter(x.astype(np.float64), (0, sigma, sigma, 0))
    towards = contributions(w, x, targets, reference=blurred, against=1 - targets)
    auc_in = {name: insertion(predict, x, s, targets, steps=16, blur_sigma=sigma)["values"]["auc"]
              for name, s in [("exact", np.maximum(towards, 0)), ("random", random_order)]}
    assert (auc_in["exact"] > auc_in["random"] + 0.05).all(), auc_in


def test_insertion_curve_is_the_analytic_one():
    predict, w = linear(2)
    x = mixed_images(4)
    targets = np.array([1, 0, 1, 0])
    sigma = 1.0
    blurred = gaussian_filter(x.astype(np.float64), (0, sigma, sigma, 0))
    s = contributions(w, x, targets, reference=blurred, against=1 - targets).reshape(4, -1)
    start = contributions(w, blurred, targets, against=1 - targets).reshape(4, -1).sum(1)
    result = insertion(predict, x, s.reshape(4, 8, 8), targets, steps=4, blur_sigma=sigma)
    counts = np.rint(np.arange(5) * 64 / 4).astype(int)
    order = np.argsort(-np.abs(s), axis=1, kind="stable")
    expected = np.stack([
        sigmoid(start + np.take_along_axis(s, order[:, :k], axis=1).sum(1)) for k in counts
    ], axis=1)
    # x is float32: the canvas is float32 too, hence the tolerance
    np.testing.assert_allclose(result["curves"]["probability"], expected, rtol=1e-5)


@pytest.mark.parametrize("baseline", ["zero", "mean", "blur", 0.5])
def test_deletion_end_points_and_auc(baseline):
    predict, w = linear(3)
    x = mixed_images(5)
    targets = np.array([0, 1, 2, 0, 1])
    saliency = np.random.default_rng(3).standard_normal((5, 8, 8))
    result = deletion(predict, x, saliency, targets, steps=7, baseline=baseline, blur_sigma=1.2)
    curves = result["curves"]["probability"]
    assert curves.shape == (5, 8) and result["x"].shape == (8,)
    assert result["x"][0] == 0 and result["x"][-1] == 1 and (np.diff(result["x"]) > 0).all()
    rows = np.arange(5)
    np.testing.assert_allclose(curves[:, 0], common.softmax(predict(x))[rows, targets])
    x64 = x.astype(np.float64)
    if baseline == "zero":
        gone = np.zeros_like(x64)
    elif baseline == "mean":
        gone = np.broadcast_to(x64.mean(axis=(1, 2), keepdims=True), x.shape)
    elif baseline == "blur":
        gone = gaussian_filter(x64, (0, 1.2, 1.2, 0))
    else:
        gone = np.full_like(x64, baseline)
    np.testing.assert_allclose(curves[:, -1], common.softmax(predict(gone))[rows, targets],
                               rtol=1e-5)
    np.testing.assert_allclose(result["values"]["auc"], np.trapezoid(curves, result["x"], axis=1),
                               rtol=1e-12)


def test_insertion_end_points_default_blur_and_auc():
    predict, w = linear(3)
    x = mixed_images(3)
    targets = np.array([2, 1, 0])
    result = insertion(predict, x, np.ones((3, 8, 8)), targets, steps=3)
    curves = result["curves"]["probability"]
    rows = np.arange(3)
    blurred = gaussian_filter(x.astype(np.float64), (0, 1.0, 1.0, 0))  # max(1, 5 * 8 / 224)
    np.testing.assert_allclose(curves[:, 0], common.softmax(predict(blurred))[rows, targets],
                               rtol=1e-5)
    np.testing.assert_allclose(curves[:, -1], common.softmax(predict(x))[rows, targets])
    np.testing.assert_allclose(result["values"]["auc"], np.trapezoid(curves, result["x"], axis=1))


def test_deletion_is_batched_and_independent_of_batch_size():
    predict, _ = linear(2)
    x = mixed_images(5)
    saliency = np.random.default_rng(0).standard_normal((5, 8, 8))
    targets = np.array([0, 1, 1, 0, 1])
    small = deletion(predict, x, saliency, targets, steps=4, batch_size=7)
    assert max(predict.calls) <= 7 and len(predict.calls) == int(np.ceil(5 * 5 / 7))
    large = deletion(predict, x, saliency, targets, steps=4, batch_size=256)
    np.testing.assert_allclose(small["values"]["auc"], large["values"]["auc"], rtol=1e-12)
    # more steps than pixels: repeated fractions, still a curve from 0 to 1
    tiny = deletion(lambda im: im.sum(axis=(1, 2)), x[:1, :2, :2], saliency[:1, :2, :2],
                    np.array([2]), steps=6, batch_size=3)
    np.testing.assert_allclose(tiny["x"], [0, 0.25, 0.25, 0.5, 0.75, 0.75, 1])
    assert tiny["curves"]["probability"].shape == (1, 7)


def test_metrics_run_on_a_keras_model():
    model = small_cnn(softmax=True)
    predict = common.logits_function(model, batch_size=32)
    x = mixed_images(3)
    logits = np.asarray(predict(x))
    targets = logits.argmax(1)
    saliency = np.random.default_rng(0).standard_normal((3, 8, 8))
    result = deletion(predict, x, saliency, targets, steps=4, batch_size=32)
    np.testing.assert_allclose(result["curves"]["probability"][:, 0],
                               common.softmax(logits)[np.arange(3), targets], rtol=1e-5)
    r = faithfulness_correlation(predict, x, saliency, targets, subsets=10, batch_size=32)
    assert r["values"]["correlation"].shape == (3,)


# ------------------------------------------------------- faithfulness correlation
@pytest.mark.parametrize("baseline", ["zero", "mean", 0.3])
def test_faithfulness_is_one_for_the_exact_linear_attribution(baseline):
    predict, w = linear(3)
    x = mixed_images(5)
    targets = np.array([0, 1, 2, 1, 0])
    if baseline == "zero":
        reference = 0.0
    elif baseline == "mean":
        reference = x.astype(np.float64).mean(axis=(1, 2), keepdims=True)
    else:
        reference = baseline
    per_channel = w[:, targets].T.reshape(x.shape) * (x - reference)  # (N, H, W, C)
    result = faithfulness_correlation(predict, x, per_channel, targets, subsets=30,
                                      baseline=baseline)
    np.testing.assert_allclose(result["values"]["correlation"], 1.0, atol=1e-6)
    assert result["subset_size"] == default_subset_size(64) == 8
    # per-pixel (N, H, W) attributions give the same result
    summed = faithfulness_correlation(predict, x, per_channel.sum(-1), targets, subsets=30,
                                      baseline=baseline)
    np.testing.assert_allclose(summed["values"]["correlation"], result["values"]["correlation"])


def test_faithfulness_of_wrong_attributions_is_clearly_below_one():
    predict, w = linear(3)
    x = mixed_images(6)
    targets = np.array([0, 1, 2, 0, 1, 2])
    noise = np.random.default_rng(5).standard_normal((6, 8, 8))
    r = faithfulness_correlation(predict, x, noise, targets, subsets=100)["values"]["correlation"]
    assert (np.abs(r) < 0.6).all() and np.abs(r).mean() < 0.35, r
    # the attribution of another class is also wrong
    other = contributions(w, x, (targets + 1) % 3)
    r = faithfulness_correlation(predict, x, other, targets, subsets=100)["values"]["correlation"]
    assert (r < 0.9).all(), r


def test_faithfulness_is_seeded_and_batch_equals_loop():
    predict, w = linear(3)
    x = mixed_images(5)
    targets = np.array([2, 1, 0, 1, 2])
    a = np.random.default_rng(2).standard_normal((5, 8, 8)) + contributions(w, x, targets)
    options = dict(subsets=25, subset_size=0.2)
    first = faithfulness_correlation(predict, x, a, targets, batch_size=11, **options)
    again = faithfulness_correlation(predict, x, a, targets, batch_size=11, **options)
    np.testing.assert_array_equal(first["values"]["correlation"], again["values"]["correlation"])
    assert first["subset_size"] == 13  # round(0.2 * 64)
    assert max(predict.calls) <= 11
    other = faithfulness_correlation(predict, x, a, targets, seed=1, **options)
    assert not np.allclose(other["values"]["correlation"], first["values"]["correlation"])
    loop = [faithfulness_correlation(predict, x[i:i + 1], a[i:i + 1], targets[i:i + 1],
                                     image_seeds=[i], batch_size=256, **options)
            ["values"]["correlation"][0] for i in range(5)]
    np.testing.assert_allclose(loop, first["values"]["correlation"], rtol=1e-10)


def test_faithfulness_is_nan_for_a_constant_attribution():
    predict, _ = linear(2)
    x = mixed_images(2)
    r = faithfulness_correlation(predict, x, np.zeros((2, 8, 8)), np.array([0, 1]), subsets=10)
    assert np.isnan(r["values"]["correlation"]).all()
    # a model that ignores its input: constant drops
    r = faithfulness_correlation(lambda im: np.zeros((len(im), 2)), x, np.ones((2, 8, 8)) +
                                 np.arange(64).reshape(8, 8), np.array([0, 1]), subsets=10)
    assert np.isnan(r["values"]["correlation"]).all()


# ------------------------------------------------------------------ GridPG
def labelled(n=40, classes=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, 4, 4, 2)).astype("float32")
    labels = np.arange(n) % classes
    return x, labels


def test_make_grids_distinct_labels_layout_and_seed():
    x, labels = labelled()
    grids, cell_labels = make_grids(x, labels, grids=30, seed=3)
    assert grids.shape == (30, 8, 8, 2) and cell_labels.shape == (30, 4)
    assert all(len(set(row)) == 4 for row in cell_labels.tolist())
    quadrants = [(slice(0, 4), slice(0, 4)), (slice(0, 4), slice(4, 8)),
                 (slice(4, 8), slice(0, 4)), (slice(4, 8), slice(4, 8))]
    for g in range(30):
        for cell, (rows, cols) in enumerate(quadrants):
            match = np.flatnonzero((x == grids[g, rows, cols]).all(axis=(1, 2, 3)))
            assert len(match) == 1 and labels[match[0]] == cell_labels[g, cell]
    again = make_grids(x, labels, grids=30, seed=3)
    np.testing.assert_array_equal(again[0], grids)
    np.testing.assert_array_equal(again[1], cell_labels)
    assert not np.array_equal(make_grids(x, labels, grids=30, seed=4)[1], cell_labels)
    # only images marked correct are used
    correct = np.arange(40) < 20
    grids, _ = make_grids(x, labels, grids=20, seed=0, correct=correct)
    cells = np.concatenate([grids[:, :4, :4], grids[:, :4, 4:], grids[:, 4:, :4],
                            grids[:, 4:, 4:]])
    used = {int(np.flatnonzero((x == c).all(axis=(1, 2, 3)))[0]) for c in cells}
    assert used <= set(range(20))


def test_make_grids_needs_four_labels():
    x, labels = labelled(classes=3)
    with pytest.raises(ValueError, match="at least 4 distinct labels.*Received: 3"):
        make_grids(x, labels)
    x, labels = labelled(classes=6)
    with pytest.raises(ValueError, match="where correct is True"):
        make_grids(x, labels, correct=labels < 3)


def cell_finder(grids, cell_labels):
    """(images, targets) -> the cell index of each target in its grid."""
    def find(images, targets):
        out = []
        for image, target in zip(images, targets):
            g = np.flatnonzero((grids == image).all(axis=(1, 2, 3)))[0]
            out.append(cell_labels[g].tolist().index(int(target)))
        return np.array(out)
    return find


def test_gridpg_perfect_uniform_and_signed_maps():
    x, labels = labelled(n=60, classes=8)
    grids, cell_labels = make_grids(x, labels, grids=50, seed=1)
    find = cell_finder(grids, cell_labels)
    sizes = []

    def perfect(images, targets):
        sizes.append(len(images))
        a = np.zeros((len(images), 8, 8, 2))
        for i, cell in enumerate(find(images, targets)):
            r, c = divmod(cell, 2)
            a[i, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = 1.0
        return a

    scores = gridpg(perfect, grids, cell_labels, batch_size=16)["values"]["score"]
    assert scores.shape == (200,) and max(sizes) <= 16
    np.testing.assert_array_equal(scores, 1.0)

    def with_negatives(images, targets):  # negative mass elsewhere is ignored
        return perfect(images, targets)[..., 0] - 5 * (perfect(images, targets)[..., 0] == 0)

    signed = gridpg(with_negatives, grids, cell_labels)["values"]["score"]
    np.testing.assert_array_equal(signed, 1.0)

    rng = np.random.default_rng(0)
    uniform = gridpg(lambda im, t: rng.uniform(0, 1, im.shape), grids, cell_labels)
    assert abs(np.mean(uniform["values"]["score"]) - 0.25) < 0.03

    def channels_cancel(images, targets):
        # in the target cell the channels sum to -1 (clipped to 0 after the sum);
        # clipping each channel first would give that cell 2 / 5 of the mass
        a = np.zeros((len(images), 8, 8, 2))
        a[..., 0] = 1.0
        cell = perfect(images, targets) > 0
        a[cell[..., 0], 0], a[cell[..., 0], 1] = 2.0, -3.0
        return a

    np.testing.assert_array_equal(gridpg(channels_cancel, grids, cell_labels)["values"]["score"],
                                  0.0)


def test_gridpg_cells_order_and_undefined_score():
    x, labels = labelled()
    grids, cell_labels = make_grids(x, labels, grids=5)

    def top_left(images, targets):
        a = np.zeros((len(images), 4, 4))  # any even resolution
        a[:, :2, :2] = 1.0
        return a

    scores = gridpg(top_left, grids, cell_labels, cells=(0, 3), batch_size=3)["values"]["score"]
    np.testing.assert_array_equal(scores, [1.0, 0.0] * 5)
    none = gridpg(lambda im, t: -np.ones(im.shape[:3]), grids, cell_labels)["values"]["score"]
    assert np.isnan(none).all()


def test_resize_for():
    grids = np.random.default_rng(0).uniform(size=(3, 8, 8, 2)).astype("float32")
    small = resize_for((4, 4), grids)
    expected = grids.reshape(3, 4, 2, 4, 2, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(small, expected, rtol=1e-6)
    assert small.shape == (3, 4, 4, 2) and small.dtype == np.float32
    assert resize_for((None, None), grids) is grids and resize_for(None, grids) is grids
    assert resize_for((8, 8), grids) is grids
    with pytest.raises(ValueError, match="integer multiple"):
        resize_for((3, 3), grids)


def gap_model():
    inputs = keras.Input(SHAPE)
    h = layers.Conv2D(5, 3, padding="same", activation="relu", name="conv")(inputs)
    h = layers.BatchNormalization(name="bn")(h)
    h = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv2")(h)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    outputs = layers.Dense(4, name="logits")(h)
    model = keras.Model(inputs, outputs)
    model.get_layer("bn").moving_mean.assign(np.linspace(-0.2, 0.2, 5))
    return model


def test_grid_model_rebuilds_size_agnostic_models_without_touching_them():
    model = gap_model()
    before = [w.copy() for w in model.get_weights()]
    x = mixed_images(3)
    logits = np.asarray(model(x, training=False))
    rebuilt = grid_model(model)
    assert rebuilt is not None and rebuilt is not model
    assert rebuilt.input_shape == (None, None, None, 3)
    np.testing.assert_allclose(np.asarray(rebuilt(x, training=False)), logits, rtol=1e-5, atol=1e-6)
    big = np.asarray(rebuilt(np.tile(x, (1, 2, 2, 1)), training=False))
    assert big.shape == (3, 4)
    assert model.input_shape == (None, 8, 8, 3)
    assert all(a is not b for a, b in zip(model.layers, rebuilt.layers))
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.asarray(model(x, training=False)), logits)
    # a Flatten + Dense head needs its size: None (the caller downscales)
    assert grid_model(small_cnn()) is None
    # already size-agnostic: the model itself
    inputs = keras.Input((None, None, 3))
    free = keras.Model(inputs, layers.Dense(2)(layers.GlobalMaxPooling2D()(inputs)))
    assert grid_model(free) is free


def test_gridpg_end_to_end_with_explain():
    import keras_pathways

    model = gap_model()
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (8,) + SHAPE).astype("float32")
    grids, cell_labels = make_grids(x, np.arange(8) % 4, grids=2)
    rebuilt = grid_model(model)

    def explain_fn(images, targets):
        return keras_pathways.explain(rebuilt, images, targets=targets, method="gradient",
                                      verbose=False, jit_compile=False)

    scores = gridpg(explain_fn, grids, cell_labels)["values"]["score"]
    assert scores.shape == (8,) and np.all((scores >= 0) & (scores <= 1))


# ------------------------------------------------------------------ bad input
def test_clear_errors():
    predict, w = linear(2)
    x = mixed_images(2)
    s = np.ones((2, 8, 8))
    t = np.array([0, 1])
    with pytest.raises(ValueError, match="Expected baseline 'zero', 'mean', 'blur' or a number. "
                                         "Received: 'gaussian'"):
        deletion(predict, x, s, t, baseline="gaussian")
    with pytest.raises(ValueError, match="Expected baseline 'zero', 'mean' or a number"):
        faithfulness_correlation(predict, x, s, t, baseline="blur")
    with pytest.raises(ValueError, match="Expected steps as an integer >= 1. Received: 0"):
        deletion(predict, x, s, t, steps=0)
    with pytest.raises(ValueError, match="Expected a saliency of shape"):
        insertion(predict, x, np.ones((2, 4, 4)), t)
    with pytest.raises(ValueError, match="Expected blur_sigma"):
        insertion(predict, x, s, t, blur_sigma=0)
    with pytest.raises(ValueError, match="Expected images of shape"):
        deletion(predict, x[0], s[0], t)
    with pytest.raises(ValueError, match="Expected integer targets of shape"):
        deletion(predict, x, s, np.array([0]))
    with pytest.raises(ValueError, match=r"Expected targets in \[0, 2\)"):
        deletion(predict, x, s, np.array([0, 2]))
    with pytest.raises(ValueError, match="Expected attributions of shape"):
        faithfulness_correlation(predict, x, np.ones((2, 8, 8, 2)), t)
    for bad in (0, 64, 1.0, -0.1, 1.5, True, "8"):
        with pytest.raises(ValueError, match="Expected subset_size as an int number of pixels"):
            faithfulness_correlation(predict, x, s, t, subset_size=bad)
    with pytest.raises(ValueError, match="Expected subsets as an integer >= 2"):
        faithfulness_correlation(predict, x, s, t, subsets=1)
    with pytest.raises(ValueError, match="Expected image_seeds"):
        faithfulness_correlation(predict, x, s, t, image_seeds=[0])
    grids, cell_labels = make_grids(*labelled(), grids=2)
    with pytest.raises(ValueError, match="Expected cells"):
        gridpg(lambda im, t: np.ones(im.shape), grids, cell_labels, cells=(0, 4))
    with pytest.raises(ValueError, match="Expected explain_fn to return"):
        gridpg(lambda im, t: np.ones((len(im), 8)), grids, cell_labels)
    with pytest.raises(ValueError, match="Expected integer cell_labels of shape"):
        gridpg(lambda im, t: np.ones(im.shape), grids, cell_labels[:, :3])
