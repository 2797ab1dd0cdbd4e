"""Explaining image files with a saved model: what ``keras-pathways explain`` runs.

Each image is read, resized to the model's input, preprocessed, explained, and
written as an overlay PNG and/or the raw attributions (``.npy``); a
``summary.json`` records class, score, kept fraction and timing per image. A bad
image is reported in one line and skipped; the others are still processed.

Pixel values are scaled by their dtype's range (``to_unit_range``): uint8 /255,
uint16 /65535, bool as 0/1, float kept when already in [0, 1]; so an 8-bit
and a 16-bit copy of the same picture are explained alike.

An output folder that cannot be written is refused up front
(``prepare_out_dir``); a write that fails later is reported in one line and
the explanations finished so far are kept in the returned summary.
"""

import dataclasses
import json
import os
import time

import numpy as np

from keras_pathways.atomic import atomic_write

BUILTIN_MODELS = ("efficientnet_lite0",)
RANGES = {"unit": (0.0, 1.0), "symmetric": (-1.0, 1.0), "byte": (0.0, 255.0)}


class CommandError(Exception):
    """A problem to report in one line (the command exits with code 2)."""


@dataclasses.dataclass
class LoadedModel:
    model: object
    preprocess: object  # fn(image (H, W[, C]), any dtype to_unit_range takes) -> float32 (H', W', C')
    class_names: list = None
    input_size: tuple = None  # (H, W) or None when any size works


def load_model(spec, unsafe=False, value_range="unit", size=None):
    """A model from a ``.keras`` file, a SavedModel folder or a built-in name.

    ``safe_mode`` stays on unless ``unsafe`` is given explicitly.
    """
    import keras

    if spec in BUILTIN_MODELS:
        from keras_pathways import models

        if size is not None and tuple(size) != (224, 224):
            raise CommandError(f"efficientnet_lite0 takes 224x224 images; --size {size[0]} {size[1]} is not possible.")
        return LoadedModel(
            models.efficientnet_lite0(),
            lambda image: models.preprocess_input(_channels(image, 3))[0],
            models.class_names(),
            (224, 224),
        )
    if not os.path.exists(spec):
        raise CommandError(
            f"model {spec!r} not found: give a .keras file, a SavedModel folder, "
            f"or one of {list(BUILTIN_MODELS)}."
        )
    if os.path.isdir(spec):
        model = _saved_model(spec)
    else:
        try:
            model = keras.saving.load_model(spec, safe_mode=not unsafe)
        except Exception as error:
            text = " ".join(str(error).split())
            if "safe_mode" in text or "unsafe" in text.lower():
                raise CommandError(
                    f"refusing to load {spec!r}: it needs safe_mode=False (it contains "
                    "code such as a Lambda layer, which would run on load). Pass "
                    "--unsafe only if you trust the file."
                ) from None
            raise CommandError(f"could not load model {spec!r}: {text[:300]}") from None
    if not model.inputs or len(model.inputs) != 1:
        raise CommandError(f"model {spec!r} must take one image input.")
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3:
        raise CommandError(f"model {spec!r} takes input of shape {shape}, not images (H, W, C).")
    fixed = None if None in shape[:2] else (int(shape[0]), int(shape[1]))
    if size is not None and fixed is not None and tuple(size) != fixed:
        raise CommandError(
            f"model {spec!r} takes {fixed[0]}x{fixed[1]} images; --size {size[0]} {size[1]} is not possible."
        )
    target = tuple(size) if size is not None else fixed
    if target is None:
        raise CommandError(f"model {spec!r} takes images of any size: give --size H W.")
    low, high = RANGES[value_range]
    channels = int(shape[2])

    def preprocess(image):
        from skimage.transform import resize

        img = _channels(image, channels)
        img = resize(img, target, order=1, anti_aliasing=True, preserve_range=True)
        return (low + (high - low) * img).astype(np.float32)

    return LoadedModel(model, preprocess, None, target)


def _saved_model(path):
    import keras
    import tensorflow as tf

    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        raise CommandError(f"{path!r} is a folder but not a SavedModel (no saved_model.pb).")
    try:
        loaded = tf.saved_model.load(path)
        signature = loaded.signatures["serving_default"]
        (spec,) = signature.structured_input_signature[1].values()
        layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
    except Exception as error:
        raise CommandError(f"could not load SavedModel {path!r}: {' '.join(str(error).split())[:300]}") from None
    inputs = keras.Input(tuple(spec.shape[1:]), dtype=spec.dtype)
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        outputs = next(iter(outputs.values()))
    return keras.Model(inputs, outputs, name=os.path.basename(os.path.normpath(path)))


def to_unit_range(image):
    """Pixel values -> float32 in [0, 1], scaled by the dtype's range.

    Unsigned integers are divided by their dtype's maximum (uint8 by 255,
    uint16 by 65535), bools become 0/1, and floats are kept as they are when
    they lie in [0, 1]. Same shape as ``image``.

    Raises:
        CommandError: signed-integer images, or float values that are not
            finite or outside [0, 1].
    """
    img = np.asarray(image)
    if img.dtype == np.bool_:
        return img.astype(np.float32)
    if np.issubdtype(img.dtype, np.unsignedinteger):
        return (img.astype(np.float64) / np.iinfo(img.dtype).max).astype(np.float32)
    if np.issubdtype(img.dtype, np.floating):
        if img.size and not (np.isfinite(img).all() and img.min() >= 0.0 and img.max() <= 1.0):
            raise CommandError(
                "Expected float pixel values in [0, 1]. Received: "
                f"{img.dtype} values in [{np.nanmin(img):g}, {np.nanmax(img):g}]"
                + ("" if np.isfinite(img).all() else " with NaN or Inf")
            )
        return img.astype(np.float32)
    raise CommandError(
        "Expected an image of unsigned integers (uint8, uint16), bools or floats "
        f"in [0, 1]. Received: {img.dtype} pixels"
    )


def _channels(image, channels):
    """Image (H, W[, C]) -> float32 (H, W, channels) in [0, 1] (alpha dropped)."""
    from skimage.color import gray2rgb, rgb2gray

    img = to_unit_range(image)
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    if channels == 1:
        img = rgb2gray(img) if img.ndim == 3 else img
        return img[..., None]
    if img.ndim == 2:
        img = gray2rgb(img)
    if img.shape[-1] != channels:
        raise CommandError(f"image has {img.shape[-1]} channels; the model takes {channels}.")
    return img


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


def explain_files(loaded, images, out_dir, method="pathway_gradient", sparsity=0.85,
                  target=None, formats=("png",), progress=True, log=print, warn=None):
    """Explains each image file; returns the summary dict (also written as JSON).

    The summary has ``method``, ``sparsity``, ``target``, ``images`` (one
    entry per explained image: class, score, logit, kept fraction, seconds,
    outputs written) and ``failed`` (image and one-line error). A file that
    cannot be written is a failure of that image; its entry is still kept.
    The returned dict also has ``summary_file``: the path of summary.json, or
    None when it could not be written (the cause is then warned and added to
    ``failed``); that key is not part of the JSON file.

    Raises:
        CommandError: ``out_dir`` cannot be created or written, before any
            image is explained.
    """
    import keras_pathways
    from keras_pathways import viz

    prepare_out_dir(out_dir)
    warn = warn or log
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
            result = keras_pathways.explain(
                loaded.model, x, method=method, sparsity=sparsity,
                targets=None if target is None else [target], verbose=False,
            )
            seconds = time.perf_counter() - start
        except CommandError as error:
            text = str(error)
            fail(path, text if text.startswith(f"{path}:") else f"{path}: {text}")
            continue
        except (ValueError, keras_pathways.UnsupportedModelError) as error:
            fail(path, f"{path}: {' '.join(str(error).split())}")
            continue
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
