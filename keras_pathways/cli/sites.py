"""``keras-pathways sites``: list the neuron sites of a saved model."""

from keras_pathways.cli.errors import CommandError


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "sites",
        help="list the neuron sites of a saved .keras model",
        description="Loads a .keras model (safe_mode on) and lists its neuron "
        "sites: name, activation, per-input shape and neuron count.",
    )
    parser.add_argument("model", help="path of a .keras file")
    parser.add_argument(
        "--activations", nargs="+", default=["relu", "relu6", "leaky_relu"],
        help="activation names treated as neuron sites (default: the rectifiers)",
    )
    return parser


def run(args):
    import keras

    from keras_pathways.graph import rewrite

    try:
        model = keras.saving.load_model(args.model)  # safe_mode=True
    except Exception as error:  # report, do not trace back
        raise CommandError(f"could not load {args.model!r}: {error}") from None
    graph = rewrite.PathwayGraph(model, activations=args.activations)
    width = max((len(s.name) for s in graph.sites), default=0)
    for site in graph.sites:
        size = "?" if site.size is None else site.size  # None: a size-agnostic model
        print(f"{site.name:<{width}}  {site.activation:<10}  {str(site.shape):>16}  {size:>10}")
    if graph.num_neurons is None:
        print(f"{len(graph.sites)} sites, ? neurons per input (the count depends on the input size)")
    else:
        print(f"{len(graph.sites)} sites, {graph.num_neurons} neurons per input")
    return 0
