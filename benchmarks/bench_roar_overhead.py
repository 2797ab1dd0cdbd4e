"""What a ROAR cell costs beyond its training: cell wall time ÷ a bare training.

What is measured, in one process, on the Fashion-MNIST training set (first
``--train-limit`` images, default all 60,000) with the benchmark preset's
recipe (ResNet-8 width 16, batch 128, Adam 2e-3 with a cosine decay,
crop + flip, ``--epochs`` epochs, default 2):

* reference: ``retraining.train`` on the unmodified images (a bare training);
* measured: one ROAR cell (``retraining.roar`` with the "random" method, t = 0.5,
  seed 0), as recorded in the cell's own ``seconds``: removing the pixels
  (fill), building and training the model, scoring it and writing the record.
  The explained model and the pixel orders are made before the cell and are
  not part of it (the grid makes them once for all its cells).

Reported: both times and their ratio (the aim is <= 1.1).

    python benchmarks/bench_roar_overhead.py --epochs 2 --json benchmarks/results/roar_overhead.json
"""

import argparse
import json
import os
import tempfile
import time

import common
from keras_pathways import datasets
from keras_pathways.evaluation import retraining
from keras_pathways.models import compiled_resnet8

RECIPE = {"batch_size": 128, "schedule": "cosine", "learning_rate": 2e-3, "augment": True}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-limit", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    x, y = datasets.load_arrays("fashion_mnist_local", split="train")
    xt, yt = datasets.load_arrays("fashion_mnist_local", split="test")
    x, y = x[: args.train_limit], y[: args.train_limit]

    def model_fn():
        return compiled_resnet8(x.shape[1:], 10, width=16, learning_rate=RECIPE["learning_rate"])

    with tempfile.TemporaryDirectory() as folder:
        retraining.roar(model_fn, (x, y), (xt, yt), ["random"], fractions=(0.5,), seeds=(0,),
                        epochs=args.epochs, out_dir=folder, progress=False, log=lambda *_: None, **RECIPE)
        with open(os.path.join(folder, "cells", retraining.cell_name("roar", "random", 0.5, 0))) as f:
            cell = json.load(f)["seconds"]
    start = time.perf_counter()
    retraining.train(model_fn, x, y, args.epochs, seed=0, batch_size=RECIPE["batch_size"],
                     augment=RECIPE["augment"], schedule=RECIPE["schedule"],
                     learning_rate=RECIPE["learning_rate"])
    bare = time.perf_counter() - start
    ratio = cell / bare
    print(f"{len(x)} training images, {args.epochs} epochs: ROAR cell {cell:.1f} s, bare training "
          f"{bare:.1f} s, cell / bare = {ratio:.3f}")
    if args.json:
        common.write_json_atomic(args.json, {"cell_s": cell, "bare_s": bare, "ratio": ratio,
                                             "images": len(x), "epochs": args.epochs,
                                             "environment": common.environment()})


if __name__ == "__main__":
    main()
