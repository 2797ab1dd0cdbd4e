"""``keras-pathways roar``: ROAR / KAR, removing (keeping) the most relevant pixels and retraining."""

import os


def add_parser(subparsers):
    parser = subparsers.add_parser(
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
    parser.add_argument("--preset", choices=("ci", "benchmark"), default="ci", help="size of the run (default: ci)")
    parser.add_argument("--data", default="fashion_mnist_local", help="dataset name or path for keras_pathways.datasets (default: fashion_mnist_local)")
    parser.add_argument("--out", default="roar_results", metavar="DIR", help="results folder (default: roar_results)")
    parser.add_argument("--methods", nargs="+", default=None, help="methods (default: the preset's)")
    parser.add_argument("--fractions", nargs="+", type=float, default=None, help="t values (default: the preset's)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="retraining seeds (default: the preset's: ci 0, benchmark 0 1 2)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the preset's)")
    parser.add_argument("--mode", choices=("roar", "kar", "both"), default="roar", help="remove (roar) or keep (kar) the top t, or both, ROAR first (default: roar)")
    parser.add_argument("--shard", default=None, metavar="I/N", help="run only the I-th of N slices of the cell grid")
    parser.add_argument("--merge", nargs="+", default=None, metavar="DIR", help="combine the cell records of shard folders into --out")
    parser.add_argument("--train-limit", type=int, default=None, help="use the first N train images")
    parser.add_argument("--test-limit", type=int, default=None, help="use the first N test images")
    parser.add_argument("--batch-size", type=int, default=None, help="training batch size (default: the preset's: ci 64, benchmark 128)")
    parser.add_argument("--mirrored", action="store_true", help="train with tf.distribute.MirroredStrategy over the visible devices")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _data(args, preset):
    from keras_pathways import datasets

    train_limit = args.train_limit if args.train_limit is not None else preset["train_limit"]
    test_limit = args.test_limit if args.test_limit is not None else preset["test_limit"]
    x_train, y_train = datasets.load_arrays(args.data, split="train")
    x_test, y_test = datasets.load_arrays(args.data, split="test")
    return (x_train[:train_limit], y_train[:train_limit]), (x_test[:test_limit], y_test[:test_limit])


def _train(args, modes):
    from keras_pathways.evaluation import retraining as roar_lib

    preset = roar_lib.PRESETS[args.preset]
    shard = roar_lib.parse_shard(args.shard) if args.shard else None
    (x_train, y_train), test = _data(args, preset)
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


def run(args):
    from keras_pathways.evaluation import retraining as roar_lib

    modes = ("roar", "kar") if args.mode == "both" else (args.mode,)
    if args.merge:
        for mode in modes:
            roar_lib.summarize(args.merge, roar_lib.summary_dir(args.out, mode), mode)
    else:
        _train(args, modes)
    for mode in modes:
        folder = os.path.abspath(roar_lib.summary_dir(args.out, mode))
        with open(os.path.join(folder, "summary.md")) as f:
            print(f.read())
        print(f"Wrote {folder}/summary.json, summary.csv, plot.png")
    return 0
