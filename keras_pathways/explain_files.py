"""Explaining image files with a saved model: what ``keras-pathways explain`` runs.

Each image is read, resized to the model's input, preprocessed, explained, and
written as an overlay PNG and/or the raw attributions (``.npy``); a
``summary.json`` records class, score, kept fraction and timing per image. A bad
image is reported in one line and skipped; the others are still processed.
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
    preprocess: object  # fn(uint8/float image (H, W, C) in [0, 1]) -> float32 (H', W', C')
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
            lambda image: models.preprocess_input(image)[0],
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


def _channels(image, channels):
    from skimage.color import gray2rgb, rgb2gray

    img = np.asarray(image)
    img = img.astype(np.float32) / 255.0 if np.issubdtype(img.dtype, np.integer) else img.astype(np.float32)
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


def explain_files(loaded, images, out_dir, method="pathway_gradient", sparsity=0.85,
                  target=None, formats=("png",), progress=True, log=print, warn=None):
    """Explains each image file; returns the summary dict (also written as JSON)."""
    import keras_pathways
    from keras_pathways import viz

    os.makedirs(out_dir, exist_ok=True)
    warn = warn or log
    entries, failures = [], []
    iterator = images
    if progress and len(images) > 1:
        from tqdm.auto import tqdm

        iterator = tqdm(images, unit="image", desc="explain")
    used = set()
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
            failures.append({"image": path, "error": str(error)})
            warn(f"error: {error}")
            continue
        except (ValueError, keras_pathways.UnsupportedModelError) as error:
            message = f"{path}: {' '.join(str(error).split())}"
            failures.append({"image": path, "error": message})
            warn(f"error: {message}")
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
        if "png" in formats:
            out = os.path.join(out_dir, stem + ".png")
            picture = viz.overlay(x, result.saliency[0])  # min-max scales x for display
            atomic_write(out, lambda p: _save_png(p, picture))
            entry["outputs"].append(out)
        if "npy" in formats:
            out = os.path.join(out_dir, stem + ".npy")
            atomic_write(out, lambda p: _save_npy(p, result.attributions[0]))
            entry["outputs"].append(out)
        entries.append(entry)
    summary = {
        "method": method,
        "sparsity": sparsity,
        "target": target,
        "images": entries,
        "failed": failures,
    }
    out = os.path.join(out_dir, "summary.json")
    atomic_write(out, lambda p: _save_json(p, summary))
    return summary


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
