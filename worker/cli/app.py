"""The Typer application every command module registers on. An error the user can fix
(`WorkerError`) ends any command with its one-line message on stderr and exit code 2, whether the
command runs as a process or in-process (tests)."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from worker.errors import WorkerError


class _Commands(TyperGroup):
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except WorkerError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None


app = typer.Typer(cls=_Commands, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Tag Kafka chat streams with GoEmotions emotions, on CPUs.")
