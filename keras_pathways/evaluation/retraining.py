"""ROAR / KAR (remove or keep, and retrain; Hooker et al. 2019), docs/method.md §7.

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
ALL_METHODS = (
    "pathway_gradient", "gradient", "random", "pathway_intgrad", "integrated_gradients",
    "input_x_gradient", "smoothgrad", "guided_backprop", "grad_cam",
)
#: Named ROAR / KAR configurations (``roar`` keywords plus the data limits and
#: the ResNet-8 width): "ci", a small smoke run, and "benchmark", the full
#: Fashion-MNIST run of the README.
PRESETS = {
    "ci": {
        "train_limit": 1500,
        "test_limit": 500,
        "epochs": 3,
        "fractions": (0.1, 0.5),
        "methods": ("gradient", "pathway_gradient"),
        "seeds": (0,),
        "width": 16,
        "batch_size": 64,  # enough optimizer steps for 1,500 images to learn
        "learning_rate": 1e-3,
        "schedule": "cosine",
        "method_options": {},
    },
    "benchmark": {
        # Full Fashion-MNIST, every method, 3 retraining seeds per cell. The
        # recipe (8 epochs, batch 128, Adam 2e-3 with a per-step cosine decay
        # to 0, crop + flip, best-validation weights) reaches >= 90 % test
        # accuracy; the paper's 50 epochs with a x0.5 step decay every 10
        # would cost 6x more per training on a CPU. Cells run method by
        # method in the order below (the reference "random" third), so a
        # partial run compares complete methods. IG 16 steps and NeuronIntGrad
        # K = 4 keep the 70 000 attributions of the looping methods affordable;
        # plain tf.function steps (XLA is slower for this small network on a CPU).
        "train_limit": None,
        "test_limit": None,
        "epochs": 8,
        "fractions": DEFAULT_FRACTIONS,
        "methods": ALL_METHODS,
        "seeds": (0, 1, 2),
        "width": 16,
        "batch_size": 128,
        "learning_rate": 2e-3,
        "schedule": "cosine",
        "method_options": {
            "*": {"jit_compile": False},
            "integrated_gradients": {"steps": 16},
            "pathway_intgrad": {"intgrad_steps": 4},
            "smoothgrad": {"samples": 16},
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
    from keras_pathways.attribution import engine
    from keras_pathways.attribution import registry

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
        result = engine.explain(
            model, x[start : start + chunk], method=method, batch_size=batch_size,
            verbose=False,
            **{**registry.applicable(method, seed=TIE_BREAK_SEED, return_masks=False), **options},
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


class _LearningRate:
    """Sets the optimizer's learning rate before every batch (a Keras callback).

    ``"step"``: the paper's x0.5 every 10 epochs; ``"cosine"``: a cosine decay
    from the start rate to 0 over all steps of the run; ``"constant"``.
    """

    def __new__(cls, schedule, start, epochs, steps_per_epoch):
        import math

        import keras

        if schedule not in ("step", "cosine", "constant"):
            raise ValueError(
                f"Expected schedule 'step', 'cosine' or 'constant'. Received: {schedule!r}."
            )
        total = max(1, epochs * steps_per_epoch)

        def rate(epoch, batch):
            if schedule == "step":
                return start * 0.5 ** (epoch // 10)
            if schedule == "cosine":
                return start * 0.5 * (1 + math.cos(math.pi * (epoch * steps_per_epoch + batch) / total))
            return start

        class Callback(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.epoch = 0

            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch

            def on_train_batch_begin(self, batch, logs=None):
                self.model.optimizer.learning_rate.assign(rate(self.epoch, batch))

        return Callback()


def train(model_fn, x, y, epochs, seed=0, strategy=None, batch_size=256, augment=True,
          validation_fraction=1 / 8, schedule="step", learning_rate=None, verbose=0):
    """A fresh model trained on (x, y): 7/8 train, 1/8 validation, best-val weights.

    Args:
        model_fn: builds a fresh compiled classifier.
        schedule: "step" (the paper's: the rate halved every 10 epochs),
            "cosine" (per step, from the start rate to 0 over the run) or
            "constant".
        learning_rate: the start rate (default: the compiled optimizer's).
    """
    import contextlib

    import keras

    keras.utils.set_random_seed(seed)
    perm = np.random.default_rng(seed).permutation(len(x))
    cut = int(round(len(x) * (1 - validation_fraction)))
    train_idx, val_idx = perm[:cut], perm[cut:]
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        model = model_fn()
    start_lr = (float(learning_rate) if learning_rate is not None
                else float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)))
    steps_per_epoch = -(-cut // batch_size)
    model.fit(
        _augment(x[train_idx], y[train_idx], batch_size, seed, augment),
        validation_data=(x[val_idx], y[val_idx]),
        epochs=epochs,
        shuffle=False,  # the dataset is shuffled (seeded) above
        callbacks=[_BestWeights(), _LearningRate(schedule, start_lr, epochs, steps_per_epoch)],
        verbose=verbose,
    )
    return model


class Evaluator:
    """Test accuracy of many models of one architecture with one compiled
    function: each model's weights are copied into a single evaluation model,
    so no cell retraces ``predict``."""

    def __init__(self, model_fn, batch_size=512):
        self.model_fn = model_fn
        self.batch_size = batch_size
        self._model = None
        self._predict = None

    def logits(self, model, x):
        import tensorflow as tf

        if self._model is None:
            self._model = self.model_fn()
            self._predict = tf.function(lambda images: self._model(images, training=False))
        self._model.set_weights(model.get_weights())
        out = []
        for start in range(0, len(x), self.batch_size):
            part = x[start : start + self.batch_size]
            n = len(part)
            if n < self.batch_size:  # one input signature for every call
                part = np.concatenate([part, np.repeat(part[-1:], self.batch_size - n, axis=0)])
            out.append(np.asarray(self._predict(tf.constant(part, tf.float32)))[:n])
        return np.concatenate(out)

    def accuracy(self, model, x, y):
        return float(np.mean(np.argmax(self.logits(model, x), axis=1) == y))


def accuracy(model, x, y, batch_size=512):
    logits = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, axis=1) == y))


# ------------------------------------------------------------- fingerprint
def data_digest(*arrays):
    """sha1 of arrays' shapes, dtypes and bytes: the identity of a data set."""
    digest = hashlib.sha1()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.shape}{a.dtype}".encode())
        digest.update(a.data)
    return digest.hexdigest()


def _canonical_method_options(method_options):
    """{method: options} with each method's old option spellings renamed (no warning)."""
    from keras_pathways.attribution import engine  # noqa: F401  (registers the methods)
    from keras_pathways.attribution import options as options_lib
    from keras_pathways.attribution import registry

    canonical = {}
    for name, given in method_options.items():
        try:
            method = registry.get(name)
        except ValueError:  # "*" (every method) or a method not registered here
            canonical[name] = given
            continue
        canonical[name] = options_lib.canonical(method, given) if isinstance(given, dict) else given
    return canonical


def check_fingerprint(out_dir, fingerprint, command="the command"):
    """Writes ``out_dir/config.json`` or checks a resumed folder against it.

    Raises:
        ValueError naming the fields that differ and how to start fresh, when
        ``out_dir`` was made with another configuration.
    """
    path = os.path.join(out_dir, "config.json")
    fingerprint = json.loads(json.dumps(fingerprint, default=str))
    if os.path.exists(path):
        try:
            with open(path) as f:
                stored = json.load(f)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"Cannot read the configuration {path}: {error}. Delete the folder (or "
                "choose another output folder) to start fresh."
            ) from None
        if isinstance(stored.get("method_options"), dict):  # written before an option was renamed
            stored["method_options"] = _canonical_method_options(stored["method_options"])
        fields = sorted(k for k in set(stored) | set(fingerprint) if stored.get(k) != fingerprint.get(k))
        if fields:
            details = "; ".join(f"{k}: folder {stored.get(k)!r}, now {fingerprint.get(k)!r}" for k in fields)
            raise ValueError(
                f"The folder {out_dir} holds results of another configuration, so they "
                f"cannot be resumed ({details}). Use another output folder, or delete "
                f"{out_dir} to start fresh with {command}."
            )
        return
    os.makedirs(out_dir, exist_ok=True)
    write_json(path, fingerprint)


def read_record(path, log=print):
    """A cell record, or None (reported, to be redone) when the file is corrupt."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        log(f"warning: the record {path} is unreadable ({' '.join(str(error).split())}); redoing it")
        return None


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
         explain_batch_size=128, augment=True, method_options=None, schedule="step",
         learning_rate=None, recipe=None, progress=True, log=print):
    """Runs ROAR (``mode="roar"``) or KAR (``mode="kar"``); resumable.

    Args:
        model_fn: builds a fresh *compiled* classifier (logits or softmax),
            e.g. ``lambda: keras_pathways.models.compiled_resnet8()``.
        train_data: the training set, ``(images, labels)`` numpy arrays,
            images float (N, H, W, C) as the model takes them, labels int (N,).
        test_data: the test set, ``(images, labels)`` as ``train_data``.
        methods: method names; "random" is added as the reference when missing.
            Cells run method by method in this order.
        fractions: the t values (fraction of pixels removed/kept).
        seeds: retraining seeds (mean ± std over them).
        epochs: epochs for the explained model and every retraining.
        out_dir: results folder (config.json, explained model, pixel orders,
            cell records, summary.json/.csv/.md, plot.png; KAR's summary goes
            to ``out_dir/kar/``).
        strategy: a ``tf.distribute.Strategy`` for the training.
        shard: ``(i, n)``: run only the i-th of n slices of the cell grid.
        method_options: dict of extra ``explain`` options per method name
            (key ``"*"``: options for every method, e.g. ``{"*": {"jit_compile":
            False}, "integrated_gradients": {"steps": 16}}``).
        schedule: the training recipe's learning-rate schedule (see
            ``train``).
        learning_rate: the training recipe's start rate (see ``train``).
        recipe: a JSON-able description of what ``model_fn`` builds (e.g.
            ``{"model": "resnet8", "width": 16}``), part of the fingerprint.

    The folder's ``config.json`` fingerprints the data (sizes and a sha1 of
    the arrays), the recipe, epochs, batch size, schedule, augmentation, the
    method options and the package version; resuming into a folder made with
    another configuration raises a ValueError naming the fields that differ.
    Other methods, fractions or seeds only add cells; the summary covers the
    ones of this call. A corrupt cell record is reported and redone.

    Returns:
        the summary dict (see ``summarize``).
    """
    import keras

    from keras_pathways import __version__

    if mode not in ("roar", "kar"):
        raise ValueError(f"Expected mode 'roar' or 'kar'. Received: {mode!r}.")
    fractions = [float(f) for f in fractions]
    if any(not 0 < f < 1 for f in fractions):
        raise ValueError(f"Expected fractions in (0, 1). Received: {fractions}.")
    methods = list(dict.fromkeys(list(methods) + ["random"]))
    seeds = [int(v) for v in seeds]
    x_train, y_train = (np.asarray(a) for a in train_data)
    x_test, y_test = (np.asarray(a) for a in test_data)
    check_fingerprint(out_dir, {
        "train_data": {"images": list(x_train.shape), "sha1": data_digest(x_train, y_train)},
        "test_data": {"images": list(x_test.shape), "sha1": data_digest(x_test, y_test)},
        "recipe": recipe, "epochs": int(epochs), "batch_size": int(batch_size),
        "schedule": schedule, "learning_rate": learning_rate, "augment": bool(augment),
        "method_options": method_options or {}, "tie_break_seed": TIE_BREAK_SEED,
        "keras_pathways": __version__,
    }, command="the same command")
    fill = x_train.mean(axis=(0, 1, 2))
    evaluator = Evaluator(model_fn)
    training = {"epochs": epochs, "strategy": strategy, "batch_size": batch_size,
                "augment": augment, "schedule": schedule, "learning_rate": learning_rate,
                "verbose": 2 if progress else 0}

    explained_path = os.path.join(out_dir, "explained.keras")
    meta_path = os.path.join(out_dir, "explained.json")
    meta = read_record(meta_path, log) if os.path.exists(meta_path) else None
    if os.path.exists(explained_path) and meta is not None:
        model = keras.saving.load_model(explained_path)
        base_accuracy = meta["accuracy"]
        log(f"Explained model: loaded ({100 * base_accuracy:.2f} % test accuracy)")
    else:
        start = time.perf_counter()
        model = train(model_fn, x_train, y_train, seed=0, **training)
        base_accuracy = evaluator.accuracy(model, x_test, y_test)
        temp = explained_path + ".tmp.keras"
        model.save(temp)
        os.replace(temp, explained_path)
        write_json(meta_path, {"accuracy": base_accuracy, "epochs": epochs,
                               "seconds": round(time.perf_counter() - start, 2)})
        log(f"Explained model: trained, {100 * base_accuracy:.2f} % test accuracy")

    grid = cells(methods, fractions, seeds, shard)
    todo = []
    for c in grid:
        path = os.path.join(out_dir, "cells", cell_name(mode, *c))
        if not os.path.exists(path) or read_record(path, log) is None:
            todo.append(c)
    log(f"{len(grid)} cells in this run, {len(grid) - len(todo)} already finished")
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="cell", desc=mode)
    orders = {}
    try:
        for method, fraction, seed in todo:
            if method not in orders:
                orders.clear()  # one method's orders in memory at a time
                options = _options_for(method_options, method)
                cache = os.path.join(out_dir, "orders")
                orders[method] = (
                    method_orders(model, x_train, method, cache, "train", explain_batch_size, log=log, **options),
                    method_orders(model, x_test, method, cache, "test", explain_batch_size, log=log, **options),
                )
            order_train, order_test = orders[method]
            start = time.perf_counter()
            retrained = train(model_fn, modify(x_train, order_train, fraction, fill, mode), y_train,
                              seed=seed, **training)
            score = evaluator.accuracy(retrained, modify(x_test, order_test, fraction, fill, mode), y_test)
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
            log(f"{mode} {method} t={fraction:g} seed {seed}: {100 * score:.2f} % "
                f"({record['seconds']:.0f} s)")
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return summarize([out_dir], summary_dir(out_dir, mode), mode, methods=methods, fractions=fractions,
                     seeds=seeds)


# ---------------------------------------------------------------- summary
def load_records(out_dirs, mode=None, log=print):
    records = []
    for folder in out_dirs:
        for path in sorted(glob.glob(os.path.join(folder, "cells", "*.json"))):
            record = read_record(path, log)
            if record is not None and (mode is None or record["mode"] == mode):
                records.append(record)
    return records


def summary_dir(out_dir, mode):
    """Where ``roar`` writes a mode's summary: ``out_dir`` for ROAR and
    ``out_dir/kar`` for KAR, so one results folder can hold both."""
    return out_dir if mode == "roar" else os.path.join(out_dir, mode)


def _trapezoid(t, acc):
    from keras_pathways.evaluation.common import auc  # common imports this module

    return float(auc(t, acc))


def exceeds_word(comparison, yes, no):
    """How a comparison's ``exceeds_spread`` reads: ``yes``, ``no`` or "one seed: no spread"."""
    if comparison["exceeds_spread"] is None:
        return "one seed: no spread"
    return yes if comparison["exceeds_spread"] else no


def summarize(out_dirs, out_dir, mode="roar", methods=None, fractions=None, seeds=None,
              reference="pathway_gradient"):
    """Combines cell records (of one run or of several shards) into tables.

    Writes ``summary.json``, ``summary.csv``, ``summary.md`` and ``plot.png`` in
    ``out_dir``; returns the summary dict: per method the mean and std accuracy
    per fraction over seeds, the AUC of the mean curve (trapezoid over t = 0
    and the fractions, t = 0 being the explained model's accuracy for ROAR and
    chance for KAR), and, for methods with every fraction at every seed, the
    per-seed AUCs with their mean and std (while a run is under way and some
    fractions have more seeds than others, ``mixed_seeds`` is set and the AUC
    is that of the seeds with every fraction). ``comparisons`` sets ``reference``
    against each other method: the difference of mean AUCs and whether it
    exceeds the seed spread (|difference| > std_reference + std_other, i.e. the
    mean ± std intervals do not overlap); None where either method has one
    seed only (no spread to compare with).

    ``methods``, ``fractions`` and ``seeds`` restrict the records used (all
    when None), so one folder can hold several runs' cells.
    """
    records = load_records(out_dirs, mode)
    if methods is not None:
        records = [r for r in records if r["method"] in set(methods)]
    if fractions is not None:
        wanted = {round(float(f), 6) for f in fractions}
        records = [r for r in records if round(float(r["fraction"]), 6) in wanted]
    if seeds is not None:
        records = [r for r in records if int(r["seed"]) in set(int(v) for v in seeds)]
    if not records:
        raise ValueError(f"No {mode} cell records found in {list(out_dirs)}.")
    base = float(np.mean([r["base_accuracy"] for r in records]))
    # t = 0: ROAR removes nothing (the explained model's accuracy); KAR keeps
    # nothing, i.e. chance.
    start = base if mode == "roar" else float(np.mean([r.get("chance", 0.0) for r in records]))
    cells_by_method = {}
    for r in records:
        cells_by_method.setdefault(r["method"], {})[(float(r["fraction"]), int(r["seed"]))] = r["accuracy"]
    all_fractions = sorted({f for by in cells_by_method.values() for f, _ in by})
    rows = {}
    for method, by in cells_by_method.items():
        method_fractions = sorted({f for f, _ in by})
        per_fraction = [[a for (f, _), a in by.items() if f == fr] for fr in method_fractions]
        means = [float(np.mean(v)) for v in per_fraction]
        row = {
            "fractions": method_fractions, "mean": means,
            "std": [float(np.std(v)) for v in per_fraction],
            "seeds": [len(v) for v in per_fraction],
            "auc": _trapezoid([0.0] + method_fractions, [start] + means),
            "complete": method_fractions == all_fractions,
        }
        method_seeds = sorted({s for _, s in by})
        full = [s for s in method_seeds if all((f, s) in by for f in all_fractions)]
        if row["complete"] and full:
            aucs = [_trapezoid([0.0] + all_fractions, [start] + [by[(f, s)] for f in all_fractions]) for s in full]
            row.update({"seed_aucs": dict(zip(map(str, full), aucs)),
                        "auc_std": float(np.std(aucs)), "auc_seeds": len(full)})
            if len(set(row["seeds"])) > 1:
                # A run still under way: some fractions have more seeds than
                # others. The AUC is then taken over the seeds that have every
                # fraction (equal to the mean of their per-seed AUCs), so the
                # unfinished seeds do not tilt part of the curve.
                row["mixed_seeds"] = True
                row["auc"] = float(np.mean(aucs))
        rows[method] = row
    comparisons = {}
    ref = rows.get(reference)
    if ref is not None and "auc_std" in ref:
        for method, row in rows.items():
            if method == reference or "auc_std" not in row:
                continue
            difference = ref["auc"] - row["auc"]
            spread = ref["auc_std"] + row["auc_std"]
            better = difference < 0 if mode == "roar" else difference > 0
            seeds = min(ref["auc_seeds"], row["auc_seeds"])
            comparisons[method] = {
                "difference": difference, "spread": spread,
                # One seed has no spread to exceed: None (cannot tell), not True.
                "exceeds_spread": bool(abs(difference) > spread) if seeds >= 2 else None,
                "reference_better": bool(better),
                "seeds": seeds,
            }
    summary = {"mode": mode, "base_accuracy": base, "start_accuracy": start, "methods": rows,
               "better": "lower" if mode == "roar" else "higher",
               "reference": reference, "comparisons": comparisons}
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "summary.json"), summary)
    _write_tables(summary, out_dir)
    _plot(summary, os.path.join(out_dir, "plot.png"))
    return summary


def auc_text(row):
    """A summary row's AUC as the tables print it: "0.7605 ± 0.0001 (3 seeds)".

    Four decimals: the seed spread of an AUC is 1e-4 to 1e-3 on a real benchmark.
    """
    text = f"{row['auc']:.4f}"
    if "auc_std" in row:
        n = row["auc_seeds"]
        text += (f" ± {row['auc_std']:.4f} ({n} seeds" if n > 1 else " (1 seed: no spread")
        text += (", the seeds with every t)" if row.get("mixed_seeds") else ")")
    return text


def _write_tables(summary, out_dir):
    fractions = sorted({f for row in summary["methods"].values() for f in row["fractions"]})
    order = sorted(summary["methods"], key=lambda m: summary["methods"][m]["auc"],
                   reverse=summary["mode"] == "kar")
    header = ["method", "auc"] + [f"t={f:g}" for f in fractions]
    # Seeds per cell: given in brackets where a cell has fewer than the most.
    most_seeds = max(n for row in summary["methods"].values() for n in row["seeds"])
    lines_csv = [",".join(header)]
    lines_md = [
        f"{summary['mode'].upper()}: test accuracy (mean ± std over seeds; (n): a cell with fewer seeds) after "
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
                n = row["seeds"][i]
                cells_md.append(f"{100 * row['mean'][i]:.2f}" + (f" ± {100 * row['std'][i]:.2f}" if n > 1 else "")
                                + (f" ({n})" if n != most_seeds else ""))
            else:
                cells_csv.append("")
                cells_md.append("")
        lines_csv.append(",".join([method, f"{row['auc']:.4f}"] + cells_csv))
        lines_md.append("| " + " | ".join([method, auc_text(row)] + cells_md) + " |")
    comparisons = summary.get("comparisons") or {}
    if comparisons:
        lines_md += [
            "",
            f"{summary['reference']} against each method: difference of mean AUCs "
            f"({summary['reference']} − method; {summary['better']} is better) and whether it "
            "exceeds the seed spread (|difference| > std + std of the per-seed AUCs).",
            "",
            "| method | difference | seed spread | exceeds spread | "
            f"{summary['reference']} better |",
            "| --- | --- | --- | --- | --- |",
        ]
        for method, c in sorted(comparisons.items()):
            spread = f"{c['spread']:.4f}" if c["seeds"] >= 2 else "—"
            lines_md.append(
                f"| {method} | {c['difference']:+.4f} | {spread} | "
                f"{exceeds_word(c, 'yes', 'no')} | {'yes' if c['reference_better'] else 'no'} |"
            )
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
                    fmt=style + "o", ms=3, capsize=2, label=f"{method} (AUC {row['auc']:.4f})")
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
