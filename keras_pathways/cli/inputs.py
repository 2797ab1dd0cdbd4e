"""MODEL and DATA of ``analyze``, ``sanity`` and ``evaluate``."""

MODEL_HELP = "a .keras file, a SavedModel folder or efficientnet_lite0"
UNSAFE_HELP = "load a model that needs safe_mode=False (only if you trust it)"


def add_analysis_inputs(parser):
    """MODEL, DATA, --split, --limit, --batch-size and --unsafe of ``analyze`` and ``sanity``."""
    parser.add_argument("model", help=MODEL_HELP)
    parser.add_argument("data", help="'photos' (scikit-image's photos, preprocessed for MODEL) or a dataset name/path for keras_pathways.datasets")
    parser.add_argument("--split", default="test", help="dataset split (default: test)")
    parser.add_argument("--limit", type=int, default=None, help="first N inputs (default: all)")
    parser.add_argument("--batch-size", type=int, default=32, help="inputs per compiled step (default: 32)")
    parser.add_argument("--unsafe", action="store_true", help=UNSAFE_HELP)


def load_inputs(args, photos):
    """(model, x float32, labels or None) for MODEL and DATA as the commands take them.

    MODEL as for ``explain`` (``models.loading.load_model``); DATA "photos"
    (``photos``, names of scikit-image's photos, preprocessed for MODEL; no
    labels) or a dataset name/path (its images and labels as
    ``keras_pathways.datasets`` gives them). ``args.limit`` keeps the first N.
    """
    import numpy as np

    from keras_pathways import datasets
    from keras_pathways.models.loading import load_model

    loaded = load_model(args.model, unsafe=args.unsafe)
    labels = None
    if args.data == "photos":
        from keras_pathways.cli.demos import photo

        names = photos if args.limit is None else photos[: args.limit]
        x = np.stack([loaded.preprocess(photo(name)) for name in names])
    else:
        x, labels = datasets.load_arrays(args.data, split=args.split)
        x, labels = x[: args.limit], labels[: args.limit]
    return loaded.model, np.asarray(x, np.float32), labels
