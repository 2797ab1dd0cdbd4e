"""Cost of every registered attribution method relative to the plain gradient.

What is measured, in one process, for ``--model``: keras.applications ResNet50
(weights=None, ``--size`` x ``--size`` x 3 input, 1000 classes, default softmax
head) or the bundled pretrained EfficientNet-Lite0 (224 x 224 x 3) on one batch of ``--batch`` random float32 images in [-1, 1] (seeded
numpy): the wall time of

    keras_pathways.explain(model, x, method=m, batch_size=batch, verbose=False)

with the defaults for every method ``m`` in ``keras_pathways.methods()``
(``--methods`` picks a subset): integrated_gradients steps=50, smoothgrad
samples=50, pathway_gradient NeuronMCT at sparsity 0.85, pathway_intgrad
NeuronIntGrad with K=10, i.e. K + 1 forward + backward passes for each neuron
site (ResNet50: 49 sites, 49 * 11 + 1 = 540 passes, several minutes a call on
a small CPU).

The reference is ``method="gradient"`` (one forward and one backward pass).
Every method gets one warm-up call (tracing + XLA compilation + the first run;
reported as "first call s"), then timed calls interleaved with the reference
(gradient, m, gradient, m, ...) so that drift in machine load hits both alike:
``--repeats`` pairs, or ``--slow-repeats`` pairs for a method whose warm-up
took more than ``SLOW_WARMUP_S`` seconds (e.g. pathway_intgrad). Reported per
method: median seconds per batch with min-max, ratio = median(m) /
median(gradient timed in the same interleaving), and, for methods that run
many passes (IG steps, SmoothGrad samples, the two pathway methods), the ratio
divided by the nominal number of forward + backward passes, images per second,
and the peak memory per image: the largest resident set sampled every 5 ms
during the method's timed calls minus the resident set just before them,
divided by the batch (psutil; the model and TF's own memory are not counted).

Expected when the whole method is one compiled function (as explain does):
one-gradient methods (input_x_gradient, guided_backprop, grad_cam) about 1.0x;
Integrated Gradients and SmoothGrad about 1.0x per step / sample (50x in all);
pathway_gradient about 2x (1.0x per pass); random well below 1x. Absolute
times depend on the machine and its load; the ratios are what matter.

    python benchmarks/bench_methods.py --json /tmp/bench_methods.json
"""

import argparse
import os
import sys
import time
import warnings

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

REFERENCE = "gradient"
SLOW_WARMUP_S = 60.0
IG_STEPS = 50  # explain's defaults, restated for the per-step column
SMOOTHGRAD_SAMPLES = 50
INTGRAD_K = 10


def nominal_passes(method, sites):
    """Forward + backward passes a method needs (None: not a multi-pass method)."""
    return {
        "integrated_gradients": IG_STEPS,
        "smoothgrad": SMOOTHGRAD_SAMPLES,
        "pathway_gradient": 2,
        "pathway_intgrad": sites * (INTGRAD_K + 1) + 1,
    }.get(method)


# -------------------------------------------------------------------- timing
def timed(fn):
    """(seconds, warning messages) of one call."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
    return seconds, [str(w.message)[:300] for w in caught]


def peak_in_child(model_name, size, method, batch):
    """Peak memory of one explain call of ``method``, per image, in a fresh process.

    The child loads the model, runs one ``predict`` of the batch, reads its
    resident set, runs ``explain`` once (tracing, compiling and running) while
    a thread samples the resident set every 2 ms: (largest - before) / batch,
    in MiB. A fresh process per method, since TensorFlow's allocator keeps
    freed memory and a later method in the same process would reuse an
    earlier one's.
    """
    import json
    import subprocess

    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--model", model_name, "--size", str(size),
         "--batch", str(batch), "--child-peak", method],
        check=True, capture_output=True, text=True,
    ).stdout
    measured = json.loads(out.strip().splitlines()[-1])
    return (measured["after_kib"] - measured["before_kib"]) / 1024.0 / batch


def current_rss_kib():
    with open("/proc/self/statm") as f:  # Linux
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def child_peak(model_name, size, method, batch):
    import json
    import threading

    model, size = build_model(model_name, size)
    x = np.random.default_rng(0).uniform(-1.0, 1.0, size=(batch, size, size, 3)).astype(np.float32)
    model.predict(x, verbose=0)
    before = current_rss_kib()
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.wait(0.002):
            peak[0] = max(peak[0], current_rss_kib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    keras_pathways.explain(model, x, method=method, batch_size=batch, verbose=False)
    done.set()
    sampler.join()
    print(json.dumps({"method": method, "before_kib": before, "after_kib": max(peak[0], current_rss_kib())}))


def build_model(name, size):
    if name == "efficientnet_lite0":
        from keras_pathways.models import efficientnet_lite0

        return efficientnet_lite0(), 224
    return keras.applications.ResNet50(weights=None, input_shape=(size, size, 3), classes=1000), size


# --------------------------------------------------------------------- table
def table(results):
    lines = [
        "| method | s/batch (min-max) | × gradient | × gradient per step/sample "
        "(per pass) | images/s | peak MiB/image | first call s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        t = r["timing"]
        per = r["ratio_per_pass"]
        per_cell = "" if per is None else f"{per:.2f} (/{r['passes']})"
        repeats = len(t["times_s"])
        lines.append(
            f"| {r['method']} | {t['median_s']:.3f} ({t['min_s']:.3f}-{t['max_s']:.3f})"
            f"{'' if repeats > 1 else ' [1 run]'} | {r['ratio']:.2f} | {per_cell} | "
            f"{r['images_per_s']:.2f} | "
            f"{'' if r['peak_mib_per_image'] is None else format(r['peak_mib_per_image'], '.0f')} | "
            f"{r['first_call_s']:.1f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    registered = list(keras_pathways.methods())
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", choices=registered, default=registered,
                        help="methods to time (default: all registered)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed (gradient, method) pairs per method")
    parser.add_argument("--slow-repeats", type=int, default=1,
                        help=f"pairs for a method whose warm-up took > {SLOW_WARMUP_S:.0f} s")
    parser.add_argument("--model", choices=["resnet50", "efficientnet_lite0"], default="resnet50")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224, help="ResNet50's input size")
    parser.add_argument("--json", metavar="PATH", default=None,
                        help="also write the results as JSON (atomically, after each method)")
    parser.add_argument("--memory", action="store_true",
                        help="also measure each method's peak memory per image (one fresh "
                             "process per method)")
    parser.add_argument("--child-peak", metavar="METHOD", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_peak:
        return child_peak(args.model, args.size, args.child_peak, args.batch)
    if args.repeats < 1 or args.slow_repeats < 1 or args.batch < 1 or args.size < 32:
        parser.error("--repeats, --slow-repeats and --batch must be >= 1 and --size >= 32")

    def log(message):
        print(message, flush=True)

    environment = common.environment()
    command = environment["command"]
    config = {
        "model": args.model,
        "batch": args.batch,
        "size": args.size,
        "repeats": args.repeats,
        "slow_repeats": args.slow_repeats,
        "slow_warmup_s": SLOW_WARMUP_S,
        "reference": REFERENCE,
    }
    log(f"TF {tf.__version__}, keras {keras.__version__}, {os.cpu_count()} CPUs; "
        f"{args.model}, batch {args.batch}, "
        f"{args.repeats} repeats ({args.slow_repeats} for slow methods)")

    keras.utils.set_random_seed(0)
    model, size = build_model(args.model, args.size)
    config["size"] = size
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.0, 1.0, size=(args.batch, size, size, 3)).astype(np.float32)
    sites = len(keras_pathways.pathway_graph(model).sites)
    config["sites"] = sites
    log(f"{args.model}: {sites} neuron sites")

    def call(method):
        return lambda: keras_pathways.explain(
            model, x, method=method, batch_size=args.batch, verbose=False
        )

    # The reference first: its warm-up is its first call.
    reference_first_s, ref_warnings = timed(call(REFERENCE))
    log(f"warm-up {REFERENCE}: {reference_first_s:.2f} s")
    for message in ref_warnings:
        log(f"  warning: {message}")

    order = [REFERENCE] + [m for m in args.methods if m != REFERENCE]
    if REFERENCE not in args.methods:
        order = order[1:]
    results = []

    def save():
        if args.json:
            common.write_json_atomic(args.json, {
                "environment": environment, "config": config, "results": results,
            })

    for method in order:
        log(f"== {method}")
        if method == REFERENCE:
            first_s, caught = reference_first_s, ref_warnings
        else:
            first_s, caught = timed(call(method))
            log(f"  warm-up {method}: {first_s:.2f} s")
            for message in caught:
                log(f"  warning: {message}")
        slow = first_s > SLOW_WARMUP_S
        repeats = args.slow_repeats if slow else args.repeats

        ref_times, times = [], []
        for r in range(repeats):
            seconds, _ = timed(call(REFERENCE))
            ref_times.append(seconds)
            log(f"  repeat {r + 1}/{repeats} {REFERENCE}: {seconds:.3f} s")
            seconds, _ = timed(call(method))
            times.append(seconds)
            log(f"  repeat {r + 1}/{repeats} {method}: {seconds:.3f} s")

        ref = common.timing_summary(ref_times)
        own = common.timing_summary(times)
        ratio = own["median_s"] / ref["median_s"]
        passes = nominal_passes(method, sites)
        result = {
            "method": method,
            "description": keras_pathways.methods()[method],
            "first_call_s": first_s,
            "slow": slow,
            "repeats": repeats,
            "timing": own,
            "reference_timing": ref,
            "ratio": ratio,
            "passes": passes,
            "ratio_per_pass": None if passes is None else ratio / passes,
            "images_per_s": args.batch / own["median_s"],
            "peak_mib_per_image": (peak_in_child(args.model, args.size, method, args.batch)
                                   if args.memory else None),
            "warnings": caught,
        }
        results.append(result)
        log(f"  {method}: median {own['median_s']:.3f} s "
            f"({own['min_s']:.3f}-{own['max_s']:.3f}), gradient {ref['median_s']:.3f} s, "
            f"ratio {ratio:.2f}"
            + ("" if passes is None else f", per pass {ratio / passes:.3f} (/{passes})"))
        save()  # keep what is finished even if a later method fails

    print()
    print(f"## bench_methods: every method vs the plain gradient ({args.model}, "
          f"batch {args.batch}, {args.size}x{args.size}, median of {args.repeats} "
          f"interleaved pairs, {args.slow_repeats} for methods with a first call > "
          f"{SLOW_WARMUP_S:.0f} s, (min-max))")
    print()
    print(table(results))
    print()
    print(f"- Ratio: median(method) / median(gradient timed in the same interleaving). "
          f"Per step/sample (per pass): ratio / nominal forward+backward passes "
          f"(IG steps {IG_STEPS}, SmoothGrad samples {SMOOTHGRAD_SAMPLES}, pathway_gradient 2, "
          f"pathway_intgrad {sites} sites x (K={INTGRAD_K} + 1) + 1).")
    print("- First call: the warm-up call (tracing + XLA compilation + one run).")
    for r in results:
        for message in r["warnings"]:
            print(f"- warning in {r['method']}: {message}")
    print()
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, "
          f"CPU count {os.cpu_count()}")
    print(f"Command: {command}")
    if args.json:
        save()
        print(f"JSON: {os.path.abspath(args.json)}")


if __name__ == "__main__":
    main()
