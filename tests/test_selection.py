"""Global percentile selection: exactly numpy's percentile, strict >, kept fraction."""

import numpy as np
import pytest
import tensorflow as tf

from keras_pathways.pathways import selection


def run_select(arrays, sparsity):
    step = tf.function(lambda *a: selection.select(list(a), sparsity), jit_compile=True)
    out = step(*[tf.constant(a) for a in arrays])
    return {k: ([m.numpy() for m in v] if isinstance(v, list) else v.numpy()) for k, v in out.items()}


def reference(arrays, sparsity):
    """docs/method.md §3 with numpy: pool all sites per input, percentile, keep S > thr."""
    n = arrays[0].shape[0]
    thresholds, masks = [], [np.zeros(a.shape, bool) for a in arrays]
    for i in range(n):
        pooled = np.concatenate([a[i].ravel() for a in arrays]).astype(np.float64)
        thr = np.percentile(pooled, 100 * sparsity)
        thresholds.append(thr)
        for a, m in zip(arrays, masks):
            m[i] = a[i] > thr
    return np.array(thresholds), masks


def site_arrays(kind, rng):
    if kind == "uniform":
        return [rng.random((3, 4, 4, 2)).astype(np.float32), rng.random((3, 9)).astype(np.float32)]
    if kind == "ties_and_dead":
        a = (rng.integers(0, 5, (3, 6, 6)) * 0.25).astype(np.float32)
        a[:, :3] = 0.0
        return [a, np.full((3, 7), 0.5, np.float32)]
    if kind == "wide_range":
        a = (rng.standard_normal((2, 50)) ** 2).astype(np.float32)
        return [a * 1e-30, a * 1e30, np.zeros((2, 5), np.float32)]
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["uniform", "ties_and_dead", "wide_range"])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.85, 0.9, 0.99, 0.123])
def test_threshold_and_masks_equal_numpy_percentile(kind, sparsity):
    arrays = site_arrays(kind, np.random.default_rng(7))
    out = run_select(arrays, sparsity)
    thresholds, masks = reference(arrays, sparsity)
    # XLA may contract the interpolation into a fused multiply-add: <= 1 ulp.
    np.testing.assert_allclose(out["threshold"], thresholds, rtol=4e-16, atol=0)
    for got, want in zip(out["masks"], masks):
        np.testing.assert_array_equal(got.astype(bool), want)
    np.testing.assert_array_equal(out["kept"], np.stack([m.reshape(m.shape[0], -1).sum(1) for m in masks], 1))
    for keep, want in zip(out["keep"], masks):  # the bool masks, written in the same pass
        assert keep.dtype == bool
        np.testing.assert_array_equal(keep, want)


def test_kept_fraction_follows_sparsity_without_ties():
    scores = np.random.default_rng(1).random((4, 1000)).astype(np.float32) + 0.01
    out = run_select([scores], 0.85)
    np.testing.assert_array_equal(out["kept"][:, 0], [150, 150, 150, 150])


def test_dead_neurons_are_never_kept_and_kept_fraction_drops():
    scores = np.zeros((2, 100), np.float32)
    scores[:, :10] = np.arange(1, 11, dtype=np.float32)  # 90 % dead
    out = run_select([scores], 0.5)
    assert (out["threshold"] == 0.0).all()
    np.testing.assert_array_equal(out["kept"][:, 0], [10, 10])  # 10 % < 1 - 0.5
    assert not out["masks"][0][:, 10:].any()


def test_strict_inequality_at_the_threshold():
    scores = np.array([[1.0, 2.0, 2.0, 2.0, 3.0]], np.float32)
    out = run_select([scores], 0.5)  # percentile 50 = 2.0
    assert out["threshold"][0] == 2.0
    np.testing.assert_array_equal(out["masks"][0][0], [0, 0, 0, 0, 1])


@pytest.mark.parametrize("bad", [1.0, -0.1, float("nan"), "dense", None, 85])
def test_sparsity_outside_unit_interval_is_refused(bad):
    with pytest.raises(ValueError, match=r"sparsity"):
        selection.check_sparsity(bad)


def test_percentile_position_matches_numpy():
    for n in (1, 2, 7, 1000, 9_100_000):
        for s in (0.0, 0.5, 0.85, 0.9, 0.999):
            lower, upper, gamma = selection.percentile_position(n, s)
            assert 0 <= lower <= upper <= n - 1
            assert 0.0 <= gamma < 1.0
            v = np.arange(n, dtype=np.float64)
            assert np.percentile(v, 100 * s) == pytest.approx(lower + gamma * (upper - lower), abs=1e-6)


# ------------------------------------------------ the sampled band (large rows)
from keras_pathways import compiling, native  # noqa: E402


def run_select_mode(arrays, sparsity, mode):
    """``select`` traced as the engine traces it: a plain tf.function under a jit_parts
    mode, or one XLA program for "whole" (the radix select, as on GPUs)."""
    step = tf.function(lambda *a: selection.select(list(a), sparsity), autograph=False,
                       jit_compile=mode == "whole")
    with compiling.jit_parts(mode):
        out = step(*[tf.constant(a) for a in arrays])
    return {k: ([m.numpy() for m in v] if isinstance(v, list) else v.numpy()) for k, v in out.items()}


def large_sites(kind, rng):
    """Rows of 35,000 scores over three sites (above BAND_MIN_VALUES)."""
    shapes = [(3, 60, 20, 20), (3, 10_000), (3, 10, 10, 10)]
    arrays = [rng.random(s).astype(np.float32) for s in shapes]
    if kind == "dead":  # half the neurons dead: a huge tie at 0
        arrays = [np.where(rng.random(a.shape) < 0.5, 0.0, a).astype(np.float32) for a in arrays]
    elif kind == "quantized":  # 16 levels: large ties inside the band
        arrays = [(np.floor(a * 16) / 16).astype(np.float32) for a in arrays]
    elif kind == "heavy_tail":
        arrays = [(a ** 6 * 1e-3).astype(np.float32) for a in arrays]  # no subnormals
    return arrays


def assert_equals_reference(arrays, sparsity, mode):
    out = run_select_mode(arrays, sparsity, mode)
    thresholds, masks = reference([np.abs(a) for a in arrays], sparsity)
    # One XLA program may contract the interpolation into a fused multiply-add: <= 1 ulp.
    np.testing.assert_allclose(out["threshold"], thresholds, rtol=4e-16 if mode == "whole" else 0, atol=0)
    for got, keep, want in zip(out["masks"], out["keep"], masks):
        np.testing.assert_array_equal(got.astype(bool), want)
        np.testing.assert_array_equal(keep, want)
    # The band derives the kept counts from its counting pass: they must be exact too.
    np.testing.assert_array_equal(out["kept"], np.stack([m.reshape(m.shape[0], -1).sum(1) for m in masks], 1))


@pytest.mark.parametrize("kind", ["uniform", "dead", "quantized", "heavy_tail"])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.85, 0.99])
def test_band_selection_equals_numpy_percentile(kind, sparsity):
    arrays = large_sites(kind, np.random.default_rng(11))
    assert sum(int(np.prod(a.shape[1:])) for a in arrays) >= selection.BAND_MIN_VALUES
    assert_equals_reference(arrays, sparsity, "selection")  # XLA parts (the CPU default)


@pytest.mark.parametrize("kind", ["uniform", "dead"])
def test_band_selection_in_a_plain_function_equals_numpy_percentile(kind):
    assert_equals_reference(large_sites(kind, np.random.default_rng(12)), 0.85, False)


@pytest.mark.parametrize("z", [-40.0, 0.0])
def test_band_that_misses_falls_back_to_the_exact_select(monkeypatch, z):
    # z = -40: the band lies beside the wanted rank; z = 0: often too narrow.
    monkeypatch.setattr(selection, "BAND_Z", z)
    arrays = large_sites("uniform", np.random.default_rng(3))
    for sparsity in (0.3, 0.85):
        assert_equals_reference(arrays, sparsity, "selection")


def test_band_and_radix_agree_bit_for_bit_in_one_xla_program():
    arrays = large_sites("heavy_tail", np.random.default_rng(5))
    band = run_select_mode(arrays, 0.85, "selection")
    radix = run_select(arrays, 0.85)  # one XLA program: the radix select
    np.testing.assert_array_equal(band["threshold"], radix["threshold"])
    np.testing.assert_array_equal(band["kept"], radix["kept"])


def test_band_position_brackets_the_ranks():
    a, c = selection.band_position(1_000_000, 16384, 849_999, 850_000)
    assert 0 <= a < 0.85 * 16384 < c < 16384
    assert (c - a) / 16384 < 0.03  # about 2.3 % of the scores fall in the band
    assert selection.band_position(100, 10, 0, 0)[0] == 0
    assert selection.band_position(100, 10, 99, 99)[1] == 9


@pytest.mark.parametrize("lane_rows", [3, 1000, selection.LANE_ROWS])
def test_band_counts_packed_in_lanes_are_exact(monkeypatch, lane_rows):
    # Few rows per lane: many lanes and a remainder in every site, and a site
    # smaller than one lane row; the counts must not change.
    monkeypatch.setattr(selection, "LANE_ROWS", lane_rows)
    rng = np.random.default_rng(21)
    arrays = large_sites("quantized", rng) + [rng.random((3, 7)).astype(np.float32)]
    flat = [tf.constant(a.reshape(3, -1)) for a in arrays]
    lo = tf.bitcast(tf.constant([0.25, 0.5, 0.0], tf.float32), tf.int32)
    hi = tf.bitcast(tf.constant([0.5, 0.5, 0.75], tf.float32), tf.int32)
    below, through = tf.function(selection._band_counts, jit_compile=True)(flat, lo, hi)
    for j, a in enumerate(arrays):
        a = a.reshape(3, -1)
        np.testing.assert_array_equal(below.numpy()[:, j], (a < np.array([[0.25], [0.5], [0.0]])).sum(1))
        np.testing.assert_array_equal(through.numpy()[:, j], (a <= np.array([[0.5], [0.5], [0.75]])).sum(1))


@pytest.mark.parametrize("mode", ["selection", False, "whole"])
def test_signed_scores_are_selected_by_magnitude(mode):
    # The pathway step hands the selection signed a * dy/da: |s| is read from the bits.
    rng = np.random.default_rng(8)
    arrays = [a * np.where(rng.random(a.shape) < 0.5, -1, 1).astype(np.float32)
              for a in large_sites("dead", rng)]
    assert_equals_reference(arrays, 0.85, mode)


# ------------------------------------------------ radix digits for any batch size
def test_digit_widths_cover_the_magnitude_bits():
    assert selection.digit_widths(8) == [15, 16]  # two passes, as for a ResNet50 batch
    for rows in (1, 8, 15, 16, 64, 256, 4096, None):
        widths = selection.digit_widths(rows)
        assert sum(widths) == 31 and max(widths) <= 16 and min(widths) >= 7
        if rows is not None:  # the histograms of one pass stay near 2**20 counts
            assert (rows + 1) * 2 ** max(widths) <= 2 ** 21 or max(widths) == 8
    assert len(selection.digit_widths(256)) == 3
    assert len(selection.digit_widths(None)) == 3  # unknown batch: small histograms


@pytest.mark.parametrize("widths", [[15, 16], [10, 10, 11], [7, 8, 8, 8]])
def test_radix_select_with_any_digit_widths_is_exact(widths):
    rng = np.random.default_rng(31)
    values = [rng.random((5, 300)).astype(np.float32) ** 4, (rng.integers(0, 4, (5, 50)) * 0.5).astype(np.float32)]
    bits = [tf.bitcast(tf.constant(v), tf.int32) for v in values]
    pooled = np.sort(np.concatenate(values, 1), axis=1)
    rank = np.array([0, 17, 200, 349, 349], np.int32)
    got, at_most = selection.kth_smallest_bits(bits, tf.constant(rank), widths)
    want = pooled[np.arange(5), rank]
    np.testing.assert_array_equal(tf.bitcast(got, tf.float32).numpy(), want)
    np.testing.assert_array_equal(at_most.numpy(), (pooled <= want[:, None]).sum(1))
    # The flat form (the band's), rows interleaved and padding (row 5) ignored.
    flat_bits = tf.concat([tf.reshape(b, [-1]) for b in bits] + [tf.zeros([7], tf.int32)], 0)
    rows = tf.concat([tf.repeat(tf.range(5), 300), tf.repeat(tf.range(5), 50), tf.fill([7], 5)], 0)
    got_flat, at_most_flat = selection._kth_smallest_flat(flat_bits, rows, 5, tf.constant(rank), widths)
    np.testing.assert_array_equal(got_flat.numpy(), got.numpy())
    np.testing.assert_array_equal(at_most_flat.numpy(), at_most.numpy())


@pytest.mark.parametrize("mode", ["selection", "whole"])
def test_large_batches_of_small_and_large_rows_equal_numpy_percentile(mode):
    # 96 rows: three-digit radix selects (small rows: over every score; large
    # rows: the band's); a dataset-scale batch of a small model.
    rng = np.random.default_rng(41)
    small = [np.where(rng.random((96, 6, 6, 8)) < 0.4, 0.0, rng.random((96, 6, 6, 8))).astype(np.float32)]
    large = [rng.random((96, 200, 180)).astype(np.float32) ** 3]
    for arrays in (small, large):
        assert_equals_reference(arrays, 0.85, mode)


def test_length_bucket_is_the_next_power_of_two():
    counts = [0, 1, 2, 3, 4, 5, 1000, 1024, 1025, 2**20, 2**20 + 1, 2**30, 2**30 + 1, 2**31 - 1]
    got = [int(selection._length_bucket(tf.constant(c, tf.int32))) for c in counts]
    assert got == [1, 1, 2, 4, 4, 8, 1024, 1024, 2048, 2**20, 2**21, 2**30, 2**30 + 1, 2**31 - 1]


def test_one_traced_step_stays_exact_when_band_sizes_change_bucket():
    """The band's gathers are XLA programs padded to power-of-two lengths: the same
    trace, fed batches whose band sizes differ (other buckets), stays exact."""
    rng = np.random.default_rng(21)
    step = tf.function(lambda *a: selection.select(list(a), 0.85), autograph=False)
    buckets = set()
    for kind in ("uniform", "dead", "heavy_tail", "quantized"):
        arrays = large_sites(kind, rng)
        buckets.add(band_length_buckets(arrays, 0.85))
        # The per-site padded gathers run only without the compiled op (keras_pathways.native).
        with compiling.jit_parts("selection"), native.use(False):
            out = step(*[tf.constant(a) for a in arrays])
        thresholds, masks = reference([np.abs(a) for a in arrays], 0.85)
        np.testing.assert_array_equal(out["threshold"].numpy(), thresholds)
        for keep, want in zip(out["keep"], masks):
            np.testing.assert_array_equal(keep.numpy(), want)
    assert step.experimental_get_tracing_count() == 1  # one trace served every batch
    assert len(buckets) >= 2  # the gathers really ran at other padded lengths


def band_length_buckets(arrays, sparsity):
    """The padded gather length of each site's band, as ``select`` computes it."""
    flat = [tf.reshape(tf.constant(a), [a.shape[0], -1]) for a in arrays]
    sizes = [int(np.prod(a.shape[1:])) for a in arrays]
    lower, upper, _ = selection.percentile_position(sum(sizes), sparsity)
    plan = selection.band_plan(sizes, lower, upper)
    lo, hi = selection._sample_statistics(flat, plan.positions, plan.a, plan.c)
    counts = [tf.reduce_sum(tf.cast(m, tf.int32)) for m in selection._band_members(flat, lo, hi)]
    return tuple(int(selection._length_bucket(k)) for k in counts)
