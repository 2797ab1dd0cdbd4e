"""What is explained: the target readout every method and pathway shares (traceable).

``resolve_targets`` fills "argmax" targets (-1) from the logits,
``target_logit`` reads y_c, the pre-softmax logit of each input's target, and
``per_input_seeds`` derives the stateless random seeds of an input from a seed
and the input's own values (so batching never changes a random method's
result). The gradient methods, Grad-CAM, the contribution scores and the
pruning pathways all use these, so "the explained quantity" is defined once
(docs/method.md §1).
"""

import tensorflow as tf

__all__ = ["resolve_targets", "target_logit", "per_input_seeds"]


def resolve_targets(logits, targets):
    """Targets (N,) int32 with -1 replaced by the argmax of ``logits``."""
    argmax = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return tf.where(targets < 0, argmax, targets)


def target_logit(logits, targets):
    """y_c per input: ``logits[i, targets[i]]`` (N,)."""
    return tf.gather(logits, targets, axis=1, batch_dims=1)


def per_input_seeds(x, seed, salt=0):
    """int32 (N, 2) stateless seeds from ``seed`` (int or scalar tensor), ``salt`` and each input's values."""
    flat = tf.reshape(tf.cast(x, tf.float32), [tf.shape(x)[0], -1])
    fingerprint = tf.reduce_sum(tf.bitcast(flat, tf.int32), axis=1)  # wraps; exact
    mixed = tf.cast(seed, tf.int32) * 1000003 + tf.cast(salt, tf.int32)
    return tf.stack([tf.fill(tf.shape(fingerprint), mixed), fingerprint], axis=1)
