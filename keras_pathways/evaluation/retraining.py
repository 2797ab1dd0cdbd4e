"""ROAR / KAR (remove or keep, and retrain; Hooker et al. 2019), SPEC §7.

Protocol: train the explained model; explain every train and test image with
each method (``random`` is always added as the reference); per image rank the
pixels by |saliency| with ties broken by a seeded random order; replace the top
t of the pixels (ROAR) or all but the top t (KAR) by the per-channel train
mean; retrain a fresh model from scratch on the modified train set (augmented
after removal) and report its accuracy on the modified test set. t = 0 is the
explained model's own test accuracy. Summary: the area under accuracy vs t
(trapezoid over t = 0 ... max t).

Every (method, fraction, seed) cell is written as one JSON record, atomically,
as soon as it finishes; rerunning skips finished cells. Pixel orders are
computed once per method and cached, in chunks, under ``out_dir/orders``.
"""

import glob
import hashlib
import json
import os
import time

import numpy as np

from keras_pathways.atomic import atomic_write
from keras_pathways.atomic import write_json
from keras_pathways.atomic import write_text as _save_text

DEFAULT_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
TIE_BREAK_SEED = 0
PRESETS = {
    "ci": {
        "train_limit": 1500,
        "test_limit": 500,
        "epochs": 3,
        "fractions": (0.1, 0.5),
        "methods": ("gradient", "pathway_gradient"),
        "width": 16,
        "batch_size": 64,  # enough optimizer steps for 1,500 images to learn
        "method_options": {},
    },
    "benchmark": {
        # Full Fashion-MNIST. Sized for a 2-core CPU in 90 minutes: one epoch
        # per training (41 trainings with 7 methods + random and 5 fractions),
        # 16 IG steps instead of 50 and K = 4 NeuronIntGrad steps instead of 10
        # (the 70 000 attributions of the two loop methods would take ~45 min
        # alone otherwise), plain tf.function steps (XLA is slower for this
        # small network on a CPU).
        "train_limit": None,
        "test_limit": None,
        "epochs": 1,
        "fractions": DEFAULT_FRACTIONS,
        "methods": (
            "pathway_gradient", "pathway_intgrad", "gradient", "input_x_gradient",
            "integrated_gradients", "guided_backprop", "grad_cam",
        ),
        "width": 16,
        "batch_size": 256,
        "method_options": {
            "*": {"jit_compile": False},
            "integrated_gradients": {"steps": 16},
            "pathway_intgrad": {"steps": 4},
        },
    },
}


# ------------------------------------------------------------------ files
def _save_npy(path, array):
    def write(temp):
        with open(temp, "wb") as f:
            np.save(f, array)

    atomic_write(path, write)


# ------------------------------------------------------------ pixel orders
def removal_order(saliency, seed=TIE_BREAK_SEED):
    """Pixel indices per image from most to least relevant.

    Args:
        saliency: (N, H, W) saliency maps (ranked by |s|).
        seed: seed of the random order that breaks ties.

    Returns:
        int (N, H * W): ``order[i, 0]`` is image i's most relevant pixel.
    """
    s = np.abs(np.asarray(saliency, dtype=np.float64)).reshape(len(saliency), -1)
    ties = np.random.default_rng(seed).random(s.shape)
    order = np.lexsort((ties, -s), axis=-1)
    return order.astype(np.uint16 if s.shape[1] < 65536 else np.uint32)


def removal_mask(order, fraction, mode="roar"):
    """bool (N, P): True where a pixel is replaced at ``fraction``.

    ROAR replaces the top ``round(fraction * P)`` pixels, KAR all others.
    """
    n, pixels = order.shape
    k = int(round(fraction * pixels))
    top = np.zeros((n, pixels), bool)
    np.put_along_axis(top, order[:, :k].astype(np.int64), True, axis=1)
    if mode == "roar":
        return top
    if mode == "kar":
        return ~top
    raise ValueError(f"Expected mode 'roar' or 'kar'. Received: {mode!r}.")


def modify(x, order, fraction, fill, mode="roar"):
    """Images with the removed pixels (all channels) set to ``fill`` (C,)."""
    mask = removal_mask(order, fraction, mode).reshape(x.shape[:3])
    return np.where(mask[..., None], np.asarray(fill, x.dtype), x)


def method_orders(model, x, method, cache_dir, split, batch_size=128, chunk=4096,
                  log=None, **options):
    """Removal orders of ``x`` for one method, cached in chunks on disk."""
    import keras_pathways

    if options:  # a cache per option set, so changed options never reuse stale orders
        digest = hashlib.sha1(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()
        method_tag = f"{method}-{digest[:10]}"
    else:
        method_tag = method
    final = os.path.join(cache_dir, f"{method_tag}_{split}.npy")
    if os.path.exists(final):
        order = np.load(final)
        if order.shape[0] == len(x):
            return order
    parts = []
    for start in range(0, len(x), chunk):
        part = os.path.join(cache_dir, f"{method_tag}_{split}", f"{start:08d}.npy")
        if os.path.exists(part):
            parts.append(np.load(part))
            continue
        result = keras_pathways.explain(
            model, x[start : start + chunk], method=method, batch_size=batch_size,
            return_masks=False, verbose=False, seed=TIE_BREAK_SEED, **options,
        )
        order = removal_order(result.saliency)
        _save_npy(part, order)
        parts.append(order)
        if log:
            log(f"  {method} {split}: {min(start + chunk, len(x))}/{len(x)} images explained")
    order = np.concatenate(parts)
    _save_npy(final, order)
    return order


def _options_for(method_options, method):
    """A method's extra explain options: the ``"*"`` entry, then its own."""
    method_options = method_options or {}
    return {**method_options.get("*", {}), **method_options.get(method, {})}


# ----------------------------------------------------------------- training
def _augment(x, y, batch_size, seed, augment):
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed)
    if augment:
        h, w = x.shape[1:3]

        def crop_flip(image, label):
            padded = tf.image.pad_to_bounding_box(image, 4, 4, h + 8, w + 8)
            image = tf.image.random_crop(padded, tf.shape(image), seed=seed)
            image = tf.image.random_flip_left_right(image, seed=seed)
            return image, label

        dataset = dataset.map(crop_flip, num_parallel_calls=2)
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.batch(batch_size).with_options(options)


class _BestWeights:
    """Keeps the weights of the best validation accuracy (a Keras callback)."""

    def __new__(cls):
        import keras

        class Callback(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.best, self.weights = -1.0, None

            def on_epoch_end(self, epoch, logs=None):
                score = (logs or {}).get("val_accuracy", -1.0)
                if score > self.best:
                    self.best, self.weights = score, self.model.get_weights()

            def on_train_end(self, logs=None):
                if self.weights is not None:
                    self.model.set_weights(self.weights)

        return Callback()


def train(model_fn, x, y, epochs, seed=0, strategy=None, batch_size=256, augment=True,
          validation_fraction=1 / 8, verbose=0):
    """A fresh model trained on (x, y): 7/8 train, 1/8 validation, best-val weights,
    learning rate halved every 10 epochs."""
    import contextlib

    import keras

    keras.utils.set_random_seed(seed)
    perm = np.random.default_rng(seed).permutation(len(x))
    cut = int(round(len(x) * (1 - validation_fraction)))
    train_idx, val_idx = perm[:cut], perm[cut:]
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        model = model_fn()
    start_lr = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    schedule = keras.callbacks.LearningRateScheduler(lambda e: start_lr * 0.5 ** (e // 10))
    model.fit(
        _augment(x[train_idx], y[train_idx], batch_size, seed, augment),
        validation_data=(x[val_idx], y[val_idx]),
        epochs=epochs,
        shuffle=False,  # the dataset is shuffled (seeded) above
        callbacks=[_BestWeights(), schedule],
        verbose=verbose,
    )
    return model


def accuracy(model, x, y, batch_size=512):
    logits = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, axis=1) == y))


# ---------------------------------------------------------------- the grid
def cell_name(mode, method, fraction, seed):
    return f"{mode}_{method}_t{fraction:.3f}_s{seed}.json"


def cells(methods, fractions, seeds, shard=None):
    """The (method, fraction, seed) grid, optionally the i-th of n slices."""
    grid = [(m, float(f), int(s)) for m in methods for f in fractions for s in seeds]
    if shard is None:
        return grid
    index, count = shard
    if not (count >= 1 and 0 <= index < count):
        raise ValueError(f"Expected shard i/n with 0 <= i < n. Received: {index}/{count}.")
    return grid[index::count]


def roar(model_fn, train_data, test_data, methods, fractions=DEFAULT_FRACTIONS, seeds=(0,),
         epochs=50, mode="roar", out_dir="roar", strategy=None, shard=None, batch_size=256,
         explain_batch_size=128, augment=True, method_options=None, progress=True, log=print):
    """Runs ROAR (``mode="roar"``) or KAR (``mode="kar"``); resumable.

    Args:
        model_fn: builds a fresh *compiled* classifier (logits or softmax),
            e.g. ``lambda: keras_pathways.models.compiled_resnet8()``.
        train_data, test_data: ``(images, labels)`` numpy arrays, images float
            (N, H, W, C) as the model takes them, labels int (N,).
        methods: method names; "random" is always added as the reference.
        fractions: the t values (fraction of pixels removed/kept).
        seeds: retraining seeds (mean ± std over them).
        epochs: epochs for the explained model and every retraining.
        out_dir: results folder (explained model, pixel orders, cell records,
            summary.json/.csv/.md, plot.png).
        strategy: a ``tf.distribute.Strategy`` for the training.
        shard: ``(i, n)``: run only the i-th of n slices of the cell grid.
        method_options: dict of extra ``explain`` options per method name
            (key ``"*"``: options for every method, e.g. ``{"*": {"jit_compile":
            False}, "integrated_gradients": {"steps": 16}}``). Pixel orders
            are cached per method and option set.

    Returns:
        the summary dict (see ``summarize``).
    """
    import keras

    if mode not in ("roar", "kar"):
        raise ValueError(f"Expected mode 'roar' or 'kar'. Received: {mode!r}.")
    fractions = [float(f) for f in fractions]
    if any(not 0 < f < 1 for f in fractions):
        raise ValueError(f"Expected fractions in (0, 1). Received: {fractions}.")
    methods = list(dict.fromkeys(list(methods) + ["random"]))
    x_train, y_train = (np.asarray(a) for a in train_data)
    x_test, y_test = (np.asarray(a) for a in test_data)
    os.makedirs(out_dir, exist_ok=True)
    fill = x_train.mean(axis=(0, 1, 2))

    explained_path = os.path.join(out_dir, "explained.keras")
    meta_path = os.path.join(out_dir, "explained.json")
    if os.path.exists(explained_path) and os.path.exists(meta_path):
        model = keras.saving.load_model(explained_path)
        with open(meta_path) as f:
            base_accuracy = json.load(f)["accuracy"]
        log(f"Explained model: loaded ({100 * base_accuracy:.2f} % test accuracy)")
    else:
        start = time.perf_counter()
        model = train(model_fn, x_train, y_train, epochs, seed=0, strategy=strategy,
                      batch_size=batch_size, augment=augment, verbose=2 if progress else 0)
        base_accuracy = accuracy(model, x_test, y_test)
        model.save(explained_path + ".tmp.keras")
        os.replace(explained_path + ".tmp.keras", explained_path)
        write_json(meta_path, {"accuracy": base_accuracy, "epochs": epochs,
                               "seconds": time.perf_counter() - start})
        log(f"Explained model: trained, {100 * base_accuracy:.2f} % test accuracy")

    grid = cells(methods, fractions, seeds, shard)
    todo = [c for c in grid if not os.path.exists(os.path.join(out_dir, "cells", cell_name(mode, *c)))]
    log(f"{len(grid)} cells in this run, {len(grid) - len(todo)} already finished")
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="cell", desc=mode)
    orders = {}
    try:
        for method, fraction, seed in todo:
            if method not in orders:
                options = _options_for(method_options, method)
                cache = os.path.join(out_dir, "orders")
                orders[method] = (
                    method_orders(model, x_train, method, cache, "train", explain_batch_size, log=log, **options),
                    method_orders(model, x_test, method, cache, "test", explain_batch_size, log=log, **options),
                )
            order_train, order_test = orders[method]
            start = time.perf_counter()
            retrained = train(
                model_fn, modify(x_train, order_train, fraction, fill, mode), y_train, epochs,
                seed=seed, strategy=strategy, batch_size=batch_size, augment=augment,
                verbose=2 if progress else 0,  # one line per epoch
            )
            score = accuracy(retrained, modify(x_test, order_test, fraction, fill, mode), y_test)
            record = {
                "mode": mode, "method": method, "fraction": fraction, "seed": seed,
                "accuracy": score, "base_accuracy": base_accuracy, "epochs": epochs,
                "train_images": int(len(x_train)), "test_images": int(len(x_test)),
                "chance": 1.0 / len(np.unique(y_train)),
                "tie_break": f"seeded random order, seed {TIE_BREAK_SEED}",
                "explain_options": _options_for(method_options, method),
                "fill": [float(v) for v in np.atleast_1d(fill)],
                "seconds": round(time.perf_counter() - start, 2),
            }
            write_json(os.path.join(out_dir, "cells", cell_name(mode, method, fraction, seed)), record)
            log(f"{mode} {method} t={fraction:g} seed {seed}: {100 * score:.2f} %")
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return summarize([out_dir], out_dir, mode)


# ---------------------------------------------------------------- summary
def load_records(out_dirs, mode=None):
    records = []
    for folder in out_dirs:
        for path in sorted(glob.glob(os.path.join(folder, "cells", "*.json"))):
            with open(path) as f:
                record = json.load(f)
            if mode is None or record["mode"] == mode:
                records.append(record)
    return records


def summarize(out_dirs, out_dir, mode="roar"):
    """Combines cell records (of one run or of several shards) into tables.

    Writes ``summary.json``, ``summary.csv``, ``summary.md`` and ``plot.png`` in
    ``out_dir``; returns the summary dict: per method the mean and std accuracy
    per fraction, and the AUC (trapezoid over t = 0 and the fractions, t = 0
    being the explained model's accuracy).
    """
    records = load_records(out_dirs, mode)
    if not records:
        raise ValueError(f"No {mode} cell records found in {list(out_dirs)}.")
    base = float(np.mean([r["base_accuracy"] for r in records]))
    # t = 0: ROAR removes nothing (the explained model's accuracy); KAR keeps
    # nothing, i.e. chance.
    start = base if mode == "roar" else float(np.mean([r.get("chance", 0.0) for r in records]))
    methods = {}
    for r in records:
        methods.setdefault(r["method"], {}).setdefault(r["fraction"], []).append(r["accuracy"])
    rows = {}
    for method, by_fraction in methods.items():
        fractions = sorted(by_fraction)
        means = [float(np.mean(by_fraction[f])) for f in fractions]
        stds = [float(np.std(by_fraction[f])) for f in fractions]
        t = np.array([0.0] + fractions)
        acc = np.array([start] + means)
        auc = float(np.sum((t[1:] - t[:-1]) * (acc[1:] + acc[:-1]) / 2))
        rows[method] = {
            "fractions": fractions, "mean": means, "std": stds,
            "seeds": [len(by_fraction[f]) for f in fractions], "auc": auc,
        }
    summary = {"mode": mode, "base_accuracy": base, "start_accuracy": start, "methods": rows,
               "better": "lower" if mode == "roar" else "higher"}
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "summary.json"), summary)
    _write_tables(summary, out_dir)
    _plot(summary, os.path.join(out_dir, "plot.png"))
    return summary


def _write_tables(summary, out_dir):
    fractions = sorted({f for row in summary["methods"].values() for f in row["fractions"]})
    order = sorted(summary["methods"], key=lambda m: summary["methods"][m]["auc"],
                   reverse=summary["mode"] == "kar")
    header = ["method", "auc"] + [f"t={f:g}" for f in fractions]
    lines_csv = [",".join(header)]
    lines_md = [
        f"{summary['mode'].upper()}: test accuracy (mean ± std over seeds) after "
        f"{'removing' if summary['mode'] == 'roar' else 'keeping'} the top t of pixels; "
        f"t = 0: {100 * summary.get('start_accuracy', summary['base_accuracy']):.2f} %"
        f"{' (chance)' if summary['mode'] == 'kar' else ''}; explained model "
        f"{100 * summary['base_accuracy']:.2f} %; AUC {summary['better']} is better.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
    ]
    for method in order:
        row = summary["methods"][method]
        cells_csv, cells_md = [], []
        for f in fractions:
            if f in row["fractions"]:
                i = row["fractions"].index(f)
                cells_csv.append(f"{row['mean'][i]:.4f}")
                cells_md.append(f"{100 * row['mean'][i]:.2f} ± {100 * row['std'][i]:.2f}")
            else:
                cells_csv.append("")
                cells_md.append("")
        lines_csv.append(",".join([method, f"{row['auc']:.4f}"] + cells_csv))
        lines_md.append("| " + " | ".join([method, f"{row['auc']:.3f}"] + cells_md) + " |")
    for name, lines in (("summary.csv", lines_csv), ("summary.md", lines_md)):
        _save_text(os.path.join(out_dir, name), "\n".join(lines) + "\n")


def _plot(summary, path):
    from keras_pathways import viz

    figure, ax = viz.subplots(figsize=(6, 4))
    for method, row in sorted(summary["methods"].items()):
        t = [0.0] + row["fractions"]
        acc = [summary.get("start_accuracy", summary["base_accuracy"])] + row["mean"]
        style = "--" if method == "random" else "-"
        ax.errorbar(t, [100 * a for a in acc], yerr=[0] + [100 * s for s in row["std"]],
                    fmt=style + "o", ms=3, capsize=2, label=f"{method} (AUC {row['auc']:.3f})")
    ax.set_xlabel("fraction of pixels " + ("removed (ROAR)" if summary["mode"] == "roar" else "kept (KAR)"))
    ax.set_ylabel("test accuracy after retraining (%)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    viz.save(figure, path)


def parse_shard(text):
    """"i/n" -> (i, n)."""
    try:
        index, count = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise ValueError(f"Expected --shard i/n (e.g. 0/4). Received: {text!r}.") from None
    if not (count >= 1 and 0 <= index < count):
        raise ValueError(f"Expected --shard i/n with 0 <= i < n. Received: {text!r}.")
    return index, count


__all__ = [
    "PRESETS", "accuracy", "cells", "load_records", "method_orders",
    "modify", "parse_shard", "removal_mask", "removal_order", "roar", "summarize", "train",
]
