"""Gradient-family baselines (docs/method.md §6), each a traceable step of f(x, masks).

Gradient, Input x Gradient, Integrated Gradients, SmoothGrad (around any other
method), Guided Backprop and a seeded Random baseline. Every step maps a batch
(N, *input_shape) and int32 targets (N,) (-1 = argmax of the unmasked logits)
to a dict with ``attributions`` (shape of x), ``targets`` and ``logits``.
Randomness is derived per input from the seed and the input's own values, so a
batched result equals the one-at-a-time result.
"""

import hashlib

import numpy as np
import tensorflow as tf

from keras_pathways import compiling
from keras_pathways.attribution import registry
from keras_pathways.attribution.options import Option
from keras_pathways.attribution.options import OptionError
from keras_pathways.attribution.options import non_negative_number
from keras_pathways.attribution.options import positive_int
from keras_pathways.attribution.options import seed as check_seed
from keras_pathways.attribution.registry import StepResult
from keras_pathways.attribution.registry import register
from keras_pathways import targets as targets_lib


def input_gradient(graph, x, targets, site_transform=None):
    """``(dy_c/dx, logits, targets)`` with -1 targets resolved to the argmax."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        logits = graph(x, site_transform=site_transform)
        targets = targets_lib.resolve_targets(logits, targets)
        y = targets_lib.target_logit(logits, targets)
    return tape.gradient(y, x), logits, targets


def _result(attributions, logits, targets):
    return StepResult(attributions=attributions, targets=targets, logits=logits)


SEED = Option("seed", 0, check_seed, "seed of the random values, in [0, 2**31)", graph=False)


def per_input_random(x, seed, salt, distribution):
    """Random values of x's shape, each input's drawn from its own seed."""
    shape = tf.shape(x)[1:]

    def draw(row_seed):
        if distribution == "normal":
            return tf.random.stateless_normal(shape, seed=row_seed, dtype=tf.float32)
        return tf.random.stateless_uniform(shape, seed=row_seed, minval=-1.0, maxval=1.0)

    return tf.map_fn(draw, targets_lib.per_input_seeds(x, seed, salt), fn_output_signature=tf.float32)


@register("gradient", "Plain input gradient of the target logit (saliency).", needs_sites=False)
def gradient_step(graph):
    def step(x, targets):
        return _result(*input_gradient(graph, x, targets))

    return step


@register(
    "input_x_gradient", "Input times the input gradient of the target logit.", needs_sites=False
)
def input_x_gradient_step(graph):
    def step(x, targets):
        grad, logits, targets = input_gradient(graph, x, targets)
        return _result(x * grad, logits, targets)

    return step


def _digest(array):
    return (array.shape, hashlib.sha1(array.tobytes()).hexdigest())


class ArrayOption:
    """An array-valued option (an IG baseline), hashable so it can key the step cache.

    ``value`` is the option as one float32 array (None when it cannot be
    one); ``parts``, for a list, tuple or dict, its entries as
    ``[(key, array)]`` (keys are positions or names): one entry per input of
    a model with several inputs. Which one applies is decided with the model
    (``baseline_for``).
    """

    def __init__(self, value):
        self.parts = None
        if isinstance(value, (list, tuple, dict)):
            items = value.items() if isinstance(value, dict) else enumerate(value)
            try:
                self.parts = [(key, np.asarray(v, dtype=np.float32)) for key, v in items]
            except (TypeError, ValueError):
                self.parts = None
        if isinstance(value, dict):
            self.value = None
        elif self.parts is None:
            self.value = np.asarray(value, dtype=np.float32)
        else:
            try:
                self.value = np.asarray(value, dtype=np.float32)
            except (TypeError, ValueError):  # ragged: only meaningful per input
                self.value = None
        if self.value is None and self.parts is None:
            raise TypeError("not an array")
        self.mapping = isinstance(value, dict)
        self._key = (
            None if self.value is None else _digest(self.value),
            None if self.parts is None else (self.mapping, tuple((k, _digest(a)) for k, a in self.parts)),
        )

    @classmethod
    def of(cls, value, name):
        """None, or the checked finite array option ``name``."""
        if value is None or isinstance(value, cls):
            return value
        try:
            option = cls(value)
        except (TypeError, ValueError):
            raise OptionError(f"Expected {name} to be None, a number or an array. Received: {value!r}.") from None
        arrays = [option.value] if option.value is not None else [a for _, a in option.parts]
        if not all(np.isfinite(a).all() for a in arrays):
            raise OptionError(f"The {name} contains NaN or Inf.")
        return option

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, ArrayOption) and self._key == other._key


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


def baseline_for(baseline, graph):
    """The baseline array of ``graph``'s input (None: zeros), checked.

    One input: the option's array, broadcastable to the input. Several
    inputs (packed, ``PathwayGraph.split_inputs``): a scalar for every
    input, or a list/tuple (order of ``model.inputs``) or dict (input names)
    with one scalar or array per input, each broadcastable to its input;
    returned packed, shape (D,).
    """
    if baseline is None:
        return None
    if graph.num_inputs == 1:
        if baseline.value is None:
            raise OptionError(f"Expected baseline to be None, a number or an array. Received: {baseline.parts!r}.")
        check_baseline(baseline.value, graph.input_shape)
        return baseline.value
    names = graph.input_names
    if baseline.parts is None:
        if baseline.value.ndim == 0:
            return baseline.value
        raise ValueError(
            f"Model {graph.model_name!r} has {graph.num_inputs} inputs {names}: expected baseline to "
            "be None (zeros), a scalar, or a list (order of model.inputs) or dict (input names) with "
            f"one baseline per input. Received: one array of shape {baseline.value.shape}.")
    if baseline.mapping:
        unknown = [k for k, _ in baseline.parts if k not in names]
        missing = [n for n in names if n not in dict(baseline.parts)]
        if unknown or missing:
            raise ValueError(
                f"Model {graph.model_name!r} has inputs {names}: expected a baseline dict with one "
                f"entry per input name. Received: unknown name(s) {unknown}, missing {missing}.")
        by_name = dict(baseline.parts)
        values = [by_name[n] for n in names]
    else:
        if len(baseline.parts) != graph.num_inputs:
            raise ValueError(
                f"Model {graph.model_name!r} has {graph.num_inputs} inputs {names}: expected one "
                f"baseline per input. Received: {len(baseline.parts)} baselines.")
        values = [a for _, a in baseline.parts]
    packed = []
    for name, shape, value in zip(names, graph.input_shapes, values):
        try:
            check_baseline(value, shape)
        except ValueError as error:
            raise ValueError(f"Baseline of input {name!r}: {error}") from None
        packed.append(np.broadcast_to(value.reshape(value.shape[1:]) if value.ndim == len(shape) + 1
                                      else value, shape).reshape(-1))
    return np.concatenate(packed).astype(np.float32)


@register(
    "integrated_gradients",
    "Integrated Gradients from a baseline (zero by default), steps=50 midpoint "
    "Riemann sum along the straight path.",
    needs_sites=False,
    loops=True,
    options=[
        Option("steps", 50, positive_int("steps"), "points of the midpoint Riemann sum"),
        Option("baseline", None, lambda value: ArrayOption.of(value, "baseline"),
               "None (zeros), a scalar or an array broadcastable to one input"),
    ],
)
def integrated_gradients_step(graph, steps, baseline):
    base_value = baseline_for(baseline, graph)

    def step(x, targets):
        logits = graph(x)
        targets = targets_lib.resolve_targets(logits, targets)
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


def per_model_input_spread(graph, x):
    """(N, D): for packed several inputs, each example's max - min of each input,
    repeated over that input's values (SmoothGrad's noise scale per input)."""
    pieces = tf.split(x, graph.input_sizes, axis=1)
    spreads = [
        tf.repeat(tf.reduce_max(p, axis=1, keepdims=True) - tf.reduce_min(p, axis=1, keepdims=True),
                  size, axis=1)
        for p, size in zip(pieces, graph.input_sizes)
    ]
    return tf.concat(spreads, axis=1)


def _inner_method(name):
    if name == "smoothgrad":
        raise OptionError("smoothgrad cannot wrap itself; choose another inner method (inner=...).")
    registry.get(name)  # a clear error for an unknown name
    return name


@register(
    "smoothgrad",
    "SmoothGrad: mean of an inner method (inner='gradient' by default) over "
    "samples=50 copies of the input with Gaussian noise of std noise=0.15 x its range.",
    needs_sites=False,  # unless the inner method needs them
    loops=True,
    options=[
        Option("samples", 50, positive_int("samples"), "noisy copies averaged"),
        Option("noise", 0.15, non_negative_number("noise"),
               "noise std as a fraction of each input's value range"),
        Option("inner", "gradient", _inner_method,
               "the method averaged (its own options are accepted too)"),
        SEED,
    ],
    forwards="inner",
)
def smoothgrad_step(graph, samples, noise, inner, inner_options=()):
    inner_method = registry.get(inner)
    if inner_method.needs_sites:
        graph.require_sites()
    inner_step = inner_method.build(graph, **dict(inner_options))
    inner_runtime = inner_method.runtime_options

    def step(x, targets, seed=0):
        logits = graph(x)
        targets = targets_lib.resolve_targets(logits, targets)
        if graph.num_inputs > 1:
            sigma = per_model_input_spread(graph, x) * tf.cast(noise, x.dtype)
        else:
            axes = tf.range(1, tf.rank(x))
            spread = tf.reduce_max(x, axis=axes) - tf.reduce_min(x, axis=axes)
            sigma = tf.reshape(tf.cast(noise, x.dtype) * spread, [-1] + [1] * (len(x.shape) - 1))

        def body(k, total):
            epsilon = tf.cast(per_input_random(x, seed, k + 1, "normal"), x.dtype)
            runtime = {"seed": seed} if "seed" in inner_runtime else {}
            out = StepResult.of(inner_step(x + sigma * epsilon, targets, **runtime), inner)
            return k + 1, total + tf.cast(out.attributions, total.dtype)

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
def guided_backprop_step(graph):
    graph.require_visible_sites()  # it overrides the gradient at every rectifier: all must be seen

    def step(x, targets):
        return _result(*input_gradient(graph, x, targets, site_transform=_guided))

    return step


@register(
    "random", "Random attributions, uniform in [-1, 1), reproducible by seed.", needs_sites=False,
    options=[SEED],
)
def random_step(graph):
    def step(x, targets, seed=0):
        logits = graph(x)
        targets = targets_lib.resolve_targets(logits, targets)
        noise = tf.cast(per_input_random(x, seed, 0, "uniform"), x.dtype)
        return _result(noise, logits, targets)

    return step
