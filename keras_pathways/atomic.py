"""Atomic file writes: a temp file in the target folder, then a rename.

A reader never sees a half-written file, and an interrupted write leaves the
previous file (or none) in place.
"""

import os
import tempfile


def atomic_write(path, write, suffix=None):
    """Calls ``write(temp_path)`` and renames the result to ``path``.

    The file gets normal permissions (0666 minus the umask; ``mkstemp``'s
    default is 0600). Returns ``path``.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=folder, suffix=(suffix or os.path.splitext(path)[1]) + ".tmp")
    os.close(handle)
    try:
        write(temp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)
    return path


def write_text(path, text):
    """Writes ``text`` to ``path`` atomically; returns ``path``."""

    def write(temp):
        with open(temp, "w") as f:
            f.write(text)

    return atomic_write(path, write)


def write_json(path, data):
    """Writes ``data`` as indented JSON atomically; returns ``path``."""
    import json

    return write_text(path, json.dumps(data, indent=2) + "\n")
