"""How every command reports an expected error: one line on stderr, exit code 2."""

import sys

from keras_pathways.models.loading import LoadError

#: The commands' one-line error. The same class as ``models.loading.LoadError``
#: (a ValueError), so a model that cannot be loaded and an image or folder that
#: cannot be used are caught and reported alike.
CommandError = LoadError

#: What a command reports in one line instead of a traceback: bad arguments,
#: options, models, data (InputError, DatasetError, UnsupportedModelError,
#: ExportError, ... are ValueErrors) and file-system faults.
EXPECTED = (ValueError, OSError)


def one_line(error):
    """The error's message with its whitespace (newlines too) collapsed."""
    return " ".join(str(error).split())


def run_command(run, args):
    """``run(args)``'s exit code, or 2 after printing ``error: <message>`` for an expected error."""
    try:
        return run(args)
    except EXPECTED as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
