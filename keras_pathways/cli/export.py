"""``keras-pathways export``: a SavedModel with explanation signatures for TF Serving."""

import os

from keras_pathways.cli import options
from keras_pathways.cli.errors import CommandError


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "export",
        help="write a SavedModel with explanation signatures for TF Serving",
        description="Writes OUT_DIR/VERSION/ (a TensorFlow SavedModel) with "
        "serving_default (images -> predictions) and, per method, "
        "explain_<method> (images -> attributions, saliency, targets, logits, "
        "kept_fraction) and explain_<method>_targets (images, targets; -1 = "
        "predicted class). An existing version folder is never replaced "
        "without --overwrite.",
    )
    parser.add_argument("model", help="a .keras file or 'efficientnet_lite0'")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="the model's base folder (TF Serving's model_base_path)")
    parser.add_argument("--method", nargs="+", default=["pathway_gradient"], help="methods to export (default: pathway_gradient)")
    parser.add_argument("--version", type=int, default=1, help="version folder number (default: 1)")
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"), help="input size for models that take any size")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version folder")
    parser.add_argument("--no-jit", action="store_true", help="do not XLA-compile the explain functions (for servers built without XLA)")
    parser.add_argument("--unsafe", action="store_true", help="load a model that needs safe_mode=False (only if you trust it)")
    options.add_method_options(parser)
    return parser


def run(args):
    from keras_pathways import export
    from keras_pathways.models.loading import load_model

    try:
        loaded = load_model(args.model, unsafe=args.unsafe, size=args.size)
        channels = int(loaded.model.inputs[0].shape[-1])
        path = export.export_explainer(
            loaded.model, args.out_dir, methods=args.method,
            input_shape=None if args.size is None else tuple(args.size) + (channels,),
            version=args.version, overwrite=args.overwrite, jit_compile=not args.no_jit,
            **options.given_method_options(args),
        )
    except OSError as error:  # a file-system fault export_explainer did not name itself
        where = error.filename or args.out_dir
        raise CommandError(f"{where}: cannot write the export ({error.strerror or error})") from None
    print(f"Wrote {os.path.abspath(path)} with signatures: serving_default, "
          + ", ".join(f"explain_{m}, explain_{m}_targets" for m in args.method))
    return 0
