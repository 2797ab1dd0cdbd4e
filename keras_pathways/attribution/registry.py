"""The attribution methods ``explain`` accepts: ``methods()``, ``@register`` and ``StepResult``.

A method is a builder ``build(graph, **graph_options) -> step``; the engine
traces ``step(x, targets, **runtime_options)`` once per model, graph options
and input shape (see ``keras_pathways.attribution.runner``). The options a
method takes are declared when it registers (``options=[Option(...)]``, see
``keras_pathways.attribution.options``); nothing else reaches the builder.
"""

import dataclasses
import typing

from keras_pathways.attribution.options import Option

__all__ = ["Method", "StepResult", "register", "methods", "unregister", "get", "options_of",
           "applicable"]


class StepResult(typing.NamedTuple):
    """What a method's step returns for a batch of N inputs (tensors).

    A ``NamedTuple`` rather than a dataclass so that ``tf.function`` and XLA
    can return it as it is (a nested structure TensorFlow knows).

    Attributes:
        attributions: (N, *input_shape) attribution of the target logit;
            None for a step that only finds pathways.
        targets: int32 (N,) the explained class per input (-1 resolved).
        logits: (N, classes) the unmasked model's pre-softmax logits.
        threshold: float64 (N,) the selection threshold (pathway steps).
        kept: int (N, sites) kept neurons per site (pathway steps).
        masks: list per site of bool (N, *site_shape) (pathway steps, when
            masks are returned).
        site_shapes: list per site of int (rank,) the site's shape for this
            batch (pathway steps; concrete even for size-agnostic models).
        disconnected: bool (N,) inputs whose pathway gradient is exactly 0
            because an empty site cuts them off (pathway steps).
    """

    attributions: object = None
    targets: object = None
    logits: object = None
    threshold: object = None
    kept: object = None
    masks: object = None
    site_shapes: object = None
    disconnected: object = None

    def __getitem__(self, key):
        """``result["attributions"]`` as well as ``result[0]`` (steps once returned dicts)."""
        return getattr(self, key) if isinstance(key, str) else tuple.__getitem__(self, key)

    def keys(self):
        """The fields that are set, so ``{**result}`` gives a dict of them."""
        return [name for name in self._fields if getattr(self, name) is not None]

    @classmethod
    def of(cls, result, method_name):
        """A ``StepResult`` from a step's return value (a dict is accepted too)."""
        if isinstance(result, cls):
            return result
        if isinstance(result, dict):
            unknown = sorted(set(result) - set(cls._fields))
            if unknown:
                raise ValueError(
                    f"The step of method {method_name!r} returned unknown keys {unknown}. "
                    f"Expected a StepResult or a dict with keys from {list(cls._fields)}."
                )
            return cls(**result)
        raise ValueError(
            f"The step of method {method_name!r} returned {type(result).__name__}. "
            "Expected a keras_pathways.StepResult (or a dict of its fields)."
        )


@dataclasses.dataclass(frozen=True, eq=False)
class Method:
    """An attribution method (compared and hashed by identity).

    Attributes:
        name: the name ``explain(method=...)`` takes.
        description: one line for ``methods()``.
        build: ``build(graph, **graph_options) -> step``. ``step(x, targets,
            **runtime_options)`` is a traceable function of a float batch
            (N, *input_shape) and int32 targets (N,) (-1 = argmax) returning a
            ``StepResult`` (or a dict of its fields) with at least
            ``attributions``, ``targets`` and ``logits``; pathway methods
            (``uses_pathway``) also ``threshold``, ``kept``, ``site_shapes``
            (and ``masks`` when ``return_masks``).
        options: {name: ``Option``} the method takes, in declaration order.
        uses_pathway: True when the step returns a pathway.
        needs_sites: False for methods that work on models without rectifiers
            (gradient, Integrated Gradients, ...).
        loops: True (or ``loops(graph_options) -> bool``) when the step runs a
            loop built with ``keras_pathways.compiling.while_loop``; with
            ``jit_compile=True`` the engine then compiles each loop body with
            XLA instead of the whole step (see ``keras_pathways.compiling``).
        deprecated: {old name: new name, or ``f(given) -> new name``} of
            renamed options, still accepted with a ``DeprecationWarning``.
        validate: optional ``validate(options, given_names) -> options`` for
            checks across options (after each option's own check).
        forwards: the name of an option whose value is another method
            (SmoothGrad's ``inner``); that method's options are accepted too
            and resolved into ``inner_options``.
    """

    name: str
    description: str
    build: object
    options: dict = dataclasses.field(default_factory=dict)
    uses_pathway: bool = False
    needs_sites: bool = True
    loops: object = False
    deprecated: dict = None
    validate: object = None
    forwards: str = None

    def has_loops(self, graph_options):
        return bool(self.loops(graph_options) if callable(self.loops) else self.loops)

    @property
    def runtime_options(self):
        """Names of the options passed to the step on every call (not traced in)."""
        return tuple(name for name, option in self.options.items() if not option.graph)

    @staticmethod
    def inner_method(name):
        return get(name)


_METHODS = {}


def _declared(options):
    if options is None:
        return {}
    if isinstance(options, dict):
        options = list(options.values())
    declared = {}
    for option in options:
        if not isinstance(option, Option):
            raise ValueError(
                f"Expected options as keras_pathways Option objects. Received: {option!r}."
            )
        if option.name in declared:
            raise ValueError(f"Option {option.name!r} is declared twice.")
        declared[option.name] = option
    return declared


def register(name, description, uses_pathway=False, needs_sites=True, loops=False, options=None,
             deprecated=None, validate=None, forwards=None):
    """Decorator registering ``build(graph, **options) -> step`` as a method.

    Args:
        name: the method's name (registering a name again replaces the method;
            its compiled steps are not reused).
        description: one line for ``methods()``.
        uses_pathway: see ``Method``.
        needs_sites: see ``Method``.
        loops: see ``Method``.
        options: a list of ``Option`` the method takes (none by default);
            ``explain`` refuses any other option name.
        deprecated: see ``Method``.
        validate: see ``Method``.
        forwards: see ``Method``.

    Example::

        from keras_pathways import Option, StepResult, get_method, register

        @register("gradient_power", "The input gradient to a power.",
                  options=[Option("power", 2, doc="the exponent")], needs_sites=False)
        def build(graph, power):
            gradient = get_method("gradient").build(graph)
            def step(x, targets):
                out = gradient(x, targets)
                return out._replace(attributions=out.attributions ** power)
            return step

    The method then works wherever a method name is accepted.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"Expected a method name (a non-empty string). Received: {name!r}.")
    declared = _declared(options)
    if forwards is not None and forwards not in declared:
        raise ValueError(f"forwards={forwards!r} must name one of the method's own options.")

    def decorate(build):
        _METHODS[name] = Method(name, description, build, declared, uses_pathway, needs_sites,
                                loops, dict(deprecated or {}), validate, forwards)
        return build

    return decorate


def methods():
    """The registered methods: dict name -> one-line description."""
    return {
        name: m.description
        for name, m in sorted(_METHODS.items())
        if not name.startswith("_")
    }


def unregister(name):
    """Removes a registered method (e.g. one a test or notebook added)."""
    _METHODS.pop(name, None)


def get(name):
    """The ``Method`` called ``name``, or a clear ValueError."""
    try:
        return _METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown attribution method {name!r}. Expected one of "
            f"{sorted(_METHODS)} (see keras_pathways.methods())."
        ) from None


def applicable(name, **candidates):
    """The ``candidates`` that method ``name`` declares, for options applied where they apply.

    ``explain`` refuses an option a method does not take; a caller running
    many methods with a shared setting (``seed``, ``return_masks=False``)
    passes ``**applicable(method, seed=1, return_masks=False)``.
    """
    declared = get(name).options
    return {key: value for key, value in candidates.items() if key in declared}


def options_of(name):
    """{option: (default, one-line doc)} of the method called ``name``."""
    from keras_pathways.attribution import options

    return options.describe(get(name))
