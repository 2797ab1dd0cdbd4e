"""Method options on the command line (``explain``, ``export``).

``--sparsity S`` and ``--option NAME=VALUE`` (repeatable) default to nothing:
only the options a user gives are passed on, so the method's own defaults
apply to the rest. The command line restates no default and no option name
(``keras_pathways.method_options(METHOD)`` lists them), and never hands a
method an option it does not take.
"""

import argparse


def add_method_options(parser):
    """Adds ``--sparsity`` and ``--option NAME=VALUE`` to ``parser``."""
    group = parser.add_argument_group("method options (default: the method's)")
    group.add_argument("--sparsity", type=float, default=None,
                       help="pathway methods: fraction of neurons pruned, in [0, 1)")
    group.add_argument(
        "--option", action="append", type=_name_value, default=None, metavar="NAME=VALUE",
        dest="method_options",
        help="another option of the method, e.g. --option steps=16 (VALUE read as JSON, "
        "else as text); repeatable",
    )


def _name_value(text):
    import json

    name, equals, value = text.partition("=")
    if not equals or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE (e.g. steps=16), not {text!r}")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def given_method_options(args):
    """{option: value} of the method options given on the command line."""
    given = dict(args.method_options or ())
    if args.sparsity is not None:
        if "sparsity" in given:
            raise ValueError("--sparsity and --option sparsity=... name the same option: give it once.")
        given["sparsity"] = args.sparsity
    return given


def method_registry():
    """``keras_pathways.attribution.registry`` with the built-in methods registered
    (importing the engine registers them)."""
    from keras_pathways.attribution import engine  # noqa: F401
    from keras_pathways.attribution import registry

    return registry
