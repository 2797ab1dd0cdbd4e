"""``keras-pathways analyze``: contribution pathways against the pruning objective's."""

import os

from keras_pathways.cli.inputs import add_analysis_inputs


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "analyze",
        help="compare contribution pathways with the pruning objective's",
        description="Finds the pathways of each kind for every input and prints the "
        "Jaccard overlap matrix, the share of kept neurons that are dead in the "
        "unmasked network, the kept fraction and |dp|/p (docs/method.md §5); writes JSON, CSV, "
        "Markdown and a plot.",
    )
    add_analysis_inputs(parser)
    parser.add_argument("--kinds", "--scores", nargs="+", dest="kinds",
                        default=["mct", "intgrad", "dgr", "dgr_uniform", "greedy", "random"],
                        help="pathway kinds: mct intgrad dgr dgr_uniform greedy random (default: all; "
                        "--scores is the old name)")
    parser.add_argument("--sparsity", type=float, default=0.9, help="fraction of neurons pruned (default: 0.9)")
    parser.add_argument("--dgr-steps", type=int, default=None, help="DGR optimisation steps (default: 1000)")
    parser.add_argument("--sweep", nargs="+", type=float, default=None, metavar="SPARSITY",
                        help="also sweep these sparsities (writes sweep.json/csv/png)")
    parser.add_argument("--out", default="analysis_results", metavar="DIR")
    return parser


def run(args):
    from keras_pathways.cli.demos import PHOTOS
    from keras_pathways.cli.inputs import load_inputs
    from keras_pathways.evaluation import analysis

    model, x, _ = load_inputs(args, PHOTOS)
    print(f"Analysing {len(x)} inputs, pathway kinds {args.kinds}, sparsity {args.sparsity:g}")
    result = analysis.analyze(
        model, x, kinds=args.kinds, sparsity=args.sparsity, batch_size=args.batch_size,
        dgr_steps=args.dgr_steps, out_dir=args.out,
    )
    if args.sweep:
        analysis.sweep(model, x, kinds=args.kinds, sparsities=args.sweep,
                       batch_size=args.batch_size, dgr_steps=args.dgr_steps, out_dir=args.out)
    print(analysis.format_analysis(result))
    print(f"Wrote {os.path.abspath(args.out)}/analysis.json, analysis.csv, analysis.md, analysis.png"
          + (", sweep.*" if args.sweep else ""))
    return 0
