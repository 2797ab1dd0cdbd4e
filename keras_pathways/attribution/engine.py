"""Input handling, batching and the compiled-step cache behind ``explain``."""

import dataclasses
import hashlib
import math
import warnings

import numpy as np
import tensorflow as tf

from keras_pathways import compiling
from keras_pathways.attribution import registry
from keras_pathways.graph import rewrite
from keras_pathways.graph import sites as sites_lib
from keras_pathways.pathways import pruning
from keras_pathways.pathways import scores as scores_lib
from keras_pathways.pathways import selection
from keras_pathways.pathways.pathway import Pathway

# Registers the built-in methods.
from keras_pathways.attribution import grad_cam as _grad_cam  # noqa: F401
from keras_pathways.attribution import gradients as _gradients  # noqa: F401
from keras_pathways.attribution import pathway_gradient as _pathway_gradient


class InputError(ValueError):
    """Bad input to ``explain``/``find_pathway``.

    Attributes:
        partial: for streamed (``tf.data``) input, the result computed for the
            batches before the bad one (an ``Explanation`` or ``Pathway``), or
            None, so finished work is not lost.
    """

    def __init__(self, message, partial=None):
        super().__init__(message)
        self.partial = partial


@dataclasses.dataclass
class Explanation:
    """What ``explain`` returns for a batch of N inputs.

    Attributes:
        attributions: float32 (N, *input_shape): the method's attribution of
            the target logit to each input value.
        saliency: float32 (N, H, W) for image inputs (N, H, W, C): per pixel
            the signed channel value of largest magnitude (max-abs reduction);
            for other inputs the attributions themselves. Show |s| / max |s|.
        targets: int64 (N,): the explained class per input.
        logits: float32 (N, classes): the unmasked model's pre-softmax logits.
        method: the method name.
        pathway: the ``Pathway`` for pathway methods, else None.
    """

    attributions: np.ndarray
    saliency: np.ndarray
    targets: np.ndarray
    logits: np.ndarray
    method: str
    pathway: Pathway = None

    def __len__(self):
        return int(self.targets.shape[0])

    @property
    def kept_fraction(self):
        """float (N,): the real kept fraction per input (pathway methods)."""
        return None if self.pathway is None else self.pathway.kept_fraction


def max_abs_reduce(attributions, channel_axis=-1):
    """Per pixel, the signed channel value with the largest |value| (docs/method.md §4).

    Args:
        attributions: (N, H, W, C) for images; other ranks are returned as is.

    Returns:
        (N, H, W) for rank-4 input, else ``attributions``.
    """
    a = np.asarray(attributions)
    if a.ndim != 4:
        return a
    index = np.expand_dims(np.argmax(np.abs(a), axis=channel_axis), channel_axis)
    return np.take_along_axis(a, index, axis=channel_axis).squeeze(channel_axis)


# ---------------------------------------------------------------- validation
def _check_batch(x, graph, where):
    """Validates one float batch; returns it in the model's input float dtype."""
    if x.shape[0] == 0:
        raise InputError(
            f"Received an empty batch{where}: x has shape {x.shape}. Pass at "
            "least one input."
        )
    expected = graph.input_shape
    if x.ndim != len(expected) + 1 or any(
        e is not None and e != d for e, d in zip(expected, x.shape[1:])
    ):
        shown = "(N, " + ", ".join("?" if e is None else str(e) for e in expected) + ")"
        raise InputError(
            f"Expected input of shape {shown} for model {graph.model.name!r} "
            f"(or one input without the batch axis). Received: shape "
            f"{tuple(x.shape)}{where}. Resize/reshape the input to the model's "
            "input shape."
        )
    finite = np.isfinite(x)
    if not finite.all():
        bad = np.unique(np.nonzero(~finite)[0])
        raise InputError(
            f"Input contains NaN or Inf{where}: {int((~finite).sum())} values in "
            f"input(s) {bad[:10].tolist()}{' ...' if len(bad) > 10 else ''}. "
            "Clean or drop those inputs before explaining them."
        )
    dtype = np.dtype(graph.input_dtype) if graph.input_dtype else np.float32
    if not np.issubdtype(dtype, np.floating):
        dtype = np.dtype(np.float32)
    return x.astype(dtype, copy=False)


def _as_float_array(x):
    if isinstance(x, tf.Tensor):
        x = x.numpy()
    try:
        x = np.asarray(x)
    except Exception as error:  # ragged lists, objects
        raise InputError(
            f"Could not read the input as an array: {error}. Pass a numpy array, "
            "a tf.Tensor or a tf.data.Dataset."
        ) from None
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(
            f"Expected a float input (float16/32/64). Received dtype {x.dtype}. "
            "Convert it (e.g. x.astype('float32')) and apply the model's own "
            "preprocessing first; integer images are not rescaled silently."
        )
    return x


def _check_targets(targets, count, num_classes):
    """int32 (count,) with -1 for 'argmax', or a clear error."""
    if targets is None:
        return np.full((count,), -1, np.int32)
    t = np.asarray(targets.numpy() if isinstance(targets, tf.Tensor) else targets)
    if not np.issubdtype(t.dtype, np.integer):
        raise InputError(
            f"Expected integer class targets. Received dtype {t.dtype} "
            f"(targets={_short(t)})."
        )
    if t.ndim == 0:
        t = np.full((count,), int(t))
    if t.shape != (count,):
        raise InputError(
            f"Expected one target per input: shape ({count},). Received shape "
            f"{t.shape}."
        )
    bad = (t < 0) | (t >= num_classes)
    if bad.any():
        raise InputError(
            f"Target out of range: the model has {num_classes} classes "
            f"(0..{num_classes - 1}). Received {t[bad][:10].tolist()} at "
            f"input(s) {np.nonzero(bad)[0][:10].tolist()}."
        )
    return t.astype(np.int32)


def _short(a):
    return np.array2string(np.asarray(a).ravel()[:6])


def _check_batch_size(batch_size):
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(
            f"Expected batch_size to be a positive integer. Received: {batch_size!r}."
        )
    return int(batch_size)


# --------------------------------------------------------------- input streams
def _array_batches(x, graph, targets, batch_size):
    """(number of batches, generator of (x_batch, targets_batch))."""
    x = _as_float_array(x)
    if x.ndim == len(graph.input_shape):  # one input without batch axis
        x = x[None]
    x = _check_batch(x, graph, "")
    t = _check_targets(targets, x.shape[0], graph.num_classes)

    def generate():
        for start in range(0, x.shape[0], batch_size):
            yield x[start : start + batch_size], t[start : start + batch_size]

    return math.ceil(x.shape[0] / batch_size), generate()


def _dataset_batches(dataset, graph, targets, batch_size):
    """Streams a tf.data.Dataset of images or (image, label) pairs."""
    spec = dataset.element_spec
    labelled = isinstance(spec, tuple)
    if labelled and len(spec) not in (2, 3):
        raise InputError(
            "Expected a dataset of images or (image, label) pairs. Received "
            f"elements {spec}."
        )
    image_spec = spec[0] if labelled else spec
    rank = len(image_spec.shape)
    if rank == len(graph.input_shape):
        dataset = dataset.batch(batch_size)
    elif rank != len(graph.input_shape) + 1:
        raise InputError(
            f"Expected dataset images of shape {graph.input_shape} (or batches "
            f"of them). Received element spec {image_spec}."
        )
    else:
        dataset = dataset.rebatch(batch_size)
    use_labels = isinstance(targets, str) and targets == "labels"
    if use_labels and not labelled:
        raise InputError("targets='labels' needs a dataset of (image, label) pairs.")
    if isinstance(targets, str) and not use_labels:
        raise InputError(f"Expected targets=None, 'labels', an int or an int array. Received {targets!r}.")
    fixed = None if use_labels or targets is None else np.asarray(targets)
    options = tf.data.Options()
    options.autotune.enabled = False  # avoids the autotuner's end-of-data stalls
    dataset = dataset.with_options(options)
    cardinality = int(dataset.cardinality())

    def generate():
        seen = 0
        for element in dataset:
            images = element[0] if labelled else element
            where = f" (dataset inputs {seen}..{seen + int(images.shape[0]) - 1})"
            xb = _as_float_array(images)
            xb = _check_batch(xb, graph, where)
            n = xb.shape[0]
            if use_labels:
                tb = _check_targets(np.asarray(element[1]).reshape(-1), n, graph.num_classes)
            elif fixed is None:
                tb = np.full((n,), -1, np.int32)
            elif fixed.ndim == 0:
                tb = _check_targets(fixed, n, graph.num_classes)
            else:
                if fixed.shape[0] < seen + n:
                    raise InputError(
                        f"Got {fixed.shape[0]} targets but the dataset has more "
                        "inputs. Pass one target per input."
                    )
                tb = _check_targets(fixed[seen : seen + n], n, graph.num_classes)
            seen += n
            yield xb, tb

    return (cardinality if cardinality >= 0 else None), generate()


# ----------------------------------------------------------------- the runner
def _compiled_step(model, graph, method, options, jit_compile):
    """The step of ``method``, traced once per model, options and shape."""
    key = ("step", method.name, tuple(sorted(options.items())), graph.activations, jit_compile)
    cache = rewrite.model_cache(model)
    if key not in cache:
        step = method.build(graph, **options)
        # A looping step is traced plain with each loop body compiled by XLA
        # (keras_pathways.compiling); any other step is one XLA program.
        parts = bool(jit_compile) and method.has_loops(options)
        jit = None
        if jit_compile:
            jit = tf.function(step) if parts else tf.function(step, jit_compile=True)
        cache[key] = {"jit": jit, "parts": parts, "plain": tf.function(step)}
    return cache[key]


def _call_step(compiled, x, targets):
    x = tf.convert_to_tensor(x)
    targets = tf.convert_to_tensor(targets)
    if compiled["jit"] is not None:
        try:
            with compiling.jit_parts(compiled["parts"]):
                return compiled["jit"](x, targets)
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError,
                tf.errors.InternalError, tf.errors.NotFoundError) as error:
            first_line = str(error).strip().splitlines()[0][:300]
            result = compiled["plain"](x, targets)  # a real error raises here
            warnings.warn(
                "XLA could not compile this model's explanation step; falling "
                f"back to a plain tf.function (slower). XLA said: {first_line}",
                RuntimeWarning,
                stacklevel=3,
            )
            compiled["jit"] = None
            return result
    return compiled["plain"](x, targets)


def _progress(total_batches, verbose):
    if verbose is True or (verbose == "auto" and (total_batches is None or total_batches > 1)):
        from tqdm.auto import tqdm

        return tqdm(total=total_batches, unit="batch", desc="explain", leave=False)
    return None


def run_batched(model, x, targets, method_name, options, batch_size=32,
                activations=sites_lib.RECTIFIERS, jit_compile=True, verbose="auto"):
    """Runs a method's compiled step over ``x`` in batches of ``batch_size``.

    Returns:
        dict of numpy arrays concatenated over batches (``masks`` a list per
        site), plus the ``graph``. Memory on the device is bounded by
        ``batch_size``; the last partial batch is padded to the compiled shape
        when there is more than one batch, and the padding is dropped.
    """
    rewrite.check_backend()
    method = registry.get(method_name)
    batch_size = _check_batch_size(batch_size)
    graph = rewrite.pathway_graph(model, activations, require_sites=method.needs_sites)
    if isinstance(x, tf.data.Dataset):
        total, batches = _dataset_batches(x, graph, targets, batch_size)
    else:
        total, batches = _array_batches(x, graph, targets, batch_size)
    compiled = _compiled_step(model, graph, method, options, jit_compile)
    bar = _progress(total, verbose)
    parts = []
    try:
        for xb, tb in _guard(batches, parts, graph, method, options):
            n = xb.shape[0]
            pad = batch_size - n if (parts or total is None or total > 1) and n < batch_size else 0
            if pad:
                xb = np.concatenate([xb, np.repeat(xb[-1:], pad, axis=0)])
                tb = np.concatenate([tb, np.repeat(tb[-1:], pad)])
            out = _call_step(compiled, xb, tb)
            parts.append(_to_numpy(out, n))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return _merge(parts), graph


def _guard(batches, parts, graph, method, options):
    """Re-raises input errors of a stream with the finished part attached."""
    try:
        yield from batches
    except InputError as error:
        if parts:
            error.partial = _assemble(_merge(parts), graph, method, options)
            error.args = (error.args[0] + f" The {len(error.partial)} inputs "
                          "explained before it are in this error's .partial.",)
        raise


def _to_numpy(out, n):
    result = {}
    for key, value in out.items():
        if key == "site_shapes":
            result[key] = [tuple(int(d) for d in v.numpy()) for v in value]
        elif isinstance(value, (list, tuple)):
            result[key] = [v.numpy()[:n] for v in value]
        else:
            result[key] = value.numpy()[:n]
    return result


def _merge(parts):
    merged = {}
    for key in parts[0]:
        if key == "site_shapes":
            if any(p[key] != parts[0][key] for p in parts):
                raise InputError(
                    "Inputs of different sizes give pathways of different "
                    "shapes; explain each size separately."
                )
            merged[key] = parts[0][key]
        elif isinstance(parts[0][key], list):
            merged[key] = [np.concatenate([p[key][j] for p in parts]) for j in range(len(parts[0][key]))]
        else:
            merged[key] = np.concatenate([p[key] for p in parts])
    return merged


def _pathway_from(result, graph, options):
    sites = [
        dataclasses.replace(site, shape=shape)
        for site, shape in zip(graph.sites, result["site_shapes"])
    ]
    return Pathway(
        sites=sites,
        masks=result.get("masks"),
        threshold=result["threshold"].astype(np.float64),
        kept=result["kept"].astype(np.int64),
        targets=result["targets"].astype(np.int64),
        sparsity=options["sparsity"],
        scores=options.get("scores", "mct"),
        activations=graph.activations,
    )


def _assemble(result, graph, method, options):
    if "attributions" not in result:
        return _pathway_from(result, graph, options)
    attributions = result["attributions"].astype(np.float32)
    return Explanation(
        attributions=attributions,
        saliency=max_abs_reduce(attributions),
        targets=result["targets"].astype(np.int64),
        logits=result["logits"].astype(np.float32),
        method=method.name,
        pathway=_pathway_from(result, graph, options) if method.uses_pathway else None,
    )


class ArrayOption:
    """An array-valued option (e.g. an IG baseline), hashable for the step cache."""

    def __init__(self, value):
        self.value = np.asarray(value, dtype=np.float32)
        self._key = (self.value.shape, hashlib.sha1(self.value.tobytes()).hexdigest())

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, ArrayOption) and self._key == other._key


def _options(sparsity, scores, steps, return_masks, init=None, lam=None, lr=None, **extra):
    if steps is not None and (not isinstance(steps, (int, np.integer)) or steps < 1):
        raise ValueError(f"Expected steps to be a positive integer. Received: steps={steps!r}.")
    scores = scores_lib.check_scores(scores)
    if scores != "dgr" and (init, lam, lr) != (None, None, None):
        raise ValueError(
            "init, lam and lr are options of scores='dgr' only. Received: "
            f"scores={scores!r} with init={init!r}, lam={lam!r}, lr={lr!r}."
        )
    options = {
        "sparsity": selection.check_sparsity(sparsity),
        "scores": scores,
        "steps": None if steps is None else int(steps),
        "return_masks": bool(return_masks),
    }
    if scores == "dgr":
        # A hashable tuple: the options key the compiled-step cache.
        options["dgr"] = tuple(sorted(pruning.check_dgr_options(init, lam, steps, lr).items()))
    for key, value in extra.items():
        if key == "baseline" and value is not None:
            baseline = ArrayOption(value)
            if not np.isfinite(baseline.value).all():
                raise InputError("The baseline contains NaN or Inf.")
            value = baseline
        options[key] = value
    return options


def explain(model, x, targets=None, method="pathway_gradient", sparsity=0.85,
            scores="mct", batch_size=32, steps=None, samples=50, noise=0.15,
            baseline=None, inner="gradient", layer=None, seed=0, return_masks=True,
            activations=sites_lib.RECTIFIERS, jit_compile=True, verbose="auto",
            init=None, lam=None, lr=None):
    """Explains a classifier's response to each input.

    Args:
        model: a Keras 3 Functional or Sequential classifier (nested models,
            residual/concat branches, BatchNorm, pooling, dropout are fine). A
            final softmax is skipped: the target logit is pre-softmax.
        x: float inputs: numpy array or tf.Tensor (N, *input_shape), one input
            without the batch axis, or a ``tf.data.Dataset`` of images or
            (image, label) pairs, batched or not.
        targets: None (argmax of the unmasked model per input), an int for all
            inputs, an int array (N,), or "labels" for a labelled dataset.
        method: a name from ``keras_pathways.methods()``: "pathway_gradient"
            (default), "pathway_intgrad", "gradient", "input_x_gradient",
            "integrated_gradients", "smoothgrad", "guided_backprop",
            "grad_cam", "random", or one you registered.
        sparsity: fraction of neurons pruned, in [0, 1) (default 0.85, as in the
            paper); pathway methods only.
        scores: how the pathway is found: contribution scores "mct"
            (NeuronMCT, default) or "intgrad" (NeuronIntGrad), or the
            pruning-objective baselines "dgr" (trained gates), "greedy" and
            "random" (docs/method.md §5; see ``find_pathway``).
        batch_size: inputs per compiled step; bounds memory (IG steps and
            SmoothGrad samples run one batch at a time inside the step).
        steps: NeuronIntGrad's K (default 10), DGR's optimisation steps
            (default 1000) or Integrated Gradients' number of steps (default 50).
        init, lam, lr: DGR's gate initialisation ("ones" default, or
            "uniform"), L1 weight (0.01) and SGD learning rate (0.01).
        samples, noise, inner: SmoothGrad's sample count (50), noise std as a
            fraction of each input's value range (0.15), and the method it
            averages ("gradient").
        baseline: Integrated Gradients' baseline, None (zeros), a scalar or an
            array broadcastable to one input.
        layer: Grad-CAM's site or layer name (default: last spatial site).
        seed: seed of "random", SmoothGrad's noise, the random pathway and
            DGR's uniform init; per input, the randomness is also derived from
            the input's values, so batching never changes it.
        return_masks: keep the binary pathway masks in ``Explanation.pathway``
            (N x neurons bools; set False for dataset-scale runs).
        activations: activation names whose calls are neuron sites (default
            the rectifiers relu, relu6, leaky_relu).
        jit_compile: compile the per-batch step with XLA (falls back to a plain
            tf.function with a warning when XLA cannot compile the model).
        verbose: "auto" shows a progress bar when there is more than one batch.

    Returns:
        ``Explanation`` with ``attributions`` (N, *input_shape), ``saliency``,
        ``targets``, ``logits``, ``method`` and ``pathway`` (pathway methods).
    """
    options = _options(
        sparsity, scores, steps, return_masks, samples=samples, noise=noise,
        baseline=baseline, inner=inner, layer=layer, seed=int(seed), init=init, lam=lam, lr=lr,
    )
    result, graph = run_batched(model, x, targets, method, options, batch_size,
                                activations, jit_compile, verbose)
    return _assemble(result, graph, registry.get(method), options)


@registry.register(
    "_pathway_only", "Internal: the pathway without the gradient pass.", uses_pathway=True,
    loops=_pathway_gradient.has_loops,
)
def _build_pathway_only(graph, **options):
    return _pathway_gradient.pathway_step(graph, **options, with_gradient=False)


def find_pathway(model, x, targets=None, sparsity=0.85, scores="mct", batch_size=32,
                 steps=None, return_masks=True, activations=sites_lib.RECTIFIERS,
                 jit_compile=True, verbose="auto", seed=0, init=None, lam=None, lr=None):
    """The pathway of each input: critical (docs/method.md §3) or pruning-objective (§5).

    ``scores="mct"`` / ``"intgrad"``: scores every neuron of every site by its
    contribution to the target logit, pools all scores of an input, and keeps
    the neurons scoring strictly above the ``100 * sparsity``-th percentile
    (numpy's linear interpolation).

    The pruning-objective baselines the paper compares against:

    - ``"dgr"``: per-neuron gates trained (a whole batch at once) to keep the
      unmasked prediction: cross-entropy to the unmasked softmax +
      ``lam * sum|g|``, SGD ``lr`` with momentum 0.9 for ``steps`` steps
      (default 1000), gates clamped to [0, 100], the lowest-loss
      prediction-preserving gates kept; ``init="ones"`` or ``"uniform"``
      (retries with lam / 10 where no solution was found). The pathway is the
      global percentile selection of the gates.
    - ``"greedy"``: iterative Taylor pruning, 1 % of the neurons per step,
      never removing a zero-score neuron; stops early when only such neurons
      are left, so it can keep more than ``1 - sparsity`` (mostly dead ones).
    - ``"random"``: ``sparsity`` of every site's neurons pruned at random
      (``seed``).

    Greedy and random pathways have no global threshold (``threshold`` NaN).

    Args: as ``explain`` (``x``, ``targets``, ``sparsity``, ``scores``,
        ``batch_size``, ``steps``, ``return_masks``, ``activations``,
        ``jit_compile``, ``verbose``, ``seed``, ``init``, ``lam``, ``lr``).

    Returns:
        ``Pathway`` with per-input masks for every site, thresholds, kept
        counts and fractions, and targets.
    """
    options = _options(sparsity, scores, steps, return_masks, init=init, lam=lam, lr=lr,
                       seed=int(seed))
    result, graph = run_batched(model, x, targets, "_pathway_only", options,
                                batch_size, activations, jit_compile, verbose)
    return _pathway_from(result, graph, options)
