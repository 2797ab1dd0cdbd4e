"""Moved to ``keras_pathways.cli.files`` (``load_model`` and ``to_unit_range``
to ``keras_pathways.models.loading``); this name stays importable.

This module replaces itself with ``keras_pathways.cli.files`` in
``sys.modules``: both names are one module object, so patching a helper here
(the tests patch ``_save_png``) patches the one the command uses. The star
import is for readers and static tools.
"""

import sys

from keras_pathways.cli import files as _files
from keras_pathways.cli.files import *  # noqa: F401,F403

sys.modules[__name__] = _files
