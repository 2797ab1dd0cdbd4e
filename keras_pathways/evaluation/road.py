"""ROAD: remove and debias, no retraining (Rong et al., ICML 2022; docs/method.md).

Per image, the pixels are ranked by |saliency| (ties broken by a random order
seeded with ``seed``; ``common.ranking``). For each fraction t, MoRF (most
relevant first) removes the top round(t * H * W) pixels and LeRF (least
relevant first) the bottom ones; the removed pixels are filled by noisy linear
imputation (``imputation.noisy_linear_impute``), which leaks far less of the
mask's shape than a constant fill. The model then predicts on the imputed
image and we record p = softmax(logits)[target] and whether argmax(logits)
equals the label. t = 0 is the unmodified image.

Summary per image: the trapezoid area under each curve over t = 0 ... max t;
the gap LeRF AUC - MoRF AUC is larger for a better attribution (removing the
most relevant pixels should hurt much more than removing the least relevant).
"""

import numpy as np

from keras_pathways.evaluation.common import auc
from keras_pathways.evaluation.common import check_fractions
from keras_pathways.evaluation.common import check_images
from keras_pathways.evaluation.common import check_targets
from keras_pathways.evaluation.common import ranking
from keras_pathways.evaluation.common import softmax
from keras_pathways.evaluation.imputation import noisy_linear_impute

__all__ = ["DEFAULT_FRACTIONS", "ORDERS", "road"]

DEFAULT_FRACTIONS = tuple(round(0.1 * k, 1) for k in range(1, 10))
ORDERS = ("morf", "lerf")


def _check_orders(orders):
    if isinstance(orders, str):
        orders = (orders,)
    try:
        orders = list(dict.fromkeys(str(o).lower() for o in orders))
    except TypeError:
        raise ValueError(f"Expected orders from {ORDERS}. Received: {orders!r}.") from None
    if not orders or any(o not in ORDERS for o in orders):
        raise ValueError(f"Expected orders from {ORDERS} (at least one). Received: {orders!r}.")
    return [o for o in ORDERS if o in orders]


def _predict(predict, images, n, where):
    logits = np.asarray(predict(images))
    if logits.ndim != 2 or len(logits) != n:
        raise ValueError(
            f"Expected predict(images) to return logits of shape ({n}, classes) for {where}. "
            f"Received: shape {logits.shape}."
        )
    return logits


def road(predict, x, saliency, targets, labels=None, fractions=DEFAULT_FRACTIONS, orders=ORDERS,
         noise=0.01, value_range=None, seed=0, batch_size=256, progress=None):
    """ROAD curves and areas per image (docs/method.md).

    Args:
        predict: ``predict(images) -> logits``: float (n, H, W, C) numpy in,
            (n, classes) pre-softmax logits out (``common.logits_function``).
        x: float images (N, H, W, C) as the model takes them.
        saliency: (N, H, W) saliency maps, ranked by |s|.
        targets: int (N,) class whose probability is tracked.
        labels: int (N,) true labels for the accuracy curves (default: targets).
        fractions: fractions t of pixels removed, in (0, 1) (sorted here).
        orders: any of "morf" (most relevant first) and "lerf" (least
            relevant first).
        noise: imputation noise std as a fraction of the value range
            (0.01 in the paper; 0 = off).
        value_range: (lo, hi) of the images' values, in x's units; default
            (x.min(), x.max()) over the batch.
        seed: seeds the ranking's tie breaks and the imputation noise (image
            i's noise comes from ``default_rng([seed, i])``, i its index in x,
            the same stream for every order and fraction, so the results do
            not depend on ``batch_size``).
        batch_size: images imputed and predicted at a time.
        progress: optional callable(n_done), called after every batch with
            the number of modified images evaluated so far (of
            N * len(orders) * len(fractions)).

    Returns:
        dict with
        - "x": [0.0] + fractions, the abscissae (T + 1,);
        - "curves": float64 (N, T + 1) per requested order,
          "<order>_probability" (softmax probability of the target) and
          "<order>_accuracy" (1.0 where argmax == label); column 0 is the
          unmodified image;
        - "values": float64 (N,) "<order>_auc" (area under the probability
          curve over t = 0 ... max t), "<order>_accuracy_auc", and "gap" =
          lerf_auc - morf_auc when both orders are requested.
    """
    x = check_images(x, saliency, where="x")
    if not np.all(np.isfinite(np.asarray(saliency, dtype=np.float64))):
        raise ValueError("Expected finite values in saliency. Received: NaN or Inf.")
    n, height, width, _ = x.shape
    pixels = height * width
    targets = check_targets(targets, n)
    labels = targets if labels is None else check_targets(labels, n)
    fractions = check_fractions(fractions)
    orders = _check_orders(orders)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"Expected `batch_size` as an int >= 1. Received: {batch_size!r}.")
    if value_range is None:
        value_range = (float(x.min()), float(x.max()))
    if progress is not None and not callable(progress):
        raise ValueError(f"Expected `progress` as a callable or None. Received: {progress!r}.")

    order = ranking(saliency, seed).astype(np.int64)  # (N, P), most relevant first
    counts = [int(round(t * pixels)) for t in fractions]
    steps = len(fractions) + 1
    probability = {o: np.empty((n, steps)) for o in orders}
    correct = {o: np.empty((n, steps)) for o in orders}
    done = 0
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        rows = np.arange(stop - start)
        part, tgt, lbl = x[start:stop], targets[start:stop], labels[start:stop]
        logits = _predict(predict, part, stop - start, "the unmodified images")
        if np.any(tgt >= logits.shape[1]) or np.any(tgt < 0):
            raise ValueError(
                f"Expected targets in [0, {logits.shape[1]}) for {logits.shape[1]} classes. "
                f"Received: min {tgt.min()}, max {tgt.max()}."
            )
        p0 = softmax(logits)[rows, tgt]
        c0 = (logits.argmax(axis=1) == lbl).astype(np.float64)
        for o in orders:
            probability[o][start:stop, 0] = p0
            correct[o][start:stop, 0] = c0
            for j, k in enumerate(counts, start=1):
                chosen = order[start:stop, :k] if o == "morf" else order[start:stop, pixels - k:]
                removed = np.zeros((stop - start, pixels), bool)
                np.put_along_axis(removed, chosen, True, axis=1)
                imputed = noisy_linear_impute(
                    part, removed.reshape(-1, height, width), noise=noise, value_range=value_range,
                    seed=seed, image_seeds=np.arange(start, stop),
                )
                logits = _predict(predict, imputed, stop - start, f"{o} at t = {fractions[j - 1]:g}")
                probability[o][start:stop, j] = softmax(logits)[rows, tgt]
                correct[o][start:stop, j] = logits.argmax(axis=1) == lbl
                done += stop - start
                if progress is not None:
                    progress(done)

    xs = [0.0] + [float(t) for t in fractions]
    curves, values = {}, {}
    for o in orders:
        curves[f"{o}_probability"] = probability[o]
        curves[f"{o}_accuracy"] = correct[o]
        values[f"{o}_auc"] = auc(xs, probability[o])
        values[f"{o}_accuracy_auc"] = auc(xs, correct[o])
    if len(orders) == 2:
        values["gap"] = values["lerf_auc"] - values["morf_auc"]
    return {"x": xs, "curves": curves, "values": values}
