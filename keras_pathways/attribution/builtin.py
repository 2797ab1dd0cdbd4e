"""The built-in methods, registered by importing their modules here (the one place).

A new built-in method is one module under ``keras_pathways/attribution/`` with
``@register(...)`` builders, plus one import line below.
"""

from keras_pathways.attribution import grad_cam  # noqa: F401
from keras_pathways.attribution import gradients  # noqa: F401
from keras_pathways.attribution import pathway_gradient  # noqa: F401
