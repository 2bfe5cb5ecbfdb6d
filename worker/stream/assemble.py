"""Build the stream side from settings: the one place that reads `Settings` for it. Each part gets
its own small frozen options object (`*_options` below); the parts never see `Settings`.

Nothing is started here: `Stream.start` (worker.stream.lifecycle) starts, in order, what this builds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, Producer

from worker.config import Settings
from worker.observe.health import Health
from worker.observe.metrics import Metrics
from worker.stream.consumer_loop import ConsumerLoop, KafkaConsumer, LoopOptions, OnCommit
from worker.stream.inference import Classifier
from worker.stream.kafka_conf import consumer_conf, max_message_bytes, producer_conf, transactional_producer_conf
from worker.stream.lag import lag_reporter
from worker.stream.lifecycle import Stream, StreamOptions
from worker.stream.missing_topics import MissingTopics
from worker.stream.offsets import OffsetTracker
from worker.stream.outputs import OutputOptions, Outputs, Sender, produce_failure_reporter
from worker.stream.processing import Processing, ProcessingOptions
from worker.stream.publish import Publisher
from worker.stream.transactions import TransactionalPublisher

REVOKE_DRAIN_S = 10.0  # longest a revoke waits for the partitions' in-flight work (at most the shutdown timeout)


def loop_options(settings: Settings) -> LoopOptions:
    k = settings.kafka
    return LoopOptions(input_topic=k.input_topic, max_in_flight=k.max_in_flight,
                       commit_interval_s=k.commit_interval_ms / 1000,
                       revoke_timeout_s=min(REVOKE_DRAIN_S, settings.shutdown_timeout_s))


def processing_options(settings: Settings) -> ProcessingOptions:
    i, b = settings.input, settings.batching
    return ProcessingOptions(text_field=i.text_field, id_field=i.id_field, max_value_bytes=i.max_value_bytes,
                             max_batch_size=b.max_batch_size, max_wait_s=b.max_wait_ms / 1000,
                             concurrent_batches=b.concurrent_batches,
                             max_batch_s=b.max_batch_ms / 1000 if b.max_batch_ms else None)


def output_options(settings: Settings) -> OutputOptions:
    k, o = settings.kafka, settings.output
    return OutputOptions(output_topic=k.output_topic, dead_letter_topic=k.dead_letter_topic, scores=o.scores,
                         decimals=o.decimals, max_dead_letter_bytes=max_message_bytes(k))


def assemble(settings: Settings, classifier: Classifier, metrics: Metrics, health: Health, *,
             make_consumer: Callable[[OnCommit], KafkaConsumer] | None = None,
             sender: Sender | None = None,
             make_producer: Callable[[dict[str, Any]], Producer] = Producer) -> Stream:
    """The stream side, built and not started. `make_consumer(on_commit)`, `sender` (at-least-once)
    and `make_producer(conf)` replace the real Kafka clients (in-process tests). kafka.delivery
    exactly_once: the publisher is transactional and the loop commits through it."""
    k = settings.kafka
    tracker = OffsetTracker()
    missing = MissingTopics(k.input_topic, k.bootstrap_servers, health, output_servers=k.output_bootstrap_servers)
    on_failure = missing.reporting(produce_failure_reporter(metrics, health))
    transactions: TransactionalPublisher | None = None
    if k.delivery == "exactly_once":
        sender = transactions = TransactionalPublisher(
            transactional_producer_conf(k), metrics, on_failure=on_failure,
            make_producer=make_producer)
    elif sender is None:
        sender = Publisher(producer_conf(k), on_failure=on_failure,
                           make_producer=make_producer)
    outputs = Outputs(output_options(settings), sender, classifier.identity, metrics,
                      acknowledge=tracker.acknowledge, wanted=tracker.is_current)
    processing = Processing(processing_options(settings), classifier, outputs, metrics, wanted=tracker.is_current)
    if make_consumer is None:
        def make_consumer(on_commit: OnCommit) -> KafkaConsumer:
            return Consumer(consumer_conf(k, on_commit=on_commit, on_stats=lag_reporter(metrics, k.input_topic)))

    loop = ConsumerLoop(make_consumer, processing, tracker, loop_options(settings), metrics, health,
                        transactions=transactions, missing_topics=missing)
    return Stream(loop, processing, sender, tracker, health, StreamOptions(settings.shutdown_timeout_s))
