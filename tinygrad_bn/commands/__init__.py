"""Subcommands of the tinygrad-bn command line; each module: HELP, add_arguments, run."""
import argparse


def seed(text):
    """--seed's type: numpy seeds are integers >= 0 (else a one-line usage error, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0 (a numpy seed), got {text!r}")
    return value
