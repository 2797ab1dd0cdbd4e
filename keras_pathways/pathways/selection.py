"""Global percentile selection of neurons (docs/method.md §3).

Per input, the scores of all neurons of all sites form one vector; the threshold
is its p-th percentile (p = sparsity * 100) with numpy's default linear
interpolation, and the kept neurons are those scoring strictly above it.

The percentile is computed exactly without sorting and without concatenating
the sites: scores are non-negative float32, whose int32 bit patterns sort like
the floats, so a two-pass radix select (a histogram of the high 16 bits, then of
the low 16 bits inside the one bucket that holds the wanted rank) finds the
order statistic, and one more pass finds its successor for the interpolation.
All of it is traceable by XLA.
"""

import math

import numpy as np
import tensorflow as tf

_HIGH_BUCKETS = 1 << 15  # non-negative float32: bits >> 16 < 2**15
_LOW_BUCKETS = 1 << 16
_INT_MAX = np.int32(np.iinfo(np.int32).max)


def check_sparsity(sparsity):
    """Returns ``sparsity`` as float, or raises a clear ValueError."""
    try:
        value = float(sparsity)
    except (TypeError, ValueError):
        raise ValueError(
            f"Expected sparsity to be a number in [0, 1). Received: sparsity={sparsity!r}."
        ) from None
    if not (0.0 <= value < 1.0) or math.isnan(value):
        raise ValueError(
            "Expected sparsity in [0, 1): the fraction of neurons pruned, e.g. "
            f"0.85 keeps the top 15 %. Received: sparsity={sparsity!r}."
        )
    return value


def percentile_position(num_values, sparsity):
    """Where numpy's ``percentile(v, 100 * sparsity)`` interpolates.

    Returns:
        ``(lower, upper, gamma)``: the 0-based ranks of the two order statistics
        and the interpolation weight, computed with numpy's own formula for the
        "linear" method (so float rounding matches numpy).
    """
    q = np.float64(100.0 * sparsity) / np.float64(100.0)
    virtual = np.float64(num_values - 1) * q
    lower = int(np.floor(virtual))
    if virtual >= num_values - 1:
        return num_values - 1, num_values - 1, float(virtual - lower)
    return lower, lower + 1, float(virtual - lower)


def _lerp(a, b, gamma):
    """numpy's ``_lerp`` (float64), which is exact at both ends."""
    diff = b - a
    if gamma >= 0.5:
        return b - diff * (1.0 - gamma)
    return a + diff * gamma


def _row_histogram(values, num_buckets):
    """Per-row counts of int32 ``values`` (N, M) in [0, num_buckets).

    A scatter-add (XLA compiles it; a 2-D ``tf.math.bincount`` it does not).
    """
    rows = tf.shape(values)[0]
    ids = values + tf.range(rows)[:, None] * num_buckets
    counts = tf.math.unsorted_segment_sum(
        tf.ones_like(values), ids, rows * num_buckets
    )
    return tf.reshape(counts, [rows, num_buckets])


def _rank_in_histogram(counts, rank):
    """Bucket holding 0-based ``rank`` (N,) per row, and counts below/through it."""
    cumulative = tf.cumsum(counts, axis=1)
    bucket = tf.reduce_sum(tf.cast(cumulative <= rank[:, None], tf.int32), axis=1)
    through = tf.gather(cumulative, bucket, axis=1, batch_dims=1)
    below = through - tf.gather(counts, bucket, axis=1, batch_dims=1)
    return bucket, below, through


def kth_smallest_bits(bits, rank):
    """Exact order statistic of non-negative float32 bit patterns.

    Args:
        bits: list of int32 tensors (N, M_i): the sites' scores viewed as int32.
        rank: int32 (N,) 0-based rank into the concatenation of each row.

    Returns:
        ``(value_bits, count_at_most)``, both int32 (N,): the bit pattern of the
        ``rank``-th smallest value and how many values are <= it.
    """
    high = [tf.bitwise.right_shift(b, 16) for b in bits]
    counts = tf.add_n([_row_histogram(h, _HIGH_BUCKETS) for h in high])
    bucket, below, _ = _rank_in_histogram(counts, rank)
    low_counts = []
    for b, h in zip(bits, high):
        low = tf.where(h == bucket[:, None], tf.bitwise.bitwise_and(b, 0xFFFF), _LOW_BUCKETS)
        low_counts.append(_row_histogram(low, _LOW_BUCKETS + 1)[:, :_LOW_BUCKETS])
    low_counts = tf.add_n(low_counts)
    low_bucket, _, through = _rank_in_histogram(low_counts, rank - below)
    return tf.bitwise.bitwise_or(tf.bitwise.left_shift(bucket, 16), low_bucket), below + through


def select(scores, sparsity):
    """Global percentile selection over all sites, per input.

    Args:
        scores: list of float32 tensors (N, *site_shape), non-negative and finite.
        sparsity: float in [0, 1).

    Returns:
        dict with ``masks`` (list of float32 {0, 1} tensors shaped like
        ``scores``), ``threshold`` (N,) float64, ``kept`` (N, num_sites) int32
        counts of kept neurons per site.
    """
    batch = tf.shape(scores[0])[0]
    flat = [tf.reshape(s, [batch, -1]) for s in scores]
    num_values = sum(int(np.prod(s.shape[1:])) for s in scores)
    lower, upper, gamma = percentile_position(num_values, sparsity)
    bits = [tf.bitcast(tf.abs(f), tf.int32) for f in flat]  # abs maps -0.0 to 0.0
    lower_bits, at_most = kth_smallest_bits(bits, tf.fill([batch], lower))
    # The next order statistic equals this one when enough values tie with it,
    # else it is the smallest value above it.
    above = tf.reduce_min(
        tf.stack(
            [tf.reduce_min(tf.where(b > lower_bits[:, None], b, _INT_MAX), axis=1) for b in bits],
            axis=1,
        ),
        axis=1,
    )
    upper_bits = tf.where(at_most >= upper + 1, lower_bits, above)
    a = tf.cast(tf.bitcast(lower_bits, tf.float32), tf.float64)
    b = tf.cast(tf.bitcast(upper_bits, tf.float32), tf.float64)
    threshold = _lerp(a, b, gamma)
    # s > thr (thr float64) <=> bits(s) > bits(largest float32 <= thr).
    t32 = tf.cast(threshold, tf.float32)
    t32 = tf.where(tf.cast(t32, tf.float64) > threshold, tf.math.nextafter(t32, -np.inf), t32)
    t32 = tf.maximum(t32, 0.0)
    t_bits = tf.bitcast(t32, tf.int32)
    masks, kept = [], []
    for s, b in zip(scores, bits):
        keep = b > t_bits[:, None]
        kept.append(tf.reduce_sum(tf.cast(keep, tf.int32), axis=1))
        masks.append(tf.reshape(tf.cast(keep, tf.float32), tf.shape(s)))
    return {"masks": masks, "threshold": threshold, "kept": tf.stack(kept, axis=1)}
