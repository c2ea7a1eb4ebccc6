"""The ``tinygrad-bn`` command: one subcommand per module in ``tinygrad_bn/commands``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args)``
returning an exit code. They are imported only when chosen, so ``tinygrad-bn gradcheck`` never
pays for matplotlib.
"""
import argparse
import importlib
import sys

from . import __version__

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


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the flag, the value and what is allowed; exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv=None):
    commands = _available()
    parser = Parser(
        prog="tinygrad-bn",
        description="Batch normalization and its gradients, seen from the inside.")
    parser.add_argument("--version", action="version", version=f"tinygrad-bn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in commands.items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return commands[args.command].run(args) or 0
    except BrokenPipeError:  # e.g. `tinygrad-bn gradcheck | head`: the reader left, not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:  # Ctrl-C: what finished was written by the command itself
        print("\ntinygrad-bn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
