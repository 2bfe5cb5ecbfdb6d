"""The installed version of the worker, read once from its distribution's metadata."""

from __future__ import annotations

from functools import cache
from importlib import metadata

DISTRIBUTION = "emotion-stream-worker"


@cache
def package_version() -> str:
    """The version of the installed `emotion-stream-worker` distribution (pyproject.toml's), or
    `worker.__version__` when the package runs from a source tree that was never installed."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        from worker import __version__

        return f"{__version__}+uninstalled"
