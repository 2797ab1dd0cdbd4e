"""``keras-pathways demo``: the pathway gradient on bundled photos (or digits)."""


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "demo",
        help="explain EfficientNet-Lite0 on bundled photos and write a comparison picture",
        description="Explains the pretrained EfficientNet-Lite0's top-1 prediction "
        "on photos bundled with scikit-image (no download) with the plain gradient "
        "and the pathway gradient at sparsities 0.5, 0.85 and 0.95, prints the "
        "kept fractions and writes DIR/pathways.png. With --digits: a small CNN "
        "trained in-process on scikit-learn's digits instead.",
    )
    parser.add_argument("--out", default="demo", metavar="DIR", help="output folder (default: demo)")
    parser.add_argument(
        "--photos", nargs="+", default=["chelsea", "coffee", "astronaut", "rocket"],
        metavar="NAME", help="scikit-image photos (default: chelsea coffee astronaut rocket)",
    )
    parser.add_argument("--digits", action="store_true", help="the small digits CNN demo instead")
    parser.add_argument("--epochs", type=int, default=15, help="--digits: training epochs (default: 15)")
    parser.add_argument("--count", type=int, default=6, help="--digits: digits to explain (default: 6)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    return parser


def run(args):
    from keras_pathways.cli import demos

    if args.digits:
        demos.run(out_dir=args.out, epochs=args.epochs, count=args.count, seed=args.seed)
    else:
        demos.run_photos(out_dir=args.out, photos=args.photos)
    return 0
