"""``keras-pathways explain``: explain image files with a saved model."""

import os
import sys

from keras_pathways.cli import options


def add_parser(subparsers):
    from keras_pathways.models.loading import RANGES  # numpy only: --help stays fast

    parser = subparsers.add_parser(
        "explain",
        help="explain image files with a saved model",
        description="Explains each IMAGE with MODEL and writes, per image, an "
        "overlay PNG of the saliency (|s| / max |s|) and/or the raw attributions "
        "(.npy), plus DIR/summary.json (class, score, kept fraction, seconds). "
        "A missing or unreadable image is reported in one line and skipped; the "
        "exit code is then 2. Images are resized to the model's input size.",
    )
    parser.add_argument(
        "model",
        help="a .keras file, a TensorFlow SavedModel folder (opaque: only methods "
        "that need no neuron site work), or 'efficientnet_lite0' (pretrained)",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--method", default="pathway_gradient",
        help="attribution method (default: pathway_gradient; see 'keras-pathways methods')",
    )
    parser.add_argument("--target", type=int, default=None, metavar="N", help="class to explain (default: the prediction)")
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"), help="input size for models that take any size")
    parser.add_argument(
        "--range", choices=sorted(RANGES), default="unit",
        help="value range the model expects for a saved model: unit [0, 1] (default), "
        "symmetric [-1, 1] or byte [0, 255]; efficientnet_lite0 uses its own",
    )
    parser.add_argument("--format", choices=("png", "npy", "both"), default="png", help="what to write per image (default: png)")
    parser.add_argument("--unsafe", action="store_true", help="load a model that needs safe_mode=False (runs code from the file: only if you trust it)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    options.add_method_options(parser)
    return parser


def run(args):
    import json

    from keras_pathways.attribution import options as options_lib
    from keras_pathways.cli import files
    from keras_pathways.models.loading import load_model

    def warn(message):
        print(message, file=sys.stderr)

    given = options.given_method_options(args)
    # Fail fast, before the model loads: an unknown method, option or value.
    options_lib.resolve(options.method_registry().get(args.method), given)
    files.prepare_out_dir(args.out)
    loaded = load_model(args.model, unsafe=args.unsafe, value_range=args.range, size=args.size)
    formats = ("png", "npy") if args.format == "both" else (args.format,)
    summary = files.explain_files(
        loaded, args.images, args.out, method=args.method, target=args.target,
        formats=formats, progress=not args.quiet, warn=warn, **given,
    )
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
