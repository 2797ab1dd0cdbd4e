"""Neuron contribution scores (docs/method.md §3), as gradients of f(x, masks).

All functions here are traceable (they run inside the compiled step) and work on
a whole batch; each input has its own target.
"""

import tensorflow as tf

from keras_pathways import compiling
from keras_pathways.targets import per_input_seeds  # noqa: F401  (kept importable here)
from keras_pathways.targets import resolve_targets
from keras_pathways.targets import target_logit

#: The pathway kinds ``find_pathway(kind=...)`` accepts, with one-line
#: descriptions: two contribution scores and three pruning-objective baselines.
KINDS = {
    "mct": "NeuronMCT: first-order Taylor contribution |a * dy/da| (one backward pass)",
    "intgrad": "NeuronIntGrad: per-site integrated gradients of the site scale, "
    "zero baseline, even grid 0..1 (steps + 1 passes per site)",
    "dgr": "DGR / critical data routing paths: per-neuron gates trained to keep the "
    "prediction with an L1 penalty (pruning objective; init, lam, steps, lr)",
    "greedy": "Greedy Taylor pruning in 1 % steps that never removes zero-score "
    "neurons (the pruning objective's pathological solution)",
    "random": "Random pathway: the same share of neurons pruned at random in every site",
}




def zeros_if_none(grads, like):
    return [tf.zeros_like(a) if g is None else g for g, a in zip(grads, like)]


def mct(graph, x, targets, absolute=True):
    """NeuronMCT scores: S = |a * dy_c/da| = |dy_c/dm| at m = 1.

    Args:
        graph: a ``PathwayGraph``.
        x: float (N, *input_shape).
        targets: int32 (N,); -1 = argmax of the unmasked logits.
        absolute: False returns the signed a * dy_c/da: the selection reads
            magnitudes from the bit patterns itself (``selection._as_bits``),
            so the pathway step skips one pass over every neuron.

    Returns:
        ``(scores, logits, targets)``: list of float32 (N, *site.shape) per site,
        the unmasked logits (N, classes), and the resolved targets (N,).
    """
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        logits, activations, masked = graph(x, capture=True)
        targets = resolve_targets(logits, targets)
        y = target_logit(logits, targets)
    grads = zeros_if_none(tape.gradient(y, masked), activations)
    scores = [tf.cast(a * g, tf.float32) for a, g in zip(activations, grads)]
    if absolute:
        scores = [tf.abs(s) for s in scores]
    return scores, logits, targets


def intgrad_signed(graph, x, targets, steps=10):
    """Signed per-site integrated gradients of the site scale m_l.

    For every site l separately: scale site l by alpha in {0, 1/K, ..., 1} with
    every other site at 1 and average dy_c/dm_l = a_l * dy_c/d(alpha a_l) over
    the K + 1 grid points (docs/method.md §3; the authors' uneven grid was a bug).
    By completeness, the sum over site l's neurons tends to
    y_c(f(x, 1)) - y_c(f(x, site l at 0)) as K grows.

    Returns:
        ``(signed_scores, logits, targets)`` as in ``mct`` (scores not abs'd).
    """
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"Expected steps >= 1 for intgrad scores. Received: steps={steps}.")
    # The unmasked pass gives the logits and each site's actual shape (a
    # size-agnostic model's sites have no static height and width).
    logits, activations, _ = graph(x, capture=True)
    targets = resolve_targets(logits, targets)
    num_sites = len(graph.sites)
    points = steps + 1
    accumulators = [tf.zeros_like(a, dtype=tf.float32) for a in activations]

    def body(i, accumulators):
        site = i // points
        alpha = tf.cast(i % points, tf.float32) / float(steps)
        scales = [
            tf.where(tf.equal(site, j), alpha, 1.0) for j in range(num_sites)
        ]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            out, activations, masked = graph(x, masks=scales, capture=True)
            y = target_logit(out, targets)
        grads = zeros_if_none(tape.gradient(y, masked), activations)
        updated = [
            acc + tf.where(tf.equal(site, j), tf.cast(a * g, tf.float32), 0.0)
            for j, (acc, a, g) in enumerate(zip(accumulators, activations, grads))
        ]
        return i + 1, updated

    _, accumulators = compiling.while_loop(
        lambda i, _: i < num_sites * points,
        body,
        (tf.constant(0), accumulators),
    )
    return [acc / float(points) for acc in accumulators], logits, targets


def intgrad(graph, x, targets, steps=10, absolute=True):
    """NeuronIntGrad scores: |mean_alpha dy_c/dm_l at m_l = alpha| per site (``absolute``: see ``mct``)."""
    signed, logits, targets = intgrad_signed(graph, x, targets, steps)
    return ([tf.abs(s) for s in signed] if absolute else signed), logits, targets


def contribution_scores(graph, x, targets, scores="mct", steps=10, absolute=True):
    """Dispatches to ``mct`` or ``intgrad`` (``absolute``: see ``mct``)."""
    if scores == "mct":
        return mct(graph, x, targets, absolute)
    return intgrad(graph, x, targets, steps, absolute)
