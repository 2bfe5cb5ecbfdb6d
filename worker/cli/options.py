"""Options and settings loading shared by the `emotion-worker` commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from worker.errors import WorkerError

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML settings file "
                                                "(default: $EMOTION_WORKER_CONFIG or config/worker.yaml)")]
EmbedderOpt = Annotated[str | None, typer.Option(help="Embedder: local directory or hub id")]
HeadOpt = Annotated[str | None, typer.Option(help="Head: local directory or hub id")]


def settings_for(config: Path | None, embedder: str | None = None, head: str | None = None) -> Any:
    from worker.config import Origin, load_settings, with_origin

    settings = load_settings(config)
    for option, value in (("--embedder", embedder), ("--head", head)):
        if value is not None:
            settings = with_origin(settings, Origin("option", option), model={option[2:]: value})
    # one given: the other stays as configured, but "auto" only makes sense for both
    if (embedder is None) != (head is None) and "auto" in (settings.model.embedder, settings.model.head):
        raise WorkerError("pass both --embedder and --head (or neither, for the configured/auto model)")
    return settings
