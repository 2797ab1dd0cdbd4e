"""The selection's compiled band scan (keras_pathways.native): same bits as the XLA passes."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_pathways import compiling, native
from keras_pathways.pathways import selection

HAVE_COMPILER = shutil.which(native._compiler()) is not None


def bits_of(values):
    return np.bitwise_and(np.asarray(values, np.float32).view(np.int32), 0x7FFFFFFF)


def scan_inputs(rng):
    """Three sites (one crosses the op's 32,768-score chunks and none is a multiple of 16),
    signed scores with ties, -0.0, subnormals and an infinity; a wide band, a
    one-value band and a band starting at 0."""
    a = rng.standard_normal((3, 70_001)).astype(np.float32)
    a[:, :5000] = np.round(a[:, :5000] * 4) / 4  # ties
    a[:, 5000:5100] = -0.0
    a[:, 5100:5200] = np.float32(1e-41) * rng.integers(-3, 4, (3, 100))  # subnormals
    a[1, 7] = np.inf
    b = rng.standard_normal((3, 5, 5, 3)).astype(np.float32)
    c = np.zeros((3, 17), np.float32)
    flat = [a, b.reshape(3, -1), c]
    lo = np.array([bits_of(0.5), bits_of(0.25), 0], np.int32)
    hi = np.array([bits_of(1.25), bits_of(0.25), bits_of(1e-41)], np.int32)
    return flat, lo, hi


def reference_scan(flat, lo, hi):
    """numpy: the counts per (row, site) and the members in (site, row, position) order."""
    below = np.array([[np.sum(bits_of(f[r]) < lo[r]) for f in flat] for r in range(len(lo))], np.int32)
    through = np.array([[np.sum(bits_of(f[r]) <= hi[r]) for f in flat] for r in range(len(lo))], np.int32)
    members, rows, sites = [], [], []
    for j, f in enumerate(flat):
        for r in range(len(lo)):
            v = bits_of(f[r])
            if lo[r] < hi[r]:
                inside = v[(v >= lo[r]) & (v <= hi[r])]
                members.append(inside)
                rows.append(np.full(inside.size, r))
                sites.append(np.full(inside.size, j))
    return below, through, np.concatenate(members), np.concatenate(rows), np.concatenate(sites)


def require_op():
    if not HAVE_COMPILER:
        pytest.skip(f"no C++ compiler {native._compiler()!r} to build the op (the Makefile installs g++)")
    scan = native.band_scan()
    assert scan is not None, native.status()  # a compiler is there: the op must build
    return scan


@pytest.mark.parametrize("vectorized", [True, False])
def test_band_scan_equals_numpy_and_the_xla_passes(vectorized):
    require_op()
    scan = native.band_scan(vectorized=vectorized)  # AVX-512 (where the CPU has it) and the portable loop
    flat, lo, hi = scan_inputs(np.random.default_rng(0))
    got = [t.numpy() for t in scan([tf.constant(f) for f in flat], tf.constant(lo), tf.constant(hi))]
    want = reference_scan(flat, lo, hi)
    for g, w, name in zip(got, want, ["below", "through", "bits", "rows", "sites"]):
        np.testing.assert_array_equal(g, w, err_msg=name)
    assert got[2].size > 1000 and 1 not in got[3]  # members found; the one-value band (row 1) marks none
    # The four TensorFlow/XLA passes give the same lists (what runs without the op).
    tensors = [tf.constant(f) for f in flat]
    counts = tf.function(selection._band_counts, jit_compile=True)(tensors, tf.constant(lo), tf.constant(hi))
    np.testing.assert_array_equal(counts[0].numpy(), got[0])
    np.testing.assert_array_equal(counts[1].numpy(), got[1])
    inside = selection._band_members(tensors, tf.constant(lo), tf.constant(hi))
    sizes = [f.shape[1] for f in flat]
    with compiling.jit_parts("selection"):
        band = selection._compact_band(tensors, inside, sizes, got[2].size + 5)
    for g, w in zip(got[2:], band):
        np.testing.assert_array_equal(w.numpy()[: g.size], g)


def test_band_scan_in_a_traced_step_and_an_empty_band():
    scan = require_op()
    flat = [tf.constant(np.ones((2, 40), np.float32))]
    lo, hi = tf.constant(bits_of([2.0, 2.0])), tf.constant(bits_of([3.0, 3.5]))
    below, through, bits, rows, sites = tf.function(scan, autograph=False)(flat, lo, hi)
    np.testing.assert_array_equal(below.numpy(), [[40], [40]])
    np.testing.assert_array_equal(through.numpy(), [[40], [40]])
    assert bits.shape == rows.shape == sites.shape == (0,)


def test_band_scan_rejects_scores_that_are_not_batch_matrices():
    scan = require_op()
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\(batch, m\) matrices"):
        scan([tf.ones((2, 3, 4))], tf.constant([0, 0]), tf.constant([1, 1]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\(batch, m\) matrices"):
        scan([tf.ones((3, 4))], tf.constant([0, 0]), tf.constant([1, 1]))


@pytest.mark.parametrize("kind", ["uniform", "dead", "quantized"])
@pytest.mark.parametrize("sparsity", [0.5, 0.85, 0.99])
def test_selection_is_identical_with_and_without_the_op(kind, sparsity):
    require_op()
    rng = np.random.default_rng(21)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in [(3, 60, 20, 20), (3, 10_001), (3, 9, 9, 9)]]
    if kind == "dead":
        arrays = [np.where(rng.random(a.shape) < 0.9, 0.0, a).astype(np.float32) for a in arrays]
    elif kind == "quantized":
        arrays = [(np.floor(a * 4) / 4).astype(np.float32) for a in arrays]
    outs = []
    for use in (True, False):
        step = tf.function(lambda *a: selection.select(list(a), sparsity), autograph=False)
        with compiling.jit_parts("selection"), native.use(use):
            outs.append(step(*[tf.constant(a) for a in arrays]))
    pooled = np.concatenate([np.abs(a).reshape(3, -1) for a in arrays], 1).astype(np.float64)
    want = np.percentile(pooled, 100 * sparsity, axis=1)
    for out in outs:
        np.testing.assert_array_equal(out["threshold"].numpy(), want)
    np.testing.assert_array_equal(outs[0]["kept"].numpy(), outs[1]["kept"].numpy())
    for a, b in zip(outs[0]["keep"], outs[1]["keep"]):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_environment_variable_turns_the_op_off(monkeypatch):
    monkeypatch.setenv("KERAS_PATHWAYS_NATIVE", "0")
    assert not native.enabled() and native.band_scan() is None
    with native.use(True):
        assert native.enabled()


def test_no_compiler_warns_once_and_the_selection_stays_exact(tmp_path):
    # A fresh process with an empty cache and no compiler: a RuntimeWarning that
    # names the problem and the fix, status() says so, and the passes give numpy's result.
    code = """
import warnings, numpy as np, tensorflow as tf
from keras_pathways import compiling, native
from keras_pathways.pathways import selection
a = np.random.default_rng(0).standard_normal((2, 40000)).astype(np.float32)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    with compiling.jit_parts("selection"):
        out = tf.function(lambda s: selection.select([s], 0.85), autograph=False)(tf.constant(a))
        tf.function(lambda s: selection.select([s], 0.5), autograph=False)(tf.constant(a))
mine = [str(w.message) for w in caught if "compiled op" in str(w.message)]
assert len(mine) == 1, mine
assert "no C++ compiler" in mine[0] and "apt-get install g++" in mine[0], mine[0]
assert native.status()["loaded"] is False and "no C++ compiler" in native.status()["error"]
np.testing.assert_array_equal(out["threshold"].numpy(), np.percentile(np.abs(a).astype(np.float64), 85, axis=1))
print("ok")
"""
    env = dict(os.environ, CXX="/nonexistent/c++", KERAS_PATHWAYS_HOME=str(tmp_path), TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("KERAS_PATHWAYS_NATIVE", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
    assert not list(tmp_path.rglob("*.so"))  # nothing half-built left behind


def test_a_build_goes_to_the_cache_atomically_and_is_reused(tmp_path, monkeypatch):
    if not HAVE_COMPILER:
        pytest.skip("no C++ compiler")
    monkeypatch.setenv("KERAS_PATHWAYS_HOME", str(tmp_path))
    path = native.library_path()
    assert path.startswith(str(tmp_path)) and not os.path.exists(path)
    assert native.build() == path and os.path.getsize(path) > 0
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["band_scan.so"]  # no temp files
    monkeypatch.setenv("CXX", "/nonexistent/c++")  # another compiler: another key, and it cannot build
    assert native.library_path() != path
    with pytest.raises(RuntimeError, match="no C.. compiler '/nonexistent/c..'"):
        native.build()


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=8, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=st.integers(1, 3), sizes=st.lists(st.integers(1, 30_000), min_size=1, max_size=4),
       kind=st.sampled_from(["normal", "exponential", "quantized", "mostly_dead"]),
       sparsity=st.floats(0.0, 0.999), seed=st.integers(0, 2**16))
def test_selection_with_the_op_equals_numpy_for_random_sites(batch, sizes, kind, sparsity, seed):
    # Every site layout with at least BAND_MIN_VALUES scores per row runs the band.
    require_op()
    if sum(sizes) < selection.BAND_MIN_VALUES:
        sizes = sizes + [selection.BAND_MIN_VALUES - sum(sizes)]
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal((batch, m)).astype(np.float32) for m in sizes]
    if kind == "exponential":
        arrays = [np.exp(4 * a).astype(np.float32) for a in arrays]
    elif kind == "quantized":
        arrays = [(np.round(a * 3) / 3).astype(np.float32) for a in arrays]
    elif kind == "mostly_dead":
        arrays = [np.where(rng.random(a.shape) < 0.8, 0.0, a).astype(np.float32) for a in arrays]
    step = tf.function(lambda *a: selection.select(list(a), sparsity), autograph=False)
    with compiling.jit_parts("selection"), native.use(True):
        out = step(*[tf.constant(a) for a in arrays])
    pooled = np.concatenate([np.abs(a) for a in arrays], 1).astype(np.float64)
    want = np.percentile(pooled, 100 * sparsity, axis=1)
    np.testing.assert_array_equal(out["threshold"].numpy(), want)
    for keep, a in zip(out["keep"], arrays):
        np.testing.assert_array_equal(keep.numpy(), np.abs(a) > want[:, None])
    np.testing.assert_array_equal(out["kept"].numpy(),
                                  np.stack([(np.abs(a) > want[:, None]).sum(1) for a in arrays], 1))
