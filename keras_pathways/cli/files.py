"""Explaining image files with a saved model: what ``keras-pathways explain`` runs.

Each image is read, resized to the model's input, preprocessed, explained, and
written as an overlay PNG and/or the raw attributions (``.npy``); a
``summary.json`` records class, score, kept fraction and timing per image. A bad
image is reported in one line and skipped; the others are still processed.

The model and its preprocessing come from ``keras_pathways.models.loading``
(``load_model``, ``to_unit_range``; re-exported here, where they used to live).

An output folder that cannot be written is refused up front
(``prepare_out_dir``); a write that fails later is reported in one line and
the explanations finished so far are kept in the returned summary.
"""

import json
import os
import time

import numpy as np

from keras_pathways.atomic import atomic_write
from keras_pathways.cli.errors import CommandError
from keras_pathways.models.loading import BUILTIN_MODELS  # noqa: F401  (the old home's names)
from keras_pathways.models.loading import RANGES  # noqa: F401
from keras_pathways.models.loading import LoadedModel  # noqa: F401
from keras_pathways.models.loading import load_model  # noqa: F401
from keras_pathways.models.loading import to_unit_range  # noqa: F401


def read_image(path):
    """RGB/grey image as an array, or a one-line CommandError."""
    import skimage.io

    if not os.path.exists(path):
        raise CommandError(f"{path}: no such file")
    try:
        image = skimage.io.imread(path)
    except Exception as error:
        raise CommandError(f"{path}: not a readable image ({type(error).__name__})") from None
    if image.ndim not in (2, 3) or image.size == 0:
        raise CommandError(f"{path}: not a 2-D image (shape {image.shape})")
    return image


def _cause(error):
    """An OSError's reason in a few words ("Permission denied"), else its text."""
    return getattr(error, "strerror", None) or f"{type(error).__name__}: {error}"


def prepare_out_dir(out_dir):
    """Creates ``out_dir`` if needed and checks that a file can be written in it.

    Returns the folder. Raises a one-line CommandError naming the folder and
    the cause (a file in the way, no permission, a read-only file system).
    """
    import tempfile

    try:
        os.makedirs(out_dir, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=out_dir)
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        cause = _cause(error)
        existing = os.path.abspath(out_dir)
        while not os.path.lexists(existing) and os.path.dirname(existing) != existing:
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            cause = f"{existing} is a file, not a folder"
        raise CommandError(f"{out_dir}: cannot write the output folder ({cause})") from None
    return out_dir


def explain_files(loaded, images, out_dir, method="pathway_gradient", *, target=None,
                  formats=("png",), progress=True, log=print, warn=None, **options):
    """Explains each image file; returns the summary dict (also written as JSON).

    ``options`` are the method's ``explain`` options (``sparsity``, ...);
    only those given reach ``explain``, so the method's own defaults apply to
    the rest.

    The summary has ``method``, ``sparsity`` (the pathway's, else the one
    given, else None), ``target``, ``images`` (one entry per explained image:
    class, score, logit, kept fraction, seconds, outputs written) and
    ``failed`` (image and one-line error). A file that
    cannot be written is a failure of that image; its entry is still kept.
    The returned dict also has ``summary_file``: the path of summary.json, or
    None when it could not be written (the cause is then warned and added to
    ``failed``); that key is not part of the JSON file.

    Raises:
        CommandError: ``out_dir`` cannot be created or written, before any
            image is explained.
    """
    from keras_pathways import viz
    from keras_pathways.attribution import engine

    prepare_out_dir(out_dir)
    warn = warn or log
    sparsity = options.get("sparsity")
    entries, failures = [], []
    iterator = images
    if progress and len(images) > 1:
        from tqdm.auto import tqdm

        iterator = tqdm(images, unit="image", desc="explain")
    used = set()

    def fail(path, message):
        failures.append({"image": path, "error": message})
        warn(f"error: {message}")

    for path in iterator:
        try:
            image = read_image(path)
            x = loaded.preprocess(image)
            start = time.perf_counter()
            result = engine.explain(
                loaded.model, x, method=method,
                targets=None if target is None else [target], verbose=False, **options,
            )
            seconds = time.perf_counter() - start
        except CommandError as error:
            text = str(error)
            fail(path, text if text.startswith(f"{path}:") else f"{path}: {text}")
            continue
        except ValueError as error:  # InputError, UnsupportedModelError, a bad option, ...
            fail(path, f"{path}: {' '.join(str(error).split())}")
            continue
        if result.pathway is not None:
            sparsity = float(result.pathway.sparsity)
        stem = _unique_stem(path, used)
        cls = int(result.targets[0])
        scores = np.asarray(loaded.model(x[None], training=False))[0]
        entry = {
            "image": path,
            "class": cls,
            "class_name": loaded.class_names[cls] if loaded.class_names else None,
            "score": float(scores[cls]),
            "logit": float(result.logits[0, cls]),
            "kept_fraction": None if result.pathway is None else float(result.kept_fraction[0]),
            "seconds": round(seconds, 4),
            "outputs": [],
        }
        entries.append(entry)  # reported even when its files cannot be written
        writers = []
        if "png" in formats:
            picture = viz.overlay(x, result.saliency[0])  # min-max scales x for display
            writers.append((".png", lambda p, picture=picture: _save_png(p, picture)))
        if "npy" in formats:
            writers.append((".npy", lambda p, a=result.attributions[0]: _save_npy(p, a)))
        for suffix, write in writers:
            out = os.path.join(out_dir, stem + suffix)
            try:
                atomic_write(out, write)
            except OSError as error:
                fail(path, f"{out}: cannot write ({_cause(error)})")
                break
            entry["outputs"].append(out)
    summary = {
        "method": method,
        "sparsity": sparsity,
        "target": target,
        "images": entries,
        "failed": failures,
    }
    out = os.path.join(out_dir, "summary.json")
    try:
        atomic_write(out, lambda p: _save_json(p, summary))
    except OSError as error:
        fail(None, f"{out}: cannot write the summary ({_cause(error)})")
        out = None
    return dict(summary, summary_file=out)


def _unique_stem(path, used):
    stem = os.path.splitext(os.path.basename(path))[0] or "image"
    candidate, k = stem, 1
    while candidate in used:
        candidate, k = f"{stem}_{k}", k + 1
    used.add(candidate)
    return candidate


def _save_png(path, picture):
    from matplotlib import pyplot as plt

    plt.imsave(path, np.clip(picture, 0, 1), format="png")


def _save_npy(path, array):
    with open(path, "wb") as f:
        np.save(f, array)


def _save_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
