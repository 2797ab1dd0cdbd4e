"""``keras-pathways sanity``: the cascading model-randomisation sanity check."""

import os

from keras_pathways.cli.inputs import add_analysis_inputs


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "sanity",
        help="cascading model-randomisation sanity check",
        description="Randomises a copy of MODEL block by block from the logits down "
        "and reports how similar each method's saliency stays (Spearman signed "
        "and absolute, SSIM, HOG); writes JSON, CSV, Markdown and a plot.",
    )
    add_analysis_inputs(parser)
    parser.add_argument("--methods", nargs="+", default=["pathway_gradient", "gradient", "guided_backprop", "integrated_gradients"])
    parser.add_argument("--sparsity", type=float, default=0.7, help="pathway_gradient's sparsity (default: 0.7, as the authors)")
    parser.add_argument("--groups", type=int, default=None, help="merge the blocks into this many cascade steps")
    parser.add_argument("--std", type=float, default=0.1, help="std of the random weights (default: 0.1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="sanity_results", metavar="DIR")
    return parser


def run(args):
    from keras_pathways.cli.demos import PHOTOS
    from keras_pathways.cli.inputs import load_inputs
    from keras_pathways.evaluation.sanity import format_sanity
    from keras_pathways.evaluation.sanity import sanity

    model, x, _ = load_inputs(args, PHOTOS)
    result = sanity(
        model, x, methods=args.methods, groups=args.groups, std=args.std, seed=args.seed,
        method_options={"pathway_gradient": {"sparsity": args.sparsity}},
        batch_size=args.batch_size, out_dir=args.out,
    )
    print(format_sanity(result))
    print(f"Wrote {os.path.abspath(args.out)}/sanity.json, sanity.csv, sanity.md, sanity.png")
    return 0
