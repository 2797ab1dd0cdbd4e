"""Pathway gradient (docs/method.md §4): the input gradient through the critical pathway."""

import tensorflow as tf

from keras_pathways import compiling
from keras_pathways.attribution.registry import register
from keras_pathways.pathways import scores as scores_lib
from keras_pathways.pathways import pruning
from keras_pathways.pathways import selection


def _pathway(graph, x, targets, sparsity, scores, steps, seed, dgr):
    """(chosen, logits, targets) for one of the pathway kinds."""
    if scores in ("greedy", "random"):
        if scores == "greedy":
            masks, logits, targets = pruning.greedy_masks(graph, x, targets, sparsity)
        else:
            masks, logits, targets = pruning.random_masks(graph, x, targets, sparsity, seed)
        batch = tf.shape(x)[0]
        kept = [tf.reduce_sum(tf.reshape(tf.cast(m > 0.5, tf.int32), [batch, -1]), axis=1)
                for m in masks]
        # No global threshold defines these pathways.
        chosen = {"masks": masks, "kept": tf.stack(kept, axis=1),
                  "threshold": tf.fill([batch], tf.constant(float("nan"), tf.float64))}
        return chosen, logits, targets
    if scores == "dgr":
        site_scores, logits, targets = pruning.dgr_gates(graph, x, targets, seed=seed, **dgr)
    else:
        site_scores, logits, targets = scores_lib.contribution_scores(
            graph, x, targets, scores, 10 if steps is None else steps  # NeuronIntGrad's K
        )
    return compiling.part(lambda s: selection.select(s, sparsity))(site_scores), logits, targets


def pathway_step(graph, sparsity=0.85, scores="mct", steps=None, return_masks=True,
                 with_gradient=True, seed=0, dgr=None, **unused):
    """The per-batch pathway computation as one traceable function.

    ``step(x, targets)``: the pathway of kind ``scores`` -- contribution
    scores ("mct", "intgrad") or DGR gates ("dgr") with the global percentile
    selection, or the greedy/random pruning masks -- then (with_gradient)
    d y_c(f(x, M)) / dx through it. ``disconnected`` (N,) marks the inputs
    whose pathway has a site with no kept neuron and whose pathway gradient
    is exactly 0 (the empty sites cut the input off from the logit).
    """

    graph.require_sites()
    dgr = dict(dgr or ())

    def masked_gradient(x, targets, masks):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            y = scores_lib.target_logit(graph(x, masks=masks), targets)
        return tape.gradient(y, x)

    def cut_off(x, targets, masks, kept):
        # Only inputs with an empty site can be cut off by whole sites, and the
        # gradient pass runs only when the batch has one (rare): no extra run
        # time otherwise (XLA still compiles the branch once). Decided per
        # input, so batching never changes the answer.
        empty = tf.reduce_any(tf.equal(kept, 0), axis=1)
        return tf.cond(
            tf.reduce_any(empty),
            lambda: tf.logical_and(empty, all_zero(masked_gradient(x, targets, masks))),
            lambda: tf.zeros_like(empty),
        )

    def step(x, targets):
        chosen, logits, targets = _pathway(graph, x, targets, sparsity, scores, steps, seed, dgr)
        out = {
            "targets": targets,
            "logits": logits,
            "threshold": chosen["threshold"],
            "kept": chosen["kept"],
            # Per-input site shapes (concrete even for size-agnostic models).
            "site_shapes": [tf.shape(m)[1:] for m in chosen["masks"]],
        }
        if return_masks:
            out["masks"] = [m > 0.5 for m in chosen["masks"]]
        if with_gradient:
            gradient = compiling.part(masked_gradient)(x, targets, chosen["masks"])
            out["attributions"] = gradient
            empty = tf.reduce_any(tf.equal(chosen["kept"], 0), axis=1)
            out["disconnected"] = tf.logical_and(empty, all_zero(gradient))
        else:
            out["disconnected"] = compiling.part(cut_off)(x, targets, chosen["masks"], chosen["kept"])
        return out

    return step


def all_zero(tensor):
    """bool (N,): whether each input's slice of ``tensor`` is exactly 0 everywhere."""
    flat = tf.reshape(tensor, [tf.shape(tensor)[0], -1])
    return tf.reduce_all(tf.equal(flat, 0), axis=1)


def has_loops(options):
    """Whether a pathway step of these options runs a loop (all but NeuronMCT)."""
    return options.get("scores", "mct") != "mct"


@register(
    "pathway_gradient",
    "Input gradient of the network restricted to the input's critical pathway "
    "(NeuronMCT scores by default; scores='intgrad' for NeuronIntGrad; "
    "'dgr', 'greedy', 'random' for the pruning-objective pathways).",
    uses_pathway=True,
    loops=has_loops,
)
def _build_pathway_gradient(graph, **options):
    return pathway_step(graph, **options)


@register(
    "pathway_intgrad",
    "Pathway gradient with NeuronIntGrad contribution scores.",
    uses_pathway=True,
    loops=True,
)
def _build_pathway_intgrad(graph, **options):
    return pathway_step(graph, **{**options, "scores": "intgrad"})
