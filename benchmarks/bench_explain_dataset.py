"""Throughput of ``explain_dataset`` on the Fashion-MNIST test set.

What is measured, in one process: ``explain_dataset`` of the first
``--limit`` test images (default all 10,000) with the trained ResNet-8 of
``docs/results/resnet8_fashion_mnist.keras``, chunks of ``--chunk-size``
written to a temporary folder, for each method in ``--methods`` (default the
plain gradient, the in-process reference, and the pathway gradient); each
method once to warm up (compile) on one chunk, then the full run. Reported:
seconds, inputs per second and each method's time over the gradient's.

    python benchmarks/bench_explain_dataset.py --json benchmarks/results/explain_dataset.json
"""

import argparse
import os
import tempfile
import time

import numpy as np

import common
import keras
import keras_pathways
from keras_pathways import datasets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.path.join(ROOT, "docs", "results", "resnet8_fashion_mnist.keras"))
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--methods", nargs="+", default=["gradient", "pathway_gradient"])
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    model = keras.saving.load_model(args.model)
    x, _ = datasets.load_arrays("fashion_mnist_local", split="test")
    x = np.asarray(x[: args.limit], np.float32)
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        for method in args.methods:
            keras_pathways.explain_dataset(model, x[: args.chunk_size], os.path.join(folder, "warm", method),
                                           method=method, chunk_size=args.chunk_size, progress=False)
            start = time.perf_counter()
            report = keras_pathways.explain_dataset(model, x, os.path.join(folder, method), method=method,
                                                    chunk_size=args.chunk_size, progress=False)
            seconds = time.perf_counter() - start
            rows[method] = {"seconds": seconds, "inputs_per_s": report["inputs"] / seconds,
                            "chunks": report["chunks_written"]}
    reference = rows.get("gradient", next(iter(rows.values())))["seconds"]
    print(f"explain_dataset, {len(x)} Fashion-MNIST test images, ResNet-8, chunks of {args.chunk_size}")
    print("| method | seconds | inputs / s | × gradient |\n| --- | --- | --- | --- |")
    for method, row in rows.items():
        row["over_gradient"] = row["seconds"] / reference
        print(f"| {method} | {row['seconds']:.1f} | {row['inputs_per_s']:.0f} | {row['over_gradient']:.2f} |")
    if args.json:
        common.write_json_atomic(args.json, {"rows": rows, "images": len(x), "environment": common.environment()})


if __name__ == "__main__":
    main()
