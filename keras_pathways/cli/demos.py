"""The demos (``keras-pathways demo``) and the photos the commands use.

``run_photos``: the pretrained EfficientNet-Lite0 explains its prediction on
photos bundled with scikit-image; ``run`` (``--digits``): a small CNN trained
in-process on scikit-learn's digits. Both compare the plain gradient with the
pathway gradient at sparsities 0.5, 0.85 and 0.95, print the kept fractions and
write one picture.
"""

import os
import time

import numpy as np

DEMO_SPARSITIES = (0.5, 0.85, 0.95)
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
#: every colour photo scikit-image bundles (no download), for the evaluations.
EVALUATION_PHOTOS = PHOTOS + ("hubble_deep_field", "immunohistochemistry", "retina", "motorcycle")


def photo(name):
    """A photo bundled with scikit-image (RGB uint8)."""
    import skimage.data

    loader = getattr(skimage.data, {"motorcycle": "stereo_motorcycle"}.get(name, name), None)
    if loader is None:
        raise ValueError(f"scikit-image bundles no photo called {name!r}. Try one of {PHOTOS}.")
    image = loader()
    if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity)
        image = image[0]
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return image[..., :3]


def _compare(model, x, log):
    """Plain gradient vs pathway gradient at DEMO_SPARSITIES: (columns, targets)."""
    from keras_pathways.attribution import engine

    columns = {"gradient": engine.explain(model, x, method="gradient").saliency}
    targets = None
    for sparsity in DEMO_SPARSITIES:
        result = engine.explain(model, x, sparsity=sparsity)
        targets = result.targets
        kept = result.pathway.kept_fraction
        columns[f"pathway {sparsity:g}\nkept {100 * kept.mean():.1f} %"] = result.saliency
        log(
            f"pathway gradient, sparsity {sparsity:g}: kept fraction per image "
            + ", ".join(f"{100 * k:.1f} %" for k in kept)
        )
    return columns, targets


def run_photos(out_dir="demo", photos=PHOTOS, log=print):
    """EfficientNet-Lite0 on bundled photos; returns the path of the picture."""
    from keras_pathways import models, viz

    start = time.perf_counter()
    model = models.efficientnet_lite0()
    log(f"Loaded pretrained EfficientNet-Lite0 in {time.perf_counter() - start:.1f} s")
    images = [photo(name) for name in photos]
    x = np.concatenate([models.preprocess_input(image) for image in images])
    probabilities = model.predict(x, verbose=0)
    top = models.decode_predictions(probabilities, top=1)
    for name, ((_, label, score),) in zip(photos, top):
        log(f"{name}: {label} ({100 * score:.1f} %)")
    columns, _ = _compare(model, x, log)
    display = (x + 1.0) / 2.0
    titles = [f"{name}: {label} {100 * score:.0f} %" for name, ((_, label, score),) in zip(photos, top)]
    path = viz.save(viz.grid(display, columns, row_titles=titles, cell=2.6), os.path.join(out_dir, "pathways.png"))
    log(f"Wrote {os.path.abspath(path)}")
    return path


def digits_data(seed=0):
    """scikit-learn's 1,797 8x8 digits as float32 (N, 8, 8, 1) in [0, 1], split 80/20."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "The demo needs scikit-learn for its bundled digits: "
            "pip install 'keras-pathways[demo]' (or pip install scikit-learn)."
        ) from None
    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    y = data.target.astype("int64")
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(0.8 * len(x))
    return (x[order[:cut]], y[order[:cut]]), (x[order[cut:]], y[order[cut:]])


def digits_cnn():
    """Conv(relu) x2 -> max-pool -> Dense(relu) -> Dense(10, softmax)."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            layers.MaxPooling2D(name="pool"),
            layers.Flatten(name="flatten"),
            layers.Dense(64, activation="relu", name="fc1"),
            layers.Dense(10, activation="softmax", name="predictions"),
        ],
        name="digits_cnn",
    )


def run(out_dir="demo", epochs=15, count=6, seed=0, log=print):
    """The digits demo; returns the path of the written picture."""
    import keras

    from keras_pathways import viz

    keras.utils.set_random_seed(seed)
    (x_train, y_train), (x_test, y_test) = digits_data(seed)
    model = digits_cnn()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    log(
        f"Trained {model.name} on {len(x_train)} scikit-learn digits in "
        f"{time.perf_counter() - start:.1f} s: test accuracy {accuracy:.3f}"
    )
    x = x_test[:count]
    columns, predicted = _compare(model, x, log)
    titles = [f"label {int(t)}, predicted {int(p)}" for t, p in zip(y_test[:count], predicted)]
    figure = viz.grid(x, columns, row_titles=titles)
    path = viz.save(figure, os.path.join(out_dir, "pathways.png"))
    log(f"Wrote {os.path.abspath(path)}")
    return path
