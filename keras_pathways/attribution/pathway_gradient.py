"""Pathway gradient (docs/method.md §4): the input gradient through the critical pathway.

Registers "pathway_gradient", "pathway_intgrad" and the internal
"_pathway_only" (``find_pathway``'s step); the pathway itself is found in
``keras_pathways.pathways.find``.
"""

from keras_pathways.attribution.options import Option
from keras_pathways.attribution.options import OptionError
from keras_pathways.attribution.options import choice
from keras_pathways.attribution.options import flag
from keras_pathways.attribution.options import non_negative_number
from keras_pathways.attribution.options import positive_int
from keras_pathways.attribution.options import seed as check_seed
from keras_pathways.attribution.registry import register
from keras_pathways.pathways import find
from keras_pathways.pathways import pruning
from keras_pathways.pathways import scores as scores_lib
from keras_pathways.pathways import selection


SPARSITY = Option("sparsity", 0.85, selection.check_sparsity, "fraction of neurons pruned, in [0, 1)")
RETURN_MASKS = Option("return_masks", True, flag("return_masks"),
                      "keep the per-input binary masks in the pathway (False for dataset-scale runs)")
INTGRAD_STEPS = Option("intgrad_steps", 10, positive_int("intgrad_steps"),
                       "NeuronIntGrad's K: the grid 0, 1/K, ..., 1 per site (kind 'intgrad')")
KIND = Option("kind", "mct", choice("kind", scores_lib.KINDS),
              "how the pathway is found: 'mct' (NeuronMCT), 'intgrad' (NeuronIntGrad), or the "
              "pruning-objective baselines 'dgr', 'greedy', 'random'")
SEED = Option("seed", 0, check_seed,
              "seed of the random pathway and of DGR's uniform start, in [0, 2**31)", graph=False)
DGR_OPTIONS = (
    Option("dgr_steps", pruning.DGR_DEFAULTS["steps"], positive_int("dgr_steps"),
           "DGR's optimisation steps (kind 'dgr')"),
    Option("init", pruning.DGR_DEFAULTS["init"], choice("init", pruning.DGR_INITS),
           "DGR's gate initialisation, 'ones' or 'uniform' (kind 'dgr')"),
    Option("lam", pruning.DGR_DEFAULTS["lam"], non_negative_number("lam"),
           "DGR's L1 weight on the gates (kind 'dgr')"),
    Option("lr", pruning.DGR_DEFAULTS["lr"], non_negative_number("lr", strictly_positive=True),
           "DGR's SGD learning rate (kind 'dgr')"),
)
_DGR_NAMES = {"dgr_steps": "steps", "init": "init", "lam": "lam", "lr": "lr"}


def _old_steps(given):
    """Where the old shared ``steps`` went: NeuronIntGrad's K or DGR's steps."""
    kind = str(given.get("kind", given.get("scores", "mct"))).lower()
    return {"dgr": "dgr_steps", "intgrad": "intgrad_steps"}.get(kind)


def _check_kind_options(values, given):
    """Kind-specific options only with their kind; DGR's folded into one hashable entry."""
    kind = values["kind"]
    for name in given:
        if name in _DGR_NAMES and kind != "dgr":
            raise OptionError(f"{name} is an option of kind='dgr' only. Received: kind={kind!r} with {name}.")
        if name == "intgrad_steps" and kind != "intgrad":
            raise OptionError(f"intgrad_steps is an option of kind='intgrad' only. Received: kind={kind!r}.")
    dgr = {_DGR_NAMES[name]: values.pop(name) for name in list(_DGR_NAMES)}
    values["dgr"] = tuple(sorted(dgr.items())) if kind == "dgr" else ()
    return values


PATHWAY_OPTIONS = (SPARSITY, KIND, INTGRAD_STEPS, *DGR_OPTIONS, SEED, RETURN_MASKS)
_DEPRECATED = {"scores": "kind", "steps": _old_steps}


@register(
    "pathway_gradient",
    "Input gradient of the network restricted to the input's critical pathway "
    "(NeuronMCT by default; kind='intgrad' for NeuronIntGrad; 'dgr', 'greedy', "
    "'random' for the pruning-objective pathways).",
    uses_pathway=True,
    loops=find.has_loops,
    options=PATHWAY_OPTIONS,
    deprecated=_DEPRECATED,
    validate=_check_kind_options,
)
def _build_pathway_gradient(graph, **options):
    return find.pathway_step(graph, **options)


def _fixed_intgrad(values, given):
    values["kind"] = "intgrad"
    values["dgr"] = ()
    return values


@register(
    "pathway_intgrad",
    "Pathway gradient with NeuronIntGrad contribution scores.",
    uses_pathway=True,
    loops=True,
    options=(SPARSITY, INTGRAD_STEPS, RETURN_MASKS),
    deprecated={"steps": "intgrad_steps"},
    validate=_fixed_intgrad,
)
def _build_pathway_intgrad(graph, **options):
    return find.pathway_step(graph, **options)


@register(
    "_pathway_only", "Internal: the pathway without the gradient pass (find_pathway).",
    uses_pathway=True,
    loops=find.has_loops,
    options=PATHWAY_OPTIONS,
    deprecated=_DEPRECATED,
    validate=_check_kind_options,
)
def _build_pathway_only(graph, **options):
    return find.pathway_step(graph, **options, with_gradient=False)
