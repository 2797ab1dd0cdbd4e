"""keras_pathways: explain a Keras model's response through its critical pathways.

    import keras_pathways
    explanation = keras_pathways.explain(model, images)          # pathway gradient
    explanation.saliency, explanation.pathway.kept_fraction

See docs/method.md (Khakzar et al., CVPR 2021, "Neural Response Interpretation through the
Lens of Critical Pathways") for the maths.
"""

__version__ = "0.1.0"

try:
    import tensorflow as _tensorflow  # noqa: F401
except ImportError as _error:  # pragma: no cover - depends on the install
    raise ImportError(
        "keras_pathways needs TensorFlow 2.16+ (Keras 3 on the TensorFlow "
        "backend), which is not installed. Install one build: pip install "
        "'keras-pathways[cpu]' (tensorflow-cpu) or 'keras-pathways[gpu]' "
        "(tensorflow with CUDA), or pip install tensorflow."
    ) from _error

from keras_pathways.attribution.engine import Explanation
from keras_pathways.attribution.engine import InputError
from keras_pathways.attribution.engine import explain
from keras_pathways.attribution.engine import find_pathway
from keras_pathways.attribution.engine import max_abs_reduce
from keras_pathways.attribution.registry import methods
from keras_pathways.attribution.registry import get as get_method
from keras_pathways.attribution.registry import register
from keras_pathways.attribution.registry import unregister
from keras_pathways import analysis
from keras_pathways import datasets
from keras_pathways.export import export_explainer
from keras_pathways.graph.rewrite import PathwayGraph
from keras_pathways.graph.rewrite import UnsupportedModelError
from keras_pathways.graph.rewrite import pathway_graph
from keras_pathways.graph.sites import RECTIFIERS
from keras_pathways.graph.sites import Site
from keras_pathways.pathways.pathway import DisconnectedPathwayWarning
from keras_pathways.pathways.pathway import Pathway
from keras_pathways.pathways.pathway import PathwayMask
from keras_pathways.pathways.pathway import freeze

__all__ = [
    "DisconnectedPathwayWarning",
    "Explanation",
    "InputError",
    "Pathway",
    "PathwayGraph",
    "PathwayMask",
    "RECTIFIERS",
    "Site",
    "analysis",
    "datasets",
    "UnsupportedModelError",
    "explain",
    "export_explainer",
    "find_pathway",
    "freeze",
    "get_method",
    "max_abs_reduce",
    "methods",
    "pathway_graph",
    "register",
    "unregister",
]

#: Submodules reachable as attributes (``kp.models.efficientnet_lite0()``),
#: imported on first use so ``import keras_pathways`` stays light.
_LAZY_SUBMODULES = ("evaluation", "models", "viz", "compiling", "atomic")


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"keras_pathways.{name}")
    raise AttributeError(f"module 'keras_pathways' has no attribute {name!r}")
