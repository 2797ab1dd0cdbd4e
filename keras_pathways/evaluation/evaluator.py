"""One entry point for measuring faithfulness: ``evaluate(model, data, ...)``.

    from keras_pathways import evaluation
    result = evaluation.evaluate(model, (images, labels),
                                 methods=["pathway_gradient", "gradient"],
                                 metrics=["road", "deletion", "insertion",
                                          "faithfulness", "gridpg"],
                                 seeds=[0, 1, 2], out_dir="faithfulness")
    result.table()          # Markdown: methods x metrics, mean ± 95 % CI

Each method explains the images once per seed (deterministic methods once),
the explanation is shared by every metric, and each (metric, method) record is
written atomically to ``out_dir/records/`` as soon as it is finished; a rerun of
the same configuration reuses finished records, and a folder made with another
configuration is refused (see ``retraining.check_fingerprint``). The metrics
and their protocols are described in docs/method.md ("Evaluation").

Intervals: per image, the metric is averaged over seeds; the 95 % interval is
the normal approximation over images (``common.mean_ci``). The spread over
seeds (std of the per-seed means) is reported beside it.
"""

import dataclasses
import json
import os
import time
import warnings

import numpy as np

from keras_pathways.atomic import write_json
from keras_pathways.atomic import write_text
from keras_pathways.evaluation import common
from keras_pathways.evaluation.retraining import check_fingerprint
from keras_pathways.evaluation.retraining import data_digest
from keras_pathways.evaluation.retraining import read_record

#: metric -> (its values, the headline value, "higher" or "lower" is better).
METRICS = {
    "road": ("ROAD (noisy linear imputation, no retraining)", "gap", "higher"),
    "deletion": ("deletion (Petsiuk et al. 2018)", "auc", "lower"),
    "insertion": ("insertion (Petsiuk et al. 2018)", "auc", "higher"),
    "faithfulness": ("faithfulness correlation (Bhatt et al. 2020)", "correlation", "higher"),
    "gridpg": ("GridPG localisation (Rao et al. 2022)", "score", "higher"),
    "sanity": ("cascading randomisation, |Spearman| after the last step", "spearman_abs_last", "lower"),
    "roar": ("ROAR (remove and retrain)", "auc", "lower"),
    "kar": ("KAR (keep and retrain)", "auc", "higher"),
}
#: which values of a metric are "better" when higher (the rest lower).
HIGHER_IS_BETTER = {
    "road": {"lerf_auc", "gap", "lerf_accuracy_auc"},
    "insertion": {"auc"}, "faithfulness": {"correlation"}, "gridpg": {"score"}, "kar": {"auc"},
}
DEFAULT_METRICS = ("road", "deletion", "insertion", "faithfulness", "gridpg")
DEFAULT_METHODS = (
    "pathway_gradient", "pathway_intgrad", "gradient", "input_x_gradient",
    "integrated_gradients", "smoothgrad", "guided_backprop", "grad_cam", "random",
)
#: built-in methods whose result does not depend on ``seed`` (explained once).
DETERMINISTIC = {
    "pathway_gradient", "pathway_intgrad", "gradient", "input_x_gradient",
    "integrated_gradients", "guided_backprop", "grad_cam",
}
#: options of each metric and their defaults (unknown options are errors).
METRIC_OPTIONS = {
    "road": {"fractions": tuple(round(0.1 * k, 1) for k in range(1, 10)), "noise": 0.01},
    "deletion": {"steps": 20, "baseline": "zero"},
    "insertion": {"steps": 20},
    "faithfulness": {"subsets": 100, "subset_size": None, "baseline": "zero"},
    "gridpg": {"grids": 100},
    "sanity": {"images": 16, "std": 0.1},
    "roar": {}, "kar": {},
}


def _check_choice(values, allowed, what):
    values = [values] if isinstance(values, str) else list(values)
    unknown = [v for v in values if v not in allowed]
    if unknown or not values:
        raise ValueError(
            f"Unknown {what} {unknown!r}. Expected a non-empty list from {sorted(allowed)}."
            if unknown else f"Expected at least one {what}. Received: an empty list."
        )
    return list(dict.fromkeys(values))


def _metric_options(metric_options, metrics):
    metric_options = dict(metric_options or {})
    unknown = [m for m in metric_options if m not in METRICS]
    if unknown:
        raise ValueError(f"Unknown metric(s) {unknown} in metric_options. Expected keys from {sorted(METRICS)}.")
    resolved = {}
    for metric in METRICS:  # every metric's options: the fingerprint does not depend on which run
        given = dict(metric_options.get(metric, {}))
        bad = sorted(set(given) - set(METRIC_OPTIONS[metric]))
        if bad:
            raise ValueError(
                f"Unknown option(s) {bad} for metric {metric!r}. Expected any of "
                f"{sorted(METRIC_OPTIONS[metric])}."
            )
        resolved[metric] = {**METRIC_OPTIONS[metric], **given}
    resolved["road"]["fractions"] = tuple(common.check_fractions(resolved["road"]["fractions"]))
    return resolved


@dataclasses.dataclass
class Evaluation:
    """What ``evaluate`` returns.

    Attributes:
        records: dict (metric, method) -> record: ``values`` maps each value
            name to ``{"mean", "ci95", "n", "seed_means", "seed_std"}``;
            ``curves`` (mean curve over images and seeds) and ``x`` for the
            curve metrics; ``seconds_explain`` and ``seconds_metric``.
        config: the configuration (the folder's fingerprint).
    """

    records: dict
    config: dict

    def value(self, metric, method, name=None):
        """The mean of ``name`` (default: the metric's headline value)."""
        name = name or METRICS[metric][1]
        return self.records[(metric, method)]["values"][name]["mean"]

    def table(self):
        """Markdown: methods (rows) x headline values (columns), mean ± 95 % CI."""
        return summary_table(self.records)


def _stats(per_seed):
    """Mean ± CI over images of the per-image values averaged over seeds."""
    stacked = np.stack([np.asarray(v, np.float64) for v in per_seed])  # (S, N)
    with warnings.catch_warnings():  # an image undefined at every seed stays NaN (left out)
        warnings.simplefilter("ignore", RuntimeWarning)
        per_image = np.nanmean(stacked, axis=0)
    mean, ci, n = common.mean_ci(per_image)
    seed_means = [common.mean_ci(v)[0] for v in stacked]
    return {"mean": mean, "ci95": ci, "n": n, "seed_means": seed_means,
            "seed_std": float(np.std(seed_means)) if len(seed_means) > 1 else 0.0}


def _record(metric, method, per_seed_results, seconds_explain, seconds_metric, options):
    values = {}
    for name in per_seed_results[0]["values"]:
        values[name] = _stats([r["values"][name] for r in per_seed_results])
    record = {
        "metric": metric, "method": method, "values": values,
        "headline": METRICS[metric][1], "better": METRICS[metric][2],
        "seeds": len(per_seed_results), "options": options,
        "seconds_explain": round(seconds_explain, 3), "seconds_metric": round(seconds_metric, 3),
    }
    if "curves" in per_seed_results[0]:
        record["x"] = [float(v) for v in per_seed_results[0]["x"]]
        record["curves"] = {
            name: np.mean([np.nanmean(np.asarray(r["curves"][name], np.float64), axis=0)
                           for r in per_seed_results], axis=0).tolist()
            for name in per_seed_results[0]["curves"]
        }
    return record


def _record_path(out_dir, metric, method):
    return os.path.join(out_dir, "records", f"{metric}__{method}.json")


def _model_digest(model):
    return data_digest(*[np.asarray(w) for w in model.get_weights()])


def evaluate(model, data, methods=DEFAULT_METHODS, metrics=DEFAULT_METRICS, seeds=(0,),
             out_dir=None, method_options=None, metric_options=None, batch_size=64,
             value_range=None, model_fn=None, train_data=None, roar_options=None,
             progress=True, log=print):
    """Measures how faithful each attribution method is to ``model``.

    Args:
        model: a Keras classifier that ``explain`` accepts.
        data: ``(images, labels)`` (labels int (N,) or None), images alone:
            float (N, H, W, C) scaled as the model takes them, or a dataset
            name or path for ``keras_pathways.datasets`` (its test split). The explained
            class of each image is the model's prediction; labels (when given)
            are the ground truth for ROAD's accuracy and GridPG's grids.
        methods: attribution method names (default: every built-in one).
        metrics: any of "road", "deletion", "insertion", "faithfulness",
            "gridpg", "sanity", "roar", "kar" (the last two retrain: they need
            ``model_fn`` and ``train_data``; see ``retraining.roar``).
        seeds: seeds of the randomness (tie-breaking of the pixel ranking,
            ROAD's noise, faithfulness subsets, GridPG's grids, random and
            SmoothGrad attributions, ROAR's retraining).
        out_dir: when given, records (reused on a rerun of the same
            configuration), ``summary.json``, ``summary.csv``, ``summary.md``
            and ``curves.png`` go there.
        method_options: dict method -> ``explain`` options (``"*"``: all).
        metric_options: dict metric -> options; see ``METRIC_OPTIONS``.
        batch_size: images per explain step and per prediction batch.
        value_range: (low, high) of the model's input scale, for ROAD's noise
            (default: the data's min and max).
        model_fn: for "roar" / "kar": a function building a fresh compiled
            model.
        train_data: for "roar" / "kar": the ``(images, labels)`` training set.
        roar_options: for "roar" / "kar": extra ``retraining.roar`` keywords
            (epochs, fractions, ...).

    Returns:
        an ``Evaluation``.
    """
    from keras_pathways import __version__
    from keras_pathways.attribution import engine
    from keras_pathways.attribution import registry
    from keras_pathways.graph import rewrite

    rewrite.require_one_input(model, "evaluate (the faithfulness metrics)")
    metrics = _check_choice(metrics, METRICS, "metric")
    methods = _check_choice(methods, set(registry.methods()), "method")
    seeds = [int(s) for s in ([seeds] if np.isscalar(seeds) else seeds)]
    if not seeds:
        raise ValueError("Expected at least one seed. Received: an empty list.")
    options_by_metric = _metric_options(metric_options, metrics)
    method_options = dict(method_options or {})
    unknown = [m for m in method_options if m != "*" and m not in registry.methods()]
    if unknown:
        raise ValueError(f"Unknown method(s) {unknown} in method_options. Expected '*' or {sorted(registry.methods())}.")
    if isinstance(data, (str, os.PathLike)):  # a dataset name or path: its test split
        from keras_pathways import datasets

        data = datasets.load_arrays(os.fspath(data), split="test")
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, labels = data
    else:
        x, labels = data, None
    x = common.check_images(np.asarray(x), where="data")
    x = x.astype(np.float32, copy=False)
    if labels is not None:
        labels = common.check_targets(labels, len(x))
    if {"roar", "kar"} & set(metrics) and (model_fn is None or train_data is None):
        raise ValueError("Metrics 'roar' and 'kar' retrain: give model_fn= (a fresh compiled "
                         "model) and train_data=(images, labels).")
    if value_range is None:
        value_range = (float(x.min()), float(x.max()))
    low, high = (float(v) for v in value_range)
    if not high > low:
        raise ValueError(f"Expected value_range (low, high) with high > low. Received: {value_range!r}.")

    config = {
        "data": {"images": list(x.shape), "sha1": data_digest(x, labels if labels is not None else np.zeros(0))},
        "model": {"name": getattr(model, "name", None), "weights_sha1": _model_digest(model)},
        "seeds": seeds, "metric_options": options_by_metric, "value_range": [low, high],
        "method_options": method_options, "batch_size": int(batch_size),
        "keras_pathways": __version__,
    }
    config = json.loads(json.dumps(config, default=str))
    if out_dir is not None:
        check_fingerprint(out_dir, config, command="evaluate")

    predict = common.logits_function(model, batch_size=max(batch_size, 256))
    logits = predict(x)
    targets = logits.argmax(axis=1).astype(np.int64)
    truth = labels if labels is not None else targets
    records = {}

    def load(metric, method):
        if out_dir is None:
            return None
        path = _record_path(out_dir, metric, method)
        return read_record(path, log) if os.path.exists(path) else None

    def save(metric, method, record):
        records[(metric, method)] = record
        if out_dir is not None:
            write_json(_record_path(out_dir, metric, method), record)

    per_image_metrics = [m for m in metrics if m in ("road", "deletion", "insertion", "faithfulness", "gridpg")]
    todo = [(metric, method) for method in methods for metric in per_image_metrics]
    finished = {key: load(*key) for key in todo}
    records.update({k: v for k, v in finished.items() if v is not None})
    remaining = [k for k in todo if finished[k] is None]
    if finished and len(remaining) < len(todo):
        log(f"{len(todo) - len(remaining)} of {len(todo)} records already finished in {out_dir}")
    bar = None
    if progress and remaining:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(remaining), unit="record", desc="evaluate")

    def status(text):
        if bar is not None:
            bar.set_postfix_str(text, refresh=True)
    try:
        for method in methods:
            wanted = [metric for metric, m in remaining if m == method]
            if not wanted:
                continue
            options = {**method_options.get("*", {}), **method_options.get(method, {})}
            if any(metric != "gridpg" for metric in wanted):  # GridPG explains its own grids
                status(f"explaining {len(x)} inputs with {method}")
                explanations, seconds_explain = _explain_seeds(
                    engine.explain, model, x, targets, method, seeds, options, batch_size)
            else:
                explanations, seconds_explain = [None] * len(seeds), 0.0
            for metric in wanted:
                start = time.perf_counter()
                per_seed = []
                for seed, explanation in zip(seeds, explanations):
                    status(f"{metric} {method} (seed {seed})")
                    per_seed.append(_run_metric(
                        metric, predict, model, x, truth, targets, explanation, seed,
                        options_by_metric[metric], (low, high), batch_size,
                        lambda images, cell_targets, seed=seed: engine.explain(
                            _grid_model(model), images, targets=cell_targets, method=method,
                            batch_size=batch_size, verbose=False,
                            **_shared_options(method, seed, options)).attributions,
                        lambda fraction, label=f"{metric} {method} (seed {seed})": status(
                            f"{label} {100 * fraction:.0f} %"),
                    ))
                seconds_metric = time.perf_counter() - start
                record = _record(metric, method, per_seed, seconds_explain if metric != "gridpg" else 0.0,
                                 seconds_metric, options_by_metric[metric])
                save(metric, method, record)
                head = record["values"][record["headline"]]
                log(f"{metric} {method}: {record['headline']} {head['mean']:.4f} ± {head['ci95']:.4f} "
                    f"({seconds_metric:.1f} s)")
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    if "sanity" in metrics:
        _sanity_records(model, x, methods, method_options, options_by_metric["sanity"], seeds,
                        batch_size, load, save, log)
    for mode in ("roar", "kar"):
        if mode in metrics:
            _roar_records(mode, model_fn, train_data, (x, truth), methods, seeds, method_options,
                          roar_options or {}, out_dir, save, log, progress)
    result = Evaluation(records, config)
    if out_dir is not None:  # the tables cover every record in the folder, this run's and earlier ones
        write_summary(Evaluation({**folder_records(out_dir, log), **records}, config), out_dir)
    return result


def folder_records(out_dir, log=print):
    """(metric, method) -> record for every readable record in ``out_dir/records``."""
    found = {}
    folder = os.path.join(out_dir, "records")
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        record = read_record(os.path.join(folder, name), log) if name.endswith(".json") else None
        if record is not None:
            found[(record["metric"], record["method"])] = record
    return found


def _shared_options(method, seed, options):
    """The run's seed and ``return_masks=False`` where ``method`` takes them, then its own options."""
    from keras_pathways.attribution import registry

    return {**registry.applicable(method, seed=seed, return_masks=False), **options}


def _explain_seeds(explain, model, x, targets, method, seeds, options, batch_size):
    """One explanation per seed (deterministic built-ins: one, reused)."""
    start = time.perf_counter()
    explanations = []
    for i, seed in enumerate(seeds):
        if i and method in DETERMINISTIC and "seed" not in options:
            explanations.append(explanations[0])
            continue
        explanations.append(explain(model, x, targets=targets, method=method, batch_size=batch_size,
                                    verbose=False, **_shared_options(method, seed, options)))
    return explanations, time.perf_counter() - start


def _grid_model(model):
    """The model that classifies GridPG grids (cached with the model)."""
    from keras_pathways.evaluation.gridpg import grid_model
    from keras_pathways.graph import rewrite

    cache = rewrite.model_cache(model)
    if "gridpg_model" not in cache:
        cache["gridpg_model"] = grid_model(model) or model
    return cache["gridpg_model"]


def _run_metric(metric, predict, model, x, truth, targets, explanation, seed, options, value_range,
                batch_size, explain_grid, report=None):
    """One metric for one seed; ``report(fraction_done)`` shows progress (ROAD)."""
    from keras_pathways.evaluation.faithfulness import faithfulness_correlation
    from keras_pathways.evaluation.gridpg import gridpg
    from keras_pathways.evaluation.gridpg import make_grids
    from keras_pathways.evaluation.gridpg import resize_for
    from keras_pathways.evaluation.perturbation import deletion
    from keras_pathways.evaluation.perturbation import insertion
    from keras_pathways.evaluation.road import road

    rows = max(batch_size, 256)
    if metric == "road":
        return road(predict, x, explanation.saliency, targets, labels=truth,
                             fractions=options["fractions"], noise=options["noise"],
                             value_range=value_range, seed=seed, batch_size=rows,
                             progress=None if report is None else
                             lambda done: report(done / (2 * len(options["fractions"]) * len(x))))
    if metric == "deletion":
        return deletion(predict, x, explanation.saliency, targets, steps=options["steps"],
                                     baseline=options["baseline"], seed=seed, batch_size=rows)
    if metric == "insertion":
        return insertion(predict, x, explanation.saliency, targets, steps=options["steps"],
                                      seed=seed, batch_size=rows)
    if metric == "faithfulness":
        return faithfulness_correlation(
            predict, x, explanation.attributions, targets, subsets=options["subsets"],
            subset_size=options["subset_size"], baseline=options["baseline"], seed=seed,
            batch_size=rows)
    if metric == "gridpg":
        grid_net = _grid_model(model)
        correct = targets == truth
        grids, cell_labels = make_grids(x, truth, grids=options["grids"], seed=seed, correct=correct)
        if grid_net is model:  # a fixed input size: each grid is scaled down to it
            grids = resize_for(tuple(model.inputs[0].shape[1:3]), grids)
        return gridpg(explain_grid, grids, cell_labels)
    raise ValueError(f"Unknown metric {metric!r}.")  # unreachable: checked up front


def _sanity_records(model, x, methods, method_options, options, seeds, batch_size, load, save, log):
    from keras_pathways.evaluation.sanity import sanity

    todo = [m for m in methods if load("sanity", m) is None]
    if not todo:
        return
    images = x[: int(options["images"])]
    start = time.perf_counter()
    per_seed = []
    for seed in seeds:
        per_seed.append(sanity(
            model, images, methods=todo, std=options["std"], seed=seed, batch_size=batch_size,
            method_options={m: {**method_options.get("*", {}), **method_options.get(m, {})} for m in todo},
            log=None))
    seconds = time.perf_counter() - start
    for method in todo:
        last = [r["mean"][method]["spearman_abs"][-1] for r in per_seed]
        spread = per_seed[0]["std_over_inputs"][method]["spearman_abs"][-1]
        n = len(images)
        record = {
            "metric": "sanity", "method": method, "headline": "spearman_abs_last", "better": "lower",
            "values": {"spearman_abs_last": {
                "mean": float(np.mean(last)), "ci95": float(common.Z95 * spread / np.sqrt(max(n - 1, 1))),
                "n": n, "seed_means": last, "seed_std": float(np.std(last)) if len(last) > 1 else 0.0}},
            "x": list(range(len(per_seed[0]["steps"]) + 1)), "steps": per_seed[0]["steps"],
            "curves": {"spearman_abs": [1.0] + list(np.mean(
                [r["mean"][method]["spearman_abs"] for r in per_seed], axis=0))},
            "seeds": len(seeds), "options": options, "seconds_explain": 0.0,
            "seconds_metric": round(seconds / len(todo), 3),
        }
        save("sanity", method, record)
        log(f"sanity {method}: |Spearman| after the last step {record['values']['spearman_abs_last']['mean']:.3f}")


def _roar_records(mode, model_fn, train_data, test_data, methods, seeds, method_options, roar_options,
                  out_dir, save, log, progress):
    from keras_pathways.evaluation import retraining

    folder = os.path.join(out_dir, "roar") if out_dir is not None else "roar"
    summary = retraining.roar(model_fn, train_data, test_data, methods=methods, seeds=seeds, mode=mode,
                              out_dir=folder, method_options=method_options, progress=progress, log=log,
                              **roar_options)
    for method, row in summary["methods"].items():
        seed_aucs = list(row.get("seed_aucs", {}).values()) or [row["auc"]]
        n = len(seed_aucs)
        ci = float(common.Z95 * np.std(seed_aucs, ddof=1) / np.sqrt(n)) if n > 1 else 0.0
        save(mode, method, {
            "metric": mode, "method": method, "headline": "auc", "better": summary["better"],
            "values": {"auc": {"mean": row["auc"], "ci95": ci, "n": n, "seed_means": seed_aucs,
                               "seed_std": float(np.std(seed_aucs)) if n > 1 else 0.0}},
            "x": [0.0] + row["fractions"], "curves": {"accuracy": [summary["start_accuracy"]] + row["mean"]},
            "seeds": n, "options": roar_options, "seconds_explain": 0.0, "seconds_metric": 0.0,
        })


# ------------------------------------------------------------------ output
def _columns(records):
    """(metric, value name) columns in a stable order."""
    columns = []
    for metric in METRICS:
        names = []
        for (m, _), record in records.items():
            if m == metric:
                names = list(record["values"])
                break
        preferred = [METRICS[metric][1]] + [n for n in names if n != METRICS[metric][1]]
        columns += [(metric, n) for n in preferred if n in names]
    return columns


def summary_table(records, columns=None):
    """Markdown table: methods x (metric, value), "mean ± ci95"."""
    columns = columns or [(m, METRICS[m][1]) for m in METRICS if any(k[0] == m for k in records)]
    methods = list(dict.fromkeys(method for _, method in records))
    header = ["method"] + [f"{m} {n} ({'↑' if n in HIGHER_IS_BETTER.get(m, set()) else '↓'})"
                           for m, n in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for method in methods:
        cells = [method]
        for metric, name in columns:
            record = records.get((metric, method))
            if record is None or name not in record["values"]:
                cells.append("")
                continue
            v = record["values"][name]
            cells.append(f"{v['mean']:.3f} ± {v['ci95']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_summary(result, out_dir):
    """summary.json, summary.csv, summary.md and curves.png in ``out_dir``."""
    records = result.records
    rows = [{"metric": metric, "method": method, "value": name, **{k: v[k] for k in ("mean", "ci95", "n", "seed_std")},
             "better": "higher" if name in HIGHER_IS_BETTER.get(metric, set()) else "lower"}
            for (metric, method), record in records.items() for name, v in record["values"].items()]
    write_json(os.path.join(out_dir, "summary.json"), {"config": result.config, "rows": rows})
    csv = ["metric,method,value,mean,ci95,n,seed_std,better"] + [
        f"{r['metric']},{r['method']},{r['value']},{r['mean']:.6f},{r['ci95']:.6f},{r['n']},{r['seed_std']:.6f},{r['better']}"
        for r in rows]
    write_text(os.path.join(out_dir, "summary.csv"), "\n".join(csv) + "\n")
    text = ("Faithfulness: mean ± 95 % confidence interval over images (normal approximation; "
            "per image averaged over seeds). ↑ higher is better, ↓ lower is better.\n\n"
            + summary_table(records) + "\n\nEvery value:\n\n" + summary_table(records, _columns(records)) + "\n")
    write_text(os.path.join(out_dir, "summary.md"), text)
    _plot_curves(records, os.path.join(out_dir, "curves.png"))


def _plot_curves(records, path):
    from keras_pathways import viz

    panels = [("road", "morf_probability", "ROAD MoRF: p(target) (↓)"),
              ("road", "lerf_probability", "ROAD LeRF: p(target) (↑)"),
              ("deletion", "probability", "deletion: p(target) (↓)"),
              ("insertion", "probability", "insertion: p(target) (↑)")]
    panels = [p for p in panels if any(k[0] == p[0] for k in records)]
    bars = [m for m in ("faithfulness", "gridpg") if any(k[0] == m for k in records)]
    count = len(panels) + len(bars)
    if not count:
        return
    figure, axes = viz.subplots(1, count, figsize=(4 * count, 3.6))
    axes = np.atleast_1d(axes)
    for ax, (metric, curve, title) in zip(axes, panels):
        for (m, method), record in sorted(records.items()):
            if m == metric and curve in record.get("curves", {}):
                style = "--" if method == "random" else "-"
                ax.plot(record["x"], record["curves"][curve], style, label=method)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("fraction of pixels")
        ax.grid(alpha=0.3)
    for ax, metric in zip(axes[len(panels):], bars):
        items = [(method, r["values"][METRICS[metric][1]]) for (m, method), r in sorted(records.items()) if m == metric]
        ax.barh([i for i, _ in items], [v["mean"] for _, v in items], xerr=[v["ci95"] for _, v in items])
        ax.set_title(f"{metric} (↑)", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(alpha=0.3)
    if panels:
        axes[0].legend(fontsize=6)
    viz.save(figure, path)


__all__ = ["DEFAULT_METHODS", "DEFAULT_METRICS", "Evaluation", "METRICS", "METRIC_OPTIONS",
           "evaluate", "summary_table", "write_summary"]
