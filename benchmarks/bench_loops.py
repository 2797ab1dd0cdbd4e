"""How a looping method's step is compiled: whole-step XLA vs XLA loop bodies.

What is measured, in one process, for one model and one batch of ``--batch``
random float32 inputs (seeded numpy): the wall time of Integrated Gradients
with ``--steps`` steps compiled three ways, each against the gradient compiled
the same way, timed interleaved (reference, method, reference, method, ...;
``--repeats`` pairs, median):

- ``parts`` -- what ``explain(..., jit_compile=True)`` does now: the step is a
  plain ``tf.function`` and each loop body one XLA program
  (``keras_pathways.compiling``); reference: the XLA-compiled gradient.
- ``whole`` -- the step compiled as one XLA program holding a ``While`` loop
  (what ``explain`` did before); reference: the XLA-compiled gradient.
- ``plain`` -- ``jit_compile=False``; reference: the plain gradient.

Reported: seconds per call, ratio to the reference, and ratio per step
(ratio / steps). One pass per step is the floor, so the per-step ratio should
be about 1.0.

    python benchmarks/bench_loops.py --model resnet8 --batch 128 --steps 20
    python benchmarks/bench_loops.py --model resnet50 --batch 8 --steps 10
"""

import argparse
import statistics
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import common
import keras_pathways
from keras_pathways import compiling
from keras_pathways.models import resnet8

MODELS = {
    "resnet8": lambda: resnet8((28, 28, 1), 10, width=16),
    "resnet50": lambda: keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3)),
}


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, out)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="resnet8")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None, metavar="PATH")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    model = MODELS[args.model]()
    shape = tuple(model.inputs[0].shape[1:])
    x = tf.constant(np.random.default_rng(0).uniform(0, 1, (args.batch,) + shape).astype(np.float32))
    targets = tf.fill([args.batch], -1)
    graph = keras_pathways.pathway_graph(model, require_sites=False)
    gradient = keras_pathways.get_method("gradient").build(graph)
    ig = keras_pathways.get_method("integrated_gradients").build(graph, steps=args.steps)
    jit_gradient = tf.function(gradient, jit_compile=True)
    plain_gradient = tf.function(gradient)
    variants = {
        "parts": (tf.function(ig), True, jit_gradient),
        "whole": (tf.function(ig, jit_compile=True), False, jit_gradient),
        "plain": (tf.function(ig), False, plain_gradient),
    }
    results = {}
    for name, (fn, parts, reference) in variants.items():

        def call(fn=fn, parts=parts):
            with compiling.jit_parts(parts):
                return fn(x, targets)

        first = _timed(call)
        _timed(lambda: reference(x, targets))
        method_times, reference_times = [], []
        for _ in range(args.repeats):
            reference_times.append(_timed(lambda: reference(x, targets)))
            method_times.append(_timed(call))
        ratio = statistics.median(method_times) / statistics.median(reference_times)
        results[name] = {
            "first_call_s": first, "method": common.timing_summary(method_times),
            "reference": common.timing_summary(reference_times),
            "ratio": ratio, "ratio_per_step": ratio / args.steps,
        }
        print(f"{name:6s} IG {statistics.median(method_times):8.3f} s  reference "
              f"{statistics.median(reference_times):7.3f} s  ratio {ratio:7.2f}  per step "
              f"{ratio / args.steps:5.2f}  (first call {first:.1f} s)", flush=True)
    if args.json:
        common.write_json_atomic(args.json, {
            "environment": common.environment(model=args.model, batch=args.batch, steps=args.steps),
            "results": results,
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
