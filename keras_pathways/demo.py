"""The demo: a small CNN trained in-process on scikit-learn's bundled digits.

Trains for a few seconds (no download), explains test digits with the plain
gradient and with the pathway gradient at sparsities 0.5, 0.85 and 0.95, prints
the kept fractions and writes one comparison picture.
"""

import os
import time

import numpy as np

DEMO_SPARSITIES = (0.5, 0.85, 0.95)


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
    """Runs the demo; returns the path of the written picture."""
    import keras

    import keras_pathways
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
    columns = {"gradient": keras_pathways.explain(model, x, method="gradient").saliency}
    predicted = None
    for sparsity in DEMO_SPARSITIES:
        result = keras_pathways.explain(model, x, sparsity=sparsity)
        predicted = result.targets
        kept = result.pathway.kept_fraction
        columns[f"pathway {sparsity:g}\nkept {100 * kept.mean():.1f} %"] = result.saliency
        log(
            f"pathway gradient, sparsity {sparsity:g}: kept fraction per image "
            + ", ".join(f"{100 * k:.1f} %" for k in kept)
        )
    titles = [f"label {int(t)}, predicted {int(p)}" for t, p in zip(y_test[:count], predicted)]
    figure = viz.grid(x, columns, row_titles=titles)
    path = viz.save(figure, os.path.join(out_dir, "pathways.png"))
    log(f"Wrote {os.path.abspath(path)}")
    return path
