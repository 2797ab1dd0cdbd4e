"""``keras-pathways methods``: list the attribution methods."""

from keras_pathways.cli import options


def add_parser(subparsers):
    return subparsers.add_parser("methods", help="list the attribution methods")


def run(args):
    for name, description in options.method_registry().methods().items():
        print(f"{name:20s} {description}")
    return 0
