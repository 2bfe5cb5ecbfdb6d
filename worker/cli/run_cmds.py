"""`emotion-worker run`, `demo` and `produce-samples`: the worker and its local try-out."""

from __future__ import annotations

from typing import Annotated

import typer

from worker.cli.app import app
from worker.cli.options import ConfigOpt, settings_for


@app.command()
def run(config: ConfigOpt = None) -> None:
    """Consume the input topic, classify, publish results and dead letters, commit."""
    from worker.app import run_worker

    raise typer.Exit(run_worker(settings_for(config), config_path=config))


@app.command()
def demo(
    config: ConfigOpt = None,
    seconds: Annotated[float, typer.Option(help="Stop after this long (0: until Ctrl-C)")] = 30.0,
    rate: Annotated[float, typer.Option(help="Sample chat messages produced per second")] = 5.0,
) -> None:
    """Start a local broker, the worker and a producer of sample chat lines; print results live."""
    from worker.devtools.demo import run_demo

    raise typer.Exit(run_demo(settings_for(config), seconds=seconds, rate=rate))


@app.command("produce-samples")
def produce_samples_cmd(
    bootstrap: Annotated[str, typer.Option(help="Kafka bootstrap servers")] = "localhost:9092",
    topic: Annotated[str, typer.Option(help="Input topic")] = "chat-messages",
    rate: Annotated[float, typer.Option(help="Messages per second")] = 5.0,
) -> None:
    """Produce sample chat messages (and an occasional broken one) until stopped."""
    import signal
    import threading

    from worker.devtools.demo import produce_samples

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    produce_samples(bootstrap, topic, rate, stop)
