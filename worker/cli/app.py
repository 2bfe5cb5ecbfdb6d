"""The Typer application every command module registers on. An error the user can fix
(`WorkerError`) or a usage error (a misspelt option, a value out of range) ends any command with
one line on stderr and exit code 2, whether the command runs as a process or in-process (tests).

Help is rendered by Click's plain formatter (`rich_markup_mode=None`): Typer 0.29's Rich panels
print a value type for every option, so a switch such as `--dry-run` (or `--help` itself) read
`--dry-run <bool>` although it takes no value; the plain formatter shows switches as switches and
`--x / --no-x` pairs as such, and does not cut long option names at 80 columns."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer._click.exceptions import NoArgsIsHelpError, UsageError
from typer.core import TyperGroup

from worker.errors import WorkerError


def _usage_error(exc: UsageError) -> typer.Exit:
    """A usage error as one line (Click prints three: usage, hint, error), pointing at the help."""
    where = exc.ctx.command_path if exc.ctx is not None else "emotion-worker"
    typer.echo(f"error: {exc.format_message()} (see: {where} --help)", err=True)
    return typer.Exit(2)


class _Commands(TyperGroup):
    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except NoArgsIsHelpError:
            raise
        except UsageError as exc:
            raise _usage_error(exc) from None

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except WorkerError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except NoArgsIsHelpError:
            raise
        except UsageError as exc:
            raise _usage_error(exc) from None

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """Each command's first sentence in full, wrapped (Click cuts it at the line's end with "...")."""
        rows = [(name, cmd.get_short_help_str(limit=200)) for name in self.list_commands(ctx)
                if (cmd := self.get_command(ctx, name)) is not None and not cmd.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


app = typer.Typer(cls=_Commands, add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="Tag Kafka chat streams with GoEmotions emotions, on CPUs.")


def _print_version(value: bool) -> None:
    if value:
        from worker.version import package_version

        typer.echo(f"emotion-worker {package_version()}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Tag Kafka chat streams with GoEmotions emotions, on CPUs."""
