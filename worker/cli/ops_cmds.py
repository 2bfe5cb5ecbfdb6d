"""`emotion-worker replay-dead-letters`: operating on a running deployment's topics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from worker.cli.app import app
from worker.cli.options import ConfigOpt, settings_for
from worker.errors import WorkerError


@app.command("replay-dead-letters")
def replay_dead_letters(
    config: ConfigOpt = None,
    error_class: Annotated[list[str] | None, typer.Option(
        "--error-class", help="Replay only this error class (repeatable; default: every class)")] = None,
    since: Annotated[str | None, typer.Option(help="Only dead letters written at or after this time "
                                               "(ISO 8601, e.g. 2026-12-01T10:00:00Z, UTC when it has no zone, or "
                                               "epoch ms); the replay group passes over earlier ones")] = None,
    until: Annotated[str | None, typer.Option(help="Only dead letters written before this time (as --since); the "
                                               "replay group stops at the first later one, where the next run "
                                               "starts")] = None,
    from_offset: Annotated[list[str] | None, typer.Option(
        "--from-offset", help="PARTITION:OFFSET to start that partition at (repeatable; default: where this "
                              "replay group stopped, else the beginning)")] = None,
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="Read the whole topic, not from where "
                                                                          "this replay group stopped")] = False,
    source: Annotated[str | None, typer.Option("--from", help="Dead-letter topic (default: kafka.dead_letter_topic)")
                      ] = None,
    target: Annotated[str | None, typer.Option("--to", help="Topic to replay into (default: kafka.input_topic)")
                      ] = None,
    group: Annotated[str | None, typer.Option(help="The replay's consumer group, where its position is kept "
                                               "(default: <kafka.group_id>-replay for every class, "
                                               "<kafka.group_id>-replay-<class>[+<class>...] for --error-class)")
                     ] = None,
    max_replays: Annotated[int, typer.Option(min=1, max=1000, help="Skip records already replayed this many times")
                           ] = 3,
    chunk: Annotated[int, typer.Option(min=1, max=100_000, help="Records per produce-acknowledge-commit round")
                     ] = 500,
    rate: Annotated[float, typer.Option(min=0.0, help="Records produced per second at most (0: no limit)")] = 0.0,
    idle_timeout: Annotated[float, typer.Option(min=0.1, max=3600.0, help="Stop when nothing new came for this "
                                                                          "many seconds")] = 5.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count by error class and show samples; produce "
                                                            "and commit nothing")] = False,
    timeout: Annotated[float, typer.Option(min=0.1, max=600.0, help="Seconds to wait for the brokers' first "
                                                                    "answer")] = 10.0,
    progress: Annotated[bool, typer.Option(help="Progress bar on stderr")] = True,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the summary as JSON")] = None,
) -> None:
    """Re-produce dead letters' original records (after fixing their cause), at least once.

    Its position on the dead-letter topic is kept by its own consumer group, one per selection:
    `<group_id>-replay` for every class, `<group_id>-replay-<class>[+<class>...]` for --error-class,
    so replaying one class never moves another selection past dead letters it did not select. The
    summary counts what was read but not selected, by class.

    A dead letter whose value was cut (it did not fit the dead-letter topic) is never re-produced:
    it is counted as not replayable. Exit 0 when every selected record was replayed, 1 when some
    were not (not replayable, loop guard, not acknowledged, interrupted), 2 on a usage error or when
    the brokers or topics cannot be reached.
    """
    import orjson

    from worker.observe.logs import setup_logging
    from worker.ops.replay import ReplayOptions, default_group, format_summary, open_replay
    from worker.ops.signals import stop_on_signals
    from worker.ops.when import parse_error_classes, parse_offsets, parse_window

    setup_logging("WARNING")
    classes = parse_error_classes(error_class or [])
    since_ms, until_ms = parse_window(since, until)
    start_offsets = parse_offsets(from_offset or [])
    if json_out is not None and not json_out.absolute().parent.is_dir():
        raise WorkerError(f"--json {json_out}: folder {json_out.absolute().parent} does not exist")
    settings = settings_for(config)
    k = settings.kafka
    options = ReplayOptions(
        source_topic=source or k.dead_letter_topic, target_topic=target or k.input_topic,
        group_id=group or default_group(k.group_id, classes), error_classes=classes,
        since_ms=since_ms, until_ms=until_ms,
        from_beginning=from_beginning, start_offsets=start_offsets,
        max_replays=max_replays, dry_run=dry_run, chunk=chunk, rate=rate, idle_timeout_s=idle_timeout)
    # Ctrl-C or SIGTERM: the chunk in hand is finished and committed, then the replay stops.
    with stop_on_signals() as stop, open_replay(k, options, stop, reach_timeout_s=timeout) as replay:
        summary = replay.run(progress=progress)
    typer.echo(format_summary(summary, dry_run, options))
    if json_out is not None:
        doc = {**summary.as_dict(), "group": options.group_id}
        json_out.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    raise typer.Exit(0 if summary.complete else 1)


@app.command()
def check(
    config: ConfigOpt = None,
    timeout: Annotated[float, typer.Option(min=0.1, max=600.0, help="Seconds to wait for each cluster's answer")
                       ] = 10.0,
    load_model: Annotated[bool, typer.Option("--load-model", help="Also load the model and classify one text "
                                                                 "(slow; by default only its files are checked)")
                          ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document instead of the sections")] = False,
) -> None:
    """Check a deployment: settings and their origin, brokers, topics, the group's lag, the model.

    Prints the effective settings (secrets masked) and where each came from (file, environment,
    default); whether librdkafka accepts the client properties; the brokers that answered; the
    input, output and dead-letter topics with their partitions; the consumer group's members and
    lag per partition; which model would load and whether its files are there. Exit 0 when all is
    well, 1 when a problem was found, 2 on a usage error or when no broker answers (--json prints
    its document then too, the problem in it).
    """
    from worker.observe.logs import setup_logging
    from worker.ops.check import run_check

    setup_logging("WARNING")
    report = run_check(settings_for(config), timeout_s=timeout, load_model=load_model,
                       emit=None if as_json else typer.echo)
    if as_json:
        typer.echo(report.json())
    if report.unreachable is not None:  # after the report: --json still prints its document
        raise WorkerError(report.unreachable)
    raise typer.Exit(1 if report.problems else 0)


@app.command()
def tail(
    config: ConfigOpt = None,
    dead_letters: Annotated[bool, typer.Option("--dead-letters", help="Read the dead-letter topic instead of the "
                                                                      "results")] = False,
    topic: Annotated[str | None, typer.Option(help="Topic (default: kafka.output_topic, or "
                                               "kafka.dead_letter_topic with --dead-letters)")] = None,
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="Start at the first record of every "
                                                                          "partition")] = False,
    count: Annotated[int | None, typer.Option(min=1, help="The last N records (default 10); with "
                                              "--from-beginning, at most the first N (default: all)")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new records until Ctrl-C")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Each record whole, as one JSON line")] = False,
    timeout: Annotated[float, typer.Option(min=0.1, max=600.0, help="Seconds to wait for the brokers' first "
                                                                    "answer")] = 10.0,
) -> None:
    """Print results (or dead letters) as they are on the topic: one line per record.

    A result line: time, partition:offset, id, labels with their scores, the worker's processing
    time (and the end-to-end time). A dead letter: its error class, where it came from, the reason
    and a preview of the value. Joins no consumer group and commits nothing. Exit 0, or 2 on a
    usage or connection error.
    """
    from worker.observe.logs import setup_logging
    from worker.ops.signals import stop_on_signals
    from worker.ops.tail import Tail, TailOptions, reader_conf

    setup_logging("WARNING")
    k = settings_for(config).kafka
    name = topic or (k.dead_letter_topic if dead_letters else k.output_topic)
    options = TailOptions(name, dead_letters=dead_letters, from_beginning=from_beginning, follow=follow,
                          count=count, as_json=as_json)
    reader = Tail(reader_conf(k), options, typer.echo)
    with stop_on_signals() as stop:
        shown = reader.run(stop, timeout_s=timeout)
    if not shown and not follow:
        typer.echo(f"no records on {name}", err=True)
    if reader.unfinished:
        typer.echo(f"stopped waiting for the end of partitions {', '.join(map(str, reader.unfinished))} of "
                   f"{name} after {options.end_wait_s:g} s without news", err=True)
