"""The model-randomisation sanity check (Adebayo et al. 2018; docs/method.md §7).

Cascading randomisation: starting from the logits and going down to the first
layer, the weights of one block after another are replaced by N(0, std)
draws; after each step every method explains the same inputs (for the
original model's predicted classes) and its saliency is compared with the
original one by

- Spearman rank correlation of the signed saliency and of |saliency|,
- SSIM of the |saliency| maps scaled to [0, 1] (scikit-image),
- Pearson correlation of the HOG features of those maps (scikit-image).

A method passes when the similarities fall towards 0 as the randomisation
goes deeper. All of it runs on a copy of the model: the caller's weights are
never changed.
"""

import os
import time

import numpy as np

from keras_pathways.atomic import write_json as _save_json
from keras_pathways.atomic import write_text as _save_text

DEFAULT_METHODS = ("pathway_gradient", "gradient", "guided_backprop", "integrated_gradients")
MEASURES = ("spearman", "spearman_abs", "ssim", "hog")


# ---------------------------------------------------------------- measures
def _unit(saliency):
    a = np.abs(np.asarray(saliency, np.float64))
    top = a.max()
    return a / top if top > 0 else a


def _pearson(a, b):
    a, b = np.ravel(a) - np.mean(a), np.ravel(b) - np.mean(b)
    denominator = np.sqrt(np.sum(a * a) * np.sum(b * b))
    return float(np.sum(a * b) / denominator) if denominator > 0 else 0.0


def _spearman(a, b):
    from scipy.stats import rankdata

    return _pearson(rankdata(np.ravel(a)), rankdata(np.ravel(b)))


def _hog(unit_map):
    from skimage.feature import hog

    h, w = unit_map.shape
    cell = max(2, min(h, w) // 8)
    return hog(unit_map, orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(2, 2),
               feature_vector=True)


def similarity(original, randomized):
    """The four similarities of two (H, W) saliency maps: dict measure -> float.

    A constant map (e.g. all zeros after the logits were randomised to
    nothing) has correlation 0 with anything.
    """
    from skimage.metrics import structural_similarity

    a, b = np.asarray(original, np.float64), np.asarray(randomized, np.float64)
    ua, ub = _unit(a), _unit(b)
    return {
        "spearman": _spearman(a, b),
        "spearman_abs": _spearman(np.abs(a), np.abs(b)),
        "ssim": float(structural_similarity(ua, ub, data_range=1.0)),
        "hog": _pearson(_hog(ua), _hog(ub)),
    }


# ------------------------------------------------------------ randomisation
def _copy(model):
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _all_layers(model):
    import keras

    out = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.update(_all_layers(layer))
        out.setdefault(layer.name, layer)
    return out


def _resolve_blocks(copy, blocks, activations):
    from keras_pathways.graph import rewrite

    if blocks is None:
        found = rewrite.pathway_graph(copy, activations, require_sites=False).weighted_blocks()
        return list(reversed(found))  # logits first
    by_name = _all_layers(copy)
    resolved = []
    for i, block in enumerate(blocks):
        names = [block] if isinstance(block, str) else list(block)
        missing = [n for n in names if n not in by_name]
        if missing:
            raise ValueError(
                f"Block {i} names layers the model does not have: {missing}. Give "
                "blocks as lists of layer names, logits first."
            )
        layers = [by_name[n] for n in names if by_name[n].weights]
        if not layers:
            raise ValueError(f"Block {i} ({names}) holds no layer with weights.")
        resolved.append(("+".join(names) if len(names) <= 2 else f"{names[0]}..{names[-1]}", layers))
    return resolved


def _group(blocks, groups):
    """Merges consecutive blocks into ``groups`` cascade steps (None: keep all)."""
    if groups is None or groups >= len(blocks):
        return blocks
    if groups < 1:
        raise ValueError(f"Expected groups >= 1. Received: groups={groups}.")
    merged = []
    for part in np.array_split(np.arange(len(blocks)), groups):
        names = [blocks[i][0] for i in part]
        layers = [layer for i in part for layer in blocks[i][1]]
        merged.append((names[0] if len(names) == 1 else f"{names[0]}..{names[-1]}", layers))
    return merged


def _randomize(layers, rng, std):
    for layer in layers:
        for weight in layer.trainable_weights:
            weight.assign(rng.normal(0.0, std, size=tuple(weight.shape)).astype(weight.dtype))


# ---------------------------------------------------------------- the check
def sanity(model, x, methods=DEFAULT_METHODS, blocks=None, groups=None, std=0.1, seed=0,
           method_options=None, batch_size=16, out_dir=None, log=print):
    """Cascading model randomisation, logits to first layer.

    Args:
        model: a Keras classifier (it is copied; its weights are not touched).
        x: float inputs (N, *input_shape) as the model takes them.
        methods: ``explain`` method names.
        blocks: None (the graph walker's blocks: the logits layer, then the
            weighted layers before each rectifier site, deepest first), or a
            list of layer-name lists, logits first.
        groups: merge consecutive blocks into this many cascade steps (None:
            one step per block).
        std: the randomised weights are drawn from N(0, std) (docs/method.md §7: 0.1).
        method_options: dict method -> extra ``explain`` options (e.g.
            ``{"pathway_gradient": {"sparsity": 0.7}}``).
        out_dir: when given, writes ``sanity.json``, ``sanity.csv``,
            ``sanity.md`` and ``sanity.png`` there.

    Returns:
        dict with ``steps`` (the randomised blocks, in order), and per method
        and measure the mean (and std) over inputs after each step.
    """
    from keras_pathways.attribution import engine
    from keras_pathways.attribution import registry
    from keras_pathways.graph import rewrite
    from keras_pathways.graph.sites import RECTIFIERS

    rewrite.require_one_input(model, "sanity (cascading randomisation)")
    x = np.asarray(x, np.float32)
    if len(x) == 0:
        raise ValueError("Expected at least one input. Received an empty batch.")
    if not np.isfinite(x).all():
        raise ValueError("The inputs contain NaN or Inf.")
    methods = list(dict.fromkeys(methods))
    for method in methods:
        registry.get(method)
    method_options = method_options or {}
    copy = _copy(model)
    steps = _group(_resolve_blocks(copy, blocks, RECTIFIERS), groups)
    targets = np.argmax(np.asarray(model.predict(x, verbose=0)), axis=-1)

    def explain_all(m):
        return {
            method: engine.explain(
                m, x, targets=targets, method=method, batch_size=batch_size, verbose=False,
                **{**registry.applicable(method, return_masks=False), **method_options.get(method, {})},
            ).saliency
            for method in methods
        }

    original = explain_all(copy)
    rng = np.random.default_rng(seed)
    curves = {m: {k: [] for k in MEASURES} for m in methods}
    spread = {m: {k: [] for k in MEASURES} for m in methods}
    for index, (name, layers) in enumerate(steps):
        start = time.perf_counter()
        _randomize(layers, rng, std)
        # The rewritten graph and compiled steps read the layers' variables,
        # so the copy's cache stays valid after the assignment.
        current = explain_all(copy)
        for method in methods:
            values = [similarity(o, r) for o, r in zip(original[method], current[method])]
            for measure in MEASURES:
                column = [v[measure] for v in values]
                curves[method][measure].append(float(np.mean(column)))
                spread[method][measure].append(float(np.std(column)))
        if log:
            log(f"  step {index + 1}/{len(steps)} randomised {name}: "
                + ", ".join(f"{m} |rho| {curves[m]['spearman_abs'][-1]:.3f}" for m in methods)
                + f" ({time.perf_counter() - start:.1f} s)")
    result = {
        "steps": [name for name, _ in steps], "methods": methods, "inputs": int(len(x)),
        "std": float(std), "seed": int(seed), "mean": curves, "std_over_inputs": spread,
        "method_options": {m: {k: str(v) for k, v in o.items()} for m, o in method_options.items()},
    }
    if out_dir:
        _write(result, out_dir)
    return result


def format_sanity(result, measure="spearman_abs"):
    """One Markdown table of ``measure`` per method and cascade step."""
    steps = result["steps"]
    lines = [
        f"Cascading randomisation ({measure}, mean over {result['inputs']} inputs), "
        "logits first; lower = the method depends on the weights.",
        "",
        "| method | " + " | ".join(steps) + " |",
        "|---" * (len(steps) + 1) + "|",
    ]
    for method in result["methods"]:
        lines.append(f"| {method} | " + " | ".join(f"{v:.3f}" for v in result["mean"][method][measure]) + " |")
    return "\n".join(lines) + "\n"


def _write(result, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    _save_json(os.path.join(out_dir, "sanity.json"), result)
    lines = ["method,measure," + ",".join(result["steps"])]
    for method in result["methods"]:
        for measure in MEASURES:
            lines.append(f"{method},{measure}," + ",".join(f"{v:.6f}" for v in result["mean"][method][measure]))
    _save_text(os.path.join(out_dir, "sanity.csv"), "\n".join(lines) + "\n")
    _save_text(os.path.join(out_dir, "sanity.md"), "\n".join(format_sanity(result, m) for m in MEASURES))
    _plot(result, os.path.join(out_dir, "sanity.png"))


def _plot(result, path):
    from keras_pathways import viz

    labels = {"spearman": "Spearman (signed)", "spearman_abs": "Spearman |s|",
              "ssim": "SSIM", "hog": "HOG Pearson"}
    figure, axes = viz.subplots(1, len(MEASURES), figsize=(4.2 * len(MEASURES), 3.8), sharey=True)
    steps = result["steps"]
    for ax, measure in zip(axes, MEASURES):
        for method in result["methods"]:
            ax.plot(range(1, len(steps) + 1), result["mean"][method][measure], "o-", ms=3, label=method)
        ax.axhline(0, color="gray", lw=0.5)
        ax.set_title(labels[measure])
        ax.set_xticks(range(1, len(steps) + 1), steps, rotation=90, fontsize=6)
        ax.set_ylim(-0.3, 1.05)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("similarity to the original saliency")
    axes[0].legend(fontsize=7)
    figure.suptitle("Cascading randomisation (logits first, deeper to the right)")
    figure.tight_layout()
    viz.save(figure, path)


__all__ = ["DEFAULT_METHODS", "MEASURES", "format_sanity", "sanity", "similarity"]
