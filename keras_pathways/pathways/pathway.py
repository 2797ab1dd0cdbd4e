"""The ``Pathway`` result and ``freeze``: one input's pathway as a Keras model."""

import dataclasses
import re
import warnings

import keras
import numpy as np

from keras_pathways.graph import rewrite
from keras_pathways.graph import sites as sites_lib


@dataclasses.dataclass
class Pathway:
    """The critical pathways of a batch of inputs (docs/method.md §3).

    Attributes:
        sites: list of ``Site`` (name, per-input shape, activation, layer), in
            the order of ``masks``.
        masks: list with one bool array (N, *site.shape) per site, True = kept;
            None when the pathway was computed with ``return_masks=False``.
            Read-only when computed by ``find_pathway``/``explain`` (views of
            the computed result, not copies); ``np.array(mask)`` gives an
            editable copy.
        threshold: float64 (N,), the per-input global percentile threshold;
            kept neurons score strictly above it.
        kept: int64 (N, num_sites), kept neurons per input and site.
        targets: int (N,), the class whose logit was explained.
        sparsity: the requested fraction of neurons pruned.
        kind: how the pathway was found ("mct", "intgrad", "dgr", "greedy",
            "random"; ``scores`` is its old name).
        activations: the activation names that were neuron sites.
        disconnected: bool (N,): True where sites with no kept neuron cut every
            path from the input to the target logit, so the logit of the
            pathway f(x, M) no longer depends on the input and the pathway
            gradient is exactly 0 everywhere. Computed as "some site is empty
            (see ``empty_sites``) and the pathway gradient is exactly zero":
            for a plain chain of sites any empty site disconnects the input;
            a skip connection around an empty site can keep it connected
            (then False). ``explain`` and ``find_pathway`` warn
            (``DisconnectedPathwayWarning``) when an input is disconnected.
            None for a pathway made without this check.
        batch_size: the inputs per compiled step that computed it (what
            ``batch_size="auto"`` chose), or None.
        output: for a pathway found for a score of one output of a model with
            several outputs (``targets.output(name, ...)``), that output's
            name; None otherwise. ``freeze`` rebuilds that output.
        score: the name of the ``targets.Score`` the pathway was found for
            (e.g. ``"binary()"``), or None for class targets.
    """

    sites: list
    masks: list
    threshold: np.ndarray
    kept: np.ndarray
    targets: np.ndarray
    sparsity: float
    kind: str
    activations: frozenset = sites_lib.RECTIFIERS
    disconnected: np.ndarray = None
    batch_size: int = None
    output: str = None
    score: str = None

    def __len__(self):
        return int(self.targets.shape[0])

    @property
    def scores(self):
        """Deprecated name of ``kind``."""
        warnings.warn("Pathway.scores is deprecated; use Pathway.kind.", DeprecationWarning, stacklevel=2)
        return self.kind

    @property
    def num_neurons(self):
        """Neurons per input over all sites."""
        return sum(site.size for site in self.sites)

    @property
    def site_names(self):
        return [site.name for site in self.sites]

    @property
    def kept_fraction(self):
        """float (N,): the real fraction of neurons kept per input.

        Can be below ``1 - sparsity`` when more than ``sparsity`` of the neurons
        score exactly 0 (dead neurons are never kept). It counts every kept
        neuron, also those cut off from the input by a site with no kept
        neuron: see ``empty_sites`` and ``disconnected``.
        """
        return self.kept.sum(axis=1) / float(self.num_neurons)

    @property
    def empty_sites(self):
        """Per input, the names of the sites that keep no neuron (list of lists).

        An empty site outputs zeros in the pathway, so nothing reaches the
        logit through it; when it is on every path from the input to the
        logit (always, for a chain of sites), the input is ``disconnected``.
        """
        names = self.site_names
        return [[names[j] for j in np.flatnonzero(row == 0)] for row in np.asarray(self.kept)]

    @property
    def num_empty_sites(self):
        """int (N,): how many sites keep no neuron, per input."""
        return (np.asarray(self.kept) == 0).sum(axis=1)

    @property
    def site_kept_fraction(self):
        """float (N, num_sites): the fraction of each site's neurons kept."""
        sizes = np.array([site.size for site in self.sites], dtype=np.float64)
        return self.kept / sizes[None, :]

    def input_masks(self, index):
        """The masks of input ``index``: a list of bool arrays (*site.shape)."""
        self._require_masks("input_masks")
        index = _check_index(index, len(self))
        return [m[index] for m in self.masks]

    def site_masks(self, name):
        """The masks of the site called ``name`` for every input (N, *shape)."""
        self._require_masks("site_masks")
        names = self.site_names
        if name not in names:
            raise KeyError(f"No site named {name!r}. Sites: {names}")
        return self.masks[names.index(name)]

    def summary(self, index=0):
        """A readable per-site table of kept neurons for input ``index``."""
        index = _check_index(index, len(self))
        width = max(len(n) for n in self.site_names)
        lines = [
            f"Pathway of input {index}: target {int(self.targets[index])}, "
            f"kind {self.kind}, sparsity {self.sparsity:g}, threshold "
            f"{self.threshold[index]:.4g}, kept {int(self.kept[index].sum())} of "
            f"{self.num_neurons} neurons ({100 * self.kept_fraction[index]:.2f} %)",
        ]
        empty = self.empty_sites[index]
        if empty:
            cut = self.disconnected is not None and bool(self.disconnected[index])
            lines.append(
                f"  {len(empty)} site(s) keep no neuron: {_some(empty)}"
                + ("; the input is disconnected: the pathway gradient is exactly 0." if cut else ".")
            )
        for j, site in enumerate(self.sites):
            lines.append(
                f"  {site.name:<{width}}  {str(site.shape):>16}  "
                f"{int(self.kept[index, j]):>9} kept  "
                f"({100 * self.site_kept_fraction[index, j]:6.2f} %)"
            )
        return "\n".join(lines)

    def _require_masks(self, what):
        if self.masks is None:
            raise ValueError(
                f"{what}() needs the pathway's masks, which were not kept. "
                "Compute it with return_masks=True (the default)."
            )


class DisconnectedPathwayWarning(UserWarning):
    """A pathway cuts the input off from the target logit (pathway gradient 0)."""


def _some(names, shown=3):
    """'a, b, c and 4 more' for a list of names."""
    text = ", ".join(names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")


def disconnection_message(pathway):
    """The warning for the pathway's disconnected inputs, or None when there are none."""
    if pathway.disconnected is None or not np.any(pathway.disconnected):
        return None
    bad = np.flatnonzero(pathway.disconnected)
    empty = (np.asarray(pathway.kept)[bad] == 0).any(axis=0)
    names = [site.name for site, e in zip(pathway.sites, empty) if e]
    inputs = bad[:10].tolist()
    fractions = np.unique(np.round(pathway.kept_fraction[bad], 3))
    return (
        f"The pathway of {len(bad)} of {len(pathway)} input(s) (input(s) {inputs}"
        f"{' ...' if len(bad) > 10 else ''}) keeps no neuron in {len(names)} site(s) "
        f"({_some(names)}), which cuts every path from the input to the target logit: "
        "the logit of the pathway no longer depends on the input and its pathway "
        "gradient is exactly 0, although kept_fraction still reports "
        f"{_some([f'{f:g}' for f in fractions])}. Lower sparsity (now "
        f"{pathway.sparsity:g}) or use another kind (e.g. kind='intgrad'); "
        "Pathway.empty_sites and Pathway.disconnected list the sites and inputs."
    )


def warn_if_disconnected(pathway, stacklevel=2):
    """Warns (``DisconnectedPathwayWarning``) about the pathway's disconnected inputs."""
    message = disconnection_message(pathway)
    if message is not None:
        warnings.warn(message, DisconnectedPathwayWarning, stacklevel=stacklevel)


def _check_index(index, size):
    if not isinstance(index, (int, np.integer)) or not -size <= index < size:
        raise IndexError(
            f"Expected an input index in [0, {size}). Received: index={index!r}."
        )
    return int(index) % size


@keras.saving.register_keras_serializable(package="keras_pathways")
class PathwayMask(keras.layers.Layer):
    """Multiplies its input by a fixed binary mask (a frozen pathway site).

    The mask is a non-trainable weight, so it is saved in the ``.keras`` file's
    weights and the layer loads with ``safe_mode=True`` once ``keras_pathways``
    is imported.

    Args:
        shape: per-input shape of the masked tensor (no batch axis).
        site: name of the neuron site this mask belongs to (for reading).
    """

    def __init__(self, shape, site=None, **kwargs):
        super().__init__(**kwargs)
        self.mask_shape = tuple(int(d) for d in shape)
        self.site = site
        self.mask = self.add_weight(
            shape=self.mask_shape, initializer="ones", trainable=False, name="mask"
        )

    def call(self, inputs):
        return inputs * keras.ops.cast(self.mask, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(shape=list(self.mask_shape), site=self.site)
        return config


def freeze(model, pathway, index=0, name=None):
    """A derived sparse sub-model: input ``index``'s pathway as a Keras model.

    The result is a plain Keras Functional model (layers cloned from ``model``,
    weights copied, nested models flattened, fused rectifiers split) with a
    ``PathwayMask`` after every neuron site holding that input's binary mask as
    a constant. It returns pre-softmax logits equal to f(x, M) for any x, saves
    to ``.keras`` and reloads with ``safe_mode=True`` (import keras_pathways
    first so the mask layer is registered).

    Args:
        model: the model the pathway was found on.
        pathway: a ``Pathway`` with masks.
        index: which input of the pathway's batch.
        name: the new model's name (default ``"<model>_pathway_<index>"``).

    A pathway found for a score (``find_pathway(model, x, targets=score)``)
    freezes the same way; for a model with several outputs the frozen model
    computes the scored output (``Pathway.output``), before its final softmax
    or sigmoid.

    Returns:
        ``keras.Model`` mapping (N, *input_shape) -> logits (N, classes).
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Expected freeze(model, pathway, index=0): the Keras model the pathway "
            f"was found on, then a Pathway. Received: model of type {type(model).__name__}"
            f" ({_short_repr(model)})."
        )
    if not isinstance(pathway, Pathway):
        hint = (" (an Explanation's pathway is its .pathway)"
                if hasattr(pathway, "attributions") else "")
        raise TypeError(
            "Expected a Pathway (from find_pathway(...) or explain(...).pathway) as "
            f"freeze's second argument{hint}. Received: {type(pathway).__name__} "
            f"({_short_repr(pathway)})."
        )
    rewrite.require_one_input(model, "freeze")
    graph = rewrite.pathway_graph(model, pathway.activations, output=pathway.output)
    if [s.name for s in graph.sites] != pathway.site_names:
        raise ValueError(
            "The pathway does not belong to this model: its sites "
            f"({len(pathway.sites)}, first {pathway.site_names[:3]}) differ from "
            f"the model's ({len(graph.sites)}, first {[s.name for s in graph.sites[:3]]})."
        )
    masks = pathway.input_masks(index)

    def on_site(i, tensor):
        site = pathway.sites[i]  # concrete shapes, also for size-agnostic models
        layer = PathwayMask(
            site.shape, site=site.name, name=_layer_name(site.name) + "_pathway_mask"
        )
        out = layer(tensor)
        layer.mask.assign(masks[i].astype("float32"))
        return out

    index = _check_index(index, len(pathway))
    return graph.rebuild(on_site, name=name or f"{model.name}_pathway_{index}")


def _short_repr(value, width=60):
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _layer_name(site_name):
    return re.sub(r"[^0-9A-Za-z_]+", "_", site_name)
