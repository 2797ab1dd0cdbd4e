"""LeRF: remove the least relevant pixels first, no retraining (docs/method.md §7).

For fractions 1 % ... 10 %, the least relevant pixels (by |saliency|, ties
broken by a seeded random order) are set to 0 in the model's (normalised)
input; the score is the mean relative change |Δp| / p of the probability of the
class predicted on the unmodified input. Lower is better.
"""

import os

import numpy as np

from keras_pathways.atomic import write_json
from keras_pathways.evaluation.retraining import removal_order

DEFAULT_FRACTIONS = tuple(round(0.01 * k, 2) for k in range(1, 11))


def _probabilities(model, x, batch_size):
    """softmax(pre-softmax logits), with the one compiled logits function per model."""
    from keras_pathways.evaluation.common import logits_function
    from keras_pathways.evaluation.common import softmax

    return softmax(logits_function(model, batch_size=batch_size)(x))


def lerf(model, x, methods, fractions=DEFAULT_FRACTIONS, batch_size=64, out_dir=None,
         log=print, **options):
    """Mean |Δp| / p after removing the least relevant pixels, per method and fraction.

    Args:
        model: the classifier (softmax on its logits gives p).
        x: float images (N, H, W, C) as the model takes them.
        methods: method names ("random" is added as the reference).
        fractions: fractions of pixels removed (default 0.01 ... 0.10).
        out_dir: when given, writes lerf.json, lerf.md and lerf.png there.
        **options: method options (e.g. ``sparsity``); each method gets
            those it takes, and a name no method takes is refused.

    Returns:
        dict method -> list of mean |Δp| / p, one per fraction, plus "fractions".
    """
    from keras_pathways.attribution import engine
    from keras_pathways.attribution import registry

    from keras_pathways.attribution import options as options_lib
    from keras_pathways.graph import rewrite

    rewrite.require_one_input(model, "lerf")
    x = np.asarray(x, dtype=np.float32)
    methods = list(dict.fromkeys(list(methods) + ["random"]))
    shares = options_lib.distribute([registry.get(m) for m in methods], options, "lerf")
    base = _probabilities(model, x, batch_size)
    predicted = base.argmax(axis=1)
    p = base[np.arange(len(x)), predicted]
    pixels = x.shape[1] * x.shape[2]
    results = {"fractions": [float(f) for f in fractions]}
    for method in methods:
        result = engine.explain(model, x, method=method, targets=predicted,
                                batch_size=batch_size, verbose=False,
                                **{**registry.applicable(method, return_masks=False), **shares[method]})
        least_first = removal_order(result.saliency)[:, ::-1]
        changes = []
        for fraction in fractions:
            k = int(round(fraction * pixels))
            mask = np.zeros((len(x), pixels), bool)
            np.put_along_axis(mask, least_first[:, :k].astype(np.int64), True, axis=1)
            modified = np.where(mask.reshape(x.shape[:3])[..., None], 0.0, x).astype(np.float32)
            q = _probabilities(model, modified, batch_size)[np.arange(len(x)), predicted]
            changes.append(float(np.mean(np.abs(q - p) / p)))
        results[method] = changes
        log(f"LeRF {method}: " + ", ".join(f"{100 * f:g}%: {c:.3f}" for f, c in zip(fractions, changes)))
    if out_dir is not None:
        _write(results, out_dir)
    return results


def _write(results, out_dir):
    from keras_pathways import viz

    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "lerf.json"), results)
    fractions = results["fractions"]
    methods = [m for m in results if m != "fractions"]
    lines = ["| method | " + " | ".join(f"{100 * f:g} %" for f in fractions) + " |",
             "|" + " --- |" * (len(fractions) + 1)]
    for m in sorted(methods, key=lambda m: results[m][-1]):
        lines.append(f"| {m} | " + " | ".join(f"{c:.3f}" for c in results[m]) + " |")
    with open(os.path.join(out_dir, "lerf.md"), "w") as f:
        f.write("LeRF: mean |Δp|/p of the predicted class (lower is better)\n\n" + "\n".join(lines) + "\n")
    figure, ax = viz.subplots(figsize=(6, 4))
    for m in methods:
        ax.plot([100 * f for f in fractions], results[m], "--o" if m == "random" else "-o", ms=3, label=m)
    ax.set_xlabel("least relevant pixels removed (%)")
    ax.set_ylabel("mean |Δp| / p (lower is better)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    viz.save(figure, os.path.join(out_dir, "lerf.png"))
