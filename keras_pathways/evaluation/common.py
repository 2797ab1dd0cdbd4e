"""Pieces every evaluation shares: a compiled logits function per model,
pixel rankings, areas under curves and confidence intervals.

The evaluations without retraining (``road``, ``deletion``/``insertion``,
``faithfulness_correlation``, ``gridpg``) all take a ``predict`` callable,
``predict(images) -> logits`` (numpy in, numpy (N, classes) pre-softmax logits
out), so they can be tested on analytic models without Keras; ``logits_function``
makes one from a Keras model.
"""

import numpy as np

from keras_pathways.evaluation.retraining import removal_order

#: z of the two-sided 95 % normal interval.
Z95 = 1.959963984540054


def logits_function(model, batch_size=256):
    """``predict(images) -> logits`` for a Keras model, compiled once per model.

    The logits are pre-softmax (a final softmax is skipped, as in ``explain``).
    Images go through in batches of ``batch_size``; every batch is padded to
    ``batch_size`` so one traced function serves every call.

    Returns:
        a callable taking float images (N, *input_shape) and returning float32
        (N, classes) numpy logits.
    """
    import tensorflow as tf

    from keras_pathways.graph import rewrite

    rewrite.require_one_input(model, "The evaluation metrics (logits_function)")
    cache = rewrite.model_cache(model)
    if "evaluation_logits" not in cache:
        graph = rewrite.pathway_graph(model, require_sites=False)
        cache["evaluation_logits"] = tf.function(graph, reduce_retracing=True)
    compiled = cache["evaluation_logits"]
    dtype = model.inputs[0].dtype if getattr(model, "inputs", None) else "float32"

    def predict(images):
        images = np.asarray(images)
        out = []
        for start in range(0, len(images), batch_size):
            part = images[start : start + batch_size]
            n = len(part)
            if n < batch_size:  # pad: one input signature, no retracing
                pad = np.repeat(part[-1:], batch_size - n, axis=0)
                part = np.concatenate([part, pad])
            out.append(np.asarray(compiled(tf.constant(part, dtype=dtype)))[:n])
        if not out:
            raise ValueError("Expected at least one image. Received: an empty batch.")
        return np.concatenate(out).astype(np.float32)

    return predict


def softmax(logits):
    """Row-wise softmax of (N, classes) logits, in float64 for stability."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def ranking(saliency, seed=0):
    """Pixel indices (N, H * W), most relevant (largest |s|) first; ties broken
    by a random order seeded with ``seed``. The same ranking ROAR uses."""
    return removal_order(saliency, seed=seed)


def auc(x, curves):
    """Trapezoid area under ``curves`` (..., T) over the abscissae ``x`` (T,)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(curves, dtype=np.float64)
    return np.sum((x[1:] - x[:-1]) * (y[..., 1:] + y[..., :-1]) / 2, axis=-1)


def mean_ci(values):
    """Mean and the half-width of its 95 % confidence interval.

    Normal approximation over the values: ``1.96 * std(ddof=1) / sqrt(n)``
    (0 for a single value). NaNs (e.g. an undefined correlation) are left out.

    Returns:
        (mean, half_width, n) as floats and an int.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    if len(v) == 1:
        return float(v[0]), 0.0, 1
    return float(v.mean()), float(Z95 * v.std(ddof=1) / np.sqrt(len(v))), int(len(v))


def check_images(x, saliency=None, where="x"):
    """Validates a float image batch (N, H, W, C) and an optional saliency (N, H, W)."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(
            f"Expected images of shape (N, H, W, C) for {where}. Received: shape {x.shape}."
        )
    if len(x) == 0:
        raise ValueError(f"Expected at least one image in {where}. Received: an empty batch.")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"Expected float images for {where} (scaled as the model takes them). "
            f"Received: dtype {x.dtype}."
        )
    if not np.all(np.isfinite(x)):
        raise ValueError(f"Expected finite values in {where}. Received: NaN or Inf.")
    if saliency is not None:
        saliency = np.asarray(saliency)
        if saliency.shape != x.shape[:3]:
            raise ValueError(
                f"Expected a saliency of shape {x.shape[:3]} (N, H, W) for images of shape "
                f"{x.shape}. Received: shape {saliency.shape}."
            )
    return x


def check_fractions(fractions, name="fractions"):
    """Sorted floats strictly inside (0, 1), or a clear ValueError."""
    try:
        values = sorted(float(f) for f in fractions)
    except (TypeError, ValueError):
        raise ValueError(f"Expected {name} as a list of numbers in (0, 1). Received: {fractions!r}.") from None
    if not values or any(not 0 < f < 1 for f in values):
        raise ValueError(f"Expected {name} in (0, 1) (exclusive). Received: {list(fractions)!r}.")
    return values


def check_targets(targets, n):
    """int64 (N,) targets, or a clear ValueError."""
    targets = np.asarray(targets)
    if targets.shape != (n,) or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(
            f"Expected integer targets of shape ({n},). Received: dtype {targets.dtype}, "
            f"shape {targets.shape}."
        )
    return targets.astype(np.int64)
