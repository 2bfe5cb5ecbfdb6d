"""Wire a worker together from settings: logging, metrics and health, the engine, the stream side,
and signal handling. `run_worker` is what `emotion-worker run` calls."""

from __future__ import annotations

import faulthandler
import logging
import signal
import threading
from pathlib import Path
from types import FrameType

import orjson

from worker.config import Settings, deprecations, is_secret, redact
from worker.engine.engine import Engine
from worker.model_choice import engine_options
from worker.observe.health import Health, ObserveServer
from worker.observe.logs import setup_logging
from worker.observe.metrics import Metrics
from worker.observe.reachability import brokers_reachable
from worker.observe.startup import startup_line
from worker.providers_check import check_providers

log = logging.getLogger(__name__)


def secrets_of(settings: Settings) -> list[str]:
    k = settings.kafka
    return [v for d in (k.common, k.consumer, k.producer) for key, v in d.items() if is_secret(key) and v]


def load_engine(settings: Settings) -> Engine:
    check_providers(settings)  # a provider this onnxruntime build lacks: one line naming where it was set
    options, description = engine_options(settings.model)
    log.info("model: %s", description)
    engine = Engine(options)
    log.info("model loaded and warmed: hidden %s, pooling %s, thresholds %s, %s", engine.hidden_size,
             engine.identity.pooling, engine.identity.thresholds_hash,
             "head folded into the encoder" if engine.folded is not None else "separate head session")
    return engine


def run_worker(settings: Settings, *, config_path: Path | None = None, stop_event: threading.Event | None = None,
               install_signals: bool = True) -> int:
    """Run until stop_event (or SIGTERM/SIGINT). `config_path` is the file SIGHUP re-reads the
    threshold overrides from (None: $EMOTION_WORKER_CONFIG or config/worker.yaml, as at start)."""
    from worker.stream.kafka_check import check_client_configs

    check_client_configs(settings)  # librdkafka refuses a property: one line each, before the model loads
    check_providers(settings)  # and before the metrics server starts
    from worker.reload import ThresholdReloader
    from worker.stream.assemble import assemble
    from worker.stream.lifecycle import Stream

    setup_logging(settings.observe.log_level, settings.observe.log_json, secrets_of(settings))
    for line in deprecations(settings):
        log.warning("%s", line)
    # First: a port in use (a second worker on this host) ends the run with one line, before the
    # model loads and before any signal handler is installed.
    metrics = Metrics()
    health = Health(settings.observe.stall_after_s)
    server = ObserveServer(settings.observe.host, settings.observe.port, metrics, health)
    k = settings.kafka
    health.brokers_check = lambda: brokers_reachable(k.bootstrap_servers,
                                                     k.output_bootstrap_servers or k.bootstrap_servers)
    stop_event = stop_event if stop_event is not None else threading.Event()
    running: list[Stream] = []
    reloaders: list[ThresholdReloader] = []

    def log_state() -> None:
        if running:
            log.warning("state: %s", orjson.dumps(running[0].describe()).decode())

    def reload_thresholds() -> None:
        if reloaders:
            reloaders[0].reload()
        else:
            log.warning("SIGHUP before the model was loaded: nothing to reload (the thresholds are read at load)")

    if install_signals:
        # Installed first, so a SIGTERM during model loading also ends in a clean exit 0.
        def stop(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: stopping", signal.Signals(signum).name)
            stop_event.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        # `kill -USR1 <pid>` writes every thread's stack to stderr, then logs where every unfinished
        # message is (from a thread: the handler may interrupt the main thread inside a lock).
        def dump_state(_signum: int, _frame: FrameType | None) -> None:
            threading.Thread(target=log_state, name="state-dump", daemon=True).start()

        signal.signal(signal.SIGUSR1, dump_state)
        faulthandler.register(signal.SIGUSR1, all_threads=True, chain=True)

        # `kill -HUP <pid>`: re-read the thresholds, switch between micro-batches.
        def on_hangup(_signum: int, _frame: FrameType | None) -> None:
            threading.Thread(target=reload_thresholds, name="threshold-reload", daemon=True).start()

        signal.signal(signal.SIGHUP, on_hangup)
    server.start()
    log.info("metrics and health on http://%s:%d (/metrics /healthz /readyz)", settings.observe.host, server.port)
    try:
        engine = load_engine(settings)
        metrics.set_model(engine.identity.embedder, engine.identity.head, engine.identity.thresholds_hash,
                          engine.identity.pooling)
        health.model_ready = True
        reloader = ThresholdReloader(engine, metrics, config_path, running=settings)
        reloaders.append(reloader)
        if settings.model.watch_thresholds_s > 0:
            reloader.watch(settings.model.watch_thresholds_s, stop_event)
        if stop_event.is_set():
            return 0
        log.info("%s", startup_line(settings, engine))
        stream = assemble(settings, engine, metrics, health)
        running.append(stream)
        log.debug("kafka properties: common %s, consumer %s, producer %s", redact(k.common), redact(k.consumer),
                  redact(k.producer))
        return stream.run(stop_event)  # the exit status: 0 clean, 1 work left to redo, 3 fatal Kafka error
    finally:
        server.stop()
