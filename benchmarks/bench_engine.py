"""Cost of the pathway gradient relative to the plain input gradient.

What is measured, for keras.applications VGG16 and ResNet50 (weights=None,
224x224x3 input, 1000 classes, default softmax head) on one batch of random
float32 images in [-1, 1] (seeded numpy):

* reference: ``explain(model, x, method="gradient")`` -- one forward and one
  backward pass (the plain input gradient of the target logit);
* measured: ``explain(model, x, method="pathway_gradient", sparsity=0.85)``
  with the default ``return_masks=True`` and with ``return_masks=False``.

Each method gets one warm-up call (tracing + XLA compilation; its wall time is
reported as "compile s"), then ``--repeats`` timed calls, interleaved
(grad, pw, pw_nomask, grad, pw, ...) so drift in machine load hits all three
alike. Reported per model: median seconds per batch with min/max spread, the
ratio median(pathway) / median(gradient), images per second, the peak resident
set (``ru_maxrss``) after the model, and the per-call RSS growth when psutil
(or, without it, Linux /proc/self/statm) can read the current RSS: RSS just
after a call (its result, e.g. the returned masks, still alive) minus RSS just
before it. Also printed: the number of neuron sites and of neurons per image,
and the mean real kept fraction.

The physical floor of the ratio is about 2: the pathway gradient needs one
forward + backward pass to score every neuron (NeuronMCT, |a * dy/da|), then
one more forward + backward pass through the masked network (the pathway) for
the input gradient; the percentile selection in between should be cheap.
Absolute times depend on the machine and its load; the ratios are what matter.

    python benchmarks/bench_engine.py --models vgg16 resnet50 --repeats 3 \
        --json /tmp/bench_engine.json
"""

import argparse
import os
import resource
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

try:
    import psutil  # noqa: E402
except ImportError:  # optional
    psutil = None

MODELS = {
    "vgg16": keras.applications.VGG16,
    "resnet50": keras.applications.ResNet50,
}
SPARSITY = 0.85


# ------------------------------------------------------------------- memory
def peak_rss_mib():
    """Peak resident set of this process so far, MiB (ru_maxrss)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def _statm_rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def current_rss_source():
    if psutil is not None:
        return "psutil"
    try:
        _statm_rss_bytes()
        return "/proc/self/statm"
    except (OSError, ValueError, IndexError):
        return None


RSS_SOURCE = current_rss_source()


def current_rss_mib():
    """Current resident set, MiB, or None when it cannot be read."""
    if RSS_SOURCE == "psutil":
        return psutil.Process().memory_info().rss / 2.0**20
    if RSS_SOURCE == "/proc/self/statm":
        return _statm_rss_bytes() / 2.0**20
    return None


# -------------------------------------------------------------------- timing
def timed(fn):
    """(seconds, result, rss growth MiB or None) of one call."""
    before = current_rss_mib()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    after = current_rss_mib()
    growth = None if before is None or after is None else after - before
    return seconds, result, growth


def bench_model(name, batch, size, repeats, log):
    keras.utils.set_random_seed(0)
    model = MODELS[name](weights=None, input_shape=(size, size, 3), classes=1000)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.0, 1.0, size=(batch, size, size, 3)).astype(np.float32)

    graph = keras_pathways.pathway_graph(model)
    calls = {
        "gradient": lambda: keras_pathways.explain(
            model, x, method="gradient", batch_size=batch, verbose=False
        ),
        "pathway": lambda: keras_pathways.explain(
            model, x, method="pathway_gradient", batch_size=batch,
            sparsity=SPARSITY, verbose=False,
        ),
        "pathway_nomask": lambda: keras_pathways.explain(
            model, x, method="pathway_gradient", batch_size=batch,
            sparsity=SPARSITY, return_masks=False, verbose=False,
        ),
    }

    compile_s, kept = {}, None
    for key, fn in calls.items():
        seconds, result, _ = timed(fn)
        compile_s[key] = seconds
        if key == "pathway":
            kept = float(result.pathway.kept_fraction.mean())
        log(f"  [{name}] warm-up {key}: {seconds:.2f} s")

    times = {key: [] for key in calls}
    growth = {key: [] for key in calls}
    for r in range(repeats):
        for key, fn in calls.items():
            seconds, _, grown = timed(fn)
            times[key].append(seconds)
            if grown is not None:
                growth[key].append(grown)
            log(f"  [{name}] repeat {r + 1}/{repeats} {key}: {seconds:.2f} s"
                + ("" if grown is None else f" (RSS {grown:+.1f} MiB)"))

    stats = {key: common.timing_summary(t) for key, t in times.items()}
    grad = stats["gradient"]["median_s"]
    result = {
        "model": name,
        "batch": batch,
        "size": size,
        "repeats": repeats,
        "sites": len(graph.sites),
        "neurons_per_image": int(graph.num_neurons),
        "sparsity": SPARSITY,
        "mean_kept_fraction": kept,
        "compile_s": compile_s,
        "timing": stats,
        "ratio_pathway": stats["pathway"]["median_s"] / grad,
        "ratio_pathway_nomask": stats["pathway_nomask"]["median_s"] / grad,
        "images_per_s": {key: batch / s["median_s"] for key, s in stats.items()},
        "peak_rss_mib": peak_rss_mib(),
        "rss_growth_per_call_mib": (
            {key: {"median": statistics.median(g), "max": max(g)}
             for key, g in growth.items() if g}
            if RSS_SOURCE else None
        ),
    }
    del model, graph
    keras.backend.clear_session()
    return result


def table(results):
    lines = [
        "| model | plain grad s/batch | pathway grad s/batch | ratio | "
        "pathway (no masks) ratio | img/s (grad / pathway) | compile s "
        "(grad / pathway / no masks) | peak RSS MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        t = r["timing"]

        def cell(key):
            s = t[key]
            return f"{s['median_s']:.2f} ({s['min_s']:.2f}-{s['max_s']:.2f})"

        ips = r["images_per_s"]
        c = r["compile_s"]
        lines.append(
            f"| {r['model']} | {cell('gradient')} | {cell('pathway')} | "
            f"{r['ratio_pathway']:.2f} | {r['ratio_pathway_nomask']:.2f} "
            f"({t['pathway_nomask']['median_s']:.2f} s) | "
            f"{ips['gradient']:.2f} / {ips['pathway']:.2f} | "
            f"{c['gradient']:.1f} / {c['pathway']:.1f} / {c['pathway_nomask']:.1f} | "
            f"{r['peak_rss_mib']:.0f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS),
                        default=["vgg16", "resnet50"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", metavar="PATH", default=None,
                        help="also write the results as JSON (atomically)")
    parser.add_argument("--selection", choices=["auto", "radix"], default="auto",
                        help="'radix': the radix select over all scores everywhere (the "
                             "selection before the sampled band), to compare")
    args = parser.parse_args(argv)
    if args.selection == "radix":
        from keras_pathways.pathways import selection

        selection.BAND_MIN_VALUES = float("inf")
    if args.repeats < 1 or args.batch < 1 or args.size < 32:
        parser.error("--repeats and --batch must be >= 1 and --size >= 32")

    def log(message):
        print(message, flush=True)

    environment = common.environment(rss_source=RSS_SOURCE)
    command = environment["command"]
    log(f"TF {tf.__version__}, keras {keras.__version__}, {os.cpu_count()} CPUs; "
        f"batch {args.batch}, {args.size}x{args.size}, {args.repeats} repeats, "
        f"selection {args.selection}")

    results = []
    for name in args.models:
        log(f"== {name}")
        r = bench_model(name, args.batch, args.size, args.repeats, log)
        results.append(r)
        log(f"  [{name}] {r['sites']} sites, {r['neurons_per_image']} neurons/image, "
            f"mean kept fraction {r['mean_kept_fraction']:.4f}; "
            f"ratio {r['ratio_pathway']:.2f} (no masks {r['ratio_pathway_nomask']:.2f}); "
            f"peak RSS {r['peak_rss_mib']:.0f} MiB")
        if args.json:  # keep what is finished even if a later model fails
            common.write_json_atomic(args.json, {"environment": environment, "results": results})

    print()
    print(f"## bench_engine: pathway gradient vs plain gradient "
          f"(batch {args.batch}, {args.size}x{args.size}, sparsity {SPARSITY}, "
          f"median of {args.repeats}, (min-max))")
    print()
    print(table(results))
    print()
    for r in results:
        growth = r["rss_growth_per_call_mib"]
        grown = ("" if not growth else "; RSS growth per call (median/max MiB): " + ", ".join(
            f"{k} {v['median']:+.1f}/{v['max']:+.1f}" for k, v in growth.items()))
        print(f"- {r['model']}: {r['sites']} neuron sites, {r['neurons_per_image']:,} "
              f"neurons/image, mean kept fraction {r['mean_kept_fraction']:.4f}{grown}")
    print()
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, "
          f"CPU count {os.cpu_count()}, RSS source {RSS_SOURCE or 'none'}")
    print(f"Command: {command}")
    if args.json:
        common.write_json_atomic(args.json, {"environment": environment, "results": results})
        print(f"JSON: {os.path.abspath(args.json)}")


if __name__ == "__main__":
    main()
