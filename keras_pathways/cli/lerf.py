"""``keras-pathways lerf``: remove the least relevant pixels, no retraining."""

import os


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "lerf",
        help="LeRF: remove the least relevant pixels, no retraining",
        description="Sets the least relevant 1 %% ... 10 %% of pixels to 0 and reports the "
        "mean |dp|/p of the predicted class per method (lower is better).",
    )
    parser.add_argument("model", help="a .keras classifier")
    parser.add_argument("--data", default="fashion_mnist_local", help="dataset name or path (default: fashion_mnist_local)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=1000, help="first N images (default: 1000)")
    parser.add_argument("--methods", nargs="+", default=["pathway_gradient", "gradient"])
    parser.add_argument("--sparsity", type=float, default=None, help="pathway sparsity (default: the method's)")
    parser.add_argument("--out", default="lerf_results", metavar="DIR")
    return parser


def run(args):
    import keras

    from keras_pathways import datasets
    from keras_pathways.evaluation import lerf

    model = keras.saving.load_model(args.model)
    x, _ = datasets.load_arrays(args.data, split=args.split)
    given = {} if args.sparsity is None else {"sparsity": args.sparsity}
    lerf(model, x[: args.limit], args.methods, out_dir=args.out, **given)
    with open(os.path.join(args.out, "lerf.md")) as f:
        print(f.read())
    return 0
