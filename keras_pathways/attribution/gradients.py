"""Gradient-family baselines (docs/method.md §6), each a traceable step of f(x, masks).

Gradient, Input x Gradient, Integrated Gradients, SmoothGrad (around any other
method), Guided Backprop and a seeded Random baseline. Every step maps a batch
(N, *input_shape) and int32 targets (N,) (-1 = argmax of the unmasked logits)
to a dict with ``attributions`` (shape of x), ``targets`` and ``logits``.
Randomness is derived per input from the seed and the input's own values, so a
batched result equals the one-at-a-time result.
"""

import tensorflow as tf

from keras_pathways import compiling
from keras_pathways.attribution import registry
from keras_pathways.attribution.registry import register
from keras_pathways.pathways import scores as scores_lib


def input_gradient(graph, x, targets, site_transform=None):
    """``(dy_c/dx, logits, targets)`` with -1 targets resolved to the argmax."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        logits = graph(x, site_transform=site_transform)
        targets = scores_lib.resolve_targets(logits, targets)
        y = scores_lib.target_logit(logits, targets)
    return tape.gradient(y, x), logits, targets


def _result(attributions, logits, targets):
    return {"attributions": attributions, "targets": targets, "logits": logits}


def per_input_random(x, seed, salt, distribution):
    """Random values of x's shape, each input's drawn from its own seed."""
    shape = tf.shape(x)[1:]

    def draw(row_seed):
        if distribution == "normal":
            return tf.random.stateless_normal(shape, seed=row_seed, dtype=tf.float32)
        return tf.random.stateless_uniform(shape, seed=row_seed, minval=-1.0, maxval=1.0)

    return tf.map_fn(draw, scores_lib.per_input_seeds(x, seed, salt), fn_output_signature=tf.float32)


@register("gradient", "Plain input gradient of the target logit (saliency).", needs_sites=False)
def gradient_step(graph, **unused):
    def step(x, targets):
        return _result(*input_gradient(graph, x, targets))

    return step


@register(
    "input_x_gradient", "Input times the input gradient of the target logit.", needs_sites=False
)
def input_x_gradient_step(graph, **unused):
    def step(x, targets):
        grad, logits, targets = input_gradient(graph, x, targets)
        return _result(x * grad, logits, targets)

    return step


def check_baseline(baseline, input_shape):
    """Refuses an Integrated Gradients baseline that does not broadcast to one input.

    Accepted: a scalar, or an array broadcastable to ``input_shape`` (with at
    most a leading axis of size 1), e.g. (H, W, C), (1, 1, C), (C,) or
    (1, H, W, C) for images. A None dimension of ``input_shape`` (a model
    taking any size) accepts any size.
    """
    shape = tuple(int(d) for d in getattr(baseline, "shape", ()))
    expected = tuple(input_shape)
    padded = (1,) * (len(expected) + 1 - len(shape)) + shape
    fits = len(shape) <= len(expected) + 1 and padded[0] == 1 and all(
        b == 1 or e is None or b == e for b, e in zip(padded[1:], expected)
    )
    if not fits:
        shown = "(" + ", ".join("?" if e is None else str(e) for e in expected) + ")"
        if len(expected) == 3:  # an image: per-channel baselines too
            last = "?" if expected[-1] is None else str(expected[-1])
            examples = f"shape {shown}, (1, 1, {last}) or ({last},)"
        else:
            examples = f"shape {shown}"
        raise ValueError(
            "Expected baseline to be None (zeros), a scalar or an array broadcastable "
            f"to one input of shape {shown} (e.g. {examples}). Received: baseline "
            f"of shape {shape}."
        )


@register(
    "integrated_gradients",
    "Integrated Gradients from a baseline (zero by default), steps=50 midpoint "
    "Riemann sum along the straight path.",
    needs_sites=False,
    loops=True,
)
def integrated_gradients_step(graph, steps=None, baseline=None, **unused):
    steps = 50 if steps is None else int(steps)
    if steps < 1:
        raise ValueError(f"Expected steps >= 1 for integrated_gradients. Received: steps={steps}.")
    base_value = None if baseline is None else getattr(baseline, "value", baseline)
    if base_value is not None:
        check_baseline(base_value, graph.input_shape)

    def step(x, targets):
        logits = graph(x)
        targets = scores_lib.resolve_targets(logits, targets)
        base = tf.zeros_like(x) if base_value is None else tf.broadcast_to(
            tf.cast(base_value, x.dtype), tf.shape(x)
        )
        path = x - base

        def body(k, total):
            alpha = (tf.cast(k, x.dtype) + 0.5) / steps
            grad, _, _ = input_gradient(graph, base + alpha * path, targets)
            return k + 1, total + grad

        _, total = compiling.while_loop(
            lambda k, _: k < steps, body, (tf.constant(0), tf.zeros_like(x))
        )
        return _result(path * total / steps, logits, targets)

    return step


@register(
    "smoothgrad",
    "SmoothGrad: mean of an inner method (inner='gradient' by default) over "
    "samples=50 copies of the input with Gaussian noise of std noise=0.15 x its range.",
    needs_sites=False,  # unless the inner method needs them
    loops=True,
)
def smoothgrad_step(graph, samples=50, noise=0.15, inner="gradient", seed=0, **options):
    samples = int(samples)
    if samples < 1:
        raise ValueError(f"Expected samples >= 1 for smoothgrad. Received: samples={samples}.")
    if not float(noise) >= 0:
        raise ValueError(f"Expected noise >= 0 (a fraction of the input range). Received: noise={noise}.")
    if inner == "smoothgrad":
        raise ValueError("smoothgrad cannot wrap itself; choose another inner method.")
    inner_method = registry.get(inner)
    if inner_method.needs_sites:
        graph.require_sites()
    inner_step = inner_method.build(graph, seed=seed, **options)

    def step(x, targets):
        logits = graph(x)
        targets = scores_lib.resolve_targets(logits, targets)
        axes = tf.range(1, tf.rank(x))
        spread = tf.reduce_max(x, axis=axes) - tf.reduce_min(x, axis=axes)
        sigma = tf.reshape(tf.cast(noise, x.dtype) * spread, [-1] + [1] * (len(x.shape) - 1))

        def body(k, total):
            epsilon = tf.cast(per_input_random(x, seed, k + 1, "normal"), x.dtype)
            out = inner_step(x + sigma * epsilon, targets)
            return k + 1, total + tf.cast(out["attributions"], total.dtype)

        _, total = compiling.while_loop(
            lambda k, _: k < samples, body, (tf.constant(0), tf.zeros_like(x))
        )
        return _result(total / samples, logits, targets)

    return step


@tf.custom_gradient
def _guided(tensor):
    """Identity forward; backward passes only positive gradients."""

    def grad(upstream):
        return upstream * tf.cast(upstream > 0, upstream.dtype)

    return tf.identity(tensor), grad


@register(
    "guided_backprop",
    "Guided Backprop: input gradient with negative gradients zeroed at every "
    "rectifier site (a gradient override in the rewritten graph; the model is untouched).",
    needs_sites=False,
)
def guided_backprop_step(graph, **unused):
    def step(x, targets):
        return _result(*input_gradient(graph, x, targets, site_transform=_guided))

    return step


@register(
    "random", "Random attributions, uniform in [-1, 1), reproducible by seed.", needs_sites=False
)
def random_step(graph, seed=0, **unused):
    def step(x, targets):
        logits = graph(x)
        targets = scores_lib.resolve_targets(logits, targets)
        noise = tf.cast(per_input_random(x, seed, 0, "uniform"), x.dtype)
        return _result(noise, logits, targets)

    return step
