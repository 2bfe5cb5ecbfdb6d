"""`emotion-worker run`, `demo` and `produce-samples`: the worker and its local try-out."""

from __future__ import annotations

from typing import Annotated

import typer

from worker.cli.app import app
from worker.cli.options import ConfigOpt, settings_for

RateOpt = Annotated[float, typer.Option(min=0.0, help="Sample chat messages produced per second (0: no limit)")]
TimeoutOpt = Annotated[float, typer.Option(min=0.1, max=600.0, help="Seconds to wait for the brokers' first "
                                                                    "answer")]


@app.command()
def run(config: ConfigOpt = None) -> None:
    """Consume the input topic, classify, publish results and dead letters, commit.

    SIGTERM or SIGINT stops polling, drains in-flight messages, flushes, commits and exits within
    shutdown_timeout_s. Exit status: 0 stopped cleanly (all consumed was published and committed);
    1 stopped with work unfinished or uncommitted (redone after a restart: nothing is lost);
    2 a settings or usage error (one line); 3 a fatal Kafka consumer error ended the run.
    """
    from worker.app import run_worker

    raise typer.Exit(run_worker(settings_for(config), config_path=config))


@app.command()
def demo(
    config: ConfigOpt = None,
    seconds: Annotated[float, typer.Option(min=0.0, help="Stop after this long (0: until Ctrl-C)")] = 30.0,
    rate: RateOpt = 5.0,
) -> None:
    """Start a local broker, the worker and a producer of sample chat lines; print results live."""
    from worker.devtools.demo import run_demo

    raise typer.Exit(run_demo(settings_for(config), seconds=seconds, rate=rate))


@app.command("produce-samples")
def produce_samples_cmd(
    config: ConfigOpt = None,
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers (default: "
                                                  "kafka.bootstrap_servers)")] = None,
    topic: Annotated[str | None, typer.Option(help="Topic (default: kafka.input_topic)")] = None,
    rate: RateOpt = 5.0,
    count: Annotated[int, typer.Option(min=0, help="Stop after this many messages (0: until Ctrl-C)")] = 0,
    timeout: TimeoutOpt = 10.0,
) -> None:
    """Produce sample chat messages (every 25th broken on purpose) to the input topic.

    Takes the cluster, topic and client properties (SASL, TLS, ...) from the settings like every
    command; --bootstrap and --topic override them. Ctrl-C stops; then it says what was sent.
    Exit 0 when every message was acknowledged, 1 when some were not, 2 on a usage or connection
    error.
    """
    from worker.devtools.samples import input_producer_conf, produce_samples
    from worker.errors import WorkerError
    from worker.observe.logs import setup_logging
    from worker.ops.brokers import ensure_reachable
    from worker.ops.signals import stop_on_signals

    setup_logging("WARNING")
    settings = settings_for(config)
    k = settings.kafka
    k = k.model_copy(update={"bootstrap_servers": bootstrap or k.bootstrap_servers,
                             "input_topic": topic or k.input_topic})
    conf = input_producer_conf(k)
    metadata = ensure_reachable(conf, timeout_s=timeout)
    if k.input_topic not in metadata.topics:
        raise WorkerError(f"topic {k.input_topic} does not exist on {k.bootstrap_servers}: create it, or name "
                          "another with --topic or kafka.input_topic")
    pace = f"{rate:g} per second" if rate > 0 else "as fast as possible"
    typer.echo(f"producing to {k.input_topic} on {k.bootstrap_servers}, {pace}"
               + (f", {count} messages" if count else "; Ctrl-C stops"), err=True)
    with stop_on_signals() as stop:
        report = produce_samples(conf, k.input_topic, rate=rate, count=count, stop=stop)
    typer.echo(report.summary())
    problems = report.problems()
    if problems:
        typer.echo(f"error: {problems}", err=True)
        raise typer.Exit(1)
