"""ROAD: noisy linear imputation (against analytic cases and a dense solve) and the metric."""

import numpy as np
import pytest

from keras_pathways.evaluation import common
from keras_pathways.evaluation.imputation import neighbour_weights
from keras_pathways.evaluation.imputation import noisy_linear_impute
from keras_pathways.evaluation.road import road

DIRECT, DIAGONAL = 1 / 6, 1 / 12


def dense_reference(image, removed):
    """The imputation equations written out pixel by pixel, solved by least squares."""
    h, w, c = image.shape
    unknowns = [(r, q) for r in range(h) for q in range(w) if removed[r, q]]
    number = {p: i for i, p in enumerate(unknowns)}
    a = np.zeros((len(unknowns), len(unknowns)))
    b = np.zeros((len(unknowns), c))
    for i, (r, q) in enumerate(unknowns):
        neighbours = []
        for dr in (-1, 0, 1):
            for dq in (-1, 0, 1):
                if (dr, dq) != (0, 0) and 0 <= r + dr < h and 0 <= q + dq < w:
                    neighbours.append((r + dr, q + dq, DIAGONAL if dr and dq else DIRECT))
        total = sum(weight for _, _, weight in neighbours)
        a[i, i] = 1.0
        for rr, qq, weight in neighbours:
            if removed[rr, qq]:
                a[i, number[(rr, qq)]] -= weight / total
            else:
                b[i] += weight / total * image[rr, qq]
    solution = np.linalg.lstsq(a, b, rcond=None)[0]
    out = image.copy()
    for i, (r, q) in enumerate(unknowns):
        out[r, q] = solution[i]
    return out


def random_mask(rng, shape, p=0.5):
    return rng.random(shape) < p


# ------------------------------------------------------------- imputation
def test_neighbour_weights_sum_to_one_and_follow_the_stencil():
    index, weight = neighbour_weights(4, 5)
    np.testing.assert_allclose(weight.sum(axis=1), 1.0)
    centre = 1 * 5 + 2  # interior: the plain 1/6, 1/12 stencil
    assert sorted(np.round(weight[centre], 12)) == sorted(np.round([DIRECT] * 4 + [DIAGONAL] * 4, 12))
    corner = weight[0][index[0] >= 0]  # 2 direct + 1 diagonal neighbour, renormalised
    np.testing.assert_allclose(sorted(corner), sorted([0.2, 0.4, 0.4]))
    assert np.all(weight[index < 0] == 0)


def test_constant_image_stays_constant():
    rng = np.random.default_rng(0)
    images = np.empty((6, 9, 7, 2))
    images[..., 0], images[..., 1] = 0.37, -1.5
    removed = random_mask(rng, (6, 9, 7), 0.6)
    assert removed[:, 0].any() and removed[:, :, -1].any()  # border pixels are removed too
    out = noisy_linear_impute(images, removed, noise=0.0)
    np.testing.assert_allclose(out, images, atol=1e-12)


def test_linear_image_is_reproduced_at_interior_pixels():
    rng = np.random.default_rng(1)
    h, w = 12, 13
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    image = np.stack([0.3 + 0.05 * rows - 0.02 * cols, -1.0 - 0.1 * rows + 0.07 * cols], axis=-1)
    removed = np.zeros((3, h, w), bool)
    removed[0, 1:-1, 1:-1] = random_mask(rng, (h - 2, w - 2), 0.5)
    removed[1, 2:9, 3:11] = True  # one large interior block
    removed[2, 1:-1, 1:-1] = True  # everything but the border ring
    images = np.repeat(image[None], 3, axis=0)
    out = noisy_linear_impute(images, removed, noise=0.0, value_range=(-2.0, 2.0))
    np.testing.assert_allclose(out, images, atol=1e-5)
    assert np.abs(out - images).max() < 1e-10


def test_border_renormalisation_is_not_linear_exact():
    # Guards the test above: a removed border pixel does not reproduce a ramp.
    h, w = 6, 6
    rows = np.broadcast_to(np.arange(h)[:, None, None], (h, w, 1)).astype(float)
    removed = np.zeros((1, h, w), bool)
    removed[0, 0, 3] = True
    out = noisy_linear_impute(rows[None], removed, noise=0.0, value_range=(0.0, 5.0))
    assert abs(out[0, 0, 3, 0] - 0.0) > 0.1  # the mean of its neighbours' rows, not row 0


def test_matches_dense_least_squares():
    rng = np.random.default_rng(2)
    for trial in range(3):
        image = rng.random((6, 7, 2))
        removed = random_mask(rng, (6, 7), 0.3 + 0.2 * trial)
        out = noisy_linear_impute(image[None], removed[None], noise=0.0)[0]
        np.testing.assert_allclose(out, dense_reference(image, removed), atol=1e-10)
        assert not np.allclose(out[removed], image[removed])  # something was imputed


def test_float32_in_float32_out_and_kept_pixels_bit_identical():
    rng = np.random.default_rng(3)
    images = rng.random((4, 10, 11, 3)).astype(np.float32)
    removed = random_mask(rng, (4, 10, 11))
    out = noisy_linear_impute(images, removed, noise=0.05)
    assert out.dtype == np.float32 and out.shape == images.shape
    np.testing.assert_array_equal(out[~removed], images[~removed])
    assert np.all(out[removed] != images[removed])
    assert images is not out


def test_noise_has_the_requested_std_and_is_seeded():
    rng = np.random.default_rng(4)
    images = rng.random((20, 16, 16, 3)) * 2.0
    removed = random_mask(rng, (20, 16, 16))
    clean = noisy_linear_impute(images, removed, noise=0.0, value_range=(0.0, 2.0))
    noisy = noisy_linear_impute(images, removed, noise=0.05, value_range=(0.0, 2.0), seed=7)
    delta = (noisy - clean)[removed]
    assert delta.size > 7000
    assert abs(delta.std() - 0.05 * 2.0) < 0.005  # ~0.8 % sampling error expected
    assert abs(delta.mean()) < 0.005
    np.testing.assert_array_equal(noisy[~removed], images[~removed])
    again = noisy_linear_impute(images, removed, noise=0.05, value_range=(0.0, 2.0), seed=7)
    np.testing.assert_array_equal(noisy, again)
    other = noisy_linear_impute(images, removed, noise=0.05, value_range=(0.0, 2.0), seed=8)
    assert not np.array_equal(noisy[removed], other[removed])


def test_results_do_not_depend_on_batch_composition():
    rng = np.random.default_rng(5)
    images = rng.random((5, 8, 9, 2))
    removed = random_mask(rng, (5, 8, 9))
    batch = noisy_linear_impute(images, removed, noise=0.02, seed=3)
    for i in range(5):
        alone = noisy_linear_impute(images[i : i + 1], removed[i : i + 1], noise=0.02, seed=3,
                                    image_seeds=[i])
        np.testing.assert_array_equal(alone[0], batch[i])
    reversed_ = noisy_linear_impute(images[::-1], removed[::-1], noise=0.02, seed=3,
                                    image_seeds=np.arange(5)[::-1])
    np.testing.assert_array_equal(reversed_[::-1], batch)


def test_everything_removed_is_finite():
    rng = np.random.default_rng(6)
    images = rng.random((3, 5, 4, 2))
    removed = np.ones((3, 5, 4), bool)
    removed[2] = False  # a batch mixing full removal with none
    out = noisy_linear_impute(images, removed, noise=0.0, value_range=(0.0, 1.0))
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[:2], 0.5)  # the middle of the value range
    np.testing.assert_array_equal(out[2], images[2])
    tiny = noisy_linear_impute(np.zeros((2, 1, 1, 1)), np.ones((2, 1, 1), bool), noise=0.01)
    assert np.all(np.isfinite(tiny))


def test_banded_solve_matches_dense_on_every_shape_and_batch_grouping(monkeypatch):
    """Tall, wide, one-row, one-column images, many images per band and one per
    band: the banded Cholesky solve agrees with the pixel-by-pixel equations."""
    from keras_pathways.evaluation import imputation

    rng = np.random.default_rng(5)
    for shape in [(9, 4), (4, 9), (1, 8), (8, 1), (5, 5)]:
        images = rng.random((6,) + shape + (2,))
        removed = random_mask(rng, (6,) + shape, 0.6)
        removed[0] = False  # nothing removed
        removed[1, 0, 0] = not removed[1].all() or removed[1, 0, 0]
        expected = np.stack([dense_reference(im, rm) if rm.any() and not rm.all() else im
                             for im, rm in zip(images, removed)])
        together = noisy_linear_impute(images, removed, noise=0.0)
        monkeypatch.setattr(imputation, "_GROUP_BAND_BYTES", 1)  # one image per band
        apart = noisy_linear_impute(images, removed, noise=0.0)
        monkeypatch.undo()
        solvable = removed.any(axis=(1, 2)) & ~removed.all(axis=(1, 2))
        np.testing.assert_allclose(together[solvable], expected[solvable], atol=1e-10)
        np.testing.assert_allclose(apart, together, atol=1e-12)


def test_imputation_refuses_images_whose_band_is_too_large():
    images = np.zeros((1, 700, 700, 1), np.float32)
    removed = np.zeros((1, 700, 700), bool)
    with pytest.raises(ValueError, match=r"700 x 700 image needs a banded system .* Resize the images"):
        noisy_linear_impute(images, removed)


def test_imputation_rejects_bad_input():
    images = np.zeros((2, 4, 4, 1))
    removed = np.zeros((2, 4, 4), bool)
    with pytest.raises(ValueError, match=r"Expected a bool mask .* Received: dtype int64"):
        noisy_linear_impute(images, removed.astype(np.int64))
    with pytest.raises(ValueError, match=r"Expected a bool mask .* Received: .*shape \(2, 4\)"):
        noisy_linear_impute(images, removed[:, 0])
    with pytest.raises(ValueError, match="Expected finite values"):
        noisy_linear_impute(np.full((2, 4, 4, 1), np.nan), removed)
    with pytest.raises(ValueError, match="Expected float images"):
        noisy_linear_impute(images.astype(np.uint8), removed)
    with pytest.raises(ValueError, match="noise"):
        noisy_linear_impute(images, removed, noise=-0.1)
    with pytest.raises(ValueError, match="value_range"):
        noisy_linear_impute(images, removed, value_range=(1.0, 0.0))
    with pytest.raises(ValueError, match="image_seeds"):
        noisy_linear_impute(images, removed, image_seeds=[0])


# -------------------------------------------------------------------- ROAD
def linear_model(h=8, w=8, c=1, seed=0):
    """logits = [sum_j v_j x_j - bias, 0]: class 0's evidence is v * x per pixel."""
    rng = np.random.default_rng(seed)
    v = rng.uniform(0.0, 1.0, h * w * c) * 8.0 / (h * w * c)
    weights = np.stack([v, np.zeros_like(v)], axis=1)
    bias = np.array([-2.0, 0.0])  # mean logit 0 for U(0, 1) images: p not saturated

    def predict(images):
        return np.asarray(images, np.float64).reshape(len(images), -1) @ weights + bias

    return predict, v.reshape(h, w, c)


def test_road_shapes_column_zero_and_auc():
    rng = np.random.default_rng(7)
    predict, v = linear_model()
    x = rng.random((10, 8, 8, 1)).astype(np.float32)
    saliency = (x * v)[..., 0]
    targets = np.zeros(10, int)
    labels = rng.integers(0, 2, 10)
    calls = []
    result = road(predict, x, saliency, targets, labels=labels, fractions=(0.5, 0.25, 0.75),
                  batch_size=4, progress=calls.append)
    assert result["x"] == [0.0, 0.25, 0.5, 0.75]
    assert set(result["curves"]) == {"morf_probability", "morf_accuracy", "lerf_probability",
                                     "lerf_accuracy"}
    assert set(result["values"]) == {"morf_auc", "lerf_auc", "gap", "morf_accuracy_auc",
                                     "lerf_accuracy_auc"}
    for curve in result["curves"].values():
        assert curve.shape == (10, 4)
    logits = predict(x)
    p0 = common.softmax(logits)[:, 0]
    for o in ("morf", "lerf"):
        np.testing.assert_allclose(result["curves"][f"{o}_probability"][:, 0], p0)
        np.testing.assert_array_equal(result["curves"][f"{o}_accuracy"][:, 0], logits.argmax(1) == labels)
        assert set(np.unique(result["curves"][f"{o}_accuracy"])) <= {0.0, 1.0}
        for name, key in ((f"{o}_auc", f"{o}_probability"), (f"{o}_accuracy_auc", f"{o}_accuracy")):
            curve = result["curves"][key]
            trapezoid = sum((result["x"][k + 1] - result["x"][k]) * (curve[:, k] + curve[:, k + 1]) / 2
                            for k in range(3))
            np.testing.assert_allclose(result["values"][name], trapezoid)
    np.testing.assert_allclose(result["values"]["gap"],
                               result["values"]["lerf_auc"] - result["values"]["morf_auc"])
    assert calls[-1] == 10 * 2 * 3 and calls == sorted(calls)


def test_road_manual_step_matches_imputation():
    # One cell recomputed by hand: MoRF at t = 0.25 with the same ranking and noise.
    rng = np.random.default_rng(8)
    predict, v = linear_model()
    x = rng.random((3, 8, 8, 1))
    saliency = rng.standard_normal((3, 8, 8))
    labels = np.array([0, 1, 1])
    result = road(predict, x, saliency, np.zeros(3, int), labels=labels, fractions=(0.25,),
                  orders="morf", noise=0.01, seed=2)
    order = common.ranking(saliency, 2)
    removed = np.zeros((3, 64), bool)
    np.put_along_axis(removed, order[:, :16].astype(np.int64), True, axis=1)
    imputed = noisy_linear_impute(x, removed.reshape(3, 8, 8), noise=0.01,
                                  value_range=(x.min(), x.max()), seed=2)
    np.testing.assert_allclose(result["curves"]["morf_probability"][:, 1],
                               common.softmax(predict(imputed))[:, 0])
    np.testing.assert_array_equal(result["curves"]["morf_accuracy"][:, 1],
                                  predict(imputed).argmax(axis=1) == labels)
    assert set(result["curves"]) == {"morf_probability", "morf_accuracy"}
    assert set(result["values"]) == {"morf_auc", "morf_accuracy_auc"}


def test_true_contribution_gives_a_positive_gap():
    rng = np.random.default_rng(9)
    predict, v = linear_model()
    x = rng.random((12, 8, 8, 1))
    contribution = (x * v)[..., 0]
    targets = np.zeros(12, int)
    good = road(predict, x, contribution, targets)
    morf, lerf = good["curves"]["morf_probability"], good["curves"]["lerf_probability"]
    assert np.all(morf[:, -1] < morf[:, 0]) and np.all(lerf[:, -1] > lerf[:, 0])
    assert np.all(good["values"]["gap"] > 0)
    # The reversed ranking (least relevant first) swaps the roles: negative gap.
    bad = road(predict, x, contribution.max() - contribution, targets)
    assert np.all(bad["values"]["gap"] < 0)
    noisy = road(predict, x, rng.random((12, 8, 8)), targets)  # a random ranking in between
    assert good["values"]["gap"].mean() > noisy["values"]["gap"].mean() > bad["values"]["gap"].mean()


def test_road_does_not_depend_on_batch_size():
    rng = np.random.default_rng(10)
    predict, v = linear_model()
    x = rng.random((7, 8, 8, 1))
    saliency = rng.standard_normal((7, 8, 8))
    a = road(predict, x, saliency, np.zeros(7, int), fractions=(0.3, 0.6), batch_size=7)
    b = road(predict, x, saliency, np.zeros(7, int), fractions=(0.3, 0.6), batch_size=3)
    for key in a["curves"]:
        np.testing.assert_allclose(a["curves"][key], b["curves"][key], rtol=1e-12)


def test_road_rejects_bad_input():
    predict, _ = linear_model()
    x = np.random.default_rng(11).random((2, 8, 8, 1))
    s = np.ones((2, 8, 8))
    t = np.zeros(2, int)
    with pytest.raises(ValueError, match=r"Expected a saliency of shape \(2, 8, 8\)"):
        road(predict, x, np.ones((2, 8, 7)), t)
    with pytest.raises(ValueError, match=r"Expected fractions in \(0, 1\)"):
        road(predict, x, s, t, fractions=(0.5, 1.0))
    with pytest.raises(ValueError, match=r"Expected fractions in \(0, 1\)"):
        road(predict, x, s, t, fractions=(0.0,))
    with pytest.raises(ValueError, match="Expected orders from"):
        road(predict, x, s, t, orders=("morf", "random"))
    with pytest.raises(ValueError, match="Expected finite values in x"):
        road(predict, np.where(x > 0.5, np.nan, x), s, t)
    with pytest.raises(ValueError, match="Expected finite values in saliency"):
        road(predict, x, np.full((2, 8, 8), np.inf), t)
    with pytest.raises(ValueError, match=r"Expected integer targets of shape \(2,\)"):
        road(predict, x, s, np.zeros(3, int))
    with pytest.raises(ValueError, match=r"Expected targets in \[0, 2\)"):
        road(predict, x, s, np.array([0, 5]))
    with pytest.raises(ValueError, match=r"Expected predict\(images\) to return logits"):
        road(lambda images: np.zeros(len(images)), x, s, t)
