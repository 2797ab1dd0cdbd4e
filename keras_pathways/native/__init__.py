"""An optional compiled TensorFlow op for the selection's band scan (README, "Speed").

The sampled band (``keras_pathways.pathways.selection``) needs, per image,
how many scores lie below and at or below two bounds and the scores between
them. With TensorFlow's and XLA's CPU kernels that is four passes over every
score (counting, marking, ``tf.where``, gathering: 0.15× a gradient on
ResNet50); ``band_scan.cc`` beside this file does it in one, with AVX-512
where the CPU has it (0.02×). Its results are the same bits in the same
order, so the selection is bit-identical with or without it.

The op is compiled on first use (a few seconds) with ``$CXX``, else
``c++``, against the TensorFlow that runs, into ``native/<key>/`` of the
package's cache folder (``$KERAS_PATHWAYS_HOME``, else
``$XDG_CACHE_HOME/keras_pathways``, else ``~/.cache/keras_pathways``; key: a hash of the source, the
TensorFlow version and the flags; written atomically, so concurrent
processes are safe), and loaded from there afterwards. When it cannot be
built (no compiler, a TensorFlow without headers) the selection runs its
TensorFlow/XLA passes instead and one ``RuntimeWarning`` says why;
``status()`` says which is in use. ``KERAS_PATHWAYS_NATIVE=0`` (or
``use(False)``) turns the op off.
"""

import contextlib
import contextvars
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import threading
import warnings

import tensorflow as tf

from keras_pathways import atomic

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "band_scan.cc")

_LOCK = threading.Lock()
_STATE = {"op": None, "error": None, "path": None, "tried": False}
_USE = contextvars.ContextVar("keras_pathways_native", default=None)


@contextlib.contextmanager
def use(enabled):
    """While active, the selection uses the compiled op (True) or not (False).

    Read when a step is traced: a step traced earlier keeps what it used.
    """
    token = _USE.set(bool(enabled))
    try:
        yield
    finally:
        _USE.reset(token)


def enabled():
    """Whether the op is wanted: ``use()`` if active, else ``$KERAS_PATHWAYS_NATIVE`` (default on)."""
    chosen = _USE.get()
    if chosen is not None:
        return chosen
    return os.environ.get("KERAS_PATHWAYS_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def _flags():
    return list(tf.sysconfig.get_compile_flags()), list(tf.sysconfig.get_link_flags())


def _compiler():
    return os.environ.get("CXX") or "c++"


def library_path():
    """Where the compiled op for this TensorFlow, source and compiler lives (built or not)."""
    from keras_pathways.datasets.config import home_dir  # (the datasets package is heavy to import)

    compile_flags, link_flags = _flags()
    with open(SOURCE, "rb") as f:
        source = f.read()
    key = hashlib.sha256(b"\0".join([
        source, tf.__version__.encode(), " ".join(compile_flags + link_flags).encode(),
        _compiler().encode(), platform.machine().encode(), sys.platform.encode(),
    ])).hexdigest()[:16]
    return os.path.join(home_dir(), "native", key, "band_scan.so")


def build(path=None):
    """Compiles ``band_scan.cc`` to ``path`` (default ``library_path()``); returns the path.

    Raises:
        RuntimeError: naming the compiler's complaint and the fix.
    """
    path = path or library_path()
    compiler = _compiler()
    if shutil.which(compiler) is None:
        raise RuntimeError(
            f"no C++ compiler {compiler!r} on PATH to build the selection's op; install one "
            "(Debian/Ubuntu: apt-get install g++) or set $CXX")
    compile_flags, link_flags = _flags()

    def compile_to(temp):
        command = [compiler, "-std=c++17", "-shared", "-fPIC", "-O3", "-w", *compile_flags, SOURCE,
                   "-o", temp, *link_flags]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(
                f"building the selection's op failed ({' '.join(command)}):\n{done.stderr[-2000:]}")

    return atomic.atomic_write(path, compile_to)


def _load():
    path = library_path()
    if not os.path.exists(path):
        build(path)
    return tf.load_op_library(path), path


def band_scan(vectorized=True):
    """The compiled band scan, or None (turned off, a GPU present, or it could not be built: warned once).

    The returned callable takes ``(flat, lo, hi)``: a list of float32 (N, m_j)
    scores and int32 (N,) bounds (magnitude bit patterns), and returns
    ``(below, through, bits, rows, sites)`` as ``selection._band_counts`` and
    ``selection._compact_band`` would (unpadded). ``vectorized=False`` runs
    its portable loop even where the CPU has AVX-512 (for benchmarks). The op
    has only a CPU kernel: with a GPU visible it is not used, so the scores
    never leave the device.
    """
    if not enabled() or tf.config.list_logical_devices("GPU"):
        return None
    with _LOCK:
        if not _STATE["tried"]:
            _STATE["tried"] = True
            try:
                _STATE["op"], _STATE["path"] = _load()
            except Exception as error:  # reported below and by status(); the XLA passes run instead
                _STATE["error"] = f"{type(error).__name__}: {error}"
                warnings.warn(
                    "keras_pathways: the selection's compiled op is not available, so its band scan "
                    f"runs as four TensorFlow/XLA passes (same results, slower). Reason: {_STATE['error']} "
                    "(set KERAS_PATHWAYS_NATIVE=0 to use the passes without trying).",
                    RuntimeWarning, stacklevel=2)
        op = _STATE["op"]
    if op is None:
        return None
    return lambda flat, lo, hi: op.keras_pathways_band_scan(scores=list(flat), lo=lo, hi=hi, vectorized=vectorized)


def status():
    """``{"enabled", "loaded", "path", "error"}``: whether the compiled op is wanted and in use."""
    return {"enabled": enabled(), "loaded": _STATE["op"] is not None, "path": _STATE["path"],
            "error": _STATE["error"]}

