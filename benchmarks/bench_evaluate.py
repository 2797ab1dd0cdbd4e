"""How long the faithfulness metrics take: ROAD, deletion and insertion for the
one-gradient methods on the Fashion-MNIST test images.

What is measured, in one process: ``evaluation.evaluate`` with the metrics
``--metrics`` (default road, deletion, insertion) for every method in
``--methods`` on the first ``--limit`` test images (default all 10,000), one
seed, with the trained ResNet-8 in ``docs/results/resnet8_fashion_mnist.keras``
(90.8 % test accuracy). Reported: the wall time of everything, per metric (all
methods), and the share spent explaining vs evaluating (imputing, perturbing,
predicting); as the in-process reference, the time of one plain gradient over
the same images (``explain(method="gradient")``), and each part as a ratio to it.

    python benchmarks/bench_evaluate.py                      # 10,000 images
    python benchmarks/bench_evaluate.py --limit 1000 --json benchmarks/results/evaluate.json
"""

import argparse
import os
import sys
import time

import numpy as np

import common
import keras_pathways
from keras_pathways import datasets
from keras_pathways.evaluation import evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONE_GRADIENT = ("pathway_gradient", "gradient", "input_x_gradient", "guided_backprop", "grad_cam", "random")


def main(argv=None):
    import keras

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=os.path.join(ROOT, "docs", "results", "resnet8_fashion_mnist.keras"))
    parser.add_argument("--limit", type=int, default=None, help="first N test images (default: all)")
    parser.add_argument("--methods", nargs="+", default=list(ONE_GRADIENT))
    parser.add_argument("--metrics", nargs="+", default=["road", "deletion", "insertion"])
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--json", default=None, metavar="PATH")
    args = parser.parse_args(argv)

    model = keras.saving.load_model(args.model)
    x, y = datasets.load_arrays("fashion_mnist_local", split="test")
    x, y = x[: args.limit], y[: args.limit]
    options = {"*": {"jit_compile": False}}

    # The reference: one plain gradient over the same images (compiled first).
    keras_pathways.explain(model, x[: args.batch_size], method="gradient", batch_size=args.batch_size,
                           verbose=False, jit_compile=False)
    start = time.perf_counter()
    keras_pathways.explain(model, x, method="gradient", batch_size=args.batch_size, verbose=False,
                           jit_compile=False)
    reference = time.perf_counter() - start

    start = time.perf_counter()
    result = evaluate(model, (x, y), methods=args.methods, metrics=args.metrics, seeds=[0],
                      batch_size=args.batch_size, method_options=options, progress=False,
                      log=lambda message: print(message, flush=True))
    total = time.perf_counter() - start
    explain_seconds = {}
    per_metric = {m: 0.0 for m in args.metrics}
    for (metric, method), record in result.records.items():
        explain_seconds[method] = record["seconds_explain"]  # shared by the method's metrics
        per_metric[metric] += record["seconds_metric"]
    explaining = sum(explain_seconds.values())
    evaluating = sum(per_metric.values())
    summary = {
        "images": int(len(x)), "methods": args.methods, "metrics": args.metrics,
        "total_s": total, "explain_s": explaining, "evaluate_s": evaluating,
        "explain_share": explaining / total, "per_metric_s": per_metric,
        "reference_gradient_s": reference, "total_over_reference": total / reference,
        "per_metric_over_reference": {m: s / reference for m, s in per_metric.items()},
        "explain_per_method_s": explain_seconds,
        "environment": common.environment(),
    }
    print(f"\n{len(x)} images, {len(args.methods)} methods, metrics {', '.join(args.metrics)}")
    print(f"total {total:.1f} s ({total / 60:.1f} min) = {total / reference:.0f}x one plain gradient over the images ({reference:.1f} s)")
    print(f"explaining {explaining:.1f} s ({100 * explaining / total:.0f} %), evaluating {evaluating:.1f} s "
          f"({100 * evaluating / total:.0f} %)")
    for metric, seconds in per_metric.items():
        print(f"  {metric}: {seconds:.1f} s for all methods ({seconds / len(args.methods):.1f} s per method, "
              f"{seconds / reference:.1f}x the reference)")
    print(result.table())
    if args.json:
        common.write_json_atomic(args.json, summary)
        print(f"Wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
