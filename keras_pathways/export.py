"""Explanation signatures for TF Serving: ``export_explainer``.

Writes a TensorFlow SavedModel in a numbered version folder (``path/1/``) with

* ``serving_default``: ``images`` -> ``predictions`` (the model's own output);
* ``explain_<method>``: ``images`` -> ``attributions``, ``saliency``,
  ``targets``, ``logits`` (+ ``kept_fraction`` for pathway methods), explaining
  each image's predicted class;
* ``explain_<method>_targets``: the same with an int32 ``targets`` input
  (-1 = the predicted class).

Exported with a score (``targets=keras_pathways.targets.binary()``, ...), each
``explain_<method>`` explains that score instead of a class: its outputs are
``attributions``, ``saliency``, ``score`` (the explained value per image),
``explained`` (the score's name, e.g. ``"binary()"``, per image: the served
signature says what it explains), ``logits`` (+ ``kept_fraction``); there is
no ``_targets`` signature.

The explain functions run the same compiled step as ``explain`` (XLA where the
platform supports it), so the served numbers equal the in-process ones. A
``targets`` input must have exactly one entry per image (checked when served).

The version folder appears complete or not at all: the SavedModel is written
to a hidden staging folder next to it and renamed into place (an overwrite
swaps the two folders atomically where the OS can, else with two renames). It
gets normal permissions (0777 minus the umask).
"""

import ctypes
import difflib
import errno
import os
import secrets
import shutil
import warnings

import numpy as np
import tensorflow as tf

from keras_pathways import compiling, native
from keras_pathways import targets as targets_lib
from keras_pathways.attribution import builtin  # noqa: F401  (registers the built-in methods)
from keras_pathways.attribution import options as options_lib
from keras_pathways.attribution import registry
from keras_pathways.attribution import runner
from keras_pathways.graph import rewrite
from keras_pathways.graph import sites as sites_lib


class ExportError(ValueError):
    """The explainer cannot be exported as asked."""


def max_abs_reduce_tensor(attributions):
    """TF twin of ``max_abs_reduce``: (N, H, W, C) -> (N, H, W), (N, T, C) -> (N, T), else unchanged."""
    rank = attributions.shape.rank
    if rank not in (3, 4):
        return attributions
    index = tf.argmax(tf.abs(attributions), axis=-1, output_type=tf.int32)
    return tf.gather(attributions, index, axis=-1, batch_dims=rank - 1)


def _explain_outputs(step, method, runtime, score=None):
    def outputs(images, targets):
        kwargs = {name: tf.constant(value) for name, value in runtime.items()}
        out = registry.StepResult.of(step(images, targets, **kwargs), method.name)
        result = {
            "attributions": tf.cast(out.attributions, tf.float32),
            "saliency": tf.cast(max_abs_reduce_tensor(out.attributions), tf.float32),
            "logits": tf.cast(out.logits, tf.float32),
        }
        if score is None:
            result["targets"] = tf.cast(out.targets, tf.int32)
        else:
            result["score"] = tf.cast(score.fn(out.logits), tf.float32)
        if method.uses_pathway:
            sizes = [tf.reduce_prod(shape) for shape in out.site_shapes]
            total = tf.cast(tf.add_n(sizes), tf.float32)
            kept = tf.cast(tf.reduce_sum(out.kept, axis=1), tf.float32)
            result["kept_fraction"] = kept / total
        return result

    return outputs


def _endpoints(outputs, num_classes, jit_compile, loops):
    """(images, targets) and (images) endpoint functions with input checks.

    Compiled as ``explain`` compiles: a step with a loop is a plain function
    whose loop bodies are XLA programs (``keras_pathways.compiling``), any
    other step one XLA program. The checks run outside the XLA cluster (XLA
    has no assertions).
    """
    parts = bool(jit_compile) and loops
    core = tf.function(outputs, jit_compile=bool(jit_compile) and not parts)

    def checked(images, targets):
        images = tf.debugging.check_numerics(images, "images contain NaN or Inf")
        image_count, target_count = tf.shape(images)[0], tf.shape(targets)[0]
        with tf.control_dependencies([
            tf.debugging.Assert(
                tf.equal(target_count, image_count),
                ["Expected one target per image. Received:", target_count,
                 "targets for", image_count, "images."],
            ),
            tf.debugging.assert_less(targets, num_classes, message="target out of range"),
            tf.debugging.assert_greater_equal(targets, -1, message="target out of range"),
        ]):
            targets = tf.identity(targets)
        # One XLA program ("whole") has no parts and no dynamic shapes. The
        # selection's compiled op stays out: a server does not have it.
        with compiling.jit_parts(parts or ("whole" if jit_compile else False)), native.use(False):
            return core(images, targets)

    def predicted(images):
        return checked(images, tf.fill(tf.shape(images)[:1], -1))

    return checked, predicted


# explain() arguments that an export fixes itself (why, for the error message).
_NOT_EXPORT_OPTIONS = {
    "model": "it is export_explainer's first argument",
    "x": "the served request gives the images",
    "method": "give methods=(...)",
    "batch_size": "the served batch is the request's",
    "return_masks": "served explanations carry kept_fraction, not masks",
    "verbose": "nothing is shown while serving",
}


#: export_explainer's own keyword parameters (suggested for a misspelt one).
_OWN_PARAMETERS = ("methods", "sparsity", "input_shape", "version", "overwrite", "jit_compile",
                   "activations", "targets")


def _method_settings(chosen, given):
    """Per method, its resolved (graph, run-time) options from what the caller gave.

    Each method receives the options it declares (``keras_pathways.method_options``);
    a name no chosen method takes is refused with the closest valid one.
    """
    valid = sorted(set().union(*(set(m.options) for m in chosen)) - set(_NOT_EXPORT_OPTIONS))
    for name in given:
        if name in _NOT_EXPORT_OPTIONS:
            raise ExportError(
                f"Option {name!r} of explain does not apply to an export: "
                f"{_NOT_EXPORT_OPTIONS[name]}. Expected one of: {', '.join(valid + list(_OWN_PARAMETERS))}."
            )
    try:
        shares = options_lib.distribute(chosen, given, "export_explainer", _OWN_PARAMETERS)
    except options_lib.OptionError as error:
        raise ExportError(str(error)) from None
    settings = {}
    for method in chosen:
        own = shares[method.name]
        if "return_masks" in method.options:
            own["return_masks"] = False
        settings[method.name] = options_lib.resolve(
            method, own, stacklevel=4, label=f"method {method.name!r} of export_explainer")
    return settings


def _check_folder(base):
    """Refuses, before anything is traced, a base folder that cannot be written."""
    probe = os.path.abspath(base)
    while not os.path.lexists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise ExportError(f"{base}: cannot export there ({probe} is a file, not a folder).")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ExportError(f"{base}: cannot export there ({probe} is not writable: Permission denied).")


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a, b):
    """Swaps two paths in one atomic step (Linux renameat2); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError, TypeError):  # not Linux, or an old C library
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False  # this file system cannot exchange: two renames instead
    raise OSError(code, os.strerror(code), a, None, b)


def _replace_folder(staging, target, overwrite):
    """Moves the complete ``staging`` folder to ``target``, replacing it if present.

    Afterwards ``staging`` no longer exists or holds the replaced version.
    """
    if not os.path.exists(target):
        os.replace(staging, target)
    elif not overwrite:  # another export wrote it meanwhile
        raise ExportError(f"{target} already exists (written while this export ran); nothing replaced.")
    elif not _exchange(staging, target):
        base, name = os.path.split(target)
        old = os.path.join(base, f".{name}.old-{secrets.token_hex(6)}")
        os.replace(target, old)
        try:
            os.replace(staging, target)
        except OSError:
            os.replace(old, target)
            raise
        os.replace(old, staging)


def _described(endpoint, score):
    """``endpoint`` with an ``explained`` output: the score's name per image
    (added outside any XLA program, which cannot return strings)."""

    def described(images):
        out = dict(endpoint(images))
        out["explained"] = tf.fill(tf.shape(images)[:1], score.name)
        return out

    return described


def _with_xla_fallback(endpoints, method, graph, graph_options, runtime, num_classes, jit_compile,
                       shape, score=None):
    """The endpoints, or plain-function ones (with a warning) when XLA cannot compile them.

    Like ``explain``: the XLA build is run once on one zero image at export
    time; if XLA refuses the model, the export uses a plain ``tf.function``.
    """
    if not jit_compile:
        return endpoints
    try:
        endpoints[0](tf.zeros((1,) + tuple(shape), tf.float32), tf.constant([-1], tf.int32))
        return endpoints
    except runner.XLA_ERRORS as error:
        first_line = str(error).strip().splitlines()[0][:300]
        warnings.warn(
            f"XLA could not compile the explain_{method.name} signature of this model; "
            f"exporting it as a plain tf.function (slower). XLA said: {first_line}",
            RuntimeWarning,
            stacklevel=3,
        )
    return _endpoints(
        _explain_outputs(method.build(graph, **graph_options), method, runtime, score),
        num_classes, False, False,
    )


def export_explainer(model, path, methods=("pathway_gradient",), sparsity=None,
                     input_shape=None, version=1, overwrite=False, jit_compile=True,
                     activations=sites_lib.RECTIFIERS, targets=None, **options):
    """Writes a SavedModel with prediction and explanation signatures.

    Args:
        model: a Keras Functional/Sequential classifier (a ``freeze``d pathway
            model works too).
        path: the model's base folder; the SavedModel goes to ``path/<version>``.
        methods: names from ``keras_pathways.methods()``.
        sparsity: pathway sparsity for pathway methods (None: the method's
            default, 0.85).
        input_shape: per-image shape (H, W, C) when the model takes any size.
        version: the version folder's number (TF Serving serves the highest).
        overwrite: replace an existing version folder (never done otherwise).
        jit_compile: compile the explain functions with XLA.
        activations: activation names treated as neuron sites.
        targets: None (explain classes: the predicted one, or per request
            through ``explain_<method>_targets``) or a
            ``keras_pathways.targets.Score`` (``binary()``, ``regression()``,
            ``segmentation(c)``, ``output(name, ...)``) that every
            ``explain_<method>`` signature explains instead; its outputs then
            carry ``score`` and ``explained`` (the score's name).
        **options: the methods' own options as in ``explain`` (each method
            gets those it declares, with its defaults; see
            ``keras_pathways.method_options``). A name no chosen method takes
            is refused, with the closest valid one suggested.

    Returns:
        the version folder written.

    Raises:
        ExportError: before anything is written, when a method or an option
            cannot be exported or ``path`` cannot be written (a file, no
            permission); later, naming the folder and the cause, when writing
            fails.
        UnsupportedModelError: the model cannot be turned into f(x, masks).
        ValueError: an unknown method or a bad option value.
    """
    import keras

    rewrite.require_one_input(model, "export_explainer (the TF Serving export)", ExportError)
    if targets is not None and not isinstance(targets, targets_lib.Score):
        raise ExportError(
            "export_explainer's targets= takes a score to explain, e.g. "
            "keras_pathways.targets.binary() or targets.regression(0); class targets are "
            f"given per request (the explain_<method>_targets signature). Received: {targets!r}."
        )
    score = targets
    if sparsity is not None:
        options = {**options, "sparsity": sparsity}
    if not isinstance(version, (int, np.integer)) or version < 1:
        raise ExportError(f"Expected version to be a positive integer. Received: {version!r}.")
    if isinstance(methods, str):
        methods = (methods,)
    if not methods:
        raise ExportError("Expected at least one method to export.")
    chosen = [registry.get(name) for name in methods]
    settings = _method_settings(chosen, options)
    graph = rewrite.pathway_graph(
        model, activations, require_sites=any(m.needs_sites for m in chosen),
        output=None if score is None else score.output,
    )
    if graph.output_rank != 2 and score is None:
        raise ExportError(
            f"Model {model.name!r} predicts a map of rank {graph.output_rank}: say what the "
            "served explanations explain with a score, e.g. "
            "export_explainer(..., targets=keras_pathways.targets.segmentation(c))."
        )
    shape = tuple(input_shape) if input_shape is not None else graph.input_shape
    if len(shape) != len(graph.input_shape) or None in shape:
        raise ExportError(
            f"The model takes inputs of shape {graph.input_shape}; give a complete "
            f"per-image input_shape (e.g. (224, 224, 3)). Received: {input_shape!r}."
        )
    base = os.fspath(path)
    target = os.path.join(base, str(int(version)))
    if os.path.exists(target) and not overwrite:
        raise ExportError(
            f"{target} already exists; pass overwrite=True (--overwrite) to replace "
            "it, or export a new version number."
        )
    if os.path.lexists(target) and not os.path.isdir(target):
        raise ExportError(f"{target}: cannot export there (it is a file, not a version folder).")
    _check_folder(base)

    images = tf.TensorSpec((None,) + shape, tf.float32, name="images")
    targets_spec = tf.TensorSpec((None,), tf.int32, name="targets")
    num_classes = graph.num_classes
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(images):
        out = model(images, training=False)
        if score is not None and score.output is not None and isinstance(out, (list, tuple, dict)):
            out = out[score.output] if isinstance(out, dict) else out[
                list(model.output_names).index(score.output)]
        return {"predictions": tf.cast(out, tf.float32)}

    archive.add_endpoint("serving_default", serve, input_signature=[images])
    with targets_lib.scoring(score):  # read when the explain steps are traced
        for method in chosen:
            graph_options, runtime = settings[method.name]
            checked, predicted = _endpoints(
                _explain_outputs(method.build(graph, **graph_options), method, runtime, score),
                num_classes, jit_compile, method.has_loops(graph_options),
            )
            checked, predicted = _with_xla_fallback(
                (checked, predicted), method, graph, graph_options, runtime, num_classes, jit_compile,
                shape, score)
            if score is not None:
                predicted = _described(predicted, score)
            archive.add_endpoint(f"explain_{method.name}", predicted, input_signature=[images])
            if score is None:
                archive.add_endpoint(
                    f"explain_{method.name}_targets", checked, input_signature=[images, targets_spec]
                )

    staging = os.path.join(base, f".export-{int(version)}-{secrets.token_hex(6)}")
    try:
        os.makedirs(base, exist_ok=True)
        os.mkdir(staging, 0o777)  # normal permissions: 0777 minus the umask
        with targets_lib.scoring(score):
            archive.write_out(staging, verbose=False)
        _replace_folder(staging, target, overwrite)
    except (OSError, tf.errors.OpError) as error:
        cause = getattr(error, "strerror", None) or getattr(error, "message", None) or str(error)
        raise ExportError(f"{base}: could not write the export ({' '.join(str(cause).split())}).") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    stale = target + ".old"  # left by an overwrite that an earlier version interrupted
    if os.path.isdir(stale) and not os.path.islink(stale):
        shutil.rmtree(stale, ignore_errors=True)
    return target
