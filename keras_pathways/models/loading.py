"""Loading a classifier by name or path, with the preprocessing its images need.

``load_model(spec)`` takes a ``.keras`` file, a TensorFlow SavedModel folder or
a built-in name (``"efficientnet_lite0"``) and returns a ``LoadedModel``: the
Keras model, a ``preprocess(image)`` function turning a picture of any dtype
into the model's input, the class names where known, and the input size.

Pixel values are scaled by their dtype's range (``to_unit_range``): uint8
/255, uint16 /65535, bool as 0/1, float kept when already in [0, 1]; so an
8-bit and a 16-bit copy of the same picture are preprocessed alike.

Every refusal is a ``LoadError`` with a one-line message naming the file and
the fix (the command line prints it and exits with code 2).
"""

import dataclasses
import os

import numpy as np

BUILTIN_MODELS = ("efficientnet_lite0",)
RANGES = {"unit": (0.0, 1.0), "symmetric": (-1.0, 1.0), "byte": (0.0, 255.0)}


class LoadError(ValueError):
    """A model or image that cannot be loaded or used as given (a one-line message)."""


@dataclasses.dataclass
class LoadedModel:
    model: object
    preprocess: object  # fn(image (H, W[, C]), any dtype to_unit_range takes) -> float32 (H', W', C')
    class_names: list = None
    input_size: tuple = None  # (H, W) or None when any size works


def load_model(spec, unsafe=False, value_range="unit", size=None):
    """A model from a ``.keras`` file, a SavedModel folder or a built-in name.

    Args:
        spec: the path, or one of ``BUILTIN_MODELS``.
        unsafe: load a ``.keras`` file that needs ``safe_mode=False`` (it runs
            code from the file); ``safe_mode`` stays on unless this is given.
        value_range: a key of ``RANGES``: the value range a saved model
            expects (the built-in models use their own preprocessing).
        size: (H, W) for models that take any input size.

    Returns:
        a ``LoadedModel``.

    Raises:
        LoadError: a missing or unreadable model, one that is not an image
            classifier with one input, or a ``size`` it cannot take.
    """
    import keras

    if spec in BUILTIN_MODELS:
        from keras_pathways.models import efficientnet_lite

        if size is not None and tuple(size) != (224, 224):
            raise LoadError(f"efficientnet_lite0 takes 224x224 images; --size {size[0]} {size[1]} is not possible.")
        return LoadedModel(
            efficientnet_lite.efficientnet_lite0(),
            lambda image: efficientnet_lite.preprocess_input(_channels(image, 3))[0],
            efficientnet_lite.class_names(),
            (224, 224),
        )
    if not os.path.exists(spec):
        raise LoadError(
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
                raise LoadError(
                    f"refusing to load {spec!r}: it needs safe_mode=False (it contains "
                    "code such as a Lambda layer, which would run on load). Pass "
                    "--unsafe only if you trust the file."
                ) from None
            raise LoadError(f"could not load model {spec!r}: {text[:300]}") from None
    if model.inputs and len(model.inputs) > 1:
        raise LoadError(
            f"model {spec!r} takes {len(model.inputs)} inputs: the command line does not support "
            "models with several inputs yet (it explains one image input). Explain it in Python "
            "with keras_pathways.explain(model, [x1, x2, ...]) (a list in the order of "
            "model.inputs, or a dict keyed by the input names)."
        )
    if not model.inputs or len(model.inputs) != 1:
        raise LoadError(f"model {spec!r} must take one image input.")
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3:
        raise LoadError(f"model {spec!r} takes input of shape {shape}, not images (H, W, C).")
    fixed = None if None in shape[:2] else (int(shape[0]), int(shape[1]))
    if size is not None and fixed is not None and tuple(size) != fixed:
        raise LoadError(
            f"model {spec!r} takes {fixed[0]}x{fixed[1]} images; --size {size[0]} {size[1]} is not possible."
        )
    target = tuple(size) if size is not None else fixed
    if target is None:
        raise LoadError(f"model {spec!r} takes images of any size: give --size H W.")
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
        raise LoadError(f"{path!r} is a folder but not a SavedModel (no saved_model.pb).")
    try:
        loaded = tf.saved_model.load(path)
        signature = loaded.signatures["serving_default"]
        (spec,) = signature.structured_input_signature[1].values()
        layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
    except Exception as error:
        raise LoadError(f"could not load SavedModel {path!r}: {' '.join(str(error).split())[:300]}") from None
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
        LoadError: signed-integer images, or float values that are not
            finite or outside [0, 1].
    """
    img = np.asarray(image)
    if img.dtype == np.bool_:
        return img.astype(np.float32)
    if np.issubdtype(img.dtype, np.unsignedinteger):
        return (img.astype(np.float64) / np.iinfo(img.dtype).max).astype(np.float32)
    if np.issubdtype(img.dtype, np.floating):
        if img.size and not (np.isfinite(img).all() and img.min() >= 0.0 and img.max() <= 1.0):
            raise LoadError(
                "Expected float pixel values in [0, 1]. Received: "
                f"{img.dtype} values in [{np.nanmin(img):g}, {np.nanmax(img):g}]"
                + ("" if np.isfinite(img).all() else " with NaN or Inf")
            )
        return img.astype(np.float32)
    raise LoadError(
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
        raise LoadError(f"image has {img.shape[-1]} channels; the model takes {channels}.")
    return img


__all__ = ["BUILTIN_MODELS", "LoadError", "LoadedModel", "RANGES", "load_model", "to_unit_range"]
