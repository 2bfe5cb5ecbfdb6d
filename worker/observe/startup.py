"""The one line `run` logs at start: which config file, brokers, topics, group, model (and why that
model) and thresholds the worker is using, and where the brokers, topics, group and model were set.
Secrets never appear: Kafka properties are redacted."""

from __future__ import annotations

from worker.config import Settings, config_file_of, origin_of, redact
from worker.engine.engine import Engine


def _origin(settings: Settings, field: str) -> str:
    """'<value> (default)', '<value> from env EMOTION_WORKER_MODEL__HEAD', '<value> from file /x/w.yaml'."""
    value = getattr(settings.model, field)
    origin = str(origin_of(settings, ("model", field)))
    return f"{value} (default)" if origin == "default" else f"{value} from {origin}"


def _from(settings: Settings, field: str) -> str:
    """' from env EMOTION_WORKER_KAFKA__GROUP_ID', ' from file /x/w.yaml', '' for a default."""
    origin = str(origin_of(settings, ("kafka", field)))
    return "" if origin == "default" else f" from {origin}"


def brokers_part(settings: Settings) -> str:
    """'brokers b:9092 from env EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS' ('(default)' when not set)."""
    k = settings.kafka
    out = k.output_bootstrap_servers
    return (f"brokers {k.bootstrap_servers}{_from(settings, 'bootstrap_servers') or ' (default)'}"
            + (f" (results and dead letters to {out}{_from(settings, 'output_bootstrap_servers')})" if out else ""))


def topics_part(settings: Settings) -> str:
    """'topics a -> b (dead letters c)', then where the topics that are not the defaults came from:
    ', input and output topics from file /x/w.yaml, dead-letter topic from env ...'."""
    k = settings.kafka
    by_origin: dict[str, list[str]] = {}
    for role, field in (("input", "input_topic"), ("output", "output_topic"), ("dead-letter", "dead_letter_topic")):
        where = _from(settings, field)
        if where:
            by_origin.setdefault(where, []).append(role)
    origins = "".join(f", {' and '.join(roles)} topic{'s' if len(roles) > 1 else ''}{where}"
                      for where, roles in by_origin.items())
    return f"topics {k.input_topic} -> {k.output_topic} (dead letters {k.dead_letter_topic}){origins}"


def model_origin(settings: Settings) -> str:
    """Why this model: 'auto (default): ...', or where each name came from."""
    m = settings.model
    if m.embedder == "auto" and m.head == "auto":
        where = "" if m.default_embedder is None else f", embedder {_origin(settings, 'default_embedder')}"
        return ("the default model, all-MiniLM-L6-v2 fine-tuned on GoEmotions (model.embedder and model.head "
                f"auto{where})")
    return f"embedder {_origin(settings, 'embedder')}, head {_origin(settings, 'head')}"


def thresholds_origin(settings: Settings, engine: Engine) -> str:
    model = settings.model
    parts = [str(engine.thresholds_path(model.thresholds_file))]
    if model.threshold is not None:
        parts.append(f"all labels {model.threshold:g}")
    if model.label_thresholds:
        parts.append(f"{len(model.label_thresholds)} per-label overrides")
    return ", ".join(parts)


def startup_line(settings: Settings, engine: Engine) -> str:
    k = settings.kafka
    config_file = config_file_of(settings)
    props = {**{f"common.{p}": v for p, v in redact(k.common).items()},
             **{f"consumer.{p}": v for p, v in redact(k.consumer).items()},
             **{f"producer.{p}": v for p, v in redact(k.producer).items()}}
    return "; ".join([
        f"starting with config {config_file}" if config_file is not None
        else "starting with config none: defaults and environment",
        brokers_part(settings),
        topics_part(settings),
        f"group {k.group_id}{_from(settings, 'group_id')}",
        f"model {engine.identity.embedder} + {engine.identity.head}: {model_origin(settings)}",
        f"thresholds {engine.identity.thresholds_hash} ({thresholds_origin(settings, engine)})",
        "kafka properties " + (", ".join(f"{p}={v}" for p, v in props.items()) or "none"),
    ])
