"""Moved to ``keras_pathways.cli.demos``; this name stays importable.

This module replaces itself with ``keras_pathways.cli.demos`` in
``sys.modules``: both names are one module object. The star import is for
readers and static tools.
"""

import sys

from keras_pathways.cli import demos as _demos
from keras_pathways.cli.demos import *  # noqa: F401,F403

sys.modules[__name__] = _demos
