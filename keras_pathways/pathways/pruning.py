"""Pathways of the pruning objective (docs/method.md §5): DGR gates, greedy, random.

These are the baselines the paper argues against: they keep a sparse set of
neurons that preserves the prediction, with no regard to how much each kept
neuron contributes. All functions are traceable and work on a whole batch at
once (each input has its own gates, its own prediction and its own pathway);
the loops are built with ``keras_pathways.compiling.while_loop`` so every
iteration is one XLA program when the engine compiles with ``jit_compile``.
"""

import math

import numpy as np
import tensorflow as tf

from keras_pathways import compiling
from keras_pathways import targets as targets_lib
from keras_pathways.pathways import scores as scores_lib
from keras_pathways.pathways import selection

#: DGR's defaults (docs/method.md §5).
DGR_DEFAULTS = {"init": "ones", "lam": 0.01, "steps": 1000, "lr": 0.01}
DGR_INITS = ("ones", "uniform")
#: How often a uniform-init DGR retries with lam / 10 for the inputs that
#: found no prediction-preserving gates.
DGR_RETRIES = 3
GATE_MAX = 100.0
MOMENTUM = 0.9
#: Greedy pruning removes this fraction of all neurons per iteration.
GREEDY_STEP = 0.01
_INF_BITS = np.int32(0x7F800000)  # bit pattern of float32 +inf


def _seeded_uniform(x, like, seed, salt):
    """Per-input uniform [0, 1) tensors shaped like each of ``like`` (N, ...)."""
    seeds = targets_lib.per_input_seeds(x, seed, salt)
    out = []
    for j, tensor in enumerate(like):
        shape = tf.shape(tensor)[1:]

        def draw(row_seed, shape=shape, j=j):
            return tf.random.stateless_uniform(shape, seed=row_seed + tf.constant([0, 7919]) * j)

        out.append(tf.map_fn(draw, seeds, fn_output_signature=tf.float32))
    return out


def _train_gates(graph, x, teacher, prediction, initial, lam, steps, lr):
    """SGD with momentum on the gates of every input at once.

    Returns ``(best_gates, found)``: per input the lowest-loss gates whose
    arg-max prediction equals ``prediction`` (zeros where none did), and
    whether any did.
    """
    batch = tf.shape(x)[0]
    lam = tf.cast(lam, tf.float32)

    def body(k, gates, velocity, best, best_loss, found):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(gates)
            # float32 loss and gates also for a mixed-precision (float16) model.
            logits = tf.cast(graph(x, masks=gates), tf.float32)
            distill = tf.nn.softmax_cross_entropy_with_logits(teacher, logits)
            l1 = tf.add_n([tf.reduce_sum(tf.reshape(tf.abs(g), [batch, -1]), axis=1) for g in gates])
            loss = distill + lam * l1
            total = tf.reduce_sum(loss)
        grads = tape.gradient(total, gates)
        keeps = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), prediction)
        better = tf.logical_and(keeps, loss < best_loss)
        best = [_where_rows(better, g, b) for g, b in zip(gates, best)]
        best_loss = tf.where(better, loss, best_loss)
        velocity = [MOMENTUM * v + g for v, g in zip(velocity, grads)]
        gates = [tf.clip_by_value(g - lr * v, 0.0, GATE_MAX) for g, v in zip(gates, velocity)]
        return k + 1, gates, velocity, best, best_loss, tf.logical_or(found, better)

    state = (
        tf.constant(0), initial, [tf.zeros_like(g) for g in initial],
        [tf.zeros_like(g) for g in initial], tf.fill([batch], np.float32(np.inf)),
        tf.zeros([batch], tf.bool),
    )
    _, _, _, best, _, found = compiling.while_loop(lambda k, *_: k < steps, body, state)
    return best, found


def _where_rows(condition, a, b):
    """Per input (row) ``a`` where ``condition`` (N,) else ``b``."""
    return tf.where(_row_shaped(condition, a), a, b)


def dgr_gates(graph, x, targets, init="ones", lam=0.01, steps=1000, lr=0.01, seed=0):
    """DGR / critical data routing path gates (docs/method.md §5).

    Gates g (one per neuron, per input) multiply every site; they minimise the
    cross-entropy to the unmasked model's softmax + ``lam * sum|g|`` by SGD
    (``lr``, momentum 0.9, ``steps`` steps, g clamped to [0, 100]). Per input
    the lowest-loss gates that keep the unmasked arg-max prediction are kept.
    ``init="ones"`` starts at g = 1 (always a solution: the start itself);
    ``init="uniform"`` starts at U[0, 1) drawn per input from ``seed`` and the
    input's values, and inputs without a solution retry with ``lam / 10`` up to
    3 times; an input that still has none gets all-ones gates (the unpruned
    network) so the result is always defined.

    Returns:
        ``(gates, logits, targets)`` like the contribution scores: gates is a
        list of float32 (N, *site.shape), non-negative.
    """
    logits, activations, _ = graph(x, capture=True)
    targets = targets_lib.resolve_targets(logits, targets)
    prediction = tf.argmax(logits, axis=-1, output_type=tf.int32)
    # Gates, teacher and loss in float32, whatever the model computes in
    # (a mixed_float16 model's sites are float16; the graph casts the gates).
    teacher = tf.nn.softmax(tf.cast(logits, tf.float32))
    if init == "ones":
        gates, _ = _train_gates(graph, x, teacher, prediction,
                                [tf.ones_like(a, dtype=tf.float32) for a in activations],
                                lam, steps, lr)
        return gates, logits, targets
    gates, found = _train_gates(graph, x, teacher, prediction,
                                _seeded_uniform(x, activations, seed, 11), lam, steps, lr)
    for retry in range(1, DGR_RETRIES + 1):

        def rerun(gates=gates, found=found, retry=retry):
            again, again_found = _train_gates(
                graph, x, teacher, prediction,
                _seeded_uniform(x, activations, seed, 11 + retry), lam / 10.0 ** retry, steps, lr,
            )
            use = tf.logical_and(tf.logical_not(found), again_found)
            return [_where_rows(use, a, g) for a, g in zip(again, gates)], tf.logical_or(found, use)

        gates, found = tf.cond(
            tf.reduce_all(found), lambda gates=gates, found=found: (gates, found), rerun
        )
    gates = [_where_rows(found, g, tf.ones_like(g)) for g in gates]
    return gates, logits, targets


def _row_count(tensors):
    batch = tf.shape(tensors[0])[0]
    return tf.add_n([tf.reduce_sum(tf.reshape(tf.cast(t, tf.int32), [batch, -1]), axis=1) for t in tensors])


def greedy_masks(graph, x, targets, sparsity):
    """Greedy (pathological) pruning (docs/method.md §5).

    Iterative first-order Taylor pruning: each iteration scores the kept
    neurons by |a * dy_c/d(a m)| in the currently masked network and removes
    the lowest-scoring 1 % of all neurons, never a neuron scoring exactly 0
    (dead or cut off). It stops when ``sparsity`` of the neurons are gone or
    no kept neuron scores above 0, so the kept fraction can exceed
    ``1 - sparsity``: what stays is largely dead neurons, which is the
    pathology the paper shows.

    Returns:
        ``(masks, logits, targets)``: masks float32 {0, 1} per site.
    """
    logits, activations, _ = graph(x, capture=True)
    targets = targets_lib.resolve_targets(logits, targets)
    total = sum(int(np.prod(a.shape[1:])) for a in activations)
    target_kept = total - int(round(sparsity * total))
    chunk = max(1, int(math.ceil(GREEDY_STEP * total)))
    iterations = int(math.ceil((total - target_kept) / chunk))

    def body(k, masks):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)  # records the path through the sites' outputs
            out, acts, masked = graph(x, masks=masks, capture=True)
            y = targets_lib.target_logit(out, targets)
        grads = scores_lib.zeros_if_none(tape.gradient(y, masked), acts)
        # float32 scores (bit patterns below) also for a float16/float64 model.
        site_scores = [tf.abs(tf.cast(a, tf.float32) * tf.cast(g, tf.float32))
                       for a, g in zip(acts, grads)]
        candidate = [tf.logical_and(m > 0.5, s > 0) for m, s in zip(masks, site_scores)]
        kept = _row_count([m > 0.5 for m in masks])
        remove = tf.minimum(chunk, tf.maximum(kept - target_kept, 0))
        batch = tf.shape(x)[0]
        bits = [
            tf.reshape(tf.where(c, tf.bitcast(s, tf.int32), _INF_BITS), [batch, -1])
            for c, s in zip(candidate, site_scores)
        ]
        cut, _ = selection.kth_smallest_bits(bits, tf.maximum(remove - 1, 0))
        cut = tf.where(remove > 0, cut, -1)  # nothing to remove: no bits are <= -1
        masks = [
            tf.where(tf.logical_and(c, tf.reshape(b, tf.shape(c)) <= _row_shaped(cut, c)), 0.0, m)
            for c, b, m in zip(candidate, bits, masks)
        ]
        return k + 1, masks

    masks = [tf.ones_like(a, dtype=tf.float32) for a in activations]
    if iterations > 0:
        _, masks = compiling.while_loop(lambda k, _: k < iterations, body, (tf.constant(0), masks))
    return masks, logits, targets


def _row_shaped(values, like):
    """(N,) values reshaped to broadcast against ``like`` (N, ...); static rank."""
    return tf.reshape(values, [-1] + [1] * (like.shape.rank - 1))


def random_masks(graph, x, targets, sparsity, seed=0):
    """Random pathway (docs/method.md §5): in every site separately, prune ``sparsity`` of
    the neurons uniformly at random (the site's percentile of per-input seeded
    uniform scores), so each site keeps the same share.

    Returns:
        ``(masks, logits, targets)``.
    """
    logits, activations, _ = graph(x, capture=True)
    targets = targets_lib.resolve_targets(logits, targets)
    draws = _seeded_uniform(x, activations, seed, 23)
    masks = [selection.select([u], sparsity)["masks"][0] for u in draws]
    return masks, logits, targets
