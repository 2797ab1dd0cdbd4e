"""Where ``keras_pathways.datasets`` writes (prepared TFRecords, folder views)."""

import os


def home_dir():
    """keras_pathways' cache folder (a ``str``; nothing is created).

    ``$KERAS_PATHWAYS_HOME``, else ``$XDG_CACHE_HOME/keras_pathways``, else
    ``~/.cache/keras_pathways`` (the same folder as the model cache).
    """
    home = os.environ.get("KERAS_PATHWAYS_HOME")
    if not home:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        home = os.path.join(base, "keras_pathways")
    return home


def default_data_dir():
    """Default tfds ``data_dir`` of this package (a ``str``; nothing is created).

    ``$KERAS_PATHWAYS_HOME/tensorflow_datasets``, else
    ``$XDG_CACHE_HOME/keras_pathways/tensorflow_datasets``, else
    ``~/.cache/keras_pathways/tensorflow_datasets``.
    """
    return os.path.join(home_dir(), "tensorflow_datasets")
