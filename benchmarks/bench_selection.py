"""Cost of the pathway selection alone, relative to a plain input gradient.

What is measured, for keras.applications ResNet50 (weights=None, 224x224x3,
batch 8, random images in [-1, 1], seeded): the NeuronMCT scores of one batch
are computed once (signed, as the pathway step hands them over) (49 sites, 9.1 M neurons per image); then, interleaved,

* reference: ``explain(model, x, method="gradient")`` (default compile mode);
* ``select(scores, 0.85, float_masks=False)`` (bool masks, what the pathway
  step runs) compiled four ways: "band" (a plain tf.function
  whose parts are XLA programs, with the band scanned by the compiled op of
  ``keras_pathways.native``: what ``explain`` runs on a CPU by default;
  left out when the op cannot be built), "band, without the compiled op"
  (the same with its four TensorFlow/XLA passes), "radix" (one XLA program:
  the radix select over every score, what runs inside a whole-step XLA
  program, e.g. on GPUs) and "band, plain" (no XLA at all:
  ``jit_compile=False``).

Every variant's threshold is checked to equal numpy's percentile. Printed:
median seconds per batch and the ratio to the gradient (the issue's aim for
the selection: <= 0.15 of a gradient on ResNet50).

With ``--pieces`` it also times each stage of the sampled band alone, on the
intermediate results of one run (same scores, interleaved with the
gradient): sample (draw and partial sort), the compiled op's one pass
(when it is built), the four passes it replaces (counting, marking,
finding and gathering the band: ``tf.where`` + the per-site XLA gathers),
the exact select inside the band, and writing the masks.

    python benchmarks/bench_selection.py --repeats 7 --json benchmarks/results/selection.json
    python benchmarks/bench_selection.py --pieces --repeats 9
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

try:
    import keras_pathways  # noqa: E402
except ImportError:  # run from a checkout without an install
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import keras_pathways  # noqa: E402

import common  # noqa: E402  (benchmarks/common.py, beside this script)
from keras_pathways import compiling, native  # noqa: E402
from keras_pathways.graph.rewrite import pathway_graph  # noqa: E402
from keras_pathways.pathways import scores as scores_lib  # noqa: E402
from keras_pathways.pathways import selection  # noqa: E402

SPARSITY = 0.85


def variants():
    """name -> callable(scores) running ``select`` as that variant."""

    def traced(mode, jit, use_native=True):
        function = tf.function(lambda s: selection.select(s, SPARSITY, float_masks=False), autograph=False,
                               jit_compile=jit)

        def run(scores):
            with compiling.jit_parts(mode), native.use(use_native):
                return function(scores)

        return run

    found = {"band": traced("selection", False)} if native.band_scan() is not None else {}
    return {
        **found,
        "band, without the compiled op": traced("selection", False, use_native=False),
        "radix (one XLA program)": traced("whole", True),
        "band, plain (no XLA)": traced(False, False),
    }


def band_pieces(scores, want):
    """name -> callable() running one stage of the sampled band on fixed inputs (README "Speed").

    The stages' threshold is checked against ``want`` (numpy's percentile).
    """
    batch = int(scores[0].shape[0])
    flat = [tf.reshape(s, [batch, -1]) for s in scores]
    sizes = [int(np.prod(s.shape[1:])) for s in scores]
    lower, upper, gamma = selection.percentile_position(sum(sizes), SPARSITY)
    plan = selection.band_plan(sizes, lower, upper)
    length = batch * plan.cap

    def stage(fn):
        function = tf.function(fn, autograph=False)

        def run(*args):
            with compiling.jit_parts("selection"), native.use(False):
                return function(*args)
        return run

    def xla(fn):
        return stage(lambda *args: compiling.part(fn, kind="selection")(*args))

    sample_stage = stage(lambda f: selection._sample_statistics(f, plan.positions, plan.a, plan.c))
    count_stage = xla(selection._band_counts)
    mark_stage = xla(selection._band_members)
    find_stage = stage(lambda f, inside: selection._compact_band(f, inside, sizes, length))
    finish_stage = xla(lambda bits, rows, sites, lo, below_sites, through_sites: selection._band_finish(
        bits, rows, sites, lower - tf.reduce_sum(below_sites, 1), upper - tf.reduce_sum(below_sites, 1),
        lo, tf.zeros([batch], tf.bool), below_sites, through_sites, sizes=sizes, gamma=gamma))
    masks_stage = xla(selection._keep_masks)

    lo, hi = sample_stage(flat)
    below_sites, through_sites = count_stage(flat, lo, hi)
    inside = mark_stage(flat, lo, hi)
    band = find_stage(flat, inside)
    threshold, t_bits, _ = finish_stage(*band, lo, below_sites, through_sites)
    if not np.array_equal(threshold.numpy(), want):
        raise SystemExit("the band's stages give another threshold than numpy's percentile")
    scan = native.band_scan()
    found = {}
    if scan is not None:
        scan_stage = tf.function(scan, autograph=False)
        portable = tf.function(native.band_scan(vectorized=False), autograph=False)
        found = {"compiled op: counting, marking, finding, gathering": lambda: scan_stage(flat, lo, hi),
                 "compiled op, portable loop (no AVX-512)": lambda: portable(flat, lo, hi)}
    return {
        "sample and partial sort": lambda: sample_stage(flat),
        **found,
        "counting": lambda: count_stage(flat, lo, hi),
        "marking the band": lambda: mark_stage(flat, lo, hi),
        "finding and gathering it": lambda: find_stage(flat, inside),
        "exact select inside it": lambda: finish_stage(*band, lo, below_sites, through_sites),
        "writing the masks": lambda: masks_stage(scores, t_bits),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", metavar="PATH", default=None)
    parser.add_argument("--pieces", action="store_true", help="also time each stage of the sampled band alone")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None)
    x = np.random.default_rng(0).uniform(-1, 1, (args.batch, 224, 224, 3)).astype("float32")
    graph = pathway_graph(model)
    scores, _, _ = tf.function(lambda v: scores_lib.mct(graph, v, tf.fill([args.batch], -1), absolute=False),
                               autograph=False)(tf.constant(x))
    pooled = np.concatenate([np.abs(s.numpy()).reshape(args.batch, -1) for s in scores], 1).astype(np.float64)
    want = np.percentile(pooled, 100 * SPARSITY, axis=1)
    del pooled
    print(f"ResNet50, batch {args.batch}: {len(scores)} sites, {graph.num_neurons:,} neurons/image",
          flush=True)

    runs = variants()
    if args.pieces:
        runs.update({f"piece: {name}": (lambda _, p=piece: p()) for name, piece in band_pieces(scores, want).items()})
    runs["gradient (reference)"] = lambda _: keras_pathways.explain(model, x, method="gradient").attributions
    for name, run in runs.items():  # warm-up: tracing and compiling
        out = run(scores)
        if isinstance(out, dict) and not np.array_equal(out["threshold"].numpy(), want):
            raise SystemExit(f"{name}: threshold differs from numpy's percentile")
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            out = run(scores)
            if isinstance(out, dict):
                out["kept"].numpy()
            times[name].append(time.perf_counter() - start)
    reference = statistics.median(times["gradient (reference)"])
    results = {name: {**common.timing_summary(t), "ratio_to_gradient": statistics.median(t) / reference}
               for name, t in times.items()}
    print(f"\n| selection (ResNet50, batch {args.batch}, sparsity {SPARSITY}) | s / batch | × gradient |")
    print("| --- | --- | --- |")
    for name, r in results.items():
        print(f"| {name} | {r['median_s']:.3f} | {r['ratio_to_gradient']:.2f} |")
    if args.json:
        common.write_json_atomic(args.json, {"environment": common.environment(), "results": results})


if __name__ == "__main__":
    main()
