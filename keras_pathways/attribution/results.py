"""Turning the steps' tensors into what ``explain`` and ``find_pathway`` return."""

import dataclasses

import numpy as np

from keras_pathways.attribution.inputs import InputError
from keras_pathways.pathways.pathway import Pathway


@dataclasses.dataclass
class Explanation:
    """What ``explain`` returns for a batch of N inputs.

    Attributes:
        attributions: float32 (N, *input_shape): the method's attribution of
            the target logit to each input value. For a model with several
            inputs, one such array per input, in the form ``x`` was given
            (a list or tuple in the order of ``model.inputs``, or a dict keyed
            by the input names).
        saliency: float32 (N, H, W) for image inputs (N, H, W, C): per pixel
            the signed channel value of largest magnitude (max-abs
            reduction); (N, T) for sequences (N, T, C), the same per step;
            for token ids through an ``Embedding``, (N, T): each token's
            attribution summed over its embedding vector; for tables (N, F)
            the attributions themselves. Show |s| / max |s|. For several
            inputs, one per input, in the form of ``attributions``.
        targets: int64 (N,): the explained class per input (-1 when a
            ``targets.Score`` was explained).
        logits: float32 (N, classes): the unmasked model's pre-softmax logits.
        method: the method name.
        pathway: the ``Pathway`` for pathway methods, else None (its
            ``empty_sites`` and ``disconnected`` say where a pathway cut the
            input off from the logit).
        batch_size: the inputs per compiled step used (what
            ``batch_size="auto"`` chose).
        compiled: how the step ran: "xla", "xla-selection" or "plain" (what
            ``jit_compile="auto"`` chose, or "plain" after an XLA fallback).
    """

    attributions: np.ndarray
    saliency: np.ndarray
    targets: np.ndarray
    logits: np.ndarray
    method: str
    pathway: Pathway = None
    batch_size: int = None
    compiled: str = None

    def __len__(self):
        return int(self.targets.shape[0])

    @property
    def kept_fraction(self):
        """float (N,): the real kept fraction per input (pathway methods)."""
        return None if self.pathway is None else self.pathway.kept_fraction


def max_abs_reduce(attributions, channel_axis=-1):
    """Per position, the signed channel value with the largest |value| (docs/method.md §4).

    Args:
        attributions: (N, H, W, C) for images, (N, T, C) for sequences
            (Conv1D time series, a per-token embedding); other ranks (a
            table's (N, F)) are returned as is.

    Returns:
        (N, H, W) for images, (N, T) for sequences, else ``attributions``.
    """
    a = np.asarray(attributions)
    if a.ndim not in (3, 4):
        return a
    index = np.expand_dims(np.argmax(np.abs(a), axis=channel_axis), channel_axis)
    return np.take_along_axis(a, index, axis=channel_axis).squeeze(channel_axis)


def to_numpy(out, n):
    """A step's ``StepResult`` as a dict of numpy arrays for its first ``n`` inputs (padding dropped)."""
    result = {}
    for key in out._fields:
        value = getattr(out, key)
        if value is None:
            continue
        if key == "site_shapes":
            result[key] = [tuple(int(d) for d in v.numpy()) for v in value]
        elif key == "masks":
            # Read-only views of the step's output: ``.numpy()`` would copy
            # 73-108 MB per batch of 8 (ResNet50, VGG16; README "Speed").
            result[key] = [np.asarray(v)[:n] for v in value]
        elif isinstance(value, (list, tuple)):
            result[key] = [v.numpy()[:n] for v in value]
        else:
            result[key] = value.numpy()[:n]
    return result


def merge(parts):
    """Concatenates the per-batch dicts of ``to_numpy`` along the batch axis.

    One part is returned as it is (its arrays are fresh copies, the masks
    read-only views): a concatenation would copy a batch's masks once more
    (about 0.1 s for a VGG16 batch of 8, README "Speed").
    """
    if len(parts) == 1:
        return dict(parts[0])
    merged = {}
    for key in parts[0]:
        if key == "site_shapes":
            if any(p[key] != parts[0][key] for p in parts):
                raise InputError(
                    "Inputs of different sizes give pathways of different "
                    "shapes; explain each size separately."
                )
            merged[key] = parts[0][key]
        elif isinstance(parts[0][key], list):
            merged[key] = [np.concatenate([p[key][j] for p in parts]) for j in range(len(parts[0][key]))]
            if key == "masks":  # read-only whatever the number of batches (``to_numpy``)
                for m in merged[key]:
                    m.flags.writeable = False
        else:
            merged[key] = np.concatenate([p[key] for p in parts])
    return merged


def pathway_from(result, graph, options):
    """The ``Pathway`` of a merged pathway-step result."""
    sites = [
        dataclasses.replace(site, shape=shape)
        for site, shape in zip(graph.sites, result["site_shapes"])
    ]
    disconnected = result.get("disconnected")
    return Pathway(
        sites=sites,
        masks=result.get("masks"),
        threshold=result["threshold"].astype(np.float64),
        kept=result["kept"].astype(np.int64),
        targets=result["targets"].astype(np.int64),
        sparsity=options["sparsity"],
        kind=options.get("kind", "mct"),
        activations=graph.activations,
        disconnected=None if disconnected is None else disconnected.astype(bool),
        batch_size=result.get("batch_size"),
        output=result.get("score_output"),
        score=result.get("score_name"),
    )


def split_inputs(packed, graph, form="list"):
    """Per-input attributions and saliency of a model with several inputs.

    Args:
        packed: (N, D), the inputs flattened and concatenated in the order of
            ``model.inputs`` (``PathwayGraph.split_inputs``).
        form: "list", "tuple" or "dict" (keyed by the input names): the form
            the inputs were given in.

    Returns:
        ``(attributions, saliency)``, each in ``form`` with one array per
        input: attributions (N, *input_shape_i), saliency the max-abs
        reduction of each (``max_abs_reduce``).
    """
    n = packed.shape[0]
    ends = np.cumsum(graph.input_sizes)[:-1]
    parts = [p.reshape((n,) + tuple(shape))
             for p, shape in zip(np.split(packed, ends, axis=1), graph.input_shapes)]
    saliency = [max_abs_reduce(p) for p in parts]
    if form == "dict":
        return dict(zip(graph.input_names, parts)), dict(zip(graph.input_names, saliency))
    if form == "tuple":
        return tuple(parts), tuple(saliency)
    return parts, saliency


def assemble(result, graph, method, options):
    """The ``Explanation`` (or, for a pathway-only step, the ``Pathway``) of a merged result."""
    if "attributions" not in result:
        return pathway_from(result, graph, options)
    attributions = result["attributions"].astype(np.float32)
    if graph.num_inputs > 1:
        attributions, saliency = split_inputs(attributions, graph, result.get("input_form", "list"))
    else:
        # Token ids through an Embedding: a token's attribution is the sum over
        # its embedding vector (docs/method.md §4); other inputs: max-abs.
        saliency = attributions.sum(axis=-1) if graph.embedded else max_abs_reduce(attributions)
    return Explanation(
        attributions=attributions,
        saliency=saliency,
        targets=result["targets"].astype(np.int64),
        logits=result["logits"].astype(np.float32),
        method=method.name,
        pathway=pathway_from(result, graph, options) if method.uses_pathway else None,
        batch_size=result.get("batch_size"),
        compiled=result.get("compiled"),
    )
