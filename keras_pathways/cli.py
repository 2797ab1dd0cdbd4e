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
