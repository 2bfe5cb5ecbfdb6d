"""The `emotion-worker` command. One module per group of commands:

- run_cmds: run, demo, produce-samples
- model_cmds: classify, export, evaluate, tune-thresholds
- train_cmds: fine-tune, train-head
- ops_cmds: replay-dead-letters, check, tail
- options: the options and settings loading every command shares
"""

from __future__ import annotations

import importlib
import sys

import typer

from worker.cli.app import app
from worker.errors import WorkerError

__all__ = ["app", "main"]

# Each module registers its commands on import; this order is the order `--help` lists them in.
COMMAND_MODULES = ("run_cmds", "model_cmds", "train_cmds", "ops_cmds")
for _name in COMMAND_MODULES:
    importlib.import_module(f"worker.cli.{_name}")


def main() -> None:
    try:
        app()
    except WorkerError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
