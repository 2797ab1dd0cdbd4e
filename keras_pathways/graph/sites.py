"""Which calls in a Keras graph are neuron sites, and what they are called.

A *neuron site* is one call of a rectifier (docs/method.md §1): a ``ReLU`` / ``LeakyReLU``
layer, an ``Activation`` layer with a rectifier, a raw ``keras.ops.relu``-style
operation, or a layer with a fused rectifier ``activation`` (``Conv2D``,
``DepthwiseConv2D``, ``SeparableConv2D``, ``Dense``, ...). Each call is its own site.
"""

import dataclasses

import keras

#: The rectifier family: piecewise-linear activations (docs/method.md §1, §4).
RECTIFIERS = frozenset({"relu", "relu6", "leaky_relu"})

# Layer classes that are activations by themselves (PReLU and ELU are not
# rectifiers by default, but can be opted in: activations=("relu", "prelu")).
_ACTIVATION_LAYERS = {"ReLU": "relu", "LeakyReLU": "leaky_relu", "PReLU": "prelu", "ELU": "elu"}
# keras.ops operation classes created by e.g. ``keras.ops.relu(tensor)`` in a
# functional graph, mapped to their activation name.
_OP_ACTIVATIONS = {
    "Relu": "relu",
    "Relu6": "relu6",
    "LeakyRelu": "leaky_relu",
    "Sigmoid": "sigmoid",
    "Silu": "silu",
    "Gelu": "gelu",
    "Elu": "elu",
    "Selu": "selu",
    "Softplus": "softplus",
    "HardSigmoid": "hard_sigmoid",
    "HardSilu": "hard_silu",
    "Tanh": "tanh",
}
# Names Keras gives the same function; normalised so that users can say either.
_ALIASES = {"swish": "silu", "hard_swish": "hard_silu", "leakyrelu": "leaky_relu"}
_NOT_NEURONS = frozenset({"linear", "softmax", "log_softmax"})


def canonical_activation(name):
    """Returns the canonical lower-case name of an activation name."""
    name = str(name).lower()
    return _ALIASES.get(name, name)


def activation_name(fn):
    """Name of an activation function (``keras.activations.relu`` -> "relu")."""
    if fn is None:
        return None
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return canonical_activation(name)


@dataclasses.dataclass(frozen=True)
class SiteKind:
    """How an operation produces a neuron site.

    Attributes:
        activation: canonical activation name ("relu", "relu6", ...).
        fused: True when the activation is fused into a layer with weights
            (``Conv2D(activation="relu")``), which the rewrite splits so the site
            is the activation's output.
    """

    activation: str
    fused: bool


def classify(operation):
    """Returns the activation a call of ``operation`` applies, or None.

    Returns:
        ``SiteKind`` when a call of the operation ends in an activation function
        (a candidate site), else None (linear layers, pooling, merges, ...).
    """
    cls = type(operation).__name__
    if is_recurrent(operation):  # its activation runs inside the cell, once per time step
        return None
    if cls in _ACTIVATION_LAYERS:
        return SiteKind(_ACTIVATION_LAYERS[cls], fused=False)
    if cls == "Activation":
        name = activation_name(getattr(operation, "activation", None))
        return None if name in _NOT_NEURONS else SiteKind(name, fused=False)
    if cls in _OP_ACTIVATIONS:
        return SiteKind(_OP_ACTIVATIONS[cls], fused=False)
    if isinstance(operation, keras.layers.Layer) and not is_graph_model(operation):
        if has_sublayers(operation):
            # A composite layer (a custom block, keras-hub's MBConvBlock or
            # TransformerEncoder, ...): its `activation` attribute is only a
            # setting, applied somewhere inside its call() (by a sub-layer or
            # not at all), never to its output as a fused activation is. The
            # walker treats it as opaque (``composite_activation``).
            return None
        fn = getattr(operation, "activation", None)
        if callable(fn):
            name = activation_name(fn)
            if name not in _NOT_NEURONS:
                return SiteKind(name, fused=True)
    return None


def has_sublayers(operation):
    """True for a layer that holds other layers (a custom block, a wrapper).

    A layer object given as the layer's own ``activation``
    (``Conv2D(activation=keras.layers.ReLU())``) does not count: that is
    still a fused activation.
    """
    if not isinstance(operation, keras.layers.Layer):
        return False
    own = getattr(operation, "activation", None)
    return any(sub is not own for sub in operation._flatten_layers(include_self=False, recursive=False))


def composite_activation(operation):
    """The activation named by a composite layer's own callable ``activation``.

    For a layer with sub-layers (``has_sublayers``) whose ``activation`` is a
    function (e.g. ``keras.activations.relu`` given to a custom block), else
    None: where its call() applies it is unknown to the walker.
    """
    if not has_sublayers(operation) or is_graph_model(operation) or is_recurrent(operation):
        return None
    fn = getattr(operation, "activation", None)
    if not callable(fn) or isinstance(fn, keras.layers.Layer):
        return None
    name = activation_name(fn)
    return None if name in _NOT_NEURONS else name


def is_recurrent(operation):
    """True for recurrent layers (``SimpleRNN``, ``LSTM``, ``GRU``, ``Bidirectional``, ...)."""
    return isinstance(operation, (keras.layers.RNN, keras.layers.Bidirectional))


def recurrent_activations(operation):
    """The activation names a recurrent layer applies inside its cell."""
    layers = [operation.forward_layer] if isinstance(operation, keras.layers.Bidirectional) else [operation]
    names = []
    for layer in layers:
        cell = getattr(layer, "cell", layer)
        for attribute in ("activation", "recurrent_activation"):
            name = activation_name(getattr(cell, attribute, None))
            if name is not None and name not in names:
                names.append(name)
    return names


def is_graph_model(operation):
    """True for models the walker can see into (Functional or Sequential)."""
    from keras.src.models.functional import Functional

    return isinstance(operation, (Functional, keras.Sequential))


def output_squash(operation):
    """"softmax" or "sigmoid" when a call of ``operation`` ends in one, else None.

    Covers the ``Softmax`` layer, ``keras.ops.softmax`` / ``keras.ops.sigmoid``
    calls, ``Activation("softmax" | "sigmoid")`` and a fused
    ``activation="softmax" | "sigmoid"``. At a model's output it is removed,
    so explanations see logits (docs/method.md §2).
    """
    cls = type(operation).__name__
    if cls in ("Softmax", "Sigmoid"):
        return cls.lower()
    fn = getattr(operation, "activation", None)
    name = activation_name(fn) if callable(fn) else None
    return name if name in ("softmax", "sigmoid") else None


@dataclasses.dataclass(frozen=True)
class Site:
    """One neuron site: one call of a rectifier.

    Attributes:
        name: stable readable name, e.g. ``"block1_conv1/relu"`` for a fused
            activation, ``"backbone/conv2_block1_out"`` inside a nested model,
            with ``"#1"``, ``"#2"`` appended for the second, third call of a layer.
        shape: per-input shape of the site's output (no batch axis); None for
            a dimension that follows the input's size (in a ``Pathway`` the
            shapes are always concrete).
        activation: canonical activation name.
        layer: the name of the Keras layer or operation that is called.
    """

    name: str
    shape: tuple
    activation: str
    layer: str

    @property
    def size(self):
        """Number of neurons of the site for one input (None if shape unknown)."""
        if None in self.shape:
            return None
        n = 1
        for d in self.shape:
            n *= int(d)
        return n
