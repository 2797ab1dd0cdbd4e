"""Declared method options: each option is declared once, with its default and check.

A method registers its options (``register(..., options=[Option(...), ...])``);
``resolve`` then turns what a caller gave into the full, checked set: defaults
filled in, values normalised, unknown names refused with the closest valid
one, and old spellings (``deprecated``) renamed with a ``DeprecationWarning``.
``explain``, ``find_pathway``, ``export_explainer``, the CLI and the option
table in the docs all read the options from here (``describe``), so a default
is written in exactly one place.

Options are of two sorts:

- graph options (``graph=True``, the default) change the traced step (e.g.
  ``sparsity``, IG's ``steps``); they are given to the method's builder and
  key the compiled-step cache;
- run-time options (``graph=False``, e.g. ``seed``) are passed to the step as
  tensors on every call, so a new value does not retrace.
"""

import dataclasses
import difflib
import math
import numbers
import warnings

import numpy as np

__all__ = [
    "Option",
    "OptionError",
    "resolve",
    "canonical",
    "accepted_names",
    "distribute",
    "describe",
    "markdown_table",
    "positive_int",
    "non_negative_number",
    "flag",
    "seed",
    "choice",
]


class OptionError(ValueError):
    """An unknown option, or an option value a method cannot take."""


@dataclasses.dataclass(frozen=True)
class Option:
    """One option of a method.

    Attributes:
        name: the keyword, e.g. ``"sparsity"``.
        default: used when the caller does not give the option.
        check: ``check(value) -> value``: normalises a given value or raises a
            ValueError naming the option and what is expected. Defaults are
            not checked.
        doc: one line for the docs and ``--help``.
        graph: True when the value changes the traced step (it keys the
            compiled-step cache and reaches the builder); False for a run-time
            value passed to ``step(x, targets, **runtime)`` as a tensor.
    """

    name: str
    default: object
    check: object = None
    doc: str = ""
    graph: bool = True

    def normalise(self, value):
        return value if self.check is None else self.check(value)


# ------------------------------------------------------------------ checks
def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def positive_int(name):
    """A check accepting an integer >= 1."""

    def check(value):
        if not _is_int(value) or value < 1:
            raise OptionError(f"Expected {name} to be a positive integer. Received: {name}={value!r}.")
        return int(value)

    return check


def non_negative_number(name, strictly_positive=False):
    """A check accepting a finite real number >= 0 (> 0 when ``strictly_positive``)."""
    bound = "> 0" if strictly_positive else ">= 0"

    def check(value):
        ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
        ok = ok and math.isfinite(value) and (value > 0 if strictly_positive else value >= 0)
        if not ok:
            raise OptionError(f"Expected {name} to be a finite number {bound}. Received: {name}={value!r}.")
        return float(value)

    return check


def flag(name):
    """A check accepting True or False."""

    def check(value):
        if not isinstance(value, (bool, np.bool_)):
            raise OptionError(f"Expected {name} to be True or False. Received: {name}={value!r}.")
        return bool(value)

    return check


#: Seeds become int32 inside the steps (tf.random's stateless seeds).
SEED_LIMIT = 2**31


def seed(value):
    """Check of a ``seed``: an integer in [0, 2**31)."""
    if not _is_int(value) or not 0 <= value < SEED_LIMIT:
        raise OptionError(f"Expected seed to be an integer in [0, 2**31). Received: seed={value!r}.")
    return int(value)


def choice(name, allowed):
    """A check accepting one of ``allowed`` (strings, compared lower-case)."""

    def check(value):
        key = value.lower() if isinstance(value, str) else value
        if key not in allowed:
            raise OptionError(f"Expected {name} to be one of {sorted(allowed)}. Received: {name}={value!r}.")
        return key

    return check


# ----------------------------------------------------------------- resolving
def _label(method, label):
    return label or f"method {method.name!r}"


def _rename_deprecated(method, given, stacklevel, label=None):
    renamed = dict(given)
    for old, new in (method.deprecated or {}).items():
        if old not in renamed or old in method.options:
            continue
        target = new(renamed) if callable(new) else new
        if target is None:  # the old spelling meant nothing here: it was ignored, and still is
            warnings.warn(
                f"Option {old!r} of {_label(method, label)} is deprecated and has no effect "
                f"here; remove it (docs/method.md, 'Options').",
                DeprecationWarning,
                stacklevel=stacklevel + 1,
            )
            renamed.pop(old)
            continue
        if target in renamed:
            raise OptionError(
                f"Options {old!r} and {target!r} of {_label(method, label)} name the same "
                f"thing; give only {target!r} ({old!r} is its old spelling)."
            )
        warnings.warn(
            f"Option {old!r} of {_label(method, label)} is deprecated; use {target}= instead "
            f"(docs/method.md, 'Options').",
            DeprecationWarning,
            stacklevel=stacklevel + 1,
        )
        renamed[target] = renamed.pop(old)
    return renamed


def unknown_option_error(name, label, valid, value):
    """The OptionError for an option name a method does not declare."""
    from keras_pathways.attribution import registry

    close = difflib.get_close_matches(name, list(valid), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    owners = [m for m in registry.methods() if name in registry.get(m).options]
    if owners:
        hint += f" ({name!r} is an option of {', '.join(owners)}.)"
    expected = f"Expected one of: {', '.join(sorted(valid))}." if valid else f"{label} takes no options."
    return OptionError(f"Unknown option {name!r} for {label}.{hint} {expected} Received: {name}={value!r}.")


def resolve(method, given, stacklevel=2, label=None):
    """The complete, checked options of ``method`` for what a caller ``given``.

    Args:
        method: a registered ``Method``.
        given: dict of the options the caller passed (names as keywords).
        stacklevel: where a ``DeprecationWarning`` points (2: the caller).
        label: how messages name the method (default "method '<name>'").

    Returns:
        ``(graph_options, runtime_options)``: two dicts with every declared
        option (defaults filled in, values normalised). Graph options are
        hashable (they key the compiled-step cache); a method may add derived
        entries through its ``validate`` hook.

    Raises:
        OptionError: an unknown name (the closest valid one suggested), or a
            value the option's check refuses.
    """
    given = _rename_deprecated(method, given, stacklevel + 1, label)
    declared = dict(method.options)
    forwarded = {}
    if method.forwards is not None:  # e.g. smoothgrad: the inner method's options too
        inner_name = given.get(method.forwards, declared[method.forwards].default)
        inner = method.inner_method(inner_name)
        forwarded = {k: v for k, v in given.items() if k not in declared}
        given = {k: v for k, v in given.items() if k in declared}
        for name in forwarded:
            if name not in inner.options and name not in (inner.deprecated or {}):
                valid = set(declared) | set(inner.options)
                raise unknown_option_error(name, _label(method, label), valid, forwarded[name])
    for name, value in given.items():
        if name not in declared:
            raise unknown_option_error(name, _label(method, label), declared, value)
    values = {}
    for name, option in declared.items():
        values[name] = option.normalise(given[name]) if name in given else option.default
    if method.validate is not None:
        values = method.validate(values, frozenset(given))
    if method.forwards is not None:
        inner = method.inner_method(values[method.forwards])
        shared = {k: values[k] for k in declared if k in inner.options and not declared[k].graph}
        inner_graph, inner_runtime = resolve(inner, {**forwarded, **shared}, stacklevel + 1)
        values["inner_options"] = tuple(sorted(inner_graph.items()))
    graph = {k: v for k, v in values.items() if k not in declared or declared[k].graph}
    runtime = {k: v for k, v in values.items() if k in declared and not declared[k].graph}
    return graph, runtime


def accepted_names(method, given=None):
    """Option names ``method`` takes: declared, old spellings, and a wrapped method's."""
    from keras_pathways.attribution import registry

    names = set(method.options) | set(method.deprecated or {})
    if method.forwards is not None:
        inner = registry.get((given or {}).get(method.forwards, method.options[method.forwards].default))
        names |= set(inner.options) | set(inner.deprecated or {})
    return names


def distribute(methods, given, label, extra_valid=()):
    """{method name: the part of ``given`` it takes}, for running several methods with one set.

    Each method receives the options it accepts (``accepted_names``); a name
    that no method takes is refused with the closest valid one (among the
    methods' declared options and ``extra_valid``).
    """
    accepted = {method.name: accepted_names(method, given) for method in methods}
    for name, value in given.items():
        if not any(name in names for names in accepted.values()):
            valid = sorted(set().union(*(set(m.options) for m in methods)) | set(extra_valid))
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise OptionError(
                f"Unknown option {name!r} for {label} with methods {[m.name for m in methods]}.{hint} "
                f"Expected one of: {', '.join(valid) or 'none'}. Received: {name}={value!r}."
            )
    return {m.name: {k: v for k, v in given.items() if k in accepted[m.name]} for m in methods}


def canonical(method, given):
    """``given`` with old option spellings renamed, silently and unchecked.

    For comparing stored configurations (e.g. a ROAR folder written before a
    rename) with current ones; calls go through ``resolve``, which warns.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return _rename_deprecated(method, dict(given), 2)


def describe(method):
    """{option name: (default, doc)} of a method, in declaration order."""
    return {name: (option.default, option.doc) for name, option in method.options.items()}


def markdown_table(methods):
    """A Markdown table of every option of ``methods`` (Method objects)."""
    lines = ["| method | option | default | meaning |", "| --- | --- | --- | --- |"]
    for method in methods:
        if not method.options:
            lines.append(f"| `{method.name}` | — | | no options |")
        for name, option in method.options.items():
            doc = option.doc.replace("|", "\\|")
            lines.append(f"| `{method.name}` | `{name}` | `{option.default!r}` | {doc} |")
    return "\n".join(lines) + "\n"


#: The markers around the generated option table in docs/method.md.
TABLE_START = "<!-- options table: generated by `python -m keras_pathways.attribution.options` -->"
TABLE_END = "<!-- end of options table -->"


def _public_methods():
    from keras_pathways.attribution import engine  # noqa: F401  (registers the built-in methods)
    from keras_pathways.attribution import registry

    return [registry.get(name) for name in registry.methods()]


def write_table(path):
    """Replaces the option table between the markers in ``path`` (docs/method.md)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    text = text[:start] + "\n\n" + markdown_table(_public_methods()) + "\n" + text[end:]
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":  # python -m keras_pathways.attribution.options [docs/method.md]
    import sys

    write_table(sys.argv[1] if len(sys.argv) > 1 else "docs/method.md")
