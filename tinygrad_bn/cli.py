"""The ``tinygrad-bn`` command: one subcommand per module in ``tinygrad_bn/commands``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args)``
returning an exit code. They are imported only when chosen, so ``tinygrad-bn gradcheck`` never
pays for matplotlib.
"""
import argparse
import importlib
import sys

COMMANDS = {
    "train": "tinygrad_bn.commands.train",
    "graph": "tinygrad_bn.commands.graph",
    "gradcheck": "tinygrad_bn.commands.gradcheck",
    "demo": "tinygrad_bn.commands.demo",
    "claims": "tinygrad_bn.commands.claims",
}


def _available():
    found = {}
    for name, path in COMMANDS.items():
        try:
            found[name] = importlib.import_module(path)
        except ModuleNotFoundError as e:
            if e.name != path:  # the command exists but one of its imports is missing
                raise
    return found


def main(argv=None):
    commands = _available()
    parser = argparse.ArgumentParser(
        prog="tinygrad-bn",
        description="Batch normalization and its gradients, seen from the inside.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in commands.items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return commands[args.command].run(args) or 0
    except BrokenPipeError:  # e.g. `tinygrad-bn gradcheck | head`: the reader left, not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
