"""Pathway gradient (SPEC §4): the input gradient through the critical pathway."""

import tensorflow as tf

from keras_pathways.attribution.registry import register
from keras_pathways.pathways import scores as scores_lib
from keras_pathways.pathways import selection


def pathway_step(graph, sparsity=0.85, scores="mct", steps=None, return_masks=True,
                 with_gradient=True, **unused):
    """The per-batch pathway computation as one traceable function.

    ``step(x, targets)``: contributions at masks = 1 -> global percentile
    threshold -> binary masks M -> (with_gradient) d y_c(f(x, M)) / dx.
    """

    graph.require_sites()
    steps = 10 if steps is None else steps  # NeuronIntGrad's K

    def step(x, targets):
        site_scores, logits, targets = scores_lib.contribution_scores(
            graph, x, targets, scores, steps
        )
        chosen = selection.select(site_scores, sparsity)
        out = {
            "targets": targets,
            "logits": logits,
            "threshold": chosen["threshold"],
            "kept": chosen["kept"],
            # Per-input site shapes (concrete even for size-agnostic models).
            "site_shapes": [tf.shape(s)[1:] for s in site_scores],
        }
        if return_masks:
            out["masks"] = [m > 0.5 for m in chosen["masks"]]
        if with_gradient:
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(x)
                y = scores_lib.target_logit(graph(x, masks=chosen["masks"]), targets)
            out["attributions"] = tape.gradient(y, x)
        return out

    return step


@register(
    "pathway_gradient",
    "Input gradient of the network restricted to the input's critical pathway "
    "(NeuronMCT scores by default; scores='intgrad' for NeuronIntGrad).",
    uses_pathway=True,
)
def _build_pathway_gradient(graph, **options):
    return pathway_step(graph, **options)


@register(
    "pathway_intgrad",
    "Pathway gradient with NeuronIntGrad contribution scores.",
    uses_pathway=True,
)
def _build_pathway_intgrad(graph, **options):
    return pathway_step(graph, **{**options, "scores": "intgrad"})
