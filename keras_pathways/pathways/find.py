"""Finding the pathway of each input, for every kind, as one traceable step.

The one place that dispatches on the pathway kind (docs/method.md §3 and §5):
contribution scores ("mct": NeuronMCT, "intgrad": NeuronIntGrad) or DGR gates
("dgr"), each followed by the global percentile selection
(``selection.select``), or the greedy / random pruning masks, which have no
global threshold. ``pathway_step`` builds the step both the pathway methods of
``explain`` and ``find_pathway`` run; with ``with_gradient`` it also takes the
pathway gradient, d y_c(f(x, M)) / dx through the chosen masks (§4).
"""

import tensorflow as tf

from keras_pathways import compiling
from keras_pathways import targets as targets_lib
from keras_pathways.pathways import pruning
from keras_pathways.pathways import scores as scores_lib
from keras_pathways.pathways import selection

__all__ = ["find", "pathway_step", "all_zero", "has_loops"]


def find(graph, x, targets, kind="mct", sparsity=0.85, intgrad_steps=10, dgr=None, seed=0):
    """The pathway of each input of a batch (traceable).

    Args:
        graph: a ``PathwayGraph`` with sites.
        x: float (N, *input_shape); targets: int32 (N,), -1 = argmax.
        kind: "mct", "intgrad", "dgr", "greedy" or "random".
        sparsity: fraction of neurons pruned, in [0, 1).
        intgrad_steps: NeuronIntGrad's K ("intgrad").
        dgr: {"init", "lam", "steps", "lr"} of DGR ("dgr").
        seed: int or int32 scalar tensor ("random", DGR's uniform init).

    Returns:
        ``(chosen, logits, targets)``: chosen is a dict with ``masks`` (per
        site, (N, *site_shape): bool for a percentile selection, float 0/1
        for greedy and random pathways), ``kept`` (N, sites) and
        ``threshold`` (N,) float64 (NaN for greedy and random pathways).
    """
    if kind in ("greedy", "random"):
        if kind == "greedy":
            masks, logits, targets = pruning.greedy_masks(graph, x, targets, sparsity)
        else:
            masks, logits, targets = pruning.random_masks(graph, x, targets, sparsity, seed)
        batch = tf.shape(x)[0]
        kept = [tf.reduce_sum(tf.reshape(tf.cast(m > 0.5, tf.int32), [batch, -1]), axis=1)
                for m in masks]
        chosen = {"masks": masks, "kept": tf.stack(kept, axis=1),
                  "threshold": tf.fill([batch], tf.constant(float("nan"), tf.float64))}
        return chosen, logits, targets
    if kind == "dgr":
        site_scores, logits, targets = pruning.dgr_gates(graph, x, targets, seed=seed, **(dgr or {}))
    else:
        # Signed scores: the selection takes magnitudes from the bits.
        site_scores, logits, targets = scores_lib.contribution_scores(graph, x, targets, kind, intgrad_steps,
                                                                      absolute=False)
    chosen = selection.select(site_scores, sparsity, float_masks=False)
    chosen["masks"] = chosen["keep"]  # bool: the masked pass selects, f(x, M) is unchanged
    return chosen, logits, targets


def all_zero(tensor):
    """bool (N,): whether each input's slice of ``tensor`` is exactly 0 everywhere."""
    flat = tf.reshape(tensor, [tf.shape(tensor)[0], -1])
    return tf.reduce_all(tf.equal(flat, 0), axis=1)


def has_loops(graph_options):
    """Whether a pathway step of these options runs a loop (every kind but NeuronMCT)."""
    return graph_options.get("kind", "mct") != "mct"


def pathway_step(graph, kind="mct", sparsity=0.85, intgrad_steps=10, dgr=None, return_masks=True,
                 with_gradient=True):
    """The per-batch pathway computation as one traceable function.

    ``step(x, targets, seed=0) -> StepResult``: the pathway of ``kind`` (see
    ``find``), then (``with_gradient``) the pathway gradient through it.
    ``disconnected`` (N,) marks the inputs whose pathway has a site with no
    kept neuron and whose pathway gradient is exactly 0 (the empty sites cut
    the input off from the logit).
    """
    from keras_pathways.attribution.registry import StepResult

    graph.require_sites()
    dgr = dict(dgr or ())

    def masked_gradient(x, targets, masks):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            y = targets_lib.target_logit(graph(x, masks=masks), targets)
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

    def step(x, targets, seed=0):
        chosen, logits, targets = find(graph, x, targets, kind, sparsity, intgrad_steps, dgr, seed)
        masks = chosen["masks"]
        gradient = disconnected = None
        if with_gradient:
            gradient = compiling.part(masked_gradient)(x, targets, masks)
            empty = tf.reduce_any(tf.equal(chosen["kept"], 0), axis=1)
            disconnected = tf.logical_and(empty, all_zero(gradient))
        else:
            disconnected = compiling.part(cut_off)(x, targets, masks, chosen["kept"])
        return StepResult(
            attributions=gradient,
            targets=targets,
            logits=logits,
            threshold=chosen["threshold"],
            kept=chosen["kept"],
            masks=[m if m.dtype == tf.bool else m > 0.5 for m in masks] if return_masks else None,
            site_shapes=[tf.shape(m)[1:] for m in masks],
            disconnected=disconnected,
        )

    return step
