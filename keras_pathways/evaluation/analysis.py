"""Pathway analyses (docs/method.md §5): how contribution pathways differ from the
pruning objective's.

- ``jaccard(a, b)``: per input, |A ∩ B| / |A ∪ B| over all concatenated masks.
- ``dead_neurons(model, x)`` and ``dead_share(pathway, dead)``: the share of a
  pathway's kept neurons that are zero in the unmasked network.
- ``probability_change(model, pathway, x)``: |p_M(c) - p(c)| / p(c), the
  relative change of the target probability when the network runs on the
  pathway only.
- ``analyze(model, x, kinds, sparsity)``: all of it for several pathway kinds
  (an overlap matrix and per-kind rows, like the paper's tables), and
  ``sweep(model, x, kinds, sparsities)`` against sparsity. Results are plain
  dicts, written as JSON/CSV/Markdown and a PNG.
"""

import os
import time

import numpy as np

from keras_pathways.atomic import write_json as _save_json
from keras_pathways.atomic import write_text as _save_text
from keras_pathways.graph import sites as sites_lib

#: The pathway kinds ``analyze`` knows by name: ``find_pathway`` options.
KINDS = {
    "mct": {"kind": "mct"},
    "intgrad": {"kind": "intgrad"},
    "dgr": {"kind": "dgr", "init": "ones"},
    "dgr_uniform": {"kind": "dgr", "init": "uniform"},
    "greedy": {"kind": "greedy"},
    "random": {"kind": "random"},
}
DEFAULT_KINDS = ("mct", "intgrad", "dgr", "dgr_uniform", "greedy", "random")


# ---------------------------------------------------------------- measures
def _flat_masks(pathway):
    pathway._require_masks("the analyses")
    n = len(pathway)
    return np.concatenate([np.asarray(m, bool).reshape(n, -1) for m in pathway.masks], axis=1)


def _check_same_neurons(a, b):
    if a.site_names != b.site_names or [s.shape for s in a.sites] != [s.shape for s in b.sites]:
        raise ValueError(
            "The two pathways are over different neurons (different models or "
            f"input sizes): sites {a.site_names[:3]}... vs {b.site_names[:3]}..."
        )
    if len(a) != len(b):
        raise ValueError(f"The two pathways hold {len(a)} and {len(b)} inputs; expected the same inputs.")


def jaccard(a, b):
    """Jaccard overlap per input: float64 (N,), 1 where both keep nothing.

    Args:
        a, b: ``Pathway`` objects of the same model and inputs, with masks.
    """
    _check_same_neurons(a, b)
    fa, fb = _flat_masks(a), _flat_masks(b)
    inter = np.logical_and(fa, fb).sum(axis=1)
    union = np.logical_or(fa, fb).sum(axis=1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def overlap_matrix(pathways):
    """Mean Jaccard overlap of every pair of named pathways.

    Args:
        pathways: dict name -> ``Pathway`` (same model and inputs).

    Returns:
        dict with ``names`` and ``mean``/``std``: lists of lists (row i,
        column j = overlap of names[i] and names[j]).
    """
    names = list(pathways)
    mean = [[0.0] * len(names) for _ in names]
    std = [[0.0] * len(names) for _ in names]
    for i, a in enumerate(names):
        for j, b in enumerate(names[i:], start=i):
            values = jaccard(pathways[a], pathways[b])
            mean[i][j] = mean[j][i] = float(values.mean())
            std[i][j] = std[j][i] = float(values.std())
    return {"names": names, "mean": mean, "std": std}


def _batches(n, batch_size):
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def _check_x(x):
    from keras_pathways.attribution import inputs

    x = inputs.as_float_array(x)  # refuses integer images as explain does: no silent cast
    if len(x) == 0:
        raise ValueError("Expected at least one input. Received an empty batch.")
    if not np.isfinite(x).all():
        raise ValueError("The inputs contain NaN or Inf.")
    return x.astype(np.float32)


def _one_input(model, what):
    from keras_pathways.graph import rewrite

    rewrite.require_one_input(model, f"The pathway analysis ({what})")


def _compiled(model, activations, what):
    """The analyses' compiled functions, traced once per model (kept in the
    model's cache beside its graph and explain steps)."""
    import tensorflow as tf

    from keras_pathways.graph import rewrite

    graph = rewrite.pathway_graph(model, activations, require_sites=True)
    key = ("analysis", what, graph.activations)
    cache = rewrite.model_cache(model)
    if key not in cache:
        if what == "capture":
            cache[key] = tf.function(lambda xb: graph(xb, capture=True)[1])
        else:
            cache[key] = tf.function(
                lambda xb, masks: (tf.nn.softmax(graph(xb)), tf.nn.softmax(graph(xb, masks=masks)))
            )
    return cache[key]


def dead_neurons(model, x, batch_size=32, activations=sites_lib.RECTIFIERS):
    """Which neurons are zero in the unmasked network, per input.

    Returns:
        list with one bool array (N, *site.shape) per site (True = dead).
    """
    import tensorflow as tf

    _one_input(model, "dead_neurons")
    x = _check_x(x)
    capture = _compiled(model, activations, "capture")
    parts = [[np.asarray(a) == 0 for a in capture(tf.constant(x[s]))] for s in _batches(len(x), batch_size)]
    return [np.concatenate(site) for site in zip(*parts)]


def dead_share(pathway, dead):
    """Share of each input's kept neurons that are dead: float64 (N,), NaN
    where the pathway keeps nothing.

    Args:
        pathway: a ``Pathway`` with masks.
        dead: ``dead_neurons(model, x)`` for the same inputs.
    """
    n = len(pathway)
    kept = _flat_masks(pathway)
    flat_dead = np.concatenate([np.asarray(d, bool).reshape(n, -1) for d in dead], axis=1)
    if flat_dead.shape != kept.shape:
        raise ValueError(
            f"dead has {flat_dead.shape[1]} neurons per input for {flat_dead.shape[0]} "
            f"inputs; the pathway {kept.shape[1]} for {kept.shape[0]}. Compute both on the same inputs."
        )
    count = kept.sum(axis=1)
    both = np.logical_and(kept, flat_dead).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, both / np.maximum(count, 1), np.nan)


def probability_change(model, pathway, x, batch_size=32):
    """|p_M(c) - p(c)| / p(c) per input: float64 (N,).

    p is the softmax of the unmasked logits, p_M that of the network running
    on the pathway's masks only (f(x, M)), both for the pathway's targets c.
    """
    import tensorflow as tf

    from keras_pathways.graph import rewrite

    _one_input(model, "probability_change")
    x = _check_x(x)
    if len(x) != len(pathway):
        raise ValueError(f"The pathway holds {len(pathway)} inputs; x has {len(x)}.")
    pathway._require_masks("probability_change")
    graph = rewrite.pathway_graph(model, pathway.activations, require_sites=True)
    if [site.name for site in graph.sites] != pathway.site_names:
        raise ValueError("The pathway does not belong to this model (its sites differ).")
    both = _compiled(model, pathway.activations, "probabilities")
    out = []
    for s in _batches(len(x), batch_size):
        p, pm = both(tf.constant(x[s]), [tf.constant(m[s], tf.float32) for m in pathway.masks])
        rows = np.arange(s.stop - s.start)
        c = pathway.targets[s]
        p, pm = np.asarray(p, np.float64)[rows, c], np.asarray(pm, np.float64)[rows, c]
        out.append(np.abs(pm - p) / np.maximum(p, np.finfo(np.float64).tiny))
    return np.concatenate(out)


# ---------------------------------------------------------------- analyses
def _kind_options(kind, dgr_steps=None):
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"Unknown pathway kind {kind!r}. Expected one of {sorted(KINDS)}.")
    options = dict(KINDS[kind])
    if options["kind"] == "dgr" and dgr_steps is not None:
        options["dgr_steps"] = int(dgr_steps)
    return options


def _pathways(model, x, kinds, sparsity, batch_size, dgr_steps, seed, log):
    from keras_pathways.attribution import engine

    pathways, seconds = {}, {}
    for kind in kinds:
        start = time.perf_counter()
        pathways[kind] = engine.find_pathway(
            model, x, sparsity=sparsity, batch_size=batch_size, seed=seed, verbose="auto",
            **_kind_options(kind, dgr_steps),
        )
        seconds[kind] = round(time.perf_counter() - start, 2)
        if log:
            log(f"  {kind} pathways at sparsity {sparsity:g}: {seconds[kind]:.1f} s")
    return pathways, seconds


def analyze(model, x, kinds=DEFAULT_KINDS, sparsity=0.9, batch_size=32, dgr_steps=None,
            seed=0, out_dir=None, log=print):
    """Overlap, dead share, kept fraction and |Δp|/p of several pathway kinds.

    Args:
        model: a Keras classifier with rectifier sites.
        x: float inputs (N, *input_shape) as the model takes them.
        kinds: names from ``KINDS`` ("mct", "intgrad", "dgr" (init ones),
            "dgr_uniform", "greedy", "random").
        sparsity: fraction of neurons pruned (the paper's tables: 0.9).
        dgr_steps: DGR's optimisation steps (default 1000).
        out_dir: when given, writes ``analysis.json``, ``overlap.csv``,
            ``analysis.md`` and ``analysis.png`` there (atomically).

    Returns:
        dict with ``overlap`` (see ``overlap_matrix``) and ``kinds``: per kind
        the mean dead share, kept fraction, |Δp|/p and seconds.
    """
    _one_input(model, "analyze")
    x = _check_x(x)
    kinds = list(dict.fromkeys(kinds))
    if not kinds:
        raise ValueError("Expected at least one pathway kind.")
    for kind in kinds:
        _kind_options(kind, dgr_steps)
    dead = dead_neurons(model, x, batch_size)
    dead_fraction = float(np.mean(np.concatenate([d.reshape(len(x), -1) for d in dead], axis=1)))
    pathways, seconds = _pathways(model, x, kinds, sparsity, batch_size, dgr_steps, seed, log)
    rows = {}
    for kind, pathway in pathways.items():
        share = dead_share(pathway, dead)
        change = probability_change(model, pathway, x, batch_size)
        rows[kind] = {
            "dead_share": float(np.nanmean(share)) if np.isfinite(share).any() else float("nan"),
            "kept_fraction": float(pathway.kept_fraction.mean()),
            "probability_change": float(np.mean(change)),
            "probability_change_median": float(np.median(change)),
            "seconds": seconds[kind],
        }
    result = {
        "sparsity": float(sparsity), "inputs": int(len(x)), "dead_fraction": dead_fraction,
        "overlap": overlap_matrix(pathways), "kinds": rows,
    }
    if out_dir:
        _write_analysis(result, out_dir)
    return result


def sweep(model, x, kinds=("mct", "intgrad", "random"), sparsities=(0.5, 0.7, 0.8, 0.9, 0.95),
          reference="mct", batch_size=32, dgr_steps=None, seed=0, out_dir=None, log=print):
    """Dead share, |Δp|/p, kept fraction and overlap with ``reference`` against sparsity.

    Returns:
        dict ``{"sparsities": [...], "kinds": {kind: {measure: [value per sparsity]}}}``;
        with ``out_dir`` also ``sweep.json``, ``sweep.csv`` and ``sweep.png``.
    """
    x = _check_x(x)
    kinds = list(dict.fromkeys(kinds))
    dead = dead_neurons(model, x, batch_size)
    _one_input(model, "sweep")
    measures = ("dead_share", "probability_change", "kept_fraction", "overlap")
    table = {kind: {m: [] for m in measures} for kind in kinds}
    for sparsity in sparsities:
        wanted = kinds if reference in kinds else kinds + [reference]
        pathways, _ = _pathways(model, x, wanted, sparsity, batch_size, dgr_steps, seed, log)
        for kind in kinds:
            p = pathways[kind]
            table[kind]["dead_share"].append(float(np.nanmean(dead_share(p, dead))))
            table[kind]["probability_change"].append(float(np.mean(probability_change(model, p, x, batch_size))))
            table[kind]["kept_fraction"].append(float(p.kept_fraction.mean()))
            table[kind]["overlap"].append(float(jaccard(p, pathways[reference]).mean()))
    result = {"sparsities": [float(s) for s in sparsities], "reference": reference, "kinds": table}
    if out_dir:
        _write_sweep(result, out_dir)
    return result


# ------------------------------------------------------------------ output
def format_analysis(result):
    """The overlap matrix and per-kind rows as Markdown tables."""
    names = result["overlap"]["names"]
    lines = [
        f"Pathways at sparsity {result['sparsity']:g} over {result['inputs']} inputs "
        f"({100 * result['dead_fraction']:.1f} % of all neurons are dead in the unmasked network).",
        "",
        "Jaccard overlap (%):",
        "",
        "| | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for name, row in zip(names, result["overlap"]["mean"]):
        lines.append(f"| {name} | " + " | ".join(f"{100 * v:.1f}" for v in row) + " |")
    lines += ["", "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for measure, label, scale in (
        ("dead_share", "dead share (%)", 100),
        ("kept_fraction", "kept (%)", 100),
        ("probability_change", "mean abs dp/p", 1),
        ("seconds", "seconds", 1),
    ):
        cells = [f"{scale * result['kinds'][n][measure]:.{1 if scale == 100 else 3}f}" for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write_analysis(result, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    _save_json(os.path.join(out_dir, "analysis.json"), result)
    names = result["overlap"]["names"]
    csv = [",".join(["kind"] + names + ["dead_share", "kept_fraction", "probability_change"])]
    for name, row in zip(names, result["overlap"]["mean"]):
        k = result["kinds"][name]
        csv.append(",".join([name] + [f"{v:.6f}" for v in row]
                            + [f"{k['dead_share']:.6f}", f"{k['kept_fraction']:.6f}", f"{k['probability_change']:.6f}"]))
    _save_text(os.path.join(out_dir, "analysis.csv"), "\n".join(csv) + "\n")
    _save_text(os.path.join(out_dir, "analysis.md"), format_analysis(result))
    _plot_analysis(result, os.path.join(out_dir, "analysis.png"))


def _plot_analysis(result, path):
    from keras_pathways import viz

    names = result["overlap"]["names"]
    figure, (left, right) = viz.subplots(1, 2, figsize=(11, 4.2))
    matrix = 100 * np.array(result["overlap"]["mean"])
    image = left.imshow(matrix, vmin=0, vmax=100, cmap="viridis")
    left.set_xticks(range(len(names)), names, rotation=45, ha="right")
    left.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            left.text(j, i, f"{matrix[i, j]:.0f}", ha="center", va="center",
                      color="white" if matrix[i, j] < 60 else "black", fontsize=8)
    left.set_title(f"Jaccard overlap (%), sparsity {result['sparsity']:g}")
    figure.colorbar(image, ax=left, fraction=0.046)
    share = [100 * result["kinds"][n]["dead_share"] for n in names]
    right.bar(range(len(names)), share, color="tab:red")
    right.set_xticks(range(len(names)), names, rotation=45, ha="right")
    right.set_ylabel("kept neurons that are dead (%)")
    right.set_ylim(0, 100)
    right.set_title("dead share")
    for i, v in enumerate(share):
        right.text(i, v + 1, f"{v:.1f}", ha="center", fontsize=8)
    figure.tight_layout()
    viz.save(figure, path)


def _write_sweep(result, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    _save_json(os.path.join(out_dir, "sweep.json"), result)
    lines = ["kind,measure," + ",".join(f"{s:g}" for s in result["sparsities"])]
    for kind, measures in result["kinds"].items():
        for measure, values in measures.items():
            lines.append(f"{kind},{measure}," + ",".join(f"{v:.6f}" for v in values))
    _save_text(os.path.join(out_dir, "sweep.csv"), "\n".join(lines) + "\n")
    from keras_pathways import viz

    measures = ("dead_share", "probability_change", "kept_fraction", "overlap")
    figure, axes = viz.subplots(1, len(measures), figsize=(4 * len(measures), 3.4))
    for ax, measure in zip(axes, measures):
        for kind, values in result["kinds"].items():
            ax.plot(result["sparsities"], values[measure], "o-", ms=3, label=kind)
        ax.set_xlabel("sparsity")
        ax.set_title(measure if measure != "overlap" else f"overlap with {result['reference']}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    viz.save(figure, os.path.join(out_dir, "sweep.png"))


__all__ = [
    "DEFAULT_KINDS", "KINDS", "analyze", "dead_neurons", "dead_share", "format_analysis",
    "jaccard", "overlap_matrix", "probability_change", "sweep",
]
