"""The `emotion-worker` command. One module per group of commands:

- run_cmds: run, demo, produce-samples
- model_cmds: classify, export, evaluate, tune-thresholds
- train_cmds: fine-tune, train-head
- ops_cmds: replay-dead-letters
- options: the options and settings loading every command shares
"""

from __future__ import annotations

import sys

import typer

# Imported for their side effect: each registers its commands; the order is the help's order.
from worker.cli import run_cmds  # noqa: I001
from worker.cli import model_cmds, train_cmds, ops_cmds  # noqa: I001
from worker.cli.app import app
from worker.errors import WorkerError

__all__ = ["app", "main", "model_cmds", "ops_cmds", "run_cmds", "train_cmds"]


def main() -> None:
    try:
        app()
    except WorkerError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
