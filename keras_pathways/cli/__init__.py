"""The ``keras-pathways`` command.

One module per command, each with ``add_parser(subparsers)`` (returns the
command's parser) and ``run(args)`` (returns the exit code); ``main`` runs the
chosen one through ``errors.run_command``, which turns an expected error into
one line on stderr and exit code 2. The command modules import TensorFlow,
Keras and the engine only inside ``run``, so building the parser (``--help``)
stays light.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_pathways.cli import analyze  # noqa: E402
from keras_pathways.cli import demo  # noqa: E402
from keras_pathways.cli import evaluate  # noqa: E402
from keras_pathways.cli import explain  # noqa: E402
from keras_pathways.cli import explain_dataset  # noqa: E402
from keras_pathways.cli import export  # noqa: E402
from keras_pathways.cli import lerf  # noqa: E402
from keras_pathways.cli import methods  # noqa: E402
from keras_pathways.cli import roar  # noqa: E402
from keras_pathways.cli import sanity  # noqa: E402
from keras_pathways.cli import sites  # noqa: E402
from keras_pathways.cli.errors import run_command  # noqa: E402

#: The commands, in the order ``--help`` lists them.
COMMANDS = (demo, explain, explain_dataset, export, roar, lerf, evaluate, analyze, sanity, methods, sites)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-pathways",
        description="Explain Keras classifiers through their critical pathways "
        "(pathway gradient; Khakzar et al., CVPR 2021).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers).set_defaults(run=command.run)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_command(args.run, args)


__all__ = ["COMMANDS", "build_parser", "main"]
