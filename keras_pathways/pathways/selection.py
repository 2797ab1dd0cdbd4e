"""Global percentile selection of neurons (docs/method.md §3).

Per input, the scores of all neurons of all sites form one vector; the threshold
is its p-th percentile (p = sparsity * 100) with numpy's default linear
interpolation, and the kept neurons are those scoring strictly above it.

The percentile is computed exactly without sorting and without concatenating
the sites: the magnitudes of float32 scores (sign bit cleared) are int32 bit
patterns that sort like the floats, so a two-pass radix select (a histogram
of the high 16 bits, then of the low 16 bits inside the one bucket that
holds the wanted rank) finds the order statistic, and one more pass finds its successor for the interpolation.
All of it is traceable by XLA; it is what runs inside one XLA program.

Elsewhere (the CPU default, ``jit_compile=False``) large rows go through a
sampled band first: a fixed random sample of each row's scores, sorted, gives
two values that bracket the wanted ranks with high probability; one pass
counts the scores below and through them and collects those in between
(1-2 % of them: ``keras_pathways.native``'s compiled op, else counting,
marking, ``tf.where`` and small XLA gathers), and the exact radix select
then runs only on those. When a band misses, the radix select over all
scores runs instead, so the result is bit-identical either way. README,
"Speed", has the measurements (``benchmarks/bench_selection.py``).
"""

import collections
import math

import numpy as np
import tensorflow as tf

from keras_pathways import compiling, native

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


def _row_histogram(values, num_buckets, rows=None, num_rows=None):
    """Per-row counts of int32 ``values`` in [0, num_buckets).

    ``values`` is (N, M) (row = first axis), or flat (K,) with int32 ``rows``
    in [0, num_rows] (``num_rows`` itself marks padding, dropped). A
    scatter-add (XLA compiles it; a 2-D ``tf.math.bincount`` it does not).
    """
    if rows is None:
        num_rows = tf.shape(values)[0]
        rows = tf.range(num_rows)[:, None]
        segments = num_rows
    else:
        segments = num_rows + 1
    counts = tf.math.unsorted_segment_sum(
        tf.ones_like(values), values + rows * num_buckets, segments * num_buckets
    )
    return tf.reshape(counts, [segments, num_buckets])[:num_rows]


def _rank_in_histogram(counts, rank):
    """Bucket holding 0-based ``rank`` (N,) per row, and counts below/through it.

    A rank past a row's count (a band row whose statistic is known otherwise)
    gives the last bucket, never an index out of range.
    """
    cumulative = tf.cumsum(counts, axis=1)
    bucket = tf.reduce_sum(tf.cast(cumulative <= rank[:, None], tf.int32), axis=1)
    bucket = tf.minimum(bucket, counts.shape[1] - 1)
    through = tf.gather(cumulative, bucket, axis=1, batch_dims=1)
    below = through - tf.gather(counts, bucket, axis=1, batch_dims=1)
    return bucket, below, through


def digit_widths(num_rows):
    """Radix digit widths (high digit first) covering the 31 magnitude bits.

    One pass's histograms hold (rows + 1) * 2**width counts: kept within
    2**21 so that a large batch of small rows (a Fashion-MNIST batch of 256)
    does not build and scan 256 * 65,536 counts twice. Up to 31 rows get
    15 + 16 bits (two passes), a batch of 256 gets 10 + 10 + 11, an unknown
    batch size three passes too.
    """
    rows = 1024 if num_rows is None else int(num_rows) + 1
    width = min(16, max(8, 21 - math.ceil(math.log2(rows))))
    passes = -(-31 // width)
    base, extra = divmod(31, passes)
    return [base] * (passes - extra) + [base + 1] * extra


def _radix_select(bits, rank, widths, histogram, prefix_of):
    """Shared multi-pass radix select: one histogram per digit, high digit first.

    ``histogram(digits, buckets)`` counts per row (digits == buckets: not
    counted); ``prefix_of(prefix)`` spreads the (N,) prefix found so far to
    the shape of ``bits``. Returns ``(value_bits, count_at_most)``.
    """
    prefix = tf.zeros_like(rank)
    below = tf.zeros_like(rank)
    shift = sum(widths)
    for i, width in enumerate(widths):
        shift -= width
        buckets = 1 << width
        digits = [tf.bitwise.bitwise_and(tf.bitwise.right_shift(b, shift), buckets - 1) for b in bits]
        if i:  # only values whose higher digits match the prefix found so far
            digits = [tf.where(tf.equal(tf.bitwise.right_shift(b, shift + width), p), d, buckets)
                      for b, d, p in zip(bits, digits, prefix_of(prefix))]
        counts = histogram(digits, buckets)
        digit, below_digit, through = _rank_in_histogram(counts, rank - below)
        at_most = below + through  # values with a smaller prefix, plus this digit's up to it
        below += below_digit
        prefix = tf.bitwise.bitwise_or(tf.bitwise.left_shift(prefix, width), digit)
    return prefix, at_most


def kth_smallest_bits(bits, rank, widths=None):
    """Exact order statistic of non-negative float32 bit patterns.

    Args:
        bits: list of int32 tensors (N, M_i): the sites' scores viewed as int32.
        rank: int32 (N,) 0-based rank into the concatenation of each row.
        widths: radix digit widths (default ``digit_widths`` of the batch size).

    Returns:
        ``(value_bits, count_at_most)``, both int32 (N,): the bit pattern of the
        ``rank``-th smallest value and how many values are <= it.
    """
    widths = widths or digit_widths(bits[0].shape[0])

    def histogram(digits, buckets):
        return tf.add_n([_row_histogram(d, buckets + 1)[:, :buckets] for d in digits])

    def prefix_of(prefix):
        return [prefix[:, None]] * len(bits)

    return _radix_select(bits, rank, widths, histogram, prefix_of)


def _kth_smallest_flat(bits, rows, num_rows, rank, widths=None):
    """``kth_smallest_bits`` for a flat list: ``bits`` (K,) of row ``rows`` (K,).

    Rows equal to ``num_rows`` are padding and ignored. Returns
    ``(value_bits, count_at_most)`` (num_rows,), as ``kth_smallest_bits``.
    """
    widths = widths or digit_widths(rank.shape[0])

    def histogram(digits, buckets):
        return _row_histogram(digits[0], buckets + 1, rows, num_rows)[:, :buckets]

    def prefix_of(prefix):  # padding rows match no prefix
        return [tf.gather(tf.concat([prefix, [-1]], axis=0), rows)]

    return _radix_select([bits], rank, widths, histogram, prefix_of)


def _as_bits(values):
    """float32 -> int32 bit pattern of |values| (-0.0 -> 0), by bit operations only:
    a float ``abs`` would flush subnormal scores to 0 under XLA on CPUs."""
    return tf.bitwise.bitwise_and(tf.bitcast(values, tf.int32), 0x7FFFFFFF)


def _exact_statistics(flat, lower, upper):
    """Bit patterns of the ``lower``-th and ``upper``-th smallest score per row.

    The radix select over every score (``digit_widths``: two or three
    histogram passes), then the
    successor for the interpolation: the same value when enough values tie
    with it, else the smallest value above it.
    """
    bits = [_as_bits(f) for f in flat]
    batch = tf.shape(flat[0])[0]
    lower_bits, at_most = kth_smallest_bits(bits, tf.fill([batch], lower))
    above = tf.reduce_min(
        tf.stack(
            [tf.reduce_min(tf.where(b > lower_bits[:, None], b, _INT_MAX), axis=1) for b in bits],
            axis=1,
        ),
        axis=1,
    )
    return lower_bits, tf.where(at_most >= upper + 1, lower_bits, above)


# ----------------------------------------------------------------- the band
#: Rows of at least this many scores use the sampled band (``_band_statistics``);
#: smaller ones the radix select alone, which is as fast there.
BAND_MIN_VALUES = 1 << 15
#: Scores sampled per row to place the band (partly sorted): M / 32, between
#: 1,024 and this (32,768 measured faster than 16,384 and 65,536 on ResNet50).
BAND_SAMPLE = 1 << 15
#: Half-width of the band in standard deviations of the sample quantile's rank.
BAND_Z = 4.0


def band_position(num_values, sample, lower, upper, z=None):
    """Which two order statistics of a sorted sample bracket ranks ``lower``..``upper``.

    The rank of the sample's j-th smallest value among all ``num_values`` is
    about ``j * num_values / sample`` with a standard deviation of
    ``sqrt(sample * q * (1 - q))`` sample ranks: ``z`` of those on each side
    (plus 2) make a miss rare; a miss is detected and costs only time.

    Returns:
        ``(a, c)``: 0-based sample ranks, ``0 <= a <= c < sample``.
    """
    z = BAND_Z if z is None else z
    q = min(max(lower / max(num_values - 1, 1), 0.0), 1.0)
    spread = z * math.sqrt(sample * max(q * (1.0 - q), 1.0 / sample)) + 2.0
    a = int(math.floor(lower * sample / num_values - spread))
    c = int(math.ceil((upper + 1) * sample / num_values + spread))
    return min(max(a, 0), sample - 1), min(max(c, 0), sample - 1)


def band_sample_size(num_values):
    """Scores sampled per row of ``num_values`` scores: M / 32, between 1,024 and ``BAND_SAMPLE``."""
    return min(BAND_SAMPLE, max(1024, num_values // 32))


def _sample_positions(sizes, sample):
    """Fixed stratified sample positions per site (numpy, seeded: a constant per shape)."""
    total = sum(sizes)
    rng = np.random.default_rng(0x5EED)
    return [np.sort(rng.integers(0, m, max(1, int(round(sample * m / total)))).astype(np.int32))
            for m in sizes]


#: Scores summed per lane in ``_band_counts`` at most (2**15 - 1: no int16 half overflows).
LANE_ROWS = (1 << 15) - 1


def _lane_width(m):
    """Lanes c for ``_band_counts``: at most ``LANE_ROWS`` of a site's scores are summed per lane."""
    return max(min(256, m), -(-m // LANE_ROWS), 1)


def _draw_sample(flat, positions):
    """The sampled scores' bit patterns (N, sample): constant positions, one XLA gather."""
    return _as_bits(tf.concat([tf.gather(f, p, axis=1) for f, p in zip(flat, positions)], axis=1))


def _sample_statistics(flat, positions, a, c):
    """The a-th and c-th smallest sampled bits per row, by a partial sort.

    ``top_k`` of the fewer of the largest ``sample - min(a, c)`` or the
    smallest ``max(a, c) + 1`` values: 2-4 times faster than a full sort of
    the sample on CPUs, where XLA's sort is slower still (README "Speed").
    """
    drawn = compiling.part(_draw_sample, kind="selection")(flat, positions)
    sample = sum(len(p) for p in positions)
    if sample - min(a, c) <= max(a, c) + 1:
        top = tf.math.top_k(drawn, k=sample - min(a, c)).values  # descending
        return top[:, sample - 1 - a], top[:, sample - 1 - c]
    bottom = -tf.math.top_k(-drawn, k=max(a, c) + 1).values  # ascending (bits >= 0: no overflow)
    return bottom[:, a], bottom[:, c]


def _band_counts(flat, lo, hi):
    """One pass: per row and site, #(bits < lo) and #(bits <= hi), int32 (N, sites) each.

    Both counts travel packed in one int32 (low and high 16 bits): each site
    is viewed as (N, m / c, c) and summed over its m / c <= ``LANE_ROWS``
    rows into c lanes first, so neither half overflows; the c lanes are then unpacked
    and summed. One int32 reduction costs what one count alone costs (an
    int64 pair of counts cost 1.7 times as much under XLA on CPUs).
    """
    below, through = [], []
    for f in flat:
        m = f.shape[1]
        c = _lane_width(m)
        head = m - m % c
        b = _as_bits(f)
        packed = tf.cast(b < lo[:, None], tf.int32) + tf.bitwise.left_shift(
            tf.cast(b <= hi[:, None], tf.int32), 16)
        # The < c scores past the last whole lane row: one more partial sum (no overflow).
        lanes = tf.reduce_sum(packed[:, head:], axis=1, keepdims=True)
        if head:
            lanes = tf.concat([lanes, tf.reduce_sum(tf.reshape(packed[:, :head], [-1, head // c, c]), axis=1)], 1)
        below.append(tf.reduce_sum(tf.bitwise.bitwise_and(lanes, 0xFFFF), axis=1))
        through.append(tf.reduce_sum(tf.bitwise.right_shift(lanes, 16), axis=1))
    return tf.stack(below, axis=1), tf.stack(through, axis=1)


def _band_members(flat, lo, hi):
    """Which bits lie in [lo, hi], per site (bool, like ``flat``).

    Rows whose band is one value (lo == hi) mark nothing: their statistic is
    that value, and the band may be a huge tie (dead neurons). A separate XLA
    program from ``_band_counts``: fused together they ran slower on CPUs.
    """
    wide = (lo < hi)[:, None]
    return [tf.logical_and(tf.logical_and(_as_bits(f) >= lo[:, None], _as_bits(f) <= hi[:, None]), wide)
            for f in flat]


def _threshold_bits(lower_bits, upper_bits, gamma):
    """numpy's interpolated percentile (float64) and the int32 bits t with s > thr <=> bits(s) > t."""
    a = tf.cast(tf.bitcast(lower_bits, tf.float32), tf.float64)
    b = tf.cast(tf.bitcast(upper_bits, tf.float32), tf.float64)
    threshold = _lerp(a, b, gamma)
    # s > thr (thr float64) <=> bits(s) > bits(largest float32 <= thr).
    t32 = tf.cast(threshold, tf.float32)
    t32 = tf.where(tf.cast(t32, tf.float64) > threshold, tf.math.nextafter(t32, -np.inf), t32)
    t32 = tf.maximum(t32, 0.0)
    return threshold, tf.bitcast(t32, tf.int32)


def _kept_counts(flat, t_bits):
    """Kept neurons per row and site, int32 (N, sites): a reduction over every score."""
    return tf.stack([tf.reduce_sum(tf.cast(_as_bits(f) > t_bits[:, None], tf.int32), axis=1)
                     for f in flat], axis=1)


def _band_finish(bits, rows, sites, rank_lower, rank_upper, lo, point, below, through, sizes, gamma):
    """The order statistics inside the compacted band, the threshold and the kept counts.

    ``bits``, ``rows``, ``sites``: the band's scores with their row and site
    (flat; row N marks padding). Rows whose band is one value (``point``)
    take it as both statistics. The kept counts need no pass over every
    score: below the band every score is <= the threshold and above it
    every score is greater (the threshold lies inside the band), so a site
    keeps its size minus its scores below the band minus its band scores
    <= the threshold (a point band: minus its scores <= that value).
    """
    num_rows = tf.shape(rank_lower)[0]  # static inside XLA, unlike a tensor argument
    num_sites = len(sizes)
    lower_bits, at_most = _kth_smallest_flat(bits, rows, num_rows, rank_lower)
    padded = tf.concat([lower_bits, [_INT_MAX]], axis=0)
    larger = tf.where(bits > tf.gather(padded, rows), bits, _INT_MAX)
    above = tf.math.unsorted_segment_min(larger, rows, num_rows + 1)[:num_rows]
    upper_bits = tf.where(at_most >= rank_upper + 1, lower_bits, above)
    lower_bits, upper_bits = tf.where(point, lo, lower_bits), tf.where(point, lo, upper_bits)
    threshold, t_bits = _threshold_bits(lower_bits, upper_bits, gamma)
    t_padded = tf.concat([t_bits, [-1]], axis=0)  # padding counts nowhere
    at_or_below = tf.cast(bits <= tf.gather(t_padded, rows), tf.int32)
    in_band = tf.math.unsorted_segment_sum(at_or_below, rows * num_sites + sites, (num_rows + 1) * num_sites)
    in_band = tf.reshape(in_band[: num_rows * num_sites], [num_rows, num_sites])
    at_most_t = tf.where(point[:, None], through, below + in_band)
    return threshold, t_bits, tf.constant(sizes, tf.int32)[None, :] - at_most_t


def _length_bucket(count):
    """The smallest power of two >= ``count`` (int32 scalar; 1 for 0; ``count`` itself past 2**30)."""
    value = tf.maximum(count, 1) - 1
    for shift in (1, 2, 4, 8, 16):  # every bit below the highest set bit of count - 1, then + 1
        value = tf.bitwise.bitwise_or(value, tf.bitwise.right_shift(value, shift))
    return tf.where(count > (1 << 30), count, value + 1)


def _gather_band(f, where, size):
    """The band members' bit patterns and rows: ``f`` (N, size) scores at flat positions ``where``."""
    return _as_bits(tf.gather(tf.reshape(f, [-1]), where)), tf.cast(where // size, tf.int32)


def _pad_band(bits, rows, sites, batch, length):
    """The band's flat lists padded to ``length`` (depends on the batch only:
    one XLA program per batch size); padding has row ``batch`` and counts nowhere."""
    pad = length - tf.shape(bits)[0]
    return (tf.concat([bits, tf.zeros([pad], tf.int32)], 0),
            tf.concat([rows, tf.fill([pad], batch)], 0),
            tf.concat([sites, tf.zeros([pad], tf.int32)], 0))


def _compact_band(flat, inside, sizes, length):
    """The band members' bit patterns, rows and sites, flat and padded to ``length``.

    ``inside``: per site, bool like ``flat`` (``_band_members``); the order is
    (site, row, position). Uses ``tf.where`` (dynamic shapes): never inside
    one XLA program. ``keras_pathways.native``'s op gives the same lists in one pass.
    """
    batch = tf.shape(flat[0])[0]
    bits, rows, sites = [], [], []
    for j, (f, m, size) in enumerate(zip(flat, inside, sizes)):
        where = tf.where(tf.reshape(m, [-1]))[:, 0]  # flat positions (int64: batch * size may pass 2**31)
        count = tf.shape(where)[0]
        # XLA gathers 2-3 times faster than TF's per-element gather; padded
        # to a power of two, a site compiles once per length bucket, not per count.
        padded = tf.pad(where, [[0, _length_bucket(count) - count]])
        site_bits, site_rows = compiling.part(
            lambda f, w, size=size: _gather_band(f, w, size), kind="selection")(f, padded)
        bits.append(site_bits[:count])
        rows.append(site_rows[:count])
        sites.append(tf.fill([count], j))
    return _pad_band(tf.concat(bits, 0), tf.concat(rows, 0), tf.concat(sites, 0), batch, length)


def band_cap(num_values, sample, a, c):
    """Band scores room per row: the expected (c - a + 1) / sample of ``num_values``, plus 5 relative std."""
    # The band's share is Beta-distributed, relative std about 1 / sqrt(c - a + 1):
    # room for 5 of those per row (the total over the batch is what must fit).
    width = max(c - a + 1, 1)  # (c < a only when a test forces a miss)
    return min(num_values, int((1 + 5 / math.sqrt(width)) * width * num_values / sample) + 64)


BandPlan = collections.namedtuple("BandPlan", "positions sample a c cap")


def band_plan(sizes, lower, upper):
    """The band's constants for rows of sites ``sizes`` and wanted ranks ``lower``..``upper``:
    the sample positions per site, the sample size, the two sample ranks that
    bracket the wanted ranks, and the band's room per row (``band_cap``)."""
    num_values = sum(sizes)
    positions = _sample_positions(sizes, band_sample_size(num_values))
    sample = sum(len(p) for p in positions)
    a, c = band_position(num_values, sample, lower, upper)
    return BandPlan(positions, sample, a, c, band_cap(num_values, sample, a, c))


def _band_statistics(flat, sizes, lower, upper, gamma):
    """The threshold, its bits and the kept counts through a sampled band; bit-identical results.

    A fixed random sample of each row's scores, sorted, gives two values
    ``lo <= hi`` that bracket the wanted ranks with high probability. The
    compiled op (``keras_pathways.native``) counts the scores below ``lo``
    and up to ``hi`` per site and collects those in between in one pass;
    without it one XLA pass counts and one marks, and ``tf.where`` finds
    them. When every row's ranks fall inside its band (and
    the band is not too full), the exact order statistics and the kept
    counts come from the band's scores alone (``_band_finish``), else from
    the radix select over all scores (the fallback). Uses dynamic shapes
    (``tf.where``): never inside one XLA program.

    Returns:
        ``(threshold, t_bits, kept)``: float64 (N,), int32 (N,), int32 (N, sites).
    """
    batch = tf.shape(flat[0])[0]
    plan = band_plan(sizes, lower, upper)
    cap = plan.cap

    lo, hi = _sample_statistics(flat, plan.positions, plan.a, plan.c)
    scan = native.band_scan()
    if scan is None:  # counting here, marking and compacting in from_band (four passes)
        below_sites, through_sites = compiling.part(_band_counts, kind="selection")(flat, lo, hi)
    else:  # one pass: the counts and the band's members
        below_sites, through_sites, *band = scan(flat, lo, hi)
    below, through = tf.reduce_sum(below_sites, axis=1), tf.reduce_sum(through_sites, axis=1)
    ranks_in = tf.logical_and(below <= lower, upper < through)
    point = tf.equal(lo, hi)
    fits = tf.reduce_sum(tf.where(point, 0, through - below)) <= cap * batch

    def exact(f):
        threshold, t_bits = _threshold_bits(*_exact_statistics(f, lower, upper), gamma)
        return threshold, t_bits, _kept_counts(f, t_bits)

    def from_band():
        if scan is None:
            inside = compiling.part(_band_members, kind="selection")(flat, lo, hi)
            bits, rows, sites = _compact_band(flat, inside, sizes, batch * cap)
        else:
            bits, rows, sites = _pad_band(*band, batch, batch * cap)
        finish = compiling.part(
            lambda *args: _band_finish(*args, sizes=sizes, gamma=gamma), kind="selection")
        return finish(bits, rows, sites, lower - below, upper - below, lo, point, below_sites, through_sites)

    return tf.cond(tf.reduce_all(tf.logical_and(ranks_in, fits)), from_band,
                   lambda: compiling.part(exact, kind="selection")(flat))


def _keep_masks(scores, t_bits):
    """bool masks shaped like ``scores``: |s| > the threshold (one elementwise pass)."""
    batch = tf.shape(scores[0])[0]
    return [tf.reshape(tf.reshape(_as_bits(s), [batch, -1]) > t_bits[:, None], tf.shape(s)) for s in scores]


def _threshold_and_masks(scores, lower_bits, upper_bits, gamma, float_masks=True):
    threshold, t_bits = _threshold_bits(lower_bits, upper_bits, gamma)
    batch = tf.shape(scores[0])[0]
    keeps = _keep_masks(scores, t_bits)
    kept = _kept_counts([tf.reshape(s, [batch, -1]) for s in scores], t_bits)
    out = {"keep": keeps, "threshold": threshold, "kept": kept}
    if float_masks:
        out["masks"] = [tf.cast(k, tf.float32) for k in keeps]
    return out


def select(scores, sparsity, float_masks=True):
    """Global percentile selection over all sites, per input.

    Compiled as "selection" parts (``keras_pathways.compiling``). Where the
    step is not one XLA program and rows are large (``BAND_MIN_VALUES``), the
    order statistics come from the sampled band (``_band_statistics``), else
    from the radix select over all scores; both give the same bits.

    Args:
        scores: list of float32 tensors (N, *site_shape), finite; their
            magnitudes are selected (|s| is read from the bit patterns, so
            signed scores need no ``abs`` pass first).
        sparsity: float in [0, 1).
        float_masks: also return the float masks (the pathway step uses the
            bool ones: one array less to write).

    Returns:
        dict with ``masks`` (list of float32 {0, 1} tensors shaped like
        ``scores``; only with ``float_masks``), ``keep`` (the same as bool),
        ``threshold`` (N,) float64, ``kept`` (N, num_sites) int32 counts of
        kept neurons per site.
    """
    batch = tf.shape(scores[0])[0]
    sizes = [int(np.prod(s.shape[1:])) for s in scores]
    # The sizes spelled out: with an unknown batch (a serving signature) a -1
    # would leave the rows' length unknown to the trace.
    flat = [tf.reshape(s, [batch, m]) for s, m in zip(scores, sizes)]
    lower, upper, gamma = percentile_position(sum(sizes), sparsity)
    if sum(sizes) >= BAND_MIN_VALUES and compiling.dynamic_shapes_allowed():
        threshold, t_bits, kept = _band_statistics(flat, sizes, lower, upper, gamma)
        keeps = compiling.part(_keep_masks, kind="selection")(scores, t_bits)
        out = {"keep": keeps, "threshold": threshold, "kept": kept}
        if float_masks:
            out["masks"] = [tf.cast(k, tf.float32) for k in keeps]
        return out
    exact = compiling.part(lambda f: _exact_statistics(f, lower, upper), kind="selection")
    lower_bits, upper_bits = exact(flat)
    finish = compiling.part(lambda s, lb, ub: _threshold_and_masks(s, lb, ub, gamma, float_masks),
                            kind="selection")
    return finish(scores, lower_bits, upper_bits)
