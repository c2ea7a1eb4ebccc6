"""Experiments as functions returning results: the paper's MNIST run and its building blocks."""
from .mlp import activation_inputs, build_mlp, evaluate, steps_to_accuracy, train_run
from .mnist_bn import (
    PRESETS,
    PYTORCH_REFERENCE,
    format_summary,
    load_results,
    run_experiment,
    save_results,
    summarize,
    write_outputs,
)
from .optional import MissingDependencyError, require

__all__ = ["build_mlp", "train_run", "evaluate", "activation_inputs", "steps_to_accuracy",
           "run_experiment", "summarize", "format_summary", "save_results", "load_results",
           "write_outputs", "PRESETS", "PYTORCH_REFERENCE", "MissingDependencyError", "require"]
