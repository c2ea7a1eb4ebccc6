"""Subcommands of the tinygrad-bn command line; each module: HELP, add_arguments, run."""
