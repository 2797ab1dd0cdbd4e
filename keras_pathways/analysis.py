"""Moved to ``keras_pathways.evaluation.analysis``; this name stays importable.

This module replaces itself with ``keras_pathways.evaluation.analysis`` in
``sys.modules``: both names are one module object, so patching a name here
patches the one the code uses. The star import is for readers and static tools.
"""

import sys

from keras_pathways.evaluation import analysis as _analysis
from keras_pathways.evaluation.analysis import *  # noqa: F401,F403

sys.modules[__name__] = _analysis
