"""`emotion-worker replay-dead-letters`: operating on a running deployment's topics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from worker.cli.app import app
from worker.cli.options import ConfigOpt, settings_for


@app.command("replay-dead-letters")
def replay_dead_letters(
    config: ConfigOpt = None,
    error_class: Annotated[list[str] | None, typer.Option(
        "--error-class", help="Replay only this error class (repeatable; default: every class)")] = None,
    since: Annotated[str | None, typer.Option(help="Only dead letters written at or after this time "
                                               "(ISO 8601, e.g. 2026-12-01T10:00:00Z, or epoch ms)")] = None,
    until: Annotated[str | None, typer.Option(help="Only dead letters written before this time")] = None,
    from_offset: Annotated[list[str] | None, typer.Option(
        "--from-offset", help="PARTITION:OFFSET to start that partition at (repeatable; default: where this "
                              "replay group stopped, else the beginning)")] = None,
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="Read the whole topic, not from where "
                                                                          "this replay group stopped")] = False,
    source: Annotated[str | None, typer.Option("--from", help="Dead-letter topic (default: kafka.dead_letter_topic)")
                      ] = None,
    target: Annotated[str | None, typer.Option("--to", help="Topic to replay into (default: kafka.input_topic)")
                      ] = None,
    group: Annotated[str | None, typer.Option(help="The replay's consumer group (default: <kafka.group_id>-replay)")
                     ] = None,
    max_replays: Annotated[int, typer.Option(help="Skip records already replayed this many times")] = 3,
    chunk: Annotated[int, typer.Option(help="Records per produce-acknowledge-commit round")] = 500,
    rate: Annotated[float, typer.Option(help="Records produced per second at most (0: no limit)")] = 0.0,
    idle_timeout: Annotated[float, typer.Option(help="Stop when nothing new came for this many seconds")] = 5.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count by error class and show samples; produce "
                                                            "and commit nothing")] = False,
    progress: Annotated[bool, typer.Option(help="Progress bar on stderr")] = True,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the summary as JSON")] = None,
) -> None:
    """Re-produce dead letters' original records (after fixing their cause), at least once.

    Exit 0 when every selected record was replayed, 1 when some were not (loop guard, not
    acknowledged, interrupted), 2 on a usage or connection error.
    """
    import signal
    import threading

    import orjson

    from worker.observe.logs import setup_logging
    from worker.ops.replay import Replay, ReplayOptions, format_summary
    from worker.ops.when import parse_offsets, parse_time
    from worker.stream.kafka_conf import consumer_conf, producer_conf

    setup_logging("WARNING")
    settings = settings_for(config)
    k = settings.kafka
    options = ReplayOptions(
        source_topic=source or k.dead_letter_topic, target_topic=target or k.input_topic,
        group_id=group or f"{k.group_id}-replay", error_classes=frozenset(error_class or ()),
        since_ms=parse_time(since), until_ms=parse_time(until), from_beginning=from_beginning,
        start_offsets=parse_offsets(from_offset or []),
        max_replays=max_replays, dry_run=dry_run, chunk=chunk, rate=rate, idle_timeout_s=idle_timeout)
    # Dead letters live where results go; replayed records go where input comes from.
    dlq_side = k.model_copy(update={"bootstrap_servers": k.output_bootstrap_servers or k.bootstrap_servers})
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())  # finish the chunk in hand, commit it, stop
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    summary = Replay(options, consumer_conf(dlq_side), producer_conf(k), stop).run(progress=progress)
    typer.echo(format_summary(summary, dry_run))
    if json_out is not None:
        json_out.write_bytes(orjson.dumps(summary.as_dict(), option=orjson.OPT_INDENT_2))
    raise typer.Exit(0 if summary.complete else 1)
