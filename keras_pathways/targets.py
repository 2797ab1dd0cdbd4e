"""What is explained: the target readout every method and pathway shares (traceable).

``resolve_targets`` fills "argmax" targets (-1) from the logits,
``target_logit`` reads y_c, the pre-softmax logit of each input's target (or,
with ``explain(..., targets=score)``, a ``Score`` of the outputs: ``logit``,
``regression``, ``binary`` or your own), and
``per_input_seeds`` derives the stateless random seeds of an input from a seed
and the input's own values (so batching never changes a random method's
result). The gradient methods, Grad-CAM, the contribution scores and the
pruning pathways all use these, so "the explained quantity" is defined once
(docs/method.md §1).
"""

import contextlib
import contextvars

import tensorflow as tf

__all__ = ["resolve_targets", "target_logit", "per_input_seeds", "Score", "logit", "regression",
           "binary", "segmentation", "output", "scoring"]

_SCORE = contextvars.ContextVar("keras_pathways_score", default=None)


class Score:
    """What is explained, as a function of the model's outputs (logits).

    ``explain(model, x, targets=score)`` explains ``score(logits)`` (N,)
    instead of one class logit: every method and the pathway selection use
    it, so the pathway of a regression output is defined as for a class
    (docs/method.md §2). ``fn(logits) -> (N,)`` must be traceable
    (``tf`` / ``keras.ops``); it sees the outputs before a final softmax or
    sigmoid.
    """

    def __init__(self, fn, name, output=None):
        if not callable(fn):
            raise ValueError(f"Expected a callable score(outputs) -> (N,). Received: {fn!r}.")
        self.fn = fn
        self.name = name
        #: For a model with several outputs: the name of the one scored.
        self.output = output

    def __call__(self, logits):
        out = self.fn(logits)
        if out.shape.rank != 1:
            raise ValueError(
                f"The score {self.name} must return one value per input, shape (N,). "
                f"Received shape {out.shape}."
            )
        return out

    def __repr__(self):
        return f"Score({self.name})"


def logit(c):
    """The pre-softmax logit of class ``c`` for every input (as ``targets=c``)."""
    c = int(c)
    return Score(lambda logits: logits[:, c], f"logit({c})")


def regression(unit=0):
    """Output unit ``unit`` of a regression head (its value, as it is)."""
    unit = int(unit)
    return Score(lambda outputs: outputs[:, unit], f"regression({unit})")


def binary():
    """A ``Dense(1, activation="sigmoid")`` classifier's pre-sigmoid logit.

    Positive attributions push towards class 1, negative towards class 0 (the
    final sigmoid is stripped, so this is unit 0 of the logits).
    """
    return Score(lambda logits: logits[:, 0], "binary()")


def segmentation(c, region=None):
    """The mean pre-softmax logit of class ``c`` over a region of a dense prediction.

    For a segmentation model's (N, H, W, classes) output (any (N, ...,
    classes) map). ``region``: a bool mask (H, W) for every input or
    (N, H, W) per input; default the pixels each input predicts as ``c``
    (then held fixed: the gradient does not flow through the arg-max). An
    input with an empty region scores 0.
    """
    import numpy as np

    c = int(c)
    mask = None if region is None else np.asarray(region, dtype=bool)

    def score(logits):
        values = logits[..., c]
        if mask is None:
            chosen = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), c), values.dtype)
        else:
            chosen = tf.broadcast_to(tf.constant(mask, values.dtype), tf.shape(values))
        axes = list(range(1, values.shape.rank))
        count = tf.reduce_sum(chosen, axis=axes)
        return tf.reduce_sum(values * chosen, axis=axes) / tf.maximum(count, tf.ones_like(count))

    return Score(score, f"segmentation({c})")


def output(name, inner=None):
    """A score of one output of a model with several outputs.

    Args:
        name: the output's name (``model.output_names``) or the name of the
            layer that produces it.
        inner: a ``Score`` of that output (default: the logit of its
            predicted class).
    """
    if inner is None:
        def predicted(logits):
            best = tf.argmax(logits, axis=-1, output_type=tf.int32)
            return tf.gather(logits, best, axis=1, batch_dims=1)

        inner = Score(predicted, "predicted class")
    if not isinstance(inner, Score):
        raise ValueError(f"Expected inner to be a keras_pathways.targets.Score. Received: {inner!r}.")
    return Score(inner.fn, f"output({name!r}, {inner.name})", output=str(name))


@contextlib.contextmanager
def scoring(score):
    """While active (at trace time), ``target_logit`` reads ``score(logits)``."""
    token = _SCORE.set(score)
    try:
        yield
    finally:
        _SCORE.reset(token)


def resolve_targets(logits, targets):
    """Targets (N,) int32 with -1 replaced by the argmax of ``logits``.

    While a ``Score`` is explained the targets are unused and returned as they are.
    """
    if _SCORE.get() is not None:
        return targets
    argmax = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return tf.where(targets < 0, argmax, targets)


def target_logit(logits, targets):
    """y_c per input: ``logits[i, targets[i]]`` (N,), or the active ``Score`` of the logits."""
    score = _SCORE.get()
    if score is not None:
        return tf.cast(score(logits), logits.dtype)
    return tf.gather(logits, targets, axis=1, batch_dims=1)


def per_input_seeds(x, seed, salt=0):
    """int32 (N, 2) stateless seeds from ``seed`` (int or scalar tensor), ``salt`` and each input's values."""
    flat = tf.reshape(tf.cast(x, tf.float32), [tf.shape(x)[0], -1])
    fingerprint = tf.reduce_sum(tf.bitcast(flat, tf.int32), axis=1)  # wraps; exact
    mixed = tf.cast(seed, tf.int32) * 1000003 + tf.cast(salt, tf.int32)
    return tf.stack([tf.fill(tf.shape(fingerprint), mixed), fingerprint], axis=1)
