"""Faithfulness correlation (Bhatt, Weller & Moura, IJCAI 2020); docs/method.md.

For each image, ``subsets`` random subsets S of ``subset_size`` pixels are
drawn; the pixels of S (all channels) are replaced by a baseline, giving x_S.
With a_i the attribution of pixel i (summed over channels) and y_c the
pre-softmax logit of the target class c, the score of the image is the Pearson
correlation over the subsets of

    sum_{i in S} a_i     and     y_c(x) - y_c(x_S).

1 means that the attribution predicts exactly how much removing any subset
lowers the target logit (exact for a linear model with a = w_c * (x - baseline));
HIGHER is better. The logit, not the probability, is used: the softmax couples
the classes and saturates, so even an exact attribution of the logit would not
correlate perfectly with the probability drop.

Randomness: image i's subsets come from ``np.random.default_rng([seed,
image_seeds[i]])`` alone, so the result of an image never depends on which
other images are in the batch or on ``batch_size``. Pass ``image_seeds`` (e.g.
dataset indices) when the same images are scored in several calls.
"""

import numbers

import numpy as np

from keras_pathways.evaluation import common
from keras_pathways.evaluation.perturbation import _check_int
from keras_pathways.evaluation.perturbation import baseline_images
from keras_pathways.evaluation.perturbation import chunked_rows
from keras_pathways.evaluation.perturbation import target_column

__all__ = ["faithfulness_correlation", "default_subset_size"]

BASELINES = ("zero", "mean")
#: Relative spread below which a vector counts as constant (correlation NaN).
CONSTANT_TOLERANCE = 1e-10


def default_subset_size(pixels):
    """Default |S| for images of ``pixels`` = H * W pixels: ``round(sqrt(H * W))``.

    This is Quantus' default (224 pixels) on 224 x 224 images, about 0.45 % of
    the image, and grows more slowly than the image: 28 pixels (3.6 %) on
    28 x 28 and 32 (3.1 %) on 32 x 32 images. A subset must be large enough
    to move the logit measurably on a small image but small enough to stay in
    the near-linear regime around x where a sum of attributions can be
    expected to predict the change; a fixed fraction (e.g. 10 %) would remove
    ~5,000 pixels of an ImageNet image. Always at least 1 and below H * W.
    """
    return int(min(max(1, round(np.sqrt(pixels))), pixels - 1))


def _subset_size(subset_size, pixels):
    if pixels < 2:
        raise ValueError(f"Expected images with at least 2 pixels. Received: H * W = {pixels}.")
    if subset_size is None:
        return default_subset_size(pixels)
    if isinstance(subset_size, numbers.Integral) and not isinstance(subset_size, bool):
        if 1 <= subset_size < pixels:
            return int(subset_size)
    elif isinstance(subset_size, numbers.Real) and not isinstance(subset_size, bool):
        if 0 < subset_size < 1:
            return int(min(max(1, round(subset_size * pixels)), pixels - 1))
    raise ValueError(
        f"Expected subset_size as an int number of pixels in [1, {pixels}) (H * W = {pixels}), "
        f"a float fraction of the pixels in (0, 1), or None. Received: {subset_size!r}."
    )


def _pixel_attributions(attributions, x):
    a = np.asarray(attributions)
    if a.shape == x.shape:
        a = np.asarray(a, np.float64).sum(axis=-1)
    elif a.shape != x.shape[:3]:
        raise ValueError(
            f"Expected attributions of shape {x.shape} (N, H, W, C) or {x.shape[:3]} (N, H, W) "
            f"for images of shape {x.shape}. Received: shape {a.shape}."
        )
    a = np.asarray(a, np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError("Expected finite attributions. Received: NaN or Inf.")
    return a.reshape(len(x), -1)


def _image_seeds(image_seeds, n):
    if image_seeds is None:
        return np.arange(n, dtype=np.int64)
    seeds = np.asarray(image_seeds)
    if seeds.shape != (n,) or not np.issubdtype(seeds.dtype, np.integer) or np.any(seeds < 0):
        raise ValueError(f"Expected image_seeds as non-negative integers of shape ({n},). "
                         f"Received: dtype {seeds.dtype}, shape {seeds.shape}.")
    return seeds.astype(np.int64)


def subset_masks(seed, image_seed, pixels, subsets, size):
    """bool (subsets, pixels): the random subsets of one image, ``size`` pixels each.

    Each row is a uniformly random subset (the ``size`` smallest of i.i.d.
    uniform keys) from ``np.random.default_rng([seed, image_seed])``.
    """
    keys = np.random.default_rng([int(seed), int(image_seed)]).random((subsets, pixels))
    chosen = np.argpartition(keys, size - 1, axis=1)[:, :size]
    mask = np.zeros((subsets, pixels), bool)
    np.put_along_axis(mask, chosen, True, axis=1)
    return mask


def pearson_rows(a, b):
    """Row-wise Pearson correlation of (N, T) arrays; NaN where a row of either is
    constant (spread <= CONSTANT_TOLERANCE * its largest |value|, or all 0)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)

    def constant(v):
        spread = v.max(axis=1) - v.min(axis=1)
        return spread <= CONSTANT_TOLERANCE * np.abs(v).max(axis=1)

    ac = a - a.mean(axis=1, keepdims=True)
    bc = b - b.mean(axis=1, keepdims=True)
    denominator = np.sqrt(np.sum(ac * ac, axis=1) * np.sum(bc * bc, axis=1))
    undefined = constant(a) | constant(b) | ~(denominator > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.sum(ac * bc, axis=1) / denominator
    return np.where(undefined, np.nan, np.clip(r, -1.0, 1.0))


def faithfulness_correlation(predict, x, attributions, targets, subsets=100, subset_size=None,
                             baseline="zero", seed=0, batch_size=256, image_seeds=None):
    """Per image, the Pearson correlation between the attribution mass of random
    pixel subsets and the drop of the target logit when they are removed.

    HIGHER is better (1: the attribution predicts every drop exactly). Maths:
    module docstring and docs/method.md.

    Args:
        predict: ``predict(images) -> logits``: float images (B, H, W, C) to
            numpy pre-softmax logits (B, classes) (``common.logits_function``);
            called with at most ``batch_size`` rows at a time.
        x: float images (N, H, W, C), scaled as the model takes them.
        attributions: signed attributions (N, H, W, C), summed over channels
            per pixel, or per-pixel (N, H, W) ones. Not |a|: the sign matters.
        targets: int (N,): the class c whose logit y_c is followed.
        subsets: random subsets per image (>= 2; the correlation is over them).
        subset_size: pixels per subset: an int in [1, H * W), a float fraction
            of the pixels in (0, 1) (rounded, at least 1), or None for
            ``default_subset_size`` = round(sqrt(H * W)) (Quantus' 224 on
            224 x 224 images; 28 pixels on 28 x 28).
        baseline: what removed pixels (all channels) become: "zero" (0.0),
            "mean" (the image's per-channel mean) or a number, in the model's
            input units. An exact attribution is relative to this baseline.
        seed: global seed of the subsets.
        batch_size: most perturbed images per ``predict`` call.
        image_seeds: int (N,) >= 0, the per-image seeds (default
            ``arange(N)``); image i uses ``default_rng([seed, image_seeds[i]])``.

    Returns:
        dict with "values": {"correlation": float64 (N,)}, in [-1, 1], NaN for
        an image whose subset attribution sums or logit drops are constant
        (e.g. an all-zero attribution, or a model that ignores the pixels):
        the correlation is undefined there, and ``common.mean_ci`` leaves NaNs
        out (report how many); and "subset_size": the int |S| used.
    """
    x = common.check_images(x)
    n, h, w, c = x.shape
    pixels = h * w
    a = _pixel_attributions(attributions, x)
    targets = common.check_targets(targets, n)
    subsets = _check_int(subsets, "subsets", 2)
    batch_size = _check_int(batch_size, "batch_size", 1)
    _check_int(seed, "seed", 0)
    size = _subset_size(subset_size, pixels)
    seeds = _image_seeds(image_seeds, n)
    base = np.broadcast_to(baseline_images(x, baseline, BASELINES), x.shape)

    sums = np.zeros((n, subsets))
    cache = {}  # the last image's masks: a chunk boundary never draws them twice

    def masks(i):
        if i not in cache:
            cache.clear()
            cache[i] = subset_masks(seed, seeds[i], pixels, subsets, size)
            sums[i] = cache[i] @ a[i]  # sum of the attributions in each subset
        return cache[i]

    def build(lo, hi):
        rows = np.arange(lo, hi)
        image, subset = rows // subsets, rows % subsets
        removed = np.empty((hi - lo, pixels), bool)
        for i in np.unique(image):
            here = image == i
            removed[here] = masks(i)[subset[here]]
        return np.where(removed.reshape(-1, h, w, 1), base[image], x[image])

    original = target_column(chunked_rows(predict, n, lambda lo, hi: x[lo:hi], batch_size),
                             targets, 1)
    perturbed = target_column(chunked_rows(predict, n * subsets, build, batch_size), targets,
                              subsets)
    drops = original - perturbed
    return {"values": {"correlation": pearson_rows(sums, drops)}, "subset_size": size}
