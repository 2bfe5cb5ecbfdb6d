"""Settings: a YAML file plus environment overrides, validated once at start.

Environment variables override the file: EMOTION_WORKER_<SECTION>__<FIELD>, for example
EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS=broker:9092 or EMOTION_WORKER_BATCHING__MAX_BATCH_SIZE=32.
librdkafka properties pass through in kafka.common / kafka.consumer / kafka.producer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from worker.errors import ConfigError
from worker.labels import LABELS

DEFAULT_CONFIG = Path("config/worker.yaml")
ENV_PREFIX = "EMOTION_WORKER_"
SECRET_MARKERS = ("password", "secret", "token", "key.pem", "private", "credential")

# Properties the worker owns: setting them through pass-through would break its guarantees.
RESERVED_CONSUMER = {"enable.auto.commit", "enable.auto.offset.store", "group.id", "bootstrap.servers"}
RESERVED_PRODUCER = {"enable.idempotence", "acks", "bootstrap.servers", "transactional.id"}


def is_secret(key: str) -> bool:
    k = key.lower()
    return any(marker in k for marker in SECRET_MARKERS)


def redact(props: dict[str, str]) -> dict[str, str]:
    return {k: ("***" if is_secret(k) else v) for k, v in props.items()}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KafkaSettings(Section):
    bootstrap_servers: str = "localhost:9092"
    # Results and dead letters may go to another cluster; by default the input's.
    output_bootstrap_servers: str | None = None
    input_topic: str = "chat-messages"
    output_topic: str = "chat-emotions"
    dead_letter_topic: str = "chat-messages-dlq"
    group_id: str = "emotion-worker"
    assignment_strategy: Literal["cooperative-sticky", "range", "roundrobin"] = "cooperative-sticky"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout_ms: int = Field(45_000, ge=1_000)
    max_poll_interval_ms: int = Field(300_000, ge=1_000)
    commit_interval_ms: int = Field(1_000, ge=10)
    common: dict[str, str] = Field(default_factory=dict)
    consumer: dict[str, str] = Field(default_factory=dict)
    producer: dict[str, str] = Field(default_factory=dict)

    @field_validator("common", "consumer", "producer", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _check(self) -> KafkaSettings:
        problems = []
        for key in self.consumer:
            if key in RESERVED_CONSUMER:
                problems.append(f"kafka.consumer.{key} is set by the worker; use the kafka section fields")
        for key in self.producer:
            if key in RESERVED_PRODUCER:
                problems.append(f"kafka.producer.{key} is set by the worker (idempotent, acks=all)")
        props = {**self.common, **self.consumer, **self.producer}
        protocol = props.get("security.protocol", "plaintext").lower()
        if protocol not in {"plaintext", "ssl", "sasl_plaintext", "sasl_ssl"}:
            problems.append(f"security.protocol {protocol!r} must be plaintext, ssl, sasl_plaintext or sasl_ssl")
        if protocol.startswith("sasl"):
            mech = props.get("sasl.mechanism", props.get("sasl.mechanisms", "GSSAPI")).upper()
            if mech in {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} and not (
                props.get("sasl.username") and props.get("sasl.password")
            ):
                problems.append(f"sasl.mechanism {mech} needs sasl.username and sasl.password")
        if len({self.input_topic, self.output_topic, self.dead_letter_topic}) != 3:
            problems.append("kafka input_topic, output_topic and dead_letter_topic must differ")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class InputSettings(Section):
    text_field: str = "text"
    id_field: str = "id"
    max_value_bytes: int = Field(65_536, ge=16)


class OutputSettings(Section):
    scores: Literal["all", "passing"] = "all"


class ModelSettings(Section):
    # "auto": the default model, all-MiniLM-L6-v2 fine-tuned on GoEmotions (the embedder built by
    # `emotion-worker export --default`, the head shipped in this package). Or a directory or hub
    # id for each, e.g. the reference BAAI/bge-small-en + SamLowe/bge-small-en-go_emotions-classifier-onnx.
    embedder: str = "auto"
    head: str = "auto"
    default_embedder: str = "models/emotion-minilm-onnx"
    max_length: int = Field(512, ge=8, le=8192)
    pooling: Literal["auto", "cls", "mean"] = "auto"
    thresholds_file: str | None = None  # a thresholds.json replacing the head's (re-read on SIGHUP)
    watch_thresholds_s: float = Field(0.0, ge=0.0)  # > 0: also reload when the files change, checked this often
    threshold: float | None = Field(None, ge=0.0, le=1.0)
    label_thresholds: dict[str, float] = Field(default_factory=dict)
    providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"])
    threads: int = Field(2, ge=1, le=256)  # compute threads in all: match the cores the worker may use
    # Model calls run side by side, threads // concurrent_calls cores each. On CPUs 2 beats 1 at every
    # batch size; use 1 with an accelerator (CUDA).
    concurrent_calls: int = Field(2, ge=1, le=64)
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    # onnxruntime session config entries, e.g. {"session.intra_op.allow_spinning": "0"}
    session_config: dict[str, str] = Field(default_factory=dict)
    cache_size: int = Field(4096, ge=0)
    batch_size: int = Field(16, ge=1, le=1024)  # texts per model call, after length sorting
    token_budget: int = Field(4096, ge=64)  # padded tokens per model call
    # The fixed cost of one model call in padded tokens: a micro-batch is cut where padding would
    # cost more than this (24 fits 2 CPU cores; an accelerator's per-call cost is far higher).
    call_overhead_tokens: int = Field(24, ge=0, le=100_000)
    fold_head: bool = True  # run encoder, pooling and head as one ONNX session

    @field_validator("label_thresholds")
    @classmethod
    def _known_labels(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = [k for k in value if k not in LABELS]
        if unknown:
            raise ValueError(f"unknown labels {unknown}; labels are {', '.join(LABELS)}")
        bad = [k for k, v in value.items() if not 0.0 <= v <= 1.0]
        if bad:
            raise ValueError(f"thresholds for {bad} must lie in [0, 1]")
        return value


class BatchingSettings(Section):
    max_batch_size: int = Field(128, ge=1, le=4096)  # messages per micro-batch handed to the engine
    max_wait_ms: int = Field(10, ge=0, le=60_000)
    # Micro-batches in inference at once: with 2, one is prepared or finishing while the other runs.
    concurrent_batches: int = Field(2, ge=1, le=16)
    max_in_flight: int = Field(1000, ge=1)


class ObserveSettings(Section):
    host: str = "0.0.0.0"
    port: int = Field(9108, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = False
    stall_after_s: float = Field(30.0, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    kafka: KafkaSettings = KafkaSettings()
    input: InputSettings = InputSettings()
    output: OutputSettings = OutputSettings()
    model: ModelSettings = ModelSettings()
    batching: BatchingSettings = BatchingSettings()
    observe: ObserveSettings = ObserveSettings()
    shutdown_timeout_s: float = Field(30.0, gt=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _CONFIG_FILE.get("path")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path, deep_merge=True))
        return tuple(sources)


_CONFIG_FILE: dict[str, Path | None] = {"path": None}


def format_validation_error(err: ValidationError) -> str:
    lines = []
    for problem in err.errors():
        where = ".".join(str(p) for p in problem["loc"]) or "settings"
        msg = problem["msg"].removeprefix("Value error, ")
        value = problem.get("input")
        # Echo the offending value only where it cannot be a secret: never for unknown keys (a
        # misspelt password key) or secret-looking fields, never for long strings.
        shown = f" (got {value!r})"
        if (isinstance(value, (dict, list)) or value is None or problem["type"] == "extra_forbidden"
                or is_secret(where) or (isinstance(value, str) and len(value) > 40)):
            shown = ""
        lines.append(f"config: {where}: {msg}{shown}")
    return "\n".join(lines)


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Load the YAML file (explicit path, $EMOTION_WORKER_CONFIG, or config/worker.yaml if present),
    apply environment overrides, validate. Raises ConfigError with one line per problem."""
    if path is None:
        env_path = os.environ.get(f"{ENV_PREFIX}CONFIG")
        path = Path(env_path) if env_path else (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    if path is not None and not path.is_file():
        raise ConfigError(f"config: file {path} not found")
    _CONFIG_FILE["path"] = path
    try:
        return Settings(**overrides)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None
    except ValueError as err:  # YAML syntax and the like
        raise ConfigError(f"config: {path}: {err}") from None
    finally:
        _CONFIG_FILE["path"] = None
