"""The compiled-step runner: one traced step per model, method and graph options.

``run_batched`` streams checked batches (``inputs``) through a method's step,
compiled with XLA where it can be (``keras_pathways.compiling``) and with a
plain ``tf.function`` as the fallback, and returns the merged numpy results.
"""

import collections
import logging
import re
import threading
import warnings

import numpy as np
import tensorflow as tf

from keras_pathways import compiling
from keras_pathways import targets as targets_lib
from keras_pathways.attribution import inputs
from keras_pathways.attribution import memory
from keras_pathways.attribution import registry
from keras_pathways.attribution import results
from keras_pathways.graph import rewrite
from keras_pathways.graph import sites as sites_lib

_LOG = logging.getLogger("keras_pathways")


#: Compiled steps kept per model (least recently used dropped first).
MAX_STEPS_PER_MODEL = 16


#: What each compile mode runs (``Explanation.compiled``).
COMPILE_MODES = {
    "xla": "one XLA program per step (loop bodies compiled separately)",
    "xla-selection": "a plain tf.function with the pathway selection compiled by XLA",
    "plain": "a plain tf.function",
}


def _has_gpu():
    return bool(tf.config.list_logical_devices("GPU"))


def compile_mode(jit_compile):
    """The compile mode ``jit_compile`` stands for on this machine.

    True: "xla"; False: "plain"; "auto" (the default): "xla" when TensorFlow
    sees a GPU, else "xla-selection": on CPUs a plain ``tf.function`` ran the
    convolution passes 15-35 % faster than XLA at batch 8 (README, "Speed"),
    while the selection's integer work stays one XLA program.
    """
    if isinstance(jit_compile, str) and jit_compile == "auto":
        return "xla" if _has_gpu() else "xla-selection"
    if not isinstance(jit_compile, (bool, np.bool_)):
        raise ValueError(
            f'Expected jit_compile to be "auto", True or False. Received: jit_compile={jit_compile!r}.')
    return "xla" if jit_compile else "plain"


class CompiledStep:
    """One method's step for one model and set of graph options, traced lazily.

    ``jit`` is the compiled ``tf.function`` (None for mode "plain", or after
    XLA failed on this model); ``plain`` the plain one. ``parts`` is the
    ``compiling.jit_parts`` mode the jit function is traced under: in mode
    "xla" a looping step is traced plain with each loop body compiled by XLA
    and any other step is one XLA program; in mode "xla-selection" only the
    selection parts are XLA programs.
    """

    def __init__(self, method, graph, graph_options, mode):
        step = method.build(graph, **graph_options)
        self.method = method
        self.mode = mode
        self.parts = False
        self.jit = None
        # No AutoGraph: the steps write their loops and branches with
        # tf.while_loop / tf.cond (compiling.while_loop), and converting
        # the graph walker's Python on every trace is slow and fragile.
        if mode == "xla" and method.has_loops(graph_options):
            self.parts = "all"
            self.jit = tf.function(step, autograph=False)
        elif mode == "xla":
            self.parts = "whole"
            self.jit = tf.function(step, jit_compile=True, autograph=False)
        elif mode == "xla-selection":
            self.parts = "selection"
            self.jit = tf.function(step, autograph=False)
        self.plain = tf.function(step, autograph=False)


def compiled_step(model, graph, method, graph_options, mode, score=None):
    """The ``CompiledStep`` of ``method`` for ``model``, built once and cached.

    The key is the ``Method`` object itself (registering a name again gives a
    new object, so a notebook's re-registered method is never served its old
    step), the graph options, the activation set and the compile mode; run-time
    options such as ``seed`` are not in it (they reach the step as tensors).
    The cache lives in ``rewrite.model_cache`` (weak per model, see
    ``clear_cache``) and keeps the ``MAX_STEPS_PER_MODEL`` most recent steps.
    """
    key = (method, tuple(sorted(graph_options.items())), graph.activations, mode, score)
    cache = rewrite.model_cache(model)
    steps = cache.setdefault("steps", collections.OrderedDict())
    with _STEPS_LOCK:
        found = steps.get(key)
        if found is not None:
            steps.move_to_end(key)
            return found
    built = CompiledStep(method, graph, graph_options, mode)
    _LOG.info("method %r on model %r compiled as %s: %s", method.name, graph.model_name, mode,
              COMPILE_MODES[mode])
    with _STEPS_LOCK:
        found = steps.setdefault(key, built)
        steps.move_to_end(key)
        while len(steps) > MAX_STEPS_PER_MODEL:
            steps.popitem(last=False)
    return found


_STEPS_LOCK = threading.Lock()
XLA_ERRORS = (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError,
               tf.errors.InternalError, tf.errors.NotFoundError)


def call_step(compiled, x, targets, runtime=None):
    """Runs a ``CompiledStep`` on one batch; XLA first, a plain function if XLA fails.

    Args:
        compiled: a ``CompiledStep``.
        x: float (N, *input_shape); targets: int32 (N,).
        runtime: the method's run-time options ({name: value}), given to the
            step as tensors so a new value does not retrace.

    Returns:
        the step's ``StepResult`` (tensors).
    """
    x = tf.convert_to_tensor(x)
    targets = tf.convert_to_tensor(targets)
    kwargs = {name: tf.constant(value) for name, value in (runtime or {}).items()}
    jit = compiled.jit
    if jit is not None:
        try:
            with compiling.jit_parts(compiled.parts):
                return jit(x, targets, **kwargs)
        except XLA_ERRORS as error:
            first_line = str(error).strip().splitlines()[0][:300]
            with compiling.jit_parts(False):
                result = compiled.plain(x, targets, **kwargs)  # a real error raises here
            warnings.warn(
                "XLA could not compile this model's explanation step; falling "
                f"back to a plain tf.function (slower). XLA said: {first_line}",
                RuntimeWarning,
                stacklevel=3,
            )
            compiled.jit = None
            return result
    with compiling.jit_parts(False):
        return compiled.plain(x, targets, **kwargs)


def _progress(total_batches, verbose, batch_size):
    if verbose is True or (verbose == "auto" and (total_batches is None or total_batches > 1)):
        from tqdm.auto import tqdm

        return tqdm(total=total_batches, unit="batch", desc=f"explain (batch_size {batch_size})",
                    leave=False)
    return None


def run_batched(model, x, targets, method, graph_options, runtime_options, batch_size="auto",
                activations=sites_lib.RECTIFIERS, jit_compile="auto", verbose="auto"):
    """Runs a method's compiled step over ``x`` in batches of ``batch_size``.

    Args:
        method: a ``registry.Method``; graph_options, runtime_options: its
            resolved options (``options.resolve``).
        the rest: as ``explain``.

    Returns:
        dict of numpy arrays concatenated over batches (``masks`` a list per
        site) with the ``batch_size`` used, plus the ``graph``. Memory on the
        device is bounded by ``batch_size`` (``"auto"``: chosen from the
        model's size and the available memory, see ``auto_batch_size``); the
        last partial batch is padded to the compiled shape when there is more
        than one batch, and the padding is dropped.
    """
    rewrite.check_backend()
    batch_size = inputs.check_batch_size(batch_size)
    activations = inputs.check_activations(activations)
    mode = compile_mode(jit_compile)
    verbose = inputs.check_verbose(verbose)
    score = targets if isinstance(targets, targets_lib.Score) else None
    if score is not None:
        targets = None  # the score defines what is explained; targets report -1
    graph = rewrite.pathway_graph(model, activations, require_sites=method.needs_sites,
                                  output=None if score is None else score.output, several_inputs=True)
    if graph.output_rank != 2 and score is None:
        raise inputs.InputError(
            f"Model {graph.model_name!r} predicts a map (output rank {graph.output_rank}, e.g. "
            "segmentation): say what to explain with a score, e.g. "
            "targets=keras_pathways.targets.segmentation(c) (the mean logit of class c over "
            "its predicted pixels, or over a region)."
        )
    form = inputs.input_form(x, graph)  # several inputs: results in the form given
    stream = isinstance(x, tf.data.Dataset) and form is None
    if stream:
        shape, make_batches = inputs.dataset_input(x, graph, targets)
    else:
        x, t = inputs.array_input(x, graph, targets)
        shape = x.shape[1:]

        def make_batches(size):
            return inputs.array_batches(x, t, size)

    if batch_size == "auto":
        batch_size, why = memory.auto_batch(graph, shape)
        _LOG.info(why)
    total, batches = make_batches(batch_size)
    compiled = compiled_step(model, graph, method, graph_options, mode, score)
    bar = _progress(total, verbose, batch_size)
    parts = []
    try:
        for xb, tb in _guard(batches, parts, graph, method, graph_options, stream, batch_size):
            n = xb.shape[0]
            pad = batch_size - n if (parts or total is None or total > 1) and n < batch_size else 0
            if pad:
                xb = np.concatenate([xb, np.repeat(xb[-1:], pad, axis=0)])
                tb = np.concatenate([tb, np.repeat(tb[-1:], pad)])
            with targets_lib.scoring(score):  # read when the step is traced
                out = registry.StepResult.of(call_step(compiled, xb, tb, runtime_options), method.name)
            part = results.to_numpy(out, n)
            if score is not None:
                part["targets"] = np.full(n, -1, np.int64)
            parts.append(part)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if not parts:  # a stream that ends before its first element
        raise inputs.InputError(inputs.EMPTY_DATASET)
    compiled_as = compiled.mode if compiled.jit is not None else "plain"
    merged = {**results.merge(parts), "batch_size": batch_size, "compiled": compiled_as}
    if form is not None:
        merged["input_form"] = form
    if score is not None:
        merged["score_output"], merged["score_name"] = score.output, score.name
    return merged, graph


def _guard(batches, parts, graph, method, options, stream=False, batch_size=None):
    """Re-raises errors of the input with the finished part attached.

    An ``InputError`` gets the finished batches' result as ``.partial``; any
    other error of a ``tf.data`` stream (a failing generator, an unreadable
    file) becomes an ``InputError`` naming it, with the same ``.partial``, so
    finished work is never lost.
    """
    try:
        yield from batches
    except inputs.InputError as error:
        if parts:
            error.partial = _partial(parts, graph, method, options, batch_size)
            error.args = (error.args[0] + f" The {len(error.partial)} inputs "
                          "explained before it are in this error's .partial.",)
        raise
    except Exception as error:  # noqa: BLE001 - re-raised, chained
        if not stream:
            raise
        partial = _partial(parts, graph, method, options, batch_size) if parts else None
        done = 0 if partial is None else len(partial)
        kept = (f"The {done} inputs explained before it are in this error's .partial."
                if partial is not None else "No input was explained before it.")
        raise inputs.InputError(
            f"The input dataset failed after {done} inputs with "
            f"{type(error).__name__}: {_first_line(error).rstrip('.')}. {kept}",
            partial=partial,
        ) from error


def _partial(parts, graph, method, options, batch_size):
    return results.assemble({**results.merge(parts), "batch_size": batch_size}, graph, method, options)


def _first_line(error):
    """The first meaningful line of an error's message (TF's node prefix dropped)."""
    for line in str(error).strip().splitlines():
        line = re.sub(r"^\{\{[^}]*\}\}\s*", "", line.strip())
        if line:
            return line[:300]
    return type(error).__name__
