"""Explanation signatures for TF Serving: ``export_explainer``.

Writes a TensorFlow SavedModel in a numbered version folder (``path/1/``) with

* ``serving_default``: ``images`` -> ``predictions`` (the model's own output);
* ``explain_<method>``: ``images`` -> ``attributions``, ``saliency``,
  ``targets``, ``logits`` (+ ``kept_fraction`` for pathway methods), explaining
  each image's predicted class;
* ``explain_<method>_targets``: the same with an int32 ``targets`` input
  (-1 = the predicted class).

The explain functions run the same compiled step as ``explain`` (XLA where the
platform supports it), so the served numbers equal the in-process ones.
"""

import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from keras_pathways.attribution import engine
from keras_pathways.attribution import registry
from keras_pathways.graph import rewrite
from keras_pathways.graph import sites as sites_lib


class ExportError(ValueError):
    """The explainer cannot be exported as asked."""


def max_abs_reduce_tensor(attributions):
    """TF twin of ``max_abs_reduce``: (N, H, W, C) -> (N, H, W), else unchanged."""
    if attributions.shape.rank != 4:
        return attributions
    index = tf.argmax(tf.abs(attributions), axis=-1, output_type=tf.int32)
    return tf.gather(attributions, index, axis=-1, batch_dims=3)


def _explain_outputs(step, uses_pathway):
    def outputs(images, targets):
        out = step(images, targets)
        result = {
            "attributions": tf.cast(out["attributions"], tf.float32),
            "saliency": tf.cast(max_abs_reduce_tensor(out["attributions"]), tf.float32),
            "targets": tf.cast(out["targets"], tf.int32),
            "logits": tf.cast(out["logits"], tf.float32),
        }
        if uses_pathway:
            sizes = [tf.reduce_prod(shape) for shape in out["site_shapes"]]
            total = tf.cast(tf.add_n(sizes), tf.float32)
            kept = tf.cast(tf.reduce_sum(out["kept"], axis=1), tf.float32)
            result["kept_fraction"] = kept / total
        return result

    return outputs


def _endpoints(outputs, num_classes, jit_compile):
    """(images, targets) and (images) endpoint functions with input checks.

    The checks run outside the XLA cluster (XLA has no assertions).
    """
    core = tf.function(outputs, jit_compile=jit_compile)

    def checked(images, targets):
        images = tf.debugging.check_numerics(images, "images contain NaN or Inf")
        with tf.control_dependencies([
            tf.debugging.assert_less(targets, num_classes, message="target out of range"),
            tf.debugging.assert_greater_equal(targets, -1, message="target out of range"),
        ]):
            targets = tf.identity(targets)
        return core(images, targets)

    def predicted(images):
        return checked(images, tf.fill(tf.shape(images)[:1], -1))

    return checked, predicted


def export_explainer(model, path, methods=("pathway_gradient",), sparsity=0.85,
                     input_shape=None, version=1, overwrite=False, jit_compile=True,
                     activations=sites_lib.RECTIFIERS, **options):
    """Writes a SavedModel with prediction and explanation signatures.

    Args:
        model: a Keras Functional/Sequential classifier (a ``freeze``d pathway
            model works too).
        path: the model's base folder; the SavedModel goes to ``path/<version>``.
        methods: names from ``keras_pathways.methods()``.
        sparsity: pathway sparsity for pathway methods.
        input_shape: per-image shape (H, W, C) when the model takes any size.
        version: the version folder's number (TF Serving serves the highest).
        overwrite: replace an existing version folder (never done otherwise).
        jit_compile: compile the explain functions with XLA.
        activations: activation names treated as neuron sites.
        **options: further method options as in ``explain`` (scores, steps,
            samples, noise, baseline, inner, layer, seed).

    Returns:
        the version folder written.

    Raises:
        ExportError / UnsupportedModelError / ValueError before anything is
        written when the model, a method or an option cannot be exported.
    """
    import keras

    if not isinstance(version, (int, np.integer)) or version < 1:
        raise ExportError(f"Expected version to be a positive integer. Received: {version!r}.")
    if isinstance(methods, str):
        methods = (methods,)
    if not methods:
        raise ExportError("Expected at least one method to export.")
    chosen = [registry.get(name) for name in methods]
    graph = rewrite.pathway_graph(
        model, activations, require_sites=any(m.needs_sites for m in chosen)
    )
    shape = tuple(input_shape) if input_shape is not None else graph.input_shape
    if len(shape) != len(graph.input_shape) or None in shape:
        raise ExportError(
            f"The model takes inputs of shape {graph.input_shape}; give a complete "
            f"per-image input_shape (e.g. (224, 224, 3)). Received: {input_shape!r}."
        )
    settings = engine._options(
        sparsity, options.pop("scores", "mct"), options.pop("steps", None), False,
        **{"samples": 50, "noise": 0.15, "baseline": None, "inner": "gradient",
           "layer": None, "seed": 0, **options},
    )
    target = os.path.join(os.fspath(path), str(int(version)))
    if os.path.exists(target) and not overwrite:
        raise ExportError(
            f"{target} already exists; pass overwrite=True (--overwrite) to replace "
            "it, or export a new version number."
        )

    images = tf.TensorSpec((None,) + shape, tf.float32, name="images")
    targets_spec = tf.TensorSpec((None,), tf.int32, name="targets")
    num_classes = graph.num_classes
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(images):
        return {"predictions": tf.cast(model(images, training=False), tf.float32)}

    archive.add_endpoint("serving_default", serve, input_signature=[images])
    for method in chosen:
        checked, predicted = _endpoints(
            _explain_outputs(method.build(graph, **settings), method.uses_pathway),
            num_classes, jit_compile,
        )
        archive.add_endpoint(f"explain_{method.name}", predicted, input_signature=[images])
        archive.add_endpoint(
            f"explain_{method.name}_targets", checked, input_signature=[images, targets_spec]
        )

    os.makedirs(os.fspath(path), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=os.fspath(path))
    try:
        archive.write_out(staging, verbose=False)
        if os.path.exists(target):  # overwrite=True
            old = target + ".old"
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old)
        else:
            os.replace(staging, target)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)
    return target
