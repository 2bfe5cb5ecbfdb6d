"""The `emotion-worker` command line run in-process, as a user would type it (fast: no interpreter
start-up, no re-import of onnxruntime per call)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from worker.cli import app


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@contextmanager
def _cwd(path: Path | None) -> Iterator[None]:
    before = Path.cwd()
    if path is not None:
        os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def run_cli(*args: str, stdin: str | bytes | None = None, env: Mapping[str, str] | None = None,
            cwd: Path | None = None) -> CliResult:
    """Run `emotion-worker ARGS` in this process. EMOTION_WORKER_* variables of the test process are
    hidden unless `env` sets them. A Python exception escaping a command is re-raised: a user would
    have seen a traceback."""
    hidden = {k: None for k in os.environ if k.startswith("EMOTION_WORKER_")}
    runner = CliRunner(env={**hidden, **(env or {})})
    with _cwd(cwd):
        result = runner.invoke(app, list(args), input=stdin, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return CliResult(result.exit_code, result.stdout, result.stderr)
