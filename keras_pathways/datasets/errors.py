"""The one error type of ``keras_pathways.datasets``."""


class DatasetError(ValueError):
    """A data set could not be found, read or understood.

    Subclasses ``ValueError``. The message always names the file, folder
    or data set concerned and, where there is one, the fix.
    """
