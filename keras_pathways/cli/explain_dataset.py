"""``keras-pathways explain-dataset``: explain a whole data set to disk, resumably, in shards."""

from keras_pathways.cli.inputs import add_analysis_inputs
from keras_pathways.cli.options import add_method_options


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "explain-dataset",
        help="explain every input of a data set into chunk files (resumable, shardable)",
        description="Explains DATA in chunks of --chunk-size inputs, each written atomically "
        "to OUT/chunks/<index>.npz (attributions, saliency, targets, logits, labels, kept "
        "fraction; pathway masks bit-packed with --save-masks). A rerun of the same "
        "configuration skips the finished chunks; --shard I/N explains chunks c with "
        "c %% N == I (one job per machine or process). Read the result with "
        "keras_pathways.load_dataset_explanations(OUT or [OUT_0, OUT_1, ...]).",
    )
    add_analysis_inputs(parser)
    parser.add_argument("--method", default="pathway_gradient", help="attribution method (default: pathway_gradient)")
    add_method_options(parser)
    parser.add_argument("--targets", choices=("predicted", "labels"), default="predicted",
                        help="explain the predicted class (default) or the data's labels")
    parser.add_argument("--chunk-size", type=int, default=1024, help="inputs per chunk file (default: 1024)")
    parser.add_argument("--shard", default=None, metavar="I/N", help="explain only chunks c with c %% N == I")
    parser.add_argument("--save-masks", action="store_true", help="also store the pathway masks, bit-packed")
    parser.add_argument("--mirrored", action="store_true",
                        help="split every batch over this machine's GPUs (tf.distribute.MirroredStrategy)")
    parser.add_argument("--out", default="explanations", metavar="DIR")
    return parser


def run(args):
    from keras_pathways.attribution.dataset import explain_dataset
    from keras_pathways.cli.demos import PHOTOS
    from keras_pathways.cli.inputs import load_inputs
    from keras_pathways.cli.options import given_method_options

    options = given_method_options(args)
    strategy = None
    if args.mirrored:
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
        print(f"MirroredStrategy over {strategy.num_replicas_in_sync} device(s)")
    model, x, labels = load_inputs(args, PHOTOS)
    data = (x, labels) if labels is not None else x
    report = explain_dataset(
        model, data, args.out, method=args.method,
        targets="labels" if args.targets == "labels" else None,
        chunk_size=args.chunk_size, shard=args.shard, save_masks=args.save_masks,
        batch_size=args.batch_size, strategy=strategy, data_id=f"{args.data}:{args.split}:{args.limit}", **options,
    )
    print(f"{report['chunks_written']} chunk(s) written, {report['chunks_skipped']} already there; "
          f"{report['inputs']} inputs in {report['seconds']:.1f} s -> {args.out}")
    return 0
