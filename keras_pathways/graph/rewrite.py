"""The model as one pure function f(x, masks) -> logits.

This is the only module that knows how a Keras graph is walked. It reads the
nodes of a Functional (or Sequential) model, recursing into nested models, and
replays them with every neuron site's output ``a`` replaced by ``a * mask``.
The original layer objects are called, so the rewritten function shares the
model's weights: a weight change in the model is seen at the next call.

The user's model is never modified, not even for a moment: a fused activation
(``Conv2D(activation="relu")``) is split off by calling a *linear twin* of the
layer (see ``_linear_twin``), never by switching the layer's own activation,
so explaining a model from several threads, or while another thread predicts
with it, is safe. Nothing is stored on the model either: what is built for a
model (its ``PathwayGraph``, compiled steps) lives in ``model_cache``, a table
held weakly by model, freed with the model and cleared by ``clear_cache``.
"""

import dataclasses
import math
import threading
import warnings
import weakref

import keras
import tensorflow as tf

from keras_pathways.graph import sites as sites_lib


class UnsupportedModelError(ValueError):
    """The graph walker cannot turn this model into f(x, masks)."""


@dataclasses.dataclass
class _Step:
    node: object
    kind: str  # "op" | "site" | "nested" | "softmax" | "strip_activation"
    site: int = -1
    fused: bool = False
    sub: object = None  # _Plan of a nested model


@dataclasses.dataclass
class _Plan:
    inputs: list  # the replayed Functional's input KerasTensors (not the model itself,
    outputs: list  # which the weakly keyed model cache must not hold)
    steps: list


def check_backend():
    """Raises when Keras does not run on TensorFlow."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            "keras_pathways needs the TensorFlow backend of Keras 3. "
            f"Received: keras.backend.backend()={backend!r}. Set the environment "
            "variable KERAS_BACKEND=tensorflow before importing keras."
        )


def _functional_of(model, where):
    if isinstance(model, keras.Sequential):
        function = getattr(model, "_functional", None)
        if function is None:
            raise UnsupportedModelError(
                f"Sequential model {where!r} is not built, so its graph is unknown. "
                "Give it an input (keras.Input(shape) as the first layer) or call "
                "model.build(input_shape) first."
            )
        return function
    return model


def _output_node(function, output=None):
    history = (function.outputs[0] if output is None else output)._keras_history
    return history.operation._inbound_nodes[history.node_index]


def _ordered_nodes(function):
    for depth in sorted(function._nodes_by_depth, reverse=True):
        for node in function._nodes_by_depth[depth]:
            if node.operation is not None and not node.is_input:
                yield node


def _linear_twin(layer):
    """A twin of ``layer`` that computes its output before the fused activation.

    The twin is an instance of the layer's own class whose ``__dict__`` is a
    shallow copy of the layer's with ``activation`` replaced by
    ``keras.activations.linear``. It therefore holds the very same variable
    objects (kernel, bias, BatchNorm statistics, quantisation scales, ...): the
    pre-activation uses the model's current weights, and gradients flow to the
    same variables. Calling it runs the layer class's own ``__call__``/``call``
    (dtype policy, autocast, conv/dense/einsum/transpose/separable variants and
    anything a custom layer does), so no layer type needs code of its own.

    Why not the alternatives:

    - setting ``layer.activation`` for the duration of the call (the former
      approach) mutates the user's layer: a concurrent ``model(x)`` or a second
      ``explain`` in another thread sees a linear layer, and overlapping
      save/restore pairs can leave it linear for good;
    - ``copy.copy(layer)`` goes through ``KerasSaveable.__reduce__``, which
      saves and reloads the layer (new variables, not shared weights);
    - re-implementing each fusing layer's op (convolution + bias, ...) would
      duplicate Keras internals per class and silently miss variants (groups,
      LoRA, quantised kernels, custom layers).

    Whatever Keras's ``__call__`` records while calling the twin
    (``_called``, ``built``, ``_parent_path``) lands in the twin's own
    ``__dict__``; the twin gets its own (empty) loss lists, so an activity
    regulariser's loss is neither added to nor cleared from the user's layer.
    Twins are made per evaluation of f (a dict copy; in a compiled step only
    at trace time), so they always reflect the layer's current state.
    """
    twin = object.__new__(type(layer))  # no __init__: nothing is created or built
    state = dict(vars(layer))
    state["activation"] = keras.activations.linear
    if "_losses" in state:
        state["_losses"] = []
    if "_loss_ids" in state:
        state["_loss_ids"] = set()
    vars(twin).update(state)  # plain dict writes: no tracking hooks run
    if getattr(twin, "activation", None) is not keras.activations.linear:
        raise UnsupportedModelError(
            f"Cannot split the fused activation of layer {layer.name!r} "
            f"({type(layer).__name__}): its `activation` is not a plain "
            "attribute. Use a separate Activation/ReLU layer instead of a fused "
            "activation in this layer."
        )
    return twin


class PathwayGraph:
    """A Keras model rewritten as f(x, masks) -> logits.

    Args:
        model: a Keras 3 ``Functional`` or ``Sequential`` model with one output
            of shape (N, classes) and one input (or several float inputs of
            fixed shapes, which f takes packed into one (N, D) tensor, see
            ``split_inputs``); nested Functional/Sequential
            models are walked into. A final softmax or sigmoid (``Softmax``,
            ``Activation("softmax")``, a fused ``activation="sigmoid"``, ...) is
            removed, so the function returns the logits before it (a binary
            ``Dense(1, activation="sigmoid")`` classifier is explained through
            its one pre-sigmoid logit: positive evidence for class 1).
        activations: the activation names whose calls are neuron sites. Default:
            the rectifier family ``("relu", "relu6", "leaky_relu")``. Others
            (``"silu"``/``"swish"``, ``"gelu"``, ``"sigmoid"``, ...) can be added
            explicitly; the local-linearity argument of docs/method.md §4 needs
            piecewise-linear units.
        require_sites: raise ``UnsupportedModelError`` when no site is found
            (methods that need no site, like the plain gradient, pass False).

    Attributes:
        sites: list of ``Site`` in execution order; ``masks`` follow this order.
        input_shape: the model's per-input shape (no batch axis; None = any);
            for several inputs (D,), the packed size.
        num_inputs, input_names, input_shapes, input_dtypes: the model's
            inputs, in the order of ``model.inputs``.
        num_classes: number of logits.
    """

    def __init__(self, model, activations=sites_lib.RECTIFIERS, require_sites=True, output=None):
        check_backend()
        self.activations = frozenset(
            sites_lib.canonical_activation(a) for a in activations
        )
        if not isinstance(model, keras.Model) or not sites_lib.is_graph_model(model):
            raise UnsupportedModelError(
                f"Expected a Keras Functional or Sequential model. Received: "
                f"{type(model).__name__} ({type(model).__module__}). The graph "
                "walker cannot see into a subclassed model's call(); rebuild it "
                "with the functional API (keras.Input(...) -> layers -> "
                "keras.Model(inputs, outputs)), which can reuse its layers."
            )
        self._model = weakref.ref(model)  # the model cache must not keep the model alive
        self.model_name = model.name
        function = _functional_of(model, model.name)
        #: The model's inputs, in the order of ``model.inputs``: names (the
        #: Keras input layers' names), per-input shapes and dtypes.
        self.num_inputs = len(function.inputs)
        self.input_names = [_input_name(t) for t in function.inputs]
        self.input_shapes = [tuple(t.shape[1:]) for t in function.inputs]
        self.input_dtypes = [t.dtype for t in function.inputs]
        self._output = _choose_output(function, model, output)
        out_shape = tuple(self._output.shape)
        if len(out_shape) < 2 or out_shape[-1] is None:
            raise UnsupportedModelError(
                "Expected an output of shape (batch, classes) (or a dense prediction "
                "(batch, ..., classes), explained through a targets.Score). Received: output "
                f"shape {out_shape} for model {model.name!r}."
            )
        #: 2 for a classifier; more for a dense prediction (segmentation).
        self.output_rank = len(out_shape)
        self.input_shape = tuple(function.inputs[0].shape[1:])
        self.input_dtype = function.inputs[0].dtype
        if self.num_inputs > 1:
            self._pack_inputs(model.name)
        #: The model's own input dtype when it is an integer (e.g. "uint8"
        #: images rescaled inside the model); None for float inputs.
        self.integer_input = None
        self.embedded = False
        self.num_classes = int(out_shape[-1])
        self.sites = []
        self._other_activations = {}
        self._recurrent = []  # recurrent layers whose cells apply a site activation
        self._opaque = []  # layers with sub-layers that apply other activations inside
        #: Why the sites are incomplete: a layer applies a chosen activation
        #: inside its own call() (None when every site is visible). Methods
        #: that read sites refuse such a model; the input-gradient family,
        #: which only calls the layers, does not (``require_visible_sites``).
        self.hidden_sites_message = None
        #: "softmax" or "sigmoid" when the model's output applied one (removed here).
        self.output_activation = None
        self._calls = {}
        self._plan = self._build_plan(function, prefix="", strip_softmax=True, output=self._output)
        self._entry = None
        if self.num_inputs == 1 and not _is_float_dtype(self.input_dtype):
            self._enter_at_first_float(function, model.name)
        self._no_sites_message = None
        recurrent = (
            f" Recurrent layers apply activations inside their cells, once per time "
            f"step; those are not neuron sites: {', '.join(self._recurrent)}."
            if self._recurrent else ""
        )
        if recurrent and self.sites:
            warnings.warn(
                f"Model {model.name!r}:{recurrent} Pathways cover the model's other "
                f"{len(self.sites)} site(s).",
                UserWarning,
                stacklevel=2,
            )
        opaque = (
            f" An activation listed as inside a layer is applied in that layer's own call(), "
            f"which the graph walker cannot see into ({', '.join(self._opaque[:3])}"
            f"{' ...' if len(self._opaque) > 3 else ''}): opting them in does not make them "
            "sites; rebuild such a block with the functional API (a keras.Model made of its layers)."
            if self._opaque else ""
        )
        if not self.sites:
            found = ", ".join(
                f"{name} ({count})"
                for name, count in sorted(self._other_activations.items())
            ) or "none"
            self._no_sites_message = (
                f"Model {model.name!r} has no neuron site: no call of "
                f"{sorted(self.activations)} was found. Activations found: "
                f"{found}. Pathways are defined on rectifier neurons (docs/method.md §1); "
                "to use other activations as sites anyway, pass them explicitly, "
                "e.g. activations=('relu', 'silu')." + recurrent + opaque
            )
        if require_sites:
            self.require_sites()  # no site at all, or some hidden inside a layer's call()
        sizes = [site.size for site in self.sites]
        # None when the model takes inputs of any size (site shapes then follow x).
        self.num_neurons = None if None in sizes else sum(sizes)

    def _pack_inputs(self, model_name):
        """For a model with several inputs: f takes them packed into one (N, D) tensor.

        Every method's step then works on one float tensor as for a one-input
        model: the inputs are flattened per input and concatenated in the
        order of ``model.inputs`` (``pack_shape`` / ``split_inputs``);
        ``__call__`` splits them again before the model's first layers, so a
        gradient w.r.t. the packed tensor is the gradients w.r.t. every input,
        flattened and concatenated. Needs float inputs of fixed shapes.
        """
        for name, shape, dtype in zip(self.input_names, self.input_shapes, self.input_dtypes):
            if not _is_float_dtype(dtype):
                raise UnsupportedModelError(
                    f"Model {model_name!r} has {self.num_inputs} inputs {self.input_names} and input "
                    f"{name!r} takes {dtype}: integer inputs (token ids, images rescaled inside the "
                    "model) are supported only for models with one input. Give every input a float "
                    "dtype (do the integer preprocessing before the model)."
                )
            if any(d is None for d in shape):
                raise UnsupportedModelError(
                    f"Model {model_name!r} has {self.num_inputs} inputs {self.input_names} and input "
                    f"{name!r} takes any size (shape {shape}): a model with several inputs needs a "
                    "fixed shape for each input. Rebuild it with keras.Input(shape) of fixed sizes."
                )
        #: Values per input (flattened), in the order of ``model.inputs``.
        self.input_sizes = [int(math.prod(shape)) for shape in self.input_shapes]
        self.input_shape = (sum(self.input_sizes),)
        names = {str(d) for d in self.input_dtypes}
        self.input_dtype = self.input_dtypes[0] if len(names) == 1 else "float32"

    def split_inputs(self, x):
        """The model's inputs from f's input: ``[x]`` for one input, else the
        packed (N, D) tensor split and reshaped into each input (its dtype)."""
        if self.num_inputs == 1:
            return [x]
        pieces = tf.split(x, self.input_sizes, axis=1)
        out = []
        for piece, shape, dtype in zip(pieces, self.input_shapes, self.input_dtypes):
            piece = tf.reshape(piece, [-1, *shape])
            if dtype is not None and piece.dtype != tf.as_dtype(dtype):
                piece = tf.cast(piece, dtype)
            out.append(piece)
        return out

    def require_one_input(self, what):
        """Raises ``UnsupportedModelError`` naming ``what`` for a model with several inputs."""
        if self.num_inputs > 1:
            raise UnsupportedModelError(several_inputs_message(self.model_name, self.input_names, what))

    def _enter_at_first_float(self, function, model_name):
        """For an integer input: f starts at the float tensor its one consumer makes.

        ``Input(dtype="uint8") -> Rescaling(1/255) -> ...``: the pathway
        function and every attribution are w.r.t. the Rescaling output (the
        first float tensor); ``preprocess`` turns integer inputs into it.
        """
        raw = function.inputs[0]
        consumers = [step for step in self._plan.steps if any(t is raw for t in step.node.input_tensors)]
        first = consumers[0] if len(consumers) == 1 else None
        outputs = first.node.outputs if first is not None else []
        if (first is None or first.kind != "op" or len(outputs) != 1
                or not _is_float_dtype(outputs[0].dtype) or len(first.node.input_tensors) != 1):
            raise UnsupportedModelError(
                f"Model {model_name!r} takes {self.input_dtype} input; expected exactly one "
                "layer right after the input that turns it into floats (e.g. "
                "keras.layers.Rescaling(1 / 255)), so that attributions can be taken "
                "w.r.t. that float tensor. Or give the model a float input."
            )
        self.integer_input = self.input_dtype
        self.integer_input_shape = tuple(raw.shape[1:])
        #: True when that first layer is an ``Embedding`` (token ids in, vectors out).
        self.embedded = isinstance(first.node.operation, keras.layers.Embedding)
        self._entry = first
        self._plan = _Plan([outputs[0]], self._plan.outputs, [s for s in self._plan.steps if s is not first])
        self.input_shape = tuple(outputs[0].shape[1:])
        self.input_dtype = outputs[0].dtype

    def preprocess(self, x):
        """Integer inputs through the model's first (float-making) layer; float x as is.

        Returns:
            the float tensor that ``__call__`` takes and attributions refer to.
        """
        if self._entry is None:
            return x
        node = self._entry.node
        args, kwargs = node.arguments.fill_in({id(node.input_tensors[0]): tf.convert_to_tensor(x)})
        if "training" in getattr(node.operation, "_call_context_args", ()):
            kwargs["training"] = False
        return node.operation(*args, **kwargs)

    @property
    def model(self):
        """The model this graph was built from (None once it was garbage collected)."""
        return self._model()

    def require_sites(self):
        """Raises ``UnsupportedModelError`` when the model has no neuron site,
        or when some of its sites are hidden inside a layer's call()."""
        self.require_visible_sites()
        if self._no_sites_message is not None:
            raise UnsupportedModelError(self._no_sites_message)

    def require_visible_sites(self):
        """Raises ``UnsupportedModelError`` when a layer applies a chosen
        activation inside its own call() (``hidden_sites_message``)."""
        if self.hidden_sites_message is not None:
            raise UnsupportedModelError(self.hidden_sites_message)

    # ---------------------------------------------------------------- planning
    def _call_suffix(self, operation):
        count = self._calls.get(id(operation), 0)
        self._calls[id(operation)] = count + 1
        return "" if count == 0 else f"#{count}"

    def _build_plan(self, function, prefix, strip_softmax, output=None):
        out_node = _output_node(function, output) if strip_softmax else None
        needed = None if output is None else _ancestor_nodes(output)  # the chosen output's graph only
        steps = []
        for node in _ordered_nodes(function):
            if needed is not None and id(node) not in needed:
                continue
            op = node.operation
            at_output = node is out_node
            if sites_lib.is_graph_model(op):
                inner = _functional_of(op, prefix + op.name)
                sub_prefix = f"{prefix}{op.name}{self._call_suffix(op)}/"
                sub = self._build_plan(inner, sub_prefix, at_output)
                steps.append(_Step(node, "nested", sub=sub))
                continue
            squash = sites_lib.output_squash(op) if at_output else None
            if squash is not None:
                self.output_activation = squash
                kind = "strip_activation" if hasattr(op, "activation") else "softmax"
                steps.append(_Step(node, kind))
                continue
            if sites_lib.is_recurrent(op):
                applied = sites_lib.recurrent_activations(op)
                inside = [a for a in applied if a in self.activations]
                for name in applied:
                    if name not in ("linear", "softmax"):
                        key = f"{name} inside {type(op).__name__}"
                        self._other_activations[key] = self._other_activations.get(key, 0) + 1
                if inside:
                    self._recurrent.append(f"{prefix + op.name} ({type(op).__name__}, {', '.join(inside)})")
                steps.append(_Step(node, "op"))
                continue
            site_kind = sites_lib.classify(op)
            if site_kind is not None and site_kind.activation in self.activations:
                suffix = self._call_suffix(op)
                base = f"{op.name}/{site_kind.activation}" if site_kind.fused else op.name
                shape = tuple(None if d is None else int(d) for d in node.outputs[0].shape[1:])
                self.sites.append(
                    sites_lib.Site(
                        name=prefix + base + suffix,
                        shape=shape,
                        activation=site_kind.activation,
                        layer=prefix + op.name,
                    )
                )
                steps.append(
                    _Step(node, "site", site=len(self.sites) - 1, fused=site_kind.fused)
                )
                continue
            if site_kind is not None:
                name = site_kind.activation
                self._other_activations[name] = self._other_activations.get(name, 0) + 1
            self._check_opaque(op, prefix)
            steps.append(_Step(node, "op"))
        return _Plan(list(function.inputs), [output] if output is not None else list(function.outputs), steps)

    def _check_opaque(self, op, prefix):
        """Refuses custom layers that hide sites inside their own call().

        A layer with sub-layers is called as a whole: the walker cannot see
        which of them its call() runs, nor how. When any of them (or the layer's
        own callable ``activation``, ``sites.composite_activation``) applies an
        activation chosen as a site, the model is refused; other activations
        hidden there are recorded as ``"gelu inside ViTEncoder"`` for the
        no-site message.
        """
        if not isinstance(op, keras.layers.Layer):
            return
        hidden, found = [], []
        for sub in op._flatten_layers(include_self=True, recursive=True):
            if sub is getattr(op, "activation", None):
                continue  # Conv2D(activation=ReLU()): its fused activation, classified already
            kind = None if sub is op else sites_lib.classify(sub)
            own = sites_lib.composite_activation(sub)
            where = getattr(sub, "path", None) or sub.name  # "vit_encoder/block_0/mlp/dense_1"
            for name, text in (
                (kind and kind.activation, f"{where} ({kind and kind.activation})"),
                (own, f"{where} (its `activation`: {own})"),
            ):
                if name is not None:
                    found.append(name)
                    if name in self.activations:
                        hidden.append((text, name))
        if hidden:
            names = {name for _, name in hidden}
            what = "rectifiers" if names <= sites_lib.RECTIFIERS else "site activations"
            listed = [text for text, _ in hidden]
            if self.hidden_sites_message is None:  # the first such layer is named
                self.hidden_sites_message = (
                    f"Layer {prefix + op.name!r} ({type(op).__name__}) contains "
                    f"{what} inside its own call() that the graph walker cannot "
                    f"see into: {', '.join(listed[:5])}"
                    f"{' ...' if len(listed) > 5 else ''}. Rebuild that block with "
                    "the functional API (a keras.Model made of its layers) so each "
                    "activation call is visible. (Methods that need no site, e.g. "
                    "gradient, input_x_gradient, integrated_gradients, smoothgrad, "
                    "work on this model as it is.)"
                )
            return
        if found:
            self._opaque.append(f"{prefix + op.name} ({type(op).__name__})")
            for name in found:
                key = f"{name} inside {type(op).__name__}"
                self._other_activations[key] = self._other_activations.get(key, 0) + 1

    # --------------------------------------------------------------- execution
    def weighted_blocks(self):
        """The model's layers with weights, in forward order, cut after every site.

        Returns:
            list of ``(name, layers)``: one block per neuron site (the weighted
            layers since the previous site, named after the site) and a last
            block ``"head"`` with the layers after the last site (the logits
            layer). Nested models are walked into; a shared layer appears once,
            in the first block that calls it.
        """
        blocks, current, seen = [], [], set()

        def walk(plan):
            nonlocal current
            for step in plan.steps:
                op = step.node.operation
                if step.kind == "nested":
                    walk(step.sub)
                    continue
                if getattr(op, "weights", None) and id(op) not in seen:
                    seen.add(id(op))
                    current.append(op)
                if step.kind == "site":
                    blocks.append((self.sites[step.site].name, current))
                    current = []

        walk(self._plan)
        blocks.append(("head", current))
        return [(name, layers) for name, layers in blocks if layers]

    def __call__(self, x, masks=None, capture=False, site_transform=None):
        """Evaluates f(x, masks).

        Args:
            x: input batch, shape (N, *input_shape), float.
            masks: None (all ones: the original model) or a list with one entry
                per site (``self.sites`` order): None (no masking at that site)
                or a tensor broadcastable to (N, *site.shape), e.g. a binary
                pathway mask (bool: kept or not; or float 0/1) or a scalar
                scale.
            capture: also return the sites' outputs.
            site_transform: optional ``fn(tensor) -> tensor`` applied to every
                site's (masked) output, e.g. a gradient override for Guided
                Backprop; it must keep the shape.

        Returns:
            logits (N, classes); with ``capture=True`` a tuple
            ``(logits, activations, masked)`` where ``activations[i]`` is site
            i's output before masking and ``masked[i]`` the tensor the rest of
            the network consumes (``activations[i] * masks[i]``).
        """
        if masks is not None and len(masks) != len(self.sites):
            raise ValueError(
                f"Expected {len(self.sites)} masks (one per site). "
                f"Received: {len(masks)}."
            )
        activations = [None] * len(self.sites)
        masked = [None] * len(self.sites)

        def on_site(index, a):
            mask = None if masks is None else masks[index]
            if mask is None:
                out = a
            elif mask.dtype == tf.bool:  # a pathway's keep mask: one select, no float mask
                # A scalar 0, not zeros_like: no full-size zeros tensor per site
                # (ResNet50's masked pass 1.09x a gradient instead of 1.12-1.15x,
                # README "Speed").
                out = tf.where(mask, a, tf.constant(0, a.dtype))
            else:
                out = a * tf.cast(mask, a.dtype)
            if site_transform is not None:
                out = site_transform(out)
            activations[index] = a
            masked[index] = out
            return out

        (logits,) = self._run(self._plan, self.split_inputs(x), _CallOriginal(), on_site)
        if capture:
            return logits, activations, masked
        return logits

    def rebuild(self, on_site, name=None):
        """A new plain Keras model of the rewritten graph.

        Every layer is cloned (weights copied; a layer called twice stays one
        shared clone), nested models are flattened into one graph, fused
        rectifiers are split into the layer plus an ``Activation``, the final
        softmax is dropped, and each site's output ``a`` becomes
        ``on_site(index, a)`` (a symbolic Keras tensor).
        """
        self.require_one_input("Rebuilding a model (freeze, export)")
        inputs = keras.Input(
            shape=self.input_shape, dtype=self.input_dtype, name="pathway_input"
        )
        (outputs,) = self._run(self._plan, [inputs], _CallClone(), on_site)
        return keras.Model(inputs, outputs, name=name or f"{self.model_name}_pathway")

    def _run(self, plan, inputs, caller, on_site, prefix=""):
        tensors = {id(ref): value for ref, value in zip(plan.inputs, inputs)}
        for step in plan.steps:
            node = step.node
            if any(id(t) not in tensors for t in node.input_tensors):
                continue
            args, kwargs = node.arguments.fill_in(tensors)
            op = node.operation
            if step.kind == "nested":
                flat = keras.tree.flatten(args)
                sub_prefix = f"{prefix}{op.name}_"
                outputs = self._run(step.sub, flat, caller, on_site, sub_prefix)
            elif step.kind == "softmax":
                outputs = args[0]
            else:
                if "training" in getattr(op, "_call_context_args", ()):
                    kwargs["training"] = False
                if step.kind == "op":
                    outputs = caller.call(op, prefix, args, kwargs)
                elif step.kind == "strip_activation":
                    outputs = caller.call(op, prefix, args, kwargs, linear=True)
                else:  # a neuron site
                    if step.fused:
                        pre = caller.call(op, prefix, args, kwargs, linear=True)
                        a = caller.activation(op, prefix)(pre)
                    else:
                        a = caller.call(op, prefix, args, kwargs)
                    outputs = on_site(step.site, a)
            for ref, value in zip(node.outputs, keras.tree.flatten(outputs)):
                tensors[id(ref)] = value
        return [tensors[id(ref)] for ref in plan.outputs]


def _input_name(tensor):
    """The name of the Keras input layer that makes ``tensor``."""
    history = getattr(tensor, "_keras_history", None)
    operation = getattr(history, "operation", None)
    return getattr(operation, "name", None) or tensor.name


def several_inputs_message(model_name, input_names, what):
    """The refusal of an entry point that takes models with one input only."""
    return (
        f"{what} does not support models with several inputs yet. Model {model_name!r} has "
        f"{len(input_names)} inputs {list(input_names)}. Explain it with keras_pathways.explain "
        "(or find_pathway), giving x as a list in the order of model.inputs or a dict keyed "
        "by the input names."
    )


def require_one_input(model, what, error=None):
    """Raises ``error`` (default ``UnsupportedModelError``) when ``model`` has several inputs.

    For the entry points that take models with one input only (``freeze``,
    ``export_explainer``, ``explain_dataset``, the evaluations, the CLI).
    """
    inputs = getattr(model, "inputs", None) if isinstance(model, keras.Model) else None
    try:
        count = len(inputs) if inputs is not None else 1
    except TypeError:
        count = 1
    if count > 1:
        names = [_input_name(t) for t in inputs]
        raise (error or UnsupportedModelError)(several_inputs_message(model.name, names, what))


def _ancestor_nodes(tensor):
    """ids of the nodes ``tensor`` depends on (its own node included)."""
    needed, stack = set(), [tensor]
    while stack:
        history = stack.pop()._keras_history
        node = history.operation._inbound_nodes[history.node_index]
        if id(node) not in needed:
            needed.add(id(node))
            stack.extend(node.input_tensors)
    return needed


def _output_names(function, model):
    names = list(getattr(model, "output_names", None) or [])
    if len(names) != len(function.outputs):
        names = [t._keras_history.operation.name for t in function.outputs]
    return names


def _choose_output(function, model, output):
    """The output tensor f explains: the only one, or the one named ``output``."""
    names = _output_names(function, model)
    if output is None:
        if len(function.outputs) != 1:
            raise UnsupportedModelError(
                f"Model {model.name!r} has {len(function.outputs)} outputs {names}; choose the "
                "one to explain with targets=keras_pathways.targets.output(name, inner), e.g. "
                f"targets.output({names[0]!r}, targets.logit(0))."
            )
        return function.outputs[0]
    layer_names = [t._keras_history.operation.name for t in function.outputs]
    for index, (name, layer) in enumerate(zip(names, layer_names)):
        if output in (name, layer):
            return function.outputs[index]
    raise UnsupportedModelError(f"Model {model.name!r} has no output {output!r}. Its outputs: {names}.")


def _is_float_dtype(dtype):
    return dtype is None or "float" in str(dtype)


class _CallOriginal:
    """Calls the model's own layers (shared weights), never modifying them.

    A call with ``linear=True`` (a fused activation split off, or a fused final
    softmax dropped) calls the layer's linear twin (``_linear_twin``), made once
    per evaluation of f and layer.
    """

    def __init__(self):
        self._twins = {}

    def call(self, op, prefix, args, kwargs, linear=False):
        if not linear:
            return op(*args, **kwargs)
        twin = self._twins.get(id(op))
        if twin is None:
            twin = self._twins[id(op)] = _linear_twin(op)
        return twin(*args, **kwargs)

    def activation(self, op, prefix):
        return op.activation


class _CallClone:
    """Calls clones of the model's layers (for ``PathwayGraph.rebuild``)."""

    def __init__(self):
        self._clones = {}

    def call(self, op, prefix, args, kwargs, linear=False):
        if not isinstance(op, keras.layers.Layer):
            # A stateless keras.ops operation. A symbolic call records a node in
            # the operation it calls, so calling the model's own operation would
            # grow its node lists (and tie the new model to it): call a copy.
            key = (id(op), "operation")
            if key not in self._clones:
                self._clones[key] = _operation_copy(op)
            return self._clones[key](*args, **kwargs)
        key = (id(op), linear)
        clone = self._clones.get(key)
        fresh = clone is None
        if fresh:
            config = op.get_config()
            config["name"] = prefix + op.name
            if linear:
                config["activation"] = "linear"
            clone = type(op).from_config(config)
            self._clones[key] = clone
        outputs = clone(*args, **kwargs)
        if fresh:
            clone.set_weights(op.get_weights())
        return outputs

    def activation(self, op, prefix):
        key = (id(op), "activation")
        if key not in self._clones:  # stateless, so one layer serves every call
            name = sites_lib.activation_name(op.activation)
            self._clones[key] = keras.layers.Activation(
                op.activation, name=f"{prefix}{op.name}_{name}"
            )
        return self._clones[key]


def _operation_copy(op):
    """A copy of a stateless ``keras.ops`` operation with no graph nodes yet."""
    copy = object.__new__(type(op))
    vars(copy).update(vars(op))
    vars(copy).update(_inbound_nodes=[], _outbound_nodes=[])
    return copy


_MODEL_CACHES = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def model_cache(model):
    """The dict of what was built for ``model`` (graphs, compiled steps).

    Held in a ``weakref.WeakKeyDictionary``: the model is not modified, and the
    entry goes when the model is garbage collected (the cached values refer to
    the model's layers, never to the model itself; ``PathwayGraph.model`` is a
    weak reference).
    """
    with _CACHES_LOCK:
        cache = _MODEL_CACHES.get(model)
        if cache is None:
            cache = _MODEL_CACHES[model] = {}
        return cache


def clear_cache(model=None):
    """Drops what was built and compiled for ``model`` (every model when None).

    The next ``explain`` rebuilds the graph and retraces its step. Use it after
    changing a model's structure in place, or to free memory in a long session.

    Returns:
        the number of models whose cache was dropped.
    """
    with _CACHES_LOCK:
        if model is None:
            count = len(_MODEL_CACHES)
            _MODEL_CACHES.clear()
            return count
        return 1 if _MODEL_CACHES.pop(model, None) is not None else 0


def pathway_graph(model, activations=sites_lib.RECTIFIERS, require_sites=True, output=None,
                  several_inputs=False):
    """Returns the ``PathwayGraph`` of a model, built once per activation set and output.

    ``require_sites``: the caller reads the neuron sites, so the model must
    have some and none may be hidden inside a layer's call(); False (the
    input-gradient family, forward passes) accepts both. A method that reads
    sites without requiring them (guided backprop) calls
    ``require_visible_sites`` itself.
    ``several_inputs``: accept a model with several inputs (``explain`` and
    ``find_pathway`` do; every other caller gets an ``UnsupportedModelError``).
    """
    key = ("graph", frozenset(sites_lib.canonical_activation(a) for a in activations), output)
    if not isinstance(model, keras.Model):
        return PathwayGraph(model, activations)  # raises the clear error
    cache = model_cache(model)
    if key not in cache:
        cache[key] = PathwayGraph(model, activations, require_sites=False, output=output)
    if not several_inputs:
        cache[key].require_one_input("This function")
    if require_sites:
        cache[key].require_sites()
    return cache[key]
