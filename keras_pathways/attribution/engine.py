"""The public entry points ``explain`` and ``find_pathway`` (a thin layer).

How a call flows (README, "Architecture"):

1. ``options.resolve`` turns the keyword options into the method's declared
   options (defaults filled in, unknown names refused);
2. ``runner.run_batched`` checks and batches the input (``inputs``), picks
   ``batch_size="auto"`` (``memory``), and runs the method's compiled step,
   cached per model (``runner.compiled_step``), on every batch;
3. ``results.assemble`` turns the merged tensors into an ``Explanation`` (or
   a ``Pathway``).

The names that used to live here (``InputError``, ``Explanation``,
``auto_batch_size``, ...) are re-exported, so ``keras_pathways.attribution.engine``
keeps working as an import path.
"""

from keras_pathways.attribution import builtin  # noqa: F401  (registers the built-in methods)
from keras_pathways.attribution import options as options_lib
from keras_pathways.attribution import registry
from keras_pathways.attribution import runner
from keras_pathways.attribution.inputs import InputError
from keras_pathways.attribution.memory import AUTO_UNKNOWN_SIZE_BATCH  # noqa: F401
from keras_pathways.attribution.memory import auto_batch_size  # noqa: F401
from keras_pathways.attribution.memory import available_memory  # noqa: F401
from keras_pathways.attribution.memory import step_bytes_per_input  # noqa: F401
from keras_pathways.attribution.results import Explanation  # noqa: F401
from keras_pathways.attribution.results import assemble
from keras_pathways.attribution.results import max_abs_reduce  # noqa: F401
from keras_pathways.attribution.results import pathway_from
from keras_pathways.graph import rewrite
from keras_pathways.graph import sites as sites_lib
from keras_pathways.pathways.pathway import warn_if_disconnected

__all__ = ["explain", "find_pathway", "clear_cache", "InputError", "Explanation"]


def _resolve(method, options, label=None):
    return options_lib.resolve(method, options, stacklevel=4, label=label)


def explain(model, x, targets=None, method="pathway_gradient", *, batch_size="auto",
            activations=sites_lib.RECTIFIERS, jit_compile="auto", verbose="auto", **options):
    """Explains a classifier's response to each input.

    Args:
        model: a Keras 3 Functional or Sequential classifier (nested models,
            residual/concat branches, BatchNorm, pooling, dropout are fine). A
            final softmax or sigmoid is skipped: the target is the logit before
            it (a ``Dense(1, activation="sigmoid")`` binary classifier is
            explained through its one pre-sigmoid logit).
        x: float inputs: numpy array or tf.Tensor (N, *input_shape), one input
            without the batch axis, or a ``tf.data.Dataset`` of images,
            (image, label) pairs or ``{"image": ..., "label": ...}`` dicts
            (the tensorflow_datasets form), batched or not. A dataset that
            fails part-way (a generator raising, a file that cannot be read)
            raises ``InputError`` with the finished batches in ``.partial``.
            For a model with several inputs: a list (or tuple) of arrays in
            the order of ``model.inputs``, or a dict keyed by the input names,
            each (N, *input_shape_i) with the same N (datasets are not
            supported for such models yet).
        targets: None (argmax of the unmasked model per input), an int for all
            inputs, an int array (N,), "labels" for a labelled dataset, or a
            ``keras_pathways.targets.Score`` of the outputs
            (``targets.regression(unit)``, ``targets.binary()``,
            ``targets.logit(c)`` or ``Score(fn, name)``): every method and the
            pathway then explain that score (the result's ``targets`` are -1).
        method: a name from ``keras_pathways.methods()``: "pathway_gradient"
            (default), "pathway_intgrad", "gradient", "input_x_gradient",
            "integrated_gradients", "smoothgrad", "guided_backprop",
            "grad_cam", "random", or one you registered.
        batch_size: inputs per compiled step; bounds memory (IG steps and
            SmoothGrad samples run one batch at a time inside the step).
            "auto" (default): the largest power of two up to 64 whose
            estimated step memory (from the model's activation sizes) fits in
            a quarter of the available memory (see ``auto_batch_size``); the
            choice is logged (logger "keras_pathways", INFO) and kept in the
            result's ``batch_size``. An int is used as given.
        activations: activation names whose calls are neuron sites (default
            the rectifiers relu, relu6, leaky_relu); one name may be given as
            a string ("relu").
        jit_compile: "auto" (default): with a GPU, XLA; on a CPU, a plain
            ``tf.function`` whose pathway selection is compiled by XLA (the
            faster choice measured on CPUs; README, "Speed"). True forces XLA
            for the whole step (loop bodies separately), False a plain
            ``tf.function``. XLA falls back to a plain function with a
            warning when it cannot compile the model. The choice made is the
            result's ``compiled``.
        verbose: "auto" shows a progress bar when there is more than one batch.
        **options: the method's own options, each declared once by the method
            (``keras_pathways.method_options(method)`` lists them with their
            defaults; the table is in docs/method.md, "Options"). For
            "pathway_gradient": ``sparsity`` (0.85), ``kind`` ("mct"; or
            "intgrad", "dgr", "greedy", "random", docs/method.md §3 and §5),
            ``intgrad_steps`` (10), ``dgr_steps`` (1000), ``init``, ``lam``,
            ``lr`` (DGR), ``seed`` (0) and ``return_masks`` (True);
            "integrated_gradients": ``steps`` (50), ``baseline``;
            "smoothgrad": ``samples`` (50), ``noise`` (0.15), ``inner``
            ("gradient", whose options are accepted too), ``seed``;
            "grad_cam": ``layer``; "random": ``seed``. An option the method
            does not declare is an error that names the closest valid one;
            the old spellings ``scores=`` (now ``kind``) and a pathway
            method's ``steps=`` (now ``intgrad_steps`` / ``dgr_steps``) still
            work with a ``DeprecationWarning``.

    Returns:
        ``Explanation`` with ``attributions`` (N, *input_shape), ``saliency``,
        ``targets``, ``logits``, ``method``, ``pathway`` (pathway methods) and
        ``batch_size``. For a model with several inputs ``attributions`` and
        ``saliency`` hold one array per input, in the form ``x`` was given
        (list, tuple or dict); the pathway is per neuron, as for one input.

    Raises:
        InputError: bad input (shape, dtype, NaN/Inf, empty, targets; for
            several inputs also their number, names and batch sizes).
        ValueError: an unknown method, an unknown option or a bad option value.

    Warns:
        DisconnectedPathwayWarning: a pathway keeps no neuron in sites that
            cut an input off from its target logit (its pathway gradient is
            then exactly 0; see ``Pathway.disconnected``).
    """
    chosen = registry.get(method)
    graph_options, runtime_options = _resolve(chosen, options)
    result, graph = runner.run_batched(model, x, targets, chosen, graph_options, runtime_options,
                                       batch_size, activations, jit_compile, verbose)
    explanation = assemble(result, graph, chosen, graph_options)
    if explanation.pathway is not None:
        warn_if_disconnected(explanation.pathway, stacklevel=3)
    return explanation


def find_pathway(model, x, targets=None, *, batch_size="auto", activations=sites_lib.RECTIFIERS,
                 jit_compile="auto", verbose="auto", **options):
    """The pathway of each input: critical (docs/method.md §3) or pruning-objective (§5).

    ``kind="mct"`` / ``"intgrad"``: scores every neuron of every site by its
    contribution to the target logit, pools all scores of an input, and keeps
    the neurons scoring strictly above the ``100 * sparsity``-th percentile
    (numpy's linear interpolation).

    The pruning-objective baselines the paper compares against:

    - ``"dgr"``: per-neuron gates trained (a whole batch at once) to keep the
      unmasked prediction: cross-entropy to the unmasked softmax +
      ``lam * sum|g|``, SGD ``lr`` with momentum 0.9 for ``dgr_steps`` steps
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

    Args:
        model: as ``explain``.
        x: as ``explain``.
        targets: as ``explain``.
        batch_size: as ``explain``.
        activations: as ``explain``.
        jit_compile: as ``explain``.
        verbose: as ``explain``.
        **options: the options of method "pathway_gradient" (``sparsity``,
            ``kind``, ``intgrad_steps``, ``dgr_steps``, ``init``, ``lam``,
            ``lr``, ``seed``, ``return_masks``), with the same defaults.

    Returns:
        ``Pathway`` with per-input masks for every site, thresholds, kept
        counts and fractions, targets, ``empty_sites`` and ``disconnected``
        (checked with one gradient pass, only for batches where a site keeps
        no neuron).

    Warns:
        DisconnectedPathwayWarning: as ``explain``.
    """
    chosen = registry.get("_pathway_only")
    graph_options, runtime_options = _resolve(chosen, options, label="find_pathway")
    result, graph = runner.run_batched(model, x, targets, chosen, graph_options, runtime_options,
                                       batch_size, activations, jit_compile, verbose)
    pathway = pathway_from(result, graph, graph_options)
    warn_if_disconnected(pathway, stacklevel=3)
    return pathway


def clear_cache(model=None):
    """Drops the graphs and compiled steps built for ``model`` (all models when None).

    They are held weakly per model and freed with it; clearing is for a model
    whose structure was changed in place, or to free memory at once. The next
    ``explain`` rebuilds and retraces.

    Returns:
        the number of models whose cache was dropped.
    """
    return rewrite.clear_cache(model)
