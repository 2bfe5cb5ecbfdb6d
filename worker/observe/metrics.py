"""Prometheus metrics: one registry, names following Prometheus conventions."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from worker.labels import LABELS
from worker.reasons import DEAD_LETTER_REASONS
from worker.version import package_version

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0,
                   10.0, 20.0, 30.0)
TRANSACTION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
INFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.2, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128, 256)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        p = "emotion_worker"
        self.consumed = Counter(f"{p}_messages_consumed", "Messages consumed from the input topic", registry=r)
        self.published = Counter(f"{p}_messages_published", "Results acknowledged on the output topic",
                                 registry=r)
        self.dead_lettered = Counter(f"{p}_messages_dead_lettered",
                                     "Messages acknowledged on the dead-letter topic, by reason", ["reason"],
                                     registry=r)
        self.batch_size = Histogram(f"{p}_batch_size", "Messages per inference micro-batch",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.inference_seconds = Histogram(f"{p}_inference_seconds",
                                           "Inference time per micro-batch, by stage (tokenize, model)",
                                           ["stage"], buckets=INFERENCE_BUCKETS, registry=r)
        self.latency = Histogram(f"{p}_end_to_end_latency_seconds",
                                 "Input message Kafka timestamp to output acknowledgement",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.labels = Counter(f"{p}_labels", "Published messages carrying each label", ["label"], registry=r)
        self.no_label = Counter(f"{p}_no_label_messages", "Published messages with no label passing",
                                registry=r)
        self.lag = Gauge(f"{p}_consumer_lag_messages", "Consumer lag per partition (messages)",
                         ["topic", "partition"], registry=r)
        self.in_flight = Gauge(f"{p}_in_flight_messages", "Consumed messages not yet acknowledged downstream",
                               registry=r)
        self.paused = Gauge(f"{p}_paused_partitions", "Partitions paused for back-pressure", registry=r)
        self.assigned = Gauge(f"{p}_assigned_partitions", "Partitions assigned to this worker", registry=r)
        self.rebalances = Counter(f"{p}_rebalances", "Rebalance events, by kind (assign, revoke, lost)",
                                  ["kind"], registry=r)
        self.redelivered = Counter(f"{p}_messages_redelivered",
                                   "Messages the consumer handed out again in the same assignment (skipped)",
                                   registry=r)
        self.commit_failures = Counter(f"{p}_commit_failures", "Failed offset commits", registry=r)
        self.commits = Counter(f"{p}_commits", "Successful offset commits", registry=r)
        # kafka.delivery exactly_once: each commit is a transaction's (results, dead letters and offsets).
        self.transactions = Counter(f"{p}_transactions", "Kafka transactions ended, by result (committed, aborted)",
                                    ["result"], registry=r)
        self.transaction_seconds = Histogram(f"{p}_transaction_seconds",
                                             "Kafka transaction duration, begin to commit or abort",
                                             buckets=TRANSACTION_BUCKETS, registry=r)
        self.produce_failures = Counter(f"{p}_produce_failures",
                                        "Produce attempts that failed and were retried", ["topic_kind"],
                                        registry=r)
        self.cache_hits = Counter(f"{p}_cache_hits", "Results served from the recent-text cache", registry=r)
        self.ready = Gauge(f"{p}_ready", "1 when the worker is ready (model warm, group joined, output ok)",
                           registry=r)
        self.threshold_reloads = Counter(f"{p}_threshold_reloads", "Threshold reloads (SIGHUP), by result (ok, failed)",
                                         ["result"], registry=r)
        self.info = Info(f"{p}_build", "Version and model identity", registry=r)
        # Initialise every known label value, so each series exists (at 0) from the first scrape.
        for label in LABELS:
            self.labels.labels(label=label)
        for reason in DEAD_LETTER_REASONS:
            self.dead_lettered.labels(reason=reason)
        for stage in ("tokenize", "model"):
            self.inference_seconds.labels(stage=stage)
        for kind in ("assign", "revoke", "lost"):
            self.rebalances.labels(kind=kind)
        for result in ("ok", "failed"):
            self.threshold_reloads.labels(result=result)
        for result in ("committed", "aborted"):
            self.transactions.labels(result=result)
        for topic_kind in ("output", "dead_letter"):
            self.produce_failures.labels(topic_kind=topic_kind)
        self.info.info({"version": package_version()})

    def set_model(self, embedder: str, head: str, thresholds_hash: str, pooling: str) -> None:
        self.info.info({"version": package_version(), "embedder": embedder, "head": head,
                        "thresholds_hash": thresholds_hash, "pooling": pooling})
