"""What ``jit_compile="auto"`` (the default) costs against the two forced modes.

What is measured, for keras.applications VGG16 and ResNet50 (weights=None,
224x224x3, 1000 classes) on seeded random float32 images in [-1, 1], at batch
sizes ``--batches`` (default 1 and 8): the wall time of one
``explain(model, x, method, jit_compile=mode)`` per batch for mode in
``True`` (XLA), ``False`` (plain ``tf.function``) and ``"auto"`` (on a CPU:
plain with the selection compiled by XLA; with a GPU: XLA), for the pathway
gradient (and ``--methods``). Each (mode, batch) gets one warm-up call
(tracing and compiling, reported as "compile s"), then ``--repeats`` timed
calls, the three modes interleaved so drift in machine load hits them alike.
Reported: the median seconds per batch of each mode, and auto's median over
the better forced mode's (1.00 = as fast as the best; the aim is never more
than noise above 1). The plain gradient, timed the same way in "auto", is the
in-process reference.

    python benchmarks/bench_jit_auto.py --models resnet50 vgg16 --batches 1 8 --repeats 3 \
        --json benchmarks/results/jit_auto.json
"""

import argparse
import os
import statistics
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import common  # noqa: E402  (benchmarks/common.py, beside this script)
import keras_pathways  # noqa: E402

MODELS = {
    "vgg16": lambda: keras.applications.VGG16(weights=None),
    "resnet50": lambda: keras.applications.ResNet50(weights=None),
}
MODES = {"xla": True, "plain": False, "auto": "auto"}


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["resnet50", "vgg16"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--methods", nargs="+", default=["pathway_gradient"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", metavar="PATH", default=None)
    args = parser.parse_args(argv)

    rows = []
    for name in args.models:
        model = MODELS[name]()
        for batch in args.batches:
            x = np.random.default_rng(0).uniform(-1, 1, (batch, 224, 224, 3)).astype("float32")
            calls = {"gradient": lambda: keras_pathways.explain(
                model, x, method="gradient", batch_size=batch, verbose=False)}
            for method in args.methods:
                for mode, value in MODES.items():
                    calls[f"{method}/{mode}"] = (lambda method=method, value=value: keras_pathways.explain(
                        model, x, method=method, batch_size=batch, jit_compile=value, verbose=False))
            compile_s = {key: _timed(call) for key, call in calls.items()}
            times = {key: [] for key in calls}
            for _ in range(args.repeats):
                for key, call in calls.items():
                    times[key].append(_timed(call))
            median = {key: statistics.median(t) for key, t in times.items()}
            chosen = keras_pathways.explain(model, x[:1], jit_compile="auto", verbose=False).compiled
            for method in args.methods:
                best = min(median[f"{method}/xla"], median[f"{method}/plain"])
                row = {
                    "model": name, "batch": batch, "method": method, "auto_chose": chosen,
                    **{f"{mode}_s": median[f"{method}/{mode}"] for mode in MODES},
                    "auto_over_best": median[f"{method}/auto"] / best,
                    "auto_over_gradient": median[f"{method}/auto"] / median["gradient"],
                    "gradient_s": median["gradient"],
                    "compile_s": {key: compile_s[key] for key in calls if key.startswith(method)},
                    "timings": {key: common.timing_summary(times[key]) for key in calls},
                }
                rows.append(row)
                print(f"{name} batch {batch} {method}: xla {row['xla_s']:.2f} s, plain {row['plain_s']:.2f} s, "
                      f"auto ({chosen}) {row['auto_s']:.2f} s -> auto / best {row['auto_over_best']:.2f}, "
                      f"auto / gradient {row['auto_over_gradient']:.2f}", flush=True)
        del model
    print("\n| model | batch | method | XLA s | plain s | auto s | auto / best forced | auto / gradient |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['method']} | {r['xla_s']:.2f} | {r['plain_s']:.2f} | "
              f"{r['auto_s']:.2f} | {r['auto_over_best']:.2f} | {r['auto_over_gradient']:.2f} |")
    if args.json:
        common.write_json_atomic(args.json, {"rows": rows, "environment": common.environment()})


if __name__ == "__main__":
    main()
