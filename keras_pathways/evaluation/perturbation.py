"""Deletion and insertion (Petsiuk, Das & Saenko, BMVC 2018, "RISE"); docs/method.md.

Both metrics walk through the pixels of each image in the order of its
saliency map, most relevant first (``common.ranking``: largest |s| first, ties
broken by a random order seeded with ``seed``, the order ROAR uses), in
``steps`` equal chunks. After step k (k = 0 ... steps) the first

    n_k = round(k / steps * H * W)

ranked pixels (all channels) are changed, and the probability of the target
class, p_k = softmax(logits)[target], is recorded:

- deletion: the pixels are replaced by a baseline image (zeros, the image's
  per-channel mean, a blurred copy, or a constant). A faithful map removes the
  evidence first, so p falls fast: LOWER deletion AUC is better.
- insertion: the start is a blurred copy of the image ("canvas") and the
  pixels are set back to their original values. A faithful map restores the
  evidence first, so p rises fast: HIGHER insertion AUC is better.

The score is the trapezoid area under p_k over the fraction of pixels changed,
x_k = n_k / (H * W), which runs from 0 to 1 (``common.auc``).

Note that the ranking is by |s|: pixels with large negative relevance (evidence
against the target) are also changed early. Pass the positive part of a signed
map (``np.maximum(s, 0)``) to rank positive evidence first.

Everything is batched: the (image, step) rows are built chunk by chunk and
``predict`` sees at most ``batch_size`` rows per call; no (N, steps + 1, H, W,
C) array is ever held in memory.
"""

import numbers

import numpy as np

from keras_pathways.evaluation import common

__all__ = ["deletion", "insertion", "default_blur_sigma"]

DELETION_BASELINES = ("zero", "mean", "blur")


# ------------------------------------------------------------------ helpers
def default_blur_sigma(height, width=None):
    """Default Gaussian blur sigma in pixels, per spatial axis.

    Petsiuk et al. blur 224 x 224 images with sigma 5, so the default scales
    that to the image size, ``5 * H / 224`` (and ``5 * W / 224``), but never
    below 1.0 pixel (on 28 x 28 images 5 * 28 / 224 = 0.625 would barely blur).

    Returns:
        (sigma_h, sigma_w) floats.
    """
    width = height if width is None else width
    return (max(1.0, 5.0 * height / 224.0), max(1.0, 5.0 * width / 224.0))


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"Expected {name} as an integer >= {minimum}. Received: {value!r}.")
    return int(value)


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _blurred(x, blur_sigma):
    """Gaussian blur over (H, W) of every image and channel; float64 (N, H, W, C).

    ``scipy.ndimage.gaussian_filter`` with sigma 0 on the batch and channel
    axes, "reflect" borders and the default truncation at 4 sigma.
    """
    from scipy.ndimage import gaussian_filter

    if blur_sigma is None:
        sigma_h, sigma_w = default_blur_sigma(x.shape[1], x.shape[2])
    else:
        if not _is_number(blur_sigma) or not np.isfinite(blur_sigma) or blur_sigma <= 0:
            raise ValueError(f"Expected blur_sigma as a number > 0 (pixels) or None. "
                             f"Received: {blur_sigma!r}.")
        sigma_h = sigma_w = float(blur_sigma)
    return gaussian_filter(np.asarray(x, np.float64), sigma=(0, sigma_h, sigma_w, 0))


def baseline_images(x, baseline, allowed=DELETION_BASELINES, blur_sigma=None):
    """The replacement values for every pixel of ``x`` (N, H, W, C).

    Args:
        x: float images (N, H, W, C).
        baseline: "zero" (0.0), "mean" (each image's per-channel mean), "blur"
            (Gaussian blur of the image, see ``default_blur_sigma``) or a
            number (a constant), as far as listed in ``allowed``.
        blur_sigma: the blur's sigma in pixels (None: the default).

    Returns:
        an array broadcastable to ``x`` ((N, H, W, C), (N, 1, 1, C) or ()), in
        ``x``'s dtype.
    """
    if _is_number(baseline):
        if not np.isfinite(baseline):
            raise ValueError(f"Expected a finite baseline value. Received: {baseline!r}.")
        return np.asarray(baseline, dtype=x.dtype)
    if isinstance(baseline, str) and baseline in allowed:
        if baseline == "zero":
            return np.zeros((), dtype=x.dtype)
        if baseline == "mean":
            return np.asarray(x, np.float64).mean(axis=(1, 2), keepdims=True).astype(x.dtype)
        return _blurred(x, blur_sigma).astype(x.dtype)
    shown = ", ".join(repr(b) for b in allowed)
    raise ValueError(f"Expected baseline {shown} or a number. Received: {baseline!r}.")


def chunked_rows(predict, rows, build, batch_size):
    """Calls ``predict`` on rows built ``batch_size`` at a time.

    Args:
        predict: ``predict(images) -> logits`` (numpy (B, classes)).
        rows: total number of rows.
        build: ``build(start, stop) -> images`` for rows [start, stop).
        batch_size: most rows per ``predict`` call.

    Returns:
        float64 logits (rows, classes).
    """
    out = []
    for start in range(0, rows, batch_size):
        stop = min(rows, start + batch_size)
        logits = np.asarray(predict(build(start, stop)), dtype=np.float64)
        if logits.ndim != 2 or logits.shape[0] != stop - start:
            raise ValueError(
                f"Expected predict to return logits of shape ({stop - start}, classes). "
                f"Received: shape {logits.shape}."
            )
        out.append(logits)
    return np.concatenate(out)


def target_column(values, targets, rows_per_image):
    """Each row's target-class entry of ``values`` (N * rows_per_image, classes)
    (rows image-major), as (N, rows_per_image); a clear error for an unknown class."""
    classes = values.shape[1]
    if targets.min() < 0 or targets.max() >= classes:
        raise ValueError(f"Expected targets in [0, {classes}) for a model with {classes} "
                         f"classes. Received: targets in [{targets.min()}, {targets.max()}].")
    index = np.repeat(targets, rows_per_image)
    return values[np.arange(len(values)), index].reshape(len(targets), rows_per_image)


def _check_inputs(x, saliency, targets, steps, seed, batch_size):
    x = common.check_images(x, saliency)
    saliency = np.asarray(saliency)
    if not np.issubdtype(saliency.dtype, np.number):
        raise ValueError(f"Expected a numeric saliency (N, H, W). Received: dtype {saliency.dtype}.")
    if not np.all(np.isfinite(saliency)):
        raise ValueError("Expected a finite saliency (N, H, W). Received: NaN or Inf.")
    targets = common.check_targets(targets, len(x))
    steps = _check_int(steps, "steps", 1)
    batch_size = _check_int(batch_size, "batch_size", 1)
    _check_int(seed, "seed", 0)
    return x, saliency, targets, steps, batch_size


def _curves(predict, x, saliency, targets, steps, seed, batch_size, start, end):
    """p_target after each step of changing ranked pixels from ``start`` to ``end``.

    ``start`` and ``end`` broadcast to ``x``; after step k the first n_k ranked
    pixels show ``end``, the others ``start``.
    """
    n, h, w, c = x.shape
    pixels = h * w
    order = common.ranking(saliency, seed)  # uint16/uint32 (N, H * W)
    counts = np.rint(np.arange(steps + 1) * pixels / steps).astype(np.int64)
    start = np.broadcast_to(start, x.shape)
    end = np.broadcast_to(end, x.shape)
    per_image = steps + 1
    positions = np.arange(pixels, dtype=np.int32)[None, :]

    def build(lo, hi):
        rows = np.arange(lo, hi)
        image, step = rows // per_image, rows % per_image
        rank = np.empty((hi - lo, pixels), np.int32)  # rank[r, pixel] = position in order
        np.put_along_axis(rank, order[image].astype(np.int64), positions, axis=1)
        changed = (rank < counts[step][:, None]).reshape(-1, h, w, 1)
        return np.where(changed, end[image], start[image])

    logits = chunked_rows(predict, n * per_image, build, batch_size)
    curves = target_column(common.softmax(logits), targets, per_image)
    fractions = counts / pixels
    return {"x": fractions, "curves": {"probability": curves},
            "values": {"auc": common.auc(fractions, curves)}}


# ------------------------------------------------------------------ metrics
def deletion(predict, x, saliency, targets, steps=20, baseline="zero", seed=0, batch_size=256,
             blur_sigma=None):
    """Deletion: the target probability as the most relevant pixels are removed.

    LOWER AUC is better (the evidence is removed first, so p falls fast).
    Maths: module docstring and docs/method.md.

    Args:
        predict: ``predict(images) -> logits``: float images (B, H, W, C) to
            numpy pre-softmax logits (B, classes); ``common.logits_function``
            makes one from a Keras model. Called with at most ``batch_size``
            rows at a time.
        x: float images (N, H, W, C), scaled as the model takes them.
        saliency: (N, H, W) maps; pixels are ranked by |s| (``common.ranking``).
        targets: int (N,): the class whose probability is followed.
        steps: number of equal chunks of pixels (>= 1); the curve has
            ``steps + 1`` points.
        baseline: what removed pixels become: "zero" (0.0), "mean" (the
            image's per-channel mean), "blur" (a Gaussian blur of the image,
            per channel over H and W) or a number (a constant), in the model's
            input units.
        seed: seed of the random order that breaks ties in the ranking.
        batch_size: most images per ``predict`` call.
        blur_sigma: sigma (pixels) of the "blur" baseline; None means
            ``max(1, 5 * H / 224)`` per axis (Petsiuk et al. used sigma 5 on
            224-pixel images). Ignored for other baselines.

    Returns:
        dict with
        "x": float64 (steps + 1,), the fraction of pixels removed, 0 to 1
        (``round(k / steps * H * W) / (H * W)``);
        "curves": {"probability": float64 (N, steps + 1)}: p_target, column 0
        the unmodified image, the last column the all-baseline image;
        "values": {"auc": float64 (N,)}: trapezoid area under each curve over
        "x" (in [0, 1]).
    """
    x, saliency, targets, steps, batch_size = _check_inputs(x, saliency, targets, steps, seed,
                                                            batch_size)
    base = baseline_images(x, baseline, DELETION_BASELINES, blur_sigma)
    return _curves(predict, x, saliency, targets, steps, seed, batch_size, start=x, end=base)


def insertion(predict, x, saliency, targets, steps=20, seed=0, batch_size=256, blur_sigma=None):
    """Insertion: the target probability as the most relevant pixels are put
    back into a blurred copy of the image.

    HIGHER AUC is better (the evidence is restored first, so p rises fast).
    Maths: module docstring and docs/method.md.

    Args:
        predict: as ``deletion``.
        x: as ``deletion``.
        saliency: as ``deletion``.
        targets: as ``deletion``.
        steps: as ``deletion``.
        seed: as ``deletion``.
        batch_size: as ``deletion``.
        blur_sigma: sigma (pixels) of the blurred canvas; None means
            ``max(1, 5 * H / 224)`` per axis (see ``default_blur_sigma``).

    Returns:
        dict as ``deletion``: "x" the fraction of pixels restored (0 to 1);
        "curves": {"probability": (N, steps + 1)} with column 0 the fully
        blurred image and the last column the original image; "values":
        {"auc": (N,)}.
    """
    x, saliency, targets, steps, batch_size = _check_inputs(x, saliency, targets, steps, seed,
                                                            batch_size)
    canvas = _blurred(x, blur_sigma).astype(x.dtype)
    return _curves(predict, x, saliency, targets, steps, seed, batch_size, start=canvas, end=x)
