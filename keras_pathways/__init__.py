"""keras_pathways: explain a Keras model's response through its critical pathways.

    import keras_pathways
    explanation = keras_pathways.explain(model, images)          # pathway gradient
    explanation.saliency, explanation.pathway.kept_fraction

See docs/method.md (Khakzar et al., CVPR 2021, "Neural Response Interpretation through the
Lens of Critical Pathways") for the maths.

Everything here is imported on first use, so ``import keras_pathways`` (and
``keras-pathways --help``) does not load TensorFlow; the first ``explain``
does.
"""

import importlib
import importlib.util
import typing

__version__ = "0.1.0"

if importlib.util.find_spec("tensorflow") is None:  # pragma: no cover - depends on the install
    raise ImportError(
        "keras_pathways needs TensorFlow 2.16+ (Keras 3 on the TensorFlow "
        "backend), which is not installed. Install one build: pip install "
        "'keras-pathways[cpu]' (tensorflow-cpu) or 'keras-pathways[gpu]' "
        "(tensorflow with CUDA), or pip install tensorflow."
    )

#: Public name -> (module, attribute in it).
_EXPORTS = {
    "DisconnectedPathwayWarning": ("keras_pathways.pathways.pathway", "DisconnectedPathwayWarning"),
    "Explanation": ("keras_pathways.attribution.results", "Explanation"),
    "InputError": ("keras_pathways.attribution.inputs", "InputError"),
    "Option": ("keras_pathways.attribution.options", "Option"),
    "Pathway": ("keras_pathways.pathways.pathway", "Pathway"),
    "PathwayGraph": ("keras_pathways.graph.rewrite", "PathwayGraph"),
    "PathwayMask": ("keras_pathways.pathways.pathway", "PathwayMask"),
    "RECTIFIERS": ("keras_pathways.graph.sites", "RECTIFIERS"),
    "Site": ("keras_pathways.graph.sites", "Site"),
    "StepResult": ("keras_pathways.attribution.registry", "StepResult"),
    "UnsupportedModelError": ("keras_pathways.graph.rewrite", "UnsupportedModelError"),
    "clear_cache": ("keras_pathways.attribution.engine", "clear_cache"),
    "explain": ("keras_pathways.attribution.engine", "explain"),
    "explain_dataset": ("keras_pathways.attribution.dataset", "explain_dataset"),
    "load_dataset_explanations": ("keras_pathways.attribution.dataset", "load_dataset_explanations"),
    "export_explainer": ("keras_pathways.export", "export_explainer"),
    "find_pathway": ("keras_pathways.attribution.engine", "find_pathway"),
    "freeze": ("keras_pathways.pathways.pathway", "freeze"),
    "get_method": ("keras_pathways.attribution.registry", "get"),
    "max_abs_reduce": ("keras_pathways.attribution.results", "max_abs_reduce"),
    "method_options": ("keras_pathways.attribution.registry", "options_of"),
    "methods": ("keras_pathways.attribution.registry", "methods"),
    "pathway_graph": ("keras_pathways.graph.rewrite", "pathway_graph"),
    "register": ("keras_pathways.attribution.registry", "register"),
    "unregister": ("keras_pathways.attribution.registry", "unregister"),
}

#: Submodules reachable as attributes (``kp.models.efficientnet_lite0()``).
_LAZY_SUBMODULES = ("analysis", "atomic", "compiling", "datasets", "evaluation", "export",
                    "models", "targets", "viz")

__all__ = sorted(_EXPORTS) + ["analysis", "datasets"]

if typing.TYPE_CHECKING:  # for static tools (IDEs, the API docs); never run
    from keras_pathways.attribution.dataset import explain_dataset, load_dataset_explanations  # noqa: F401
    from keras_pathways.attribution.engine import clear_cache, explain, find_pathway  # noqa: F401
    from keras_pathways.attribution.inputs import InputError  # noqa: F401
    from keras_pathways.attribution.options import Option  # noqa: F401
    from keras_pathways.attribution.registry import StepResult, methods, register, unregister  # noqa: F401
    from keras_pathways.attribution.registry import get as get_method  # noqa: F401
    from keras_pathways.attribution.registry import options_of as method_options  # noqa: F401
    from keras_pathways.attribution.results import Explanation, max_abs_reduce  # noqa: F401
    from keras_pathways.export import export_explainer  # noqa: F401
    from keras_pathways.graph.rewrite import PathwayGraph, UnsupportedModelError, pathway_graph  # noqa: F401
    from keras_pathways.graph.sites import RECTIFIERS, Site  # noqa: F401
    from keras_pathways.pathways.pathway import DisconnectedPathwayWarning, Pathway, PathwayMask, freeze  # noqa: F401


def __getattr__(name):
    if name in _EXPORTS:
        importlib.import_module("keras_pathways.attribution.engine")  # registers the methods
        module, attribute = _EXPORTS[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value  # later look-ups skip this function
        return value
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"keras_pathways.{name}")
    raise AttributeError(f"module 'keras_pathways' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | set(_LAZY_SUBMODULES))
