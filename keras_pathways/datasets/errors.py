"""The one error type of :mod:`keras_pathways.datasets`."""


class DatasetError(ValueError):
    """A data set could not be found, read or understood.

    Subclasses :class:`ValueError`. The message always names the file, folder
    or data set concerned and, where there is one, the fix.
    """
