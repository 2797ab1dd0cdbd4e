"""The attribution methods ``explain`` accepts: ``methods()`` and ``@register``."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Method:
    """An attribution method.

    Attributes:
        name: the name ``explain(method=...)`` takes.
        description: one line for ``methods()``.
        build: ``build(graph, **options) -> step`` where ``step(x, targets)`` is a
            traceable function of a float batch (N, *input_shape) and int32
            targets (N,) (-1 = argmax) returning a dict with at least
            ``attributions`` (shape of x), ``targets`` (N,) and ``logits``;
            pathway methods also return ``threshold``, ``kept`` and ``masks``.
            ``options`` holds every keyword of ``explain`` (sparsity, scores,
            steps, return_masks, ...); a builder takes what it needs.
        uses_pathway: True when the step returns a pathway.
        needs_sites: False for methods that work on models without rectifiers
            (gradient, Integrated Gradients, ...).
        loops: True (or ``loops(options) -> bool``) when the step runs a loop
            built with ``keras_pathways.compiling.while_loop``; with
            ``jit_compile=True`` the engine then compiles each loop body with
            XLA instead of the whole step (see ``keras_pathways.compiling``).
    """

    name: str
    description: str
    build: object
    uses_pathway: bool = False
    needs_sites: bool = True
    loops: object = False

    def has_loops(self, options):
        return bool(self.loops(options) if callable(self.loops) else self.loops)


_METHODS = {}


def register(name, description, uses_pathway=False, needs_sites=True, loops=False):
    """Decorator registering ``build(graph, **options) -> step`` as a method.

    Example::

        @keras_pathways.register("gradient_squared", "Squared input gradient.")
        def build(graph, **options):
            gradient = keras_pathways.get_method("gradient").build(graph, **options)
            def step(x, targets):
                out = gradient(x, targets)
                return {**out, "attributions": out["attributions"] ** 2}
            return step

    The method then works wherever a method name is accepted.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"Expected a method name (a non-empty string). Received: {name!r}.")

    def decorate(build):
        _METHODS[name] = Method(name, description, build, uses_pathway, needs_sites, loops)
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
