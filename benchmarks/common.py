"""What the benchmark scripts share: the environment record and atomic JSON."""

import os
import platform
import shlex
import statistics
import sys

import keras
import numpy as np
import tensorflow as tf

import keras_pathways
from keras_pathways.atomic import write_json as write_json_atomic  # noqa: F401


def environment(**extra):
    """Versions, machine and the exact command line, for the results file."""
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_pathways": keras_pathways.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        **extra,
        "command": " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
    }


def timing_summary(times):
    """Median, min, max and relative spread of repeated timings (seconds)."""
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "spread": (max(times) - min(times)) / statistics.median(times),
        "times_s": list(times),
    }
