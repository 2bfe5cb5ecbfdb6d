"""Build the stream side from settings: the real Kafka consumer and publisher, the offset tracker,
processing (decode, batch, infer, release, outputs) and the consumer loop that drives them."""

from __future__ import annotations

from confluent_kafka import Consumer

from worker.config import Settings
from worker.observe.health import Health
from worker.observe.metrics import Metrics
from worker.stream.consumer_loop import ConsumerLoop, KafkaConsumer, LoopOptions, commit_reporter
from worker.stream.inference import Classifier
from worker.stream.kafka_conf import consumer_conf, producer_conf
from worker.stream.lag import lag_reporter
from worker.stream.offsets import OffsetTracker
from worker.stream.outputs import Outputs, Sender, produce_failure_reporter
from worker.stream.processing import Processing
from worker.stream.publish import Publisher


def assemble(settings: Settings, classifier: Classifier, metrics: Metrics, health: Health, *,
             consumer: KafkaConsumer | None = None, sender: Sender | None = None) -> ConsumerLoop:
    """The consumer loop over running publisher and inference threads (idle until messages come).
    `consumer` and `sender` replace the real Kafka clients (in-process tests)."""
    k = settings.kafka
    tracker = OffsetTracker()
    if sender is None:
        publisher = Publisher(producer_conf(k), on_failure=produce_failure_reporter(metrics, health))
        health.watch(publisher.start().thread)
        sender = publisher
    health.output_check = sender.healthy
    outputs = Outputs(settings, sender, classifier.identity, metrics, acknowledge=tracker.acknowledge,
                      is_current=tracker.is_current)
    processing = Processing(settings, classifier, outputs, tracker, metrics)
    for thread in processing.start():
        health.watch(thread)
    if consumer is None:
        consumer = Consumer(consumer_conf(k, on_commit=commit_reporter(metrics),
                                          on_stats=lag_reporter(metrics, k.input_topic)))
    return ConsumerLoop(consumer, processing, tracker, LoopOptions.from_settings(settings), metrics, health)
