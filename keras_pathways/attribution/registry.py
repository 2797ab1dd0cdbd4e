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
    """

    name: str
    description: str
    build: object
    uses_pathway: bool = False


_METHODS = {}


def register(name, description, uses_pathway=False):
    """Decorator registering ``build(graph, **options) -> step`` as a method."""

    def decorate(build):
        _METHODS[name] = Method(name, description, build, uses_pathway)
        return build

    return decorate


def methods():
    """The registered methods: dict name -> one-line description."""
    return {
        name: m.description
        for name, m in sorted(_METHODS.items())
        if not name.startswith("_")
    }


def get(name):
    """The ``Method`` called ``name``, or a clear ValueError."""
    try:
        return _METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown attribution method {name!r}. Expected one of "
            f"{sorted(_METHODS)} (see keras_pathways.methods())."
        ) from None
