"""``keras-pathways evaluate``: faithfulness metrics without retraining."""

import os

from keras_pathways.cli.inputs import MODEL_HELP
from keras_pathways.cli.inputs import UNSAFE_HELP


def add_parser(subparsers):
    parser = subparsers.add_parser(
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
    parser.add_argument("model", help=MODEL_HELP)
    parser.add_argument("data", help="'photos' (scikit-image's photos, preprocessed for MODEL; labels = predictions) or a dataset name/path for keras_pathways.datasets (with labels)")
    parser.add_argument("--metrics", nargs="+", default=["road", "deletion", "insertion", "faithfulness", "gridpg"],
                        help="road deletion insertion faithfulness gridpg sanity (default: the first five)")
    parser.add_argument("--methods", nargs="+", default=["pathway_gradient", "gradient", "input_x_gradient", "guided_backprop", "grad_cam", "random"],
                        help="attribution methods (default: the one-gradient methods and random)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds (default: 0)")
    parser.add_argument("--split", default="test", help="dataset split (default: test)")
    parser.add_argument("--limit", type=int, default=None, help="first N inputs (default: all)")
    parser.add_argument("--batch-size", type=int, default=64, help="inputs per explain step (default: 64)")
    parser.add_argument("--grids", type=int, default=None, help="GridPG grids per seed (default: 100)")
    parser.add_argument("--value-range", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                        help="the model's input range, for ROAD's noise (default: the data's min and max)")
    parser.add_argument("--method-options", default=None, metavar="JSON", help='explain options per method, e.g. \'{"*": {"jit_compile": false}, "integrated_gradients": {"steps": 16}}\'')
    parser.add_argument("--metric-options", default=None, metavar="JSON", help='options per metric, e.g. \'{"deletion": {"baseline": "blur"}}\'')
    parser.add_argument("--out", default="evaluation_results", metavar="DIR")
    parser.add_argument("--unsafe", action="store_true", help=UNSAFE_HELP)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


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


def run(args):
    from keras_pathways.cli.demos import EVALUATION_PHOTOS
    from keras_pathways.cli.inputs import load_inputs
    from keras_pathways.evaluation import evaluator

    model, x, labels = load_inputs(args, EVALUATION_PHOTOS)
    metric_options = _json_option(args.metric_options, "--metric-options") or {}
    if args.grids is not None:
        metric_options.setdefault("gridpg", {})["grids"] = args.grids
    print(f"Evaluating {len(x)} inputs: methods {args.methods}, metrics {args.metrics}, seeds {args.seeds}")
    result = evaluator.evaluate(
        model, (x, labels), methods=args.methods, metrics=args.metrics,
        seeds=args.seeds, out_dir=args.out, batch_size=args.batch_size,
        method_options=_json_option(args.method_options, "--method-options"),
        metric_options=metric_options,
        value_range=tuple(args.value_range) if args.value_range else None,
        progress=not args.quiet,
    )
    print(result.table())
    print(f"Wrote {os.path.abspath(args.out)}/summary.json, summary.csv, summary.md, curves.png")
    return 0
