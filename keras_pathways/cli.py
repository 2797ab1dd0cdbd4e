"""The ``keras-pathways`` command."""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _demo(args):
    from keras_pathways import demo

    if args.digits:
        demo.run(out_dir=args.out, epochs=args.epochs, count=args.count, seed=args.seed)
    else:
        demo.run_photos(out_dir=args.out, photos=args.photos)
    return 0


def _explain(args):
    import json

    from keras_pathways import explain_files

    def warn(message):
        print(message, file=sys.stderr)

    import keras_pathways
    from keras_pathways.pathways.selection import check_sparsity

    try:
        keras_pathways.get_method(args.method)
        check_sparsity(args.sparsity)
    except ValueError as error:
        warn(f"error: {error}")
        return 2
    try:
        explain_files.prepare_out_dir(args.out)  # before the model loads: fail fast
        loaded = explain_files.load_model(
            args.model, unsafe=args.unsafe, value_range=args.range, size=args.size
        )
        formats = ("png", "npy") if args.format == "both" else (args.format,)
        summary = explain_files.explain_files(
            loaded, args.images, args.out, method=args.method, sparsity=args.sparsity,
            target=args.target, formats=formats, progress=not args.quiet, warn=warn,
        )
    except explain_files.CommandError as error:
        warn(f"error: {error}")
        return 2
    for entry in summary["images"]:
        name = entry["class_name"] or f"class {entry['class']}"
        kept = "" if entry["kept_fraction"] is None else f", kept {100 * entry['kept_fraction']:.1f} %"
        print(f"{entry['image']}: {name} (score {entry['score']:.3f}{kept}, {entry['seconds']:.2f} s)")
    explained = f"Explained {len(summary['images'])} of {len(args.images)} images"
    if summary["summary_file"] is None:
        print(f"{explained}; summary.json could not be written to "
              f"{os.path.abspath(args.out)}, so here is the summary instead:")
        record = {k: v for k, v in summary.items() if k != "summary_file"}
        print(json.dumps(record, indent=2))
    else:
        print(f"{explained}; wrote {os.path.abspath(summary['summary_file'])}")
    return 2 if summary["failed"] else 0


def _export(args):
    import keras_pathways
    from keras_pathways import explain_files, export

    def warn(message):
        print(message, file=sys.stderr)

    try:
        loaded = explain_files.load_model(args.model, unsafe=args.unsafe, size=args.size)
        path = export.export_explainer(
            loaded.model, args.out_dir, methods=args.method, sparsity=args.sparsity,
            input_shape=None if args.size is None else tuple(args.size) + (int(loaded.model.inputs[0].shape[-1]),),
            version=args.version, overwrite=args.overwrite, jit_compile=not args.no_jit,
        )
    except (explain_files.CommandError, ValueError, keras_pathways.UnsupportedModelError) as error:
        warn(f"error: {' '.join(str(error).split())}")
        return 2
    except OSError as error:  # a file-system fault export_explainer did not name itself
        where = error.filename or args.out_dir
        warn(f"error: {where}: cannot write the export ({error.strerror or error})")
        return 2
    print(f"Wrote {os.path.abspath(path)} with signatures: serving_default, "
          + ", ".join(f"explain_{m}, explain_{m}_targets" for m in args.method))
    return 0


def _roar_data(args, preset):
    from keras_pathways import datasets

    train_limit = args.train_limit if args.train_limit is not None else preset["train_limit"]
    test_limit = args.test_limit if args.test_limit is not None else preset["test_limit"]
    x_train, y_train = datasets.load_arrays(args.data, split="train")
    x_test, y_test = datasets.load_arrays(args.data, split="test")
    return (x_train[:train_limit], y_train[:train_limit]), (x_test[:test_limit], y_test[:test_limit])


def _roar(args):
    from keras_pathways.evaluation import retraining as roar_lib

    def warn(message):
        print(message, file=sys.stderr)

    try:
        if args.merge:
            for mode in (("roar", "kar") if args.mode == "both" else (args.mode,)):
                roar_lib.summarize(args.merge, roar_lib.summary_dir(args.out, mode), mode)
        else:
            preset = roar_lib.PRESETS[args.preset]
            shard = roar_lib.parse_shard(args.shard) if args.shard else None
            (x_train, y_train), test = _roar_data(args, preset)
            classes = int(max(y_train.max(), test[1].max())) + 1
            width = preset["width"]

            learning_rate = preset["learning_rate"]

            def model_fn():
                from keras_pathways.models import compiled_resnet8

                return compiled_resnet8(x_train.shape[1:], classes, width=width,
                                        learning_rate=learning_rate)

            strategy = None
            if args.mirrored:
                import tensorflow as tf

                strategy = tf.distribute.MirroredStrategy()
            modes = ("roar", "kar") if args.mode == "both" else (args.mode,)
            for mode in modes:
                roar_lib.roar(
                    model_fn, (x_train, y_train), test,
                    methods=args.methods or preset["methods"],
                    fractions=args.fractions or preset["fractions"],
                    seeds=args.seeds or preset["seeds"], epochs=args.epochs or preset["epochs"],
                    mode=mode, out_dir=args.out, strategy=strategy, shard=shard,
                    progress=not args.quiet, method_options=preset["method_options"],
                    batch_size=args.batch_size or preset["batch_size"],
                    schedule=preset["schedule"], learning_rate=learning_rate,
                    recipe={"model": "resnet8", "width": width, "optimizer": "adam",
                            "weight_decay": 1e-4, "validation": "1/8, best accuracy"},
                )
    except (ValueError, OSError) as error:
        warn(f"error: {' '.join(str(error).split())}")
        return 2
    for mode in (("roar", "kar") if args.mode == "both" else (args.mode,)):
        folder = os.path.abspath(roar_lib.summary_dir(args.out, mode))
        with open(os.path.join(folder, "summary.md")) as f:
            print(f.read())
        print(f"Wrote {folder}/summary.json, summary.csv, plot.png")
    return 0


def _lerf(args):
    import keras

    from keras_pathways import datasets
    from keras_pathways.evaluation import lerf

    try:
        model = keras.saving.load_model(args.model)
        x, _ = datasets.load_arrays(args.data, split=args.split)
        lerf(model, x[: args.limit], args.methods, out_dir=args.out, sparsity=args.sparsity)
    except (ValueError, OSError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    with open(os.path.join(args.out, "lerf.md")) as f:
        print(f.read())
    return 0


def _analysis_inputs(args):
    """(model, x) for analyze/sanity: MODEL as for explain, DATA "photos" (the
    photos bundled with scikit-image, preprocessed for MODEL) or a dataset
    name/path (its images as keras_pathways.datasets gives them)."""
    import numpy as np

    from keras_pathways import datasets
    from keras_pathways.explain_files import load_model

    loaded = load_model(args.model, unsafe=args.unsafe)
    if args.data == "photos":
        from keras_pathways.demo import PHOTOS, photo

        names = PHOTOS if args.limit is None else PHOTOS[: args.limit]
        x = np.stack([loaded.preprocess(photo(name)) for name in names])
    else:
        x, _ = datasets.load_arrays(args.data, split=args.split)
        x = x[: args.limit]
    return loaded.model, np.asarray(x, np.float32)


def _json_option(text, name):
    import json

    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ValueError(f"Expected {name} as JSON (e.g. '{{\"*\": {{\"jit_compile\": false}}}}'). "
                         f"Received: {text!r} ({error}).") from None
    if not isinstance(value, dict):
        raise ValueError(f"Expected {name} as a JSON object. Received: {text!r}.")
    return value


def _evaluate(args):
    import numpy as np

    from keras_pathways import datasets
    from keras_pathways.evaluation import evaluator
    from keras_pathways.explain_files import CommandError
    from keras_pathways.explain_files import load_model

    try:
        loaded = load_model(args.model, unsafe=args.unsafe)
        labels = None
        if args.data == "photos":
            from keras_pathways.demo import EVALUATION_PHOTOS, photo

            names = EVALUATION_PHOTOS if args.limit is None else EVALUATION_PHOTOS[: args.limit]
            x = np.stack([loaded.preprocess(photo(name)) for name in names])
        else:
            x, labels = datasets.load_arrays(args.data, split=args.split)
            x, labels = x[: args.limit], labels[: args.limit]
        metric_options = _json_option(args.metric_options, "--metric-options") or {}
        if args.grids is not None:
            metric_options.setdefault("gridpg", {})["grids"] = args.grids
        print(f"Evaluating {len(x)} inputs: methods {args.methods}, metrics {args.metrics}, seeds {args.seeds}")
        result = evaluator.evaluate(
            loaded.model, (np.asarray(x, np.float32), labels), methods=args.methods, metrics=args.metrics,
            seeds=args.seeds, out_dir=args.out, batch_size=args.batch_size,
            method_options=_json_option(args.method_options, "--method-options"),
            metric_options=metric_options,
            value_range=tuple(args.value_range) if args.value_range else None,
            progress=not args.quiet,
        )
    except (ValueError, OSError, CommandError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    print(result.table())
    print(f"Wrote {os.path.abspath(args.out)}/summary.json, summary.csv, summary.md, curves.png")
    return 0


def _analyze(args):
    from keras_pathways import analysis
    from keras_pathways.explain_files import CommandError

    try:
        model, x = _analysis_inputs(args)
        print(f"Analysing {len(x)} inputs, pathway kinds {args.scores}, sparsity {args.sparsity:g}")
        result = analysis.analyze(
            model, x, kinds=args.scores, sparsity=args.sparsity, batch_size=args.batch_size,
            dgr_steps=args.dgr_steps, out_dir=args.out,
        )
        if args.sweep:
            analysis.sweep(model, x, kinds=args.scores, sparsities=args.sweep,
                           batch_size=args.batch_size, dgr_steps=args.dgr_steps, out_dir=args.out)
    except (ValueError, OSError, CommandError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    print(analysis.format_analysis(result))
    print(f"Wrote {os.path.abspath(args.out)}/analysis.json, analysis.csv, analysis.md, analysis.png"
          + (", sweep.*" if args.sweep else ""))
    return 0


def _sanity(args):
    from keras_pathways.evaluation import sanity
    from keras_pathways.evaluation.sanity import format_sanity
    from keras_pathways.explain_files import CommandError

    try:
        model, x = _analysis_inputs(args)
        result = sanity(
            model, x, methods=args.methods, groups=args.groups, std=args.std, seed=args.seed,
            method_options={"pathway_gradient": {"sparsity": args.sparsity}},
            batch_size=args.batch_size, out_dir=args.out,
        )
    except (ValueError, OSError, CommandError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    print(format_sanity(result))
    print(f"Wrote {os.path.abspath(args.out)}/sanity.json, sanity.csv, sanity.md, sanity.png")
    return 0


def _methods(args):
    import keras_pathways

    for name, description in keras_pathways.methods().items():
        print(f"{name:20s} {description}")
    return 0


def _sites(args):
    import keras

    import keras_pathways

    try:
        model = keras.saving.load_model(args.model)  # safe_mode=True
    except Exception as error:  # report, do not trace back
        print(f"error: could not load {args.model!r}: {error}", file=sys.stderr)
        return 2
    try:
        graph = keras_pathways.PathwayGraph(model, activations=args.activations)
    except keras_pathways.UnsupportedModelError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    width = max(len(s.name) for s in graph.sites)
    for site in graph.sites:
        print(f"{site.name:<{width}}  {site.activation:<10}  {str(site.shape):>16}  {site.size:>10}")
    print(f"{len(graph.sites)} sites, {graph.num_neurons} neurons per input")
    return 0


def build_parser():
    from keras_pathways.explain_files import RANGES  # numpy only: --help stays fast

    parser = argparse.ArgumentParser(
        prog="keras-pathways",
        description="Explain Keras classifiers through their critical pathways "
        "(pathway gradient; Khakzar et al., CVPR 2021).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="explain EfficientNet-Lite0 on bundled photos and write a comparison picture",
        description="Explains the pretrained EfficientNet-Lite0's top-1 prediction "
        "on photos bundled with scikit-image (no download) with the plain gradient "
        "and the pathway gradient at sparsities 0.5, 0.85 and 0.95, prints the "
        "kept fractions and writes DIR/pathways.png. With --digits: a small CNN "
        "trained in-process on scikit-learn's digits instead.",
    )
    demo.add_argument("--out", default="demo", metavar="DIR", help="output folder (default: demo)")
    demo.add_argument(
        "--photos", nargs="+", default=["chelsea", "coffee", "astronaut", "rocket"],
        metavar="NAME", help="scikit-image photos (default: chelsea coffee astronaut rocket)",
    )
    demo.add_argument("--digits", action="store_true", help="the small digits CNN demo instead")
    demo.add_argument("--epochs", type=int, default=15, help="--digits: training epochs (default: 15)")
    demo.add_argument("--count", type=int, default=6, help="--digits: digits to explain (default: 6)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.set_defaults(run=_demo)

    explain = commands.add_parser(
        "explain",
        help="explain image files with a saved model",
        description="Explains each IMAGE with MODEL and writes, per image, an "
        "overlay PNG of the saliency (|s| / max |s|) and/or the raw attributions "
        "(.npy), plus DIR/summary.json (class, score, kept fraction, seconds). "
        "A missing or unreadable image is reported in one line and skipped; the "
        "exit code is then 2. Images are resized to the model's input size.",
    )
    explain.add_argument(
        "model",
        help="a .keras file, a TensorFlow SavedModel folder (opaque: only methods "
        "that need no neuron site work), or 'efficientnet_lite0' (pretrained)",
    )
    explain.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    explain.add_argument("--out", required=True, metavar="DIR", help="output folder")
    explain.add_argument(
        "--method", default="pathway_gradient",
        help="attribution method (default: pathway_gradient; see 'keras-pathways methods')",
    )
    explain.add_argument("--sparsity", type=float, default=0.85, help="pathway sparsity in [0, 1) (default: 0.85)")
    explain.add_argument("--target", type=int, default=None, metavar="N", help="class to explain (default: the prediction)")
    explain.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"), help="input size for models that take any size")
    explain.add_argument(
        "--range", choices=sorted(RANGES), default="unit",
        help="value range the model expects for a saved model: unit [0, 1] (default), "
        "symmetric [-1, 1] or byte [0, 255]; efficientnet_lite0 uses its own",
    )
    explain.add_argument("--format", choices=("png", "npy", "both"), default="png", help="what to write per image (default: png)")
    explain.add_argument("--unsafe", action="store_true", help="load a model that needs safe_mode=False (runs code from the file: only if you trust it)")
    explain.add_argument("--quiet", action="store_true", help="no progress bar")
    explain.set_defaults(run=_explain)

    export = commands.add_parser(
        "export",
        help="write a SavedModel with explanation signatures for TF Serving",
        description="Writes OUT_DIR/VERSION/ (a TensorFlow SavedModel) with "
        "serving_default (images -> predictions) and, per method, "
        "explain_<method> (images -> attributions, saliency, targets, logits, "
        "kept_fraction) and explain_<method>_targets (images, targets; -1 = "
        "predicted class). An existing version folder is never replaced "
        "without --overwrite.",
    )
    export.add_argument("model", help="a .keras file or 'efficientnet_lite0'")
    export.add_argument("out_dir", metavar="OUT_DIR", help="the model's base folder (TF Serving's model_base_path)")
    export.add_argument("--method", nargs="+", default=["pathway_gradient"], help="methods to export (default: pathway_gradient)")
    export.add_argument("--sparsity", type=float, default=0.85, help="pathway sparsity (default: 0.85)")
    export.add_argument("--version", type=int, default=1, help="version folder number (default: 1)")
    export.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"), help="input size for models that take any size")
    export.add_argument("--overwrite", action="store_true", help="replace an existing version folder")
    export.add_argument("--no-jit", action="store_true", help="do not XLA-compile the explain functions (for servers built without XLA)")
    export.add_argument("--unsafe", action="store_true", help="load a model that needs safe_mode=False (only if you trust it)")
    export.set_defaults(run=_export)

    roar = commands.add_parser(
        "roar",
        help="ROAR / KAR: remove (keep) the most relevant pixels and retrain",
        description="Trains ResNet-8 on DATA, explains every train and test image "
        "with each method (plus the random reference), replaces the top t of the "
        "pixels (ROAR) or all others (KAR) by the train mean, retrains from "
        "scratch and reports test accuracy per (method, t, seed) cell. Each cell "
        "is written to OUT/cells/ as soon as it finishes; rerunning the same "
        "command resumes (a folder made with another configuration is refused). "
        "Presets: 'ci' (1,500 images, 3 epochs, batch 64, 2 fractions, 1 seed) and "
        "'benchmark' (full data, 8 methods + random, t = 0.1 ... 0.9, 3 seeds, 8 "
        "epochs of Adam 2e-3 with a cosine decay, batch 128 (>= 90 %% test "
        "accuracy), IG 16 steps, NeuronIntGrad K = 4, SmoothGrad 16 samples, no XLA).",
    )
    roar.add_argument("--preset", choices=("ci", "benchmark"), default="ci", help="size of the run (default: ci)")
    roar.add_argument("--data", default="fashion_mnist_local", help="dataset name or path for keras_pathways.datasets (default: fashion_mnist_local)")
    roar.add_argument("--out", default="roar_results", metavar="DIR", help="results folder (default: roar_results)")
    roar.add_argument("--methods", nargs="+", default=None, help="methods (default: the preset's)")
    roar.add_argument("--fractions", nargs="+", type=float, default=None, help="t values (default: the preset's)")
    roar.add_argument("--seeds", nargs="+", type=int, default=None, help="retraining seeds (default: the preset's: ci 0, benchmark 0 1 2)")
    roar.add_argument("--epochs", type=int, default=None, help="training epochs (default: the preset's)")
    roar.add_argument("--mode", choices=("roar", "kar", "both"), default="roar", help="remove (roar) or keep (kar) the top t, or both, ROAR first (default: roar)")
    roar.add_argument("--shard", default=None, metavar="I/N", help="run only the I-th of N slices of the cell grid")
    roar.add_argument("--merge", nargs="+", default=None, metavar="DIR", help="combine the cell records of shard folders into --out")
    roar.add_argument("--train-limit", type=int, default=None, help="use the first N train images")
    roar.add_argument("--test-limit", type=int, default=None, help="use the first N test images")
    roar.add_argument("--batch-size", type=int, default=None, help="training batch size (default: the preset's: ci 64, benchmark 128)")
    roar.add_argument("--mirrored", action="store_true", help="train with tf.distribute.MirroredStrategy over the visible devices")
    roar.add_argument("--quiet", action="store_true", help="no progress bar")
    roar.set_defaults(run=_roar)

    lerf = commands.add_parser(
        "lerf",
        help="LeRF: remove the least relevant pixels, no retraining",
        description="Sets the least relevant 1 %% ... 10 %% of pixels to 0 and reports the "
        "mean |dp|/p of the predicted class per method (lower is better).",
    )
    lerf.add_argument("model", help="a .keras classifier")
    lerf.add_argument("--data", default="fashion_mnist_local", help="dataset name or path (default: fashion_mnist_local)")
    lerf.add_argument("--split", default="test")
    lerf.add_argument("--limit", type=int, default=1000, help="first N images (default: 1000)")
    lerf.add_argument("--methods", nargs="+", default=["pathway_gradient", "gradient"])
    lerf.add_argument("--sparsity", type=float, default=0.85)
    lerf.add_argument("--out", default="lerf_results", metavar="DIR")
    lerf.set_defaults(run=_lerf)

    def analysis_inputs(command):
        command.add_argument("model", help="a .keras file, a SavedModel folder or efficientnet_lite0")
        command.add_argument("data", help="'photos' (scikit-image's photos, preprocessed for MODEL) or a dataset name/path for keras_pathways.datasets")
        command.add_argument("--split", default="test", help="dataset split (default: test)")
        command.add_argument("--limit", type=int, default=None, help="first N inputs (default: all)")
        command.add_argument("--batch-size", type=int, default=32, help="inputs per compiled step (default: 32)")
        command.add_argument("--unsafe", action="store_true", help="load a model that needs safe_mode=False (only if you trust it)")

    evaluate = commands.add_parser(
        "evaluate",
        help="faithfulness metrics without retraining: ROAD, deletion, insertion, faithfulness correlation, GridPG",
        description="Explains every input with each method (once per seed; deterministic "
        "methods once) and measures ROAD (MoRF/LeRF with noisy linear imputation), "
        "deletion and insertion AUCs, faithfulness correlation and GridPG "
        "localisation, plus 'sanity' on request. Reports mean and 95 %% confidence "
        "interval over inputs per (metric, method); each record is written to "
        "OUT/records/ as soon as it is finished and reused when the same command "
        "runs again (another configuration in OUT is refused). The explained class "
        "is the model's prediction.",
    )
    evaluate.add_argument("model", help="a .keras file, a SavedModel folder or efficientnet_lite0")
    evaluate.add_argument("data", help="'photos' (scikit-image's photos, preprocessed for MODEL; labels = predictions) or a dataset name/path for keras_pathways.datasets (with labels)")
    evaluate.add_argument("--metrics", nargs="+", default=["road", "deletion", "insertion", "faithfulness", "gridpg"],
                          help="road deletion insertion faithfulness gridpg sanity (default: the first five)")
    evaluate.add_argument("--methods", nargs="+", default=["pathway_gradient", "gradient", "input_x_gradient", "guided_backprop", "grad_cam", "random"],
                          help="attribution methods (default: the one-gradient methods and random)")
    evaluate.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds (default: 0)")
    evaluate.add_argument("--split", default="test", help="dataset split (default: test)")
    evaluate.add_argument("--limit", type=int, default=None, help="first N inputs (default: all)")
    evaluate.add_argument("--batch-size", type=int, default=64, help="inputs per explain step (default: 64)")
    evaluate.add_argument("--grids", type=int, default=None, help="GridPG grids per seed (default: 100)")
    evaluate.add_argument("--value-range", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                          help="the model's input range, for ROAD's noise (default: the data's min and max)")
    evaluate.add_argument("--method-options", default=None, metavar="JSON", help='explain options per method, e.g. \'{"*": {"jit_compile": false}, "integrated_gradients": {"steps": 16}}\'')
    evaluate.add_argument("--metric-options", default=None, metavar="JSON", help='options per metric, e.g. \'{"deletion": {"baseline": "blur"}}\'')
    evaluate.add_argument("--out", default="evaluation_results", metavar="DIR")
    evaluate.add_argument("--unsafe", action="store_true", help="load a model that needs safe_mode=False (only if you trust it)")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(run=_evaluate)

    analyze = commands.add_parser(
        "analyze",
        help="compare contribution pathways with the pruning objective's",
        description="Finds the pathways of each kind for every input and prints the "
        "Jaccard overlap matrix, the share of kept neurons that are dead in the "
        "unmasked network, the kept fraction and |dp|/p (docs/method.md §5); writes JSON, CSV, "
        "Markdown and a plot.",
    )
    analysis_inputs(analyze)
    analyze.add_argument("--scores", nargs="+", default=["mct", "intgrad", "dgr", "dgr_uniform", "greedy", "random"],
                         help="pathway kinds: mct intgrad dgr dgr_uniform greedy random (default: all)")
    analyze.add_argument("--sparsity", type=float, default=0.9, help="fraction of neurons pruned (default: 0.9)")
    analyze.add_argument("--dgr-steps", type=int, default=None, help="DGR optimisation steps (default: 1000)")
    analyze.add_argument("--sweep", nargs="+", type=float, default=None, metavar="SPARSITY",
                         help="also sweep these sparsities (writes sweep.json/csv/png)")
    analyze.add_argument("--out", default="analysis_results", metavar="DIR")
    analyze.set_defaults(run=_analyze)

    sanity = commands.add_parser(
        "sanity",
        help="cascading model-randomisation sanity check",
        description="Randomises a copy of MODEL block by block from the logits down "
        "and reports how similar each method's saliency stays (Spearman signed "
        "and absolute, SSIM, HOG); writes JSON, CSV, Markdown and a plot.",
    )
    analysis_inputs(sanity)
    sanity.add_argument("--methods", nargs="+", default=["pathway_gradient", "gradient", "guided_backprop", "integrated_gradients"])
    sanity.add_argument("--sparsity", type=float, default=0.7, help="pathway_gradient's sparsity (default: 0.7, as the authors)")
    sanity.add_argument("--groups", type=int, default=None, help="merge the blocks into this many cascade steps")
    sanity.add_argument("--std", type=float, default=0.1, help="std of the random weights (default: 0.1)")
    sanity.add_argument("--seed", type=int, default=0)
    sanity.add_argument("--out", default="sanity_results", metavar="DIR")
    sanity.set_defaults(run=_sanity)

    methods = commands.add_parser("methods", help="list the attribution methods")
    methods.set_defaults(run=_methods)

    sites = commands.add_parser(
        "sites",
        help="list the neuron sites of a saved .keras model",
        description="Loads a .keras model (safe_mode on) and lists its neuron "
        "sites: name, activation, per-input shape and neuron count.",
    )
    sites.add_argument("model", help="path of a .keras file")
    sites.add_argument(
        "--activations", nargs="+", default=["relu", "relu6", "leaky_relu"],
        help="activation names treated as neuron sites (default: the rectifiers)",
    )
    sites.set_defaults(run=_sites)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
