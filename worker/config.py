"""Settings: a YAML file plus environment overrides, validated once at start, one line per problem.

Environment variables override the file: EMOTION_WORKER_<SECTION>__<FIELD>, for example
EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS=broker:9092 or EMOTION_WORKER_BATCHING__MAX_BATCH_SIZE=32.
librdkafka properties pass through in kafka.common / kafka.consumer / kafka.producer (librdkafka
itself checks them at start: worker.stream.kafka_conf.check_client_configs). Every value remembers
where it came from (`effective_settings`), so errors name the file line or the variable.
"""

from __future__ import annotations

import difflib
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from worker.engine.options import ENGINE_DEFAULTS
from worker.errors import ConfigError
from worker.labels import LABELS
from worker.settings_sources import (
    DEFAULT,
    Path_,
    deep_merge,
    file_origins,
    read_environment,
    read_file,
)
from worker.settings_sources import ENV_PREFIX as ENV_PREFIX
from worker.settings_sources import Origin as Origin

DEFAULT_CONFIG = Path("config/worker.yaml")
SECRET_MARKERS = ("password", "secret", "token", "key.pem", "private", "credential", "oauthbearer.config")

# Properties the worker owns: setting them through pass-through would break its guarantees.
RESERVED_CONSUMER = {"enable.auto.commit", "enable.auto.offset.store", "group.id", "bootstrap.servers"}
RESERVED_PRODUCER = {"enable.idempotence", "acks", "bootstrap.servers", "transactional.id"}


def is_secret(key: str) -> bool:
    k = key.lower()
    return any(marker in k for marker in SECRET_MARKERS)


def redact(props: dict[str, str]) -> dict[str, str]:
    return {k: ("***" if is_secret(k) else v) for k, v in props.items()}


def _choices(annotation: Any) -> tuple[str, ...]:
    annotation = next((a for a in typing.get_args(annotation) if typing.get_origin(a) is Literal), annotation)
    if typing.get_origin(annotation) is Literal:
        return tuple(a for a in typing.get_args(annotation) if isinstance(a, str))
    return ()


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _any_case(cls, value: Any, info: ValidationInfo) -> Any:
        """A choice in any case: `log_level: debug`, `assignment_strategy: Range`."""
        if isinstance(value, str) and info.field_name is not None:
            for choice in _choices(cls.model_fields[info.field_name].annotation):
                if choice.lower() == value.strip().lower():
                    return choice
        return value


class KafkaSettings(Section):
    bootstrap_servers: str = Field("localhost:9092", min_length=1)
    # Results and dead letters may go to another cluster; by default the input's.
    output_bootstrap_servers: str | None = None
    input_topic: str = Field("chat-messages", min_length=1)
    output_topic: str = Field("chat-emotions", min_length=1)
    dead_letter_topic: str = Field("chat-messages-dlq", min_length=1)
    group_id: str = Field("emotion-worker", min_length=1)  # librdkafka aborts the process on ""
    assignment_strategy: Literal["cooperative-sticky", "range", "roundrobin"] = "cooperative-sticky"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout_ms: int = Field(45_000, ge=1_000)
    max_poll_interval_ms: int = Field(300_000, ge=1_000)
    commit_interval_ms: int = Field(1_000, ge=10)
    # Consumed but unacknowledged messages; at this bound the partitions pause (resume at half).
    max_in_flight: int = Field(1000, ge=1)
    # at_least_once: input offsets committed once their results are acknowledged (a crash redoes the
    # uncommitted). exactly_once: results, dead letters and input offsets in one Kafka transaction per
    # commit interval; readers of the output need isolation.level=read_committed (docs/exactly-once.md).
    delivery: Literal["at_least_once", "exactly_once"] = "at_least_once"
    # exactly_once: this worker's transactional.id; unset: <group_id>-<hostname>-<pid>. One per running
    # worker, best kept across its restarts (e.g. the pod's name): a restart then aborts what it left open.
    transactional_id: str | None = Field(None, min_length=1)
    common: dict[str, str] = Field(default_factory=dict)
    consumer: dict[str, str] = Field(default_factory=dict)
    producer: dict[str, str] = Field(default_factory=dict)

    @field_validator("common", "consumer", "producer", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items()}
        return value

    @field_validator("delivery", mode="before")
    @classmethod
    def _delivery_spelling(cls, value: Any) -> Any:
        """`exactly-once`, `Exactly_Once`: the same choice."""
        return value.strip().lower().replace("-", "_") if isinstance(value, str) else value

    @field_validator("delivery")
    @classmethod
    def _one_cluster(cls, value: str, info: ValidationInfo) -> str:
        """exactly_once: one transaction holds the results and the input offsets: one cluster."""
        out, servers = info.data.get("output_bootstrap_servers"), info.data.get("bootstrap_servers")
        if value == "exactly_once" and out is not None and out != servers:
            raise ValueError("exactly_once needs kafka.output_bootstrap_servers unset (one transaction holds the "
                             "results and the input offsets, so they share one cluster); or use at_least_once")
        return value

    @model_validator(mode="after")
    def _check(self) -> KafkaSettings:
        problems = []
        for key in self.consumer:
            if key in RESERVED_CONSUMER:
                problems.append(f"kafka.consumer.{key} is set by the worker; use the kafka section fields")
        for key in self.producer:
            if key == "transactional.id":
                problems.append("kafka.producer.transactional.id is set by the worker; use kafka.transactional_id")
            elif key in RESERVED_PRODUCER:
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
    decimals: int = Field(4, ge=1, le=17)  # scores rounded to this many decimals (17: full precision)


class ModelSettings(Section):
    # "auto": the default model, all-MiniLM-L6-v2 fine-tuned on GoEmotions (the embedder built by
    # `emotion-worker export --default`, the head shipped in this package). Or a directory or hub
    # id for each, e.g. the reference BAAI/bge-small-en + SamLowe/bge-small-en-go_emotions-classifier-onnx.
    embedder: str = "auto"
    head: str = "auto"
    # What "auto" loads. None: where `emotion-worker export --default` builds it, whatever the current
    # directory: the source checkout's models/emotion-minilm-onnx, else
    # $XDG_CACHE_HOME (~/.cache)/emotion-worker/models/emotion-minilm-onnx (worker/default_model.py).
    default_embedder: str | None = None
    # The default model's precision (embedder and head auto): fp32, or its int8-quantised embedder
    # (`export --default --int8`, beside the fp32 one) with thresholds tuned for it. fp32 by default: on
    # GoEmotions dev int8 scores 0.008 lower macro F1 (held-out halves), over the 0.005 allowed (docs/models.md).
    # Explicit embedder directories are used as given.
    precision: Literal["fp32", "int8"] = "fp32"
    # A head is refused with an embedder it was not trained on (worker/model_pairing.py); true: a warning.
    allow_mismatch: bool = False
    # Defaults of the engine's options are the engine's (worker/engine/options.py), written once.
    max_length: int = Field(ENGINE_DEFAULTS.max_length, ge=8, le=8192)
    pooling: Literal["auto", "cls", "mean"] = "auto"
    thresholds_file: str | None = None  # a thresholds.json replacing the head's (re-read on SIGHUP)
    watch_thresholds_s: float = Field(0.0, ge=0.0)  # > 0: also reload when the files change, checked this often
    threshold: float | None = Field(ENGINE_DEFAULTS.threshold, ge=0.0, le=1.0)
    label_thresholds: dict[str, float] = Field(default_factory=dict)
    providers: list[str] = Field(default_factory=lambda: list(ENGINE_DEFAULTS.runtime.providers))
    # Compute threads in all: match the cores the worker may use.
    threads: int = Field(ENGINE_DEFAULTS.threads, ge=1, le=256)
    # Model calls run side by side, threads // concurrent_calls cores each. On CPUs 2 beats 1 at every
    # batch size; use 1 with an accelerator (CUDA).
    concurrent_calls: int = Field(ENGINE_DEFAULTS.concurrent_calls, ge=1, le=64)
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    # onnxruntime session config entries, e.g. {"session.intra_op.allow_spinning": "0"}
    session_config: dict[str, str] = Field(default_factory=dict)
    cache_size: int = Field(ENGINE_DEFAULTS.cache_size, ge=0)
    # Texts per model call, after length sorting (batching.max_batch_size is messages per micro-batch).
    call_batch_size: int = Field(ENGINE_DEFAULTS.call_batch_size, ge=1, le=1024)
    batch_size: int | None = Field(None, ge=1, le=1024)  # deprecated: the old name of call_batch_size
    token_budget: int = Field(ENGINE_DEFAULTS.token_budget, ge=64)  # padded tokens per model call
    # The fixed cost of one model call in padded tokens: a micro-batch is cut where padding would
    # cost more than this (24 fits 2 CPU cores; an accelerator's per-call cost is far higher).
    call_overhead_tokens: int = Field(ENGINE_DEFAULTS.call_overhead_tokens, ge=0, le=100_000)
    fold_head: bool = ENGINE_DEFAULTS.fold_head  # run encoder, pooling and head as one ONNX session

    @model_validator(mode="after")
    def _renamed(self) -> ModelSettings:
        if self.batch_size is not None:  # the old name, when set, wins (`deprecations` says so)
            self.call_batch_size = self.batch_size
        return self

    @field_validator("providers", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        # `providers: CUDAExecutionProvider` or "A,B": as a list
        return [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else value

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, value: list[str]) -> list[str]:
        """Names onnxruntime knows (the closest one for a misspelt name). onnxruntime is imported
        only for providers other than the default; whether this build has them is checked before
        the model loads (worker.providers_check.check_providers)."""
        if value == list(ENGINE_DEFAULTS.runtime.providers):
            return value
        from worker.providers_check import known_names

        return known_names(value)

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
    # A micro-batch closes when its estimated compute time (its texts' estimated tokens at the rate the
    # engine was measured to get through them) reaches this; 0: by count and wait alone.
    max_batch_ms: int = Field(100, ge=0, le=60_000)
    # Micro-batches in inference at once: with 2, one is prepared or finishing while the other runs.
    concurrent_batches: int = Field(2, ge=1, le=16)
    max_in_flight: int | None = Field(None, ge=1)  # deprecated: moved to kafka.max_in_flight


class ObserveSettings(Section):
    host: str = "0.0.0.0"
    port: int = Field(9108, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = False
    stall_after_s: float = Field(30.0, gt=0)


class Settings(Section):
    """All settings. Build it with `load_settings` (file + environment, each value's origin
    remembered); constructed directly it is what the code passes, no environment read."""

    kafka: KafkaSettings = KafkaSettings()
    input: InputSettings = InputSettings()
    output: OutputSettings = OutputSettings()
    model: ModelSettings = ModelSettings()
    batching: BatchingSettings = BatchingSettings()
    observe: ObserveSettings = ObserveSettings()
    shutdown_timeout_s: float = Field(30.0, gt=0)

    _origins: dict[Path_, Origin] = PrivateAttr(default_factory=dict)
    _config_file: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _moved(self) -> Settings:
        if self.batching.max_in_flight is not None:  # the old place, when set, wins (`deprecations` says so)
            self.kafka = self.kafka.model_copy(update={"max_in_flight": self.batching.max_in_flight})
        return self


# Renamed or moved settings: (old key, new key, what it is). The old key still works; when it is set,
# its value is used and `deprecations` says so in one line.
RENAMED = ((("model", "batch_size"), ("model", "call_batch_size"), "texts per model call"),
           (("batching", "max_in_flight"), ("kafka", "max_in_flight"), "the consumer's in-flight bound"))


def deprecations(settings: Settings) -> list[str]:
    """One line per old setting name in use (the worker logs them at start)."""
    lines = []
    for (old_section, old), (new_section, new), what in RENAMED:
        value = getattr(getattr(settings, old_section), old)
        if value is not None:
            lines.append(f"config: {old_section}.{old} is deprecated: it is now {new_section}.{new} ({what}); "
                         f"its value {value} is used")
    return lines


def origin_of(settings: Settings, path: Path_) -> Origin:
    """Where the value at `path` (('kafka', 'bootstrap_servers')) came from: the nearest enclosing
    key that a source set, else the default."""
    origins = settings._origins
    for n in range(len(path), 0, -1):
        if path[:n] in origins:
            return origins[path[:n]]
    return DEFAULT


def config_file_of(settings: Settings) -> Path | None:
    """The settings file that was read (absolute), None when there was none."""
    return settings._config_file


def with_origin(settings: Settings, origin: Origin, **sections: dict[str, Any]) -> Settings:
    """A copy with the fields in `sections` ({"model": {"embedder": ...}}) replaced, recording
    `origin` for them (e.g. Origin("option", "--embedder")). Not validated again."""
    update: dict[str, Any] = {}
    origins = dict(settings._origins)
    for section, fields in sections.items():
        current = getattr(settings, section)
        if isinstance(current, BaseModel):
            update[section] = current.model_copy(update=fields)
            origins.update({(section, name): origin for name in fields})
        else:
            update[section] = fields
            origins[(section,)] = origin
    copy = settings.model_copy(update=update)
    copy._origins = origins
    return copy


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else "{" + ", ".join(f"{k}: {_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def _walk(model: BaseModel, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any, bool]]:
    """(path, value, whether it is an entry of a pass-through mapping) for every leaf."""
    leaves: list[tuple[tuple[str, ...], Any, bool]] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            leaves.extend(_walk(value, (*path, name)))
        elif isinstance(value, dict) and value:
            leaves.extend(((*path, name, str(key)), sub, True) for key, sub in value.items())
        else:
            leaves.append(((*path, name), value, False))
    return leaves


def effective_settings(settings: Settings) -> list[tuple[str, str, str]]:
    """Every leaf setting as (dotted key, value as text, origin): origin is "default",
    "file <path>", "env <VARNAME>" (or "option <--flag>" for a command-line override). Values of
    secret-looking pass-through properties (sasl.password, ...) read "***". Entries of pass-through
    mappings (kafka.common, model.label_thresholds, ...) are leaves of their own; an empty mapping
    is one leaf, "{}". A deprecated old name (RENAMED) is listed only when it is set."""
    rows = []
    old_names = {old for old, _, _ in RENAMED}
    for path, value, entry in _walk(settings, ()):
        if path in old_names and value is None:
            continue
        secret = entry and is_secret(path[-1]) and value not in (None, "")
        rows.append((".".join(path), "***" if secret else _text(value), str(origin_of(settings, path))))
    return rows


# ---- loading and one line per problem ------------------------------------------------------------


def _fields_at(loc: tuple[str | int, ...]) -> list[str]:
    """The field names of the section that holds `loc`'s last key (for 'did you mean')."""
    model: type[BaseModel] = Settings
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _unknown_key(loc: tuple[str | int, ...]) -> str:
    names = _fields_at(loc)
    close = difflib.get_close_matches(str(loc[-1]).lower(), names, n=1, cutoff=0.6)
    if close:
        return f"unknown setting; did you mean {'.'.join(str(p) for p in (*loc[:-1], close[0]))}?"
    parent = ".".join(str(p) for p in loc[:-1])
    return f"unknown setting; {parent or 'the top level'} has: {', '.join(names)}"


def config_line(loc: Path_, message: str, origins: Mapping[Path_, Origin] | None = None) -> str:
    """`config: <key>: <message>`, naming where the value came from: `config: <key>: <message>
    [/x/c.yaml line 3]` for the file, `config: EMOTION_WORKER_X (<key inside it>): <message>` for a
    variable."""
    origins = origins or {}
    where = ".".join(str(p) for p in loc) or "settings"
    origin = next((origins[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in origins), None)
    if origin is not None and origin.kind == "env":
        var_path = origin.name[len(ENV_PREFIX):].lower().split("__")
        inner = ".".join(str(p) for p in loc[len(var_path):])
        return f"config: {origin.name}{f' ({inner})' if inner else ''}: {message}"
    if origin is not None and origin.kind == "file":
        return f"config: {where}: {message} [{origin.where()}]"
    return f"config: {where}: {message}"


def origins_of(settings: Settings) -> Mapping[Path_, Origin]:
    """The recorded origin of every value a file, variable or option set (for `config_line`)."""
    return settings._origins


def format_validation_error(err: ValidationError, origins: Mapping[Path_, Origin] | None = None) -> str:
    """One line per problem: `config: <key>: <what is wrong> (got <value>)`, naming the file line
    (`[/x/c.yaml line 3]`) or the variable (`config: EMOTION_WORKER_X: ...`) the value came from."""
    lines = []
    for problem in err.errors():
        loc = tuple(problem["loc"])
        where = ".".join(str(p) for p in loc) or "settings"
        if problem["type"] == "extra_forbidden":
            msg = _unknown_key(loc)
        else:
            msg = problem["msg"].removeprefix("Value error, ")
        value = problem.get("input")
        # Echo the offending value only where it cannot be a secret: never for unknown keys (a
        # misspelt password key) or secret-looking fields, never for long strings.
        shown = f" (got {value!r})"
        if (isinstance(value, (dict, list)) or value is None or problem["type"] == "extra_forbidden"
                or is_secret(where) or (isinstance(value, str) and len(value) > 40)):
            shown = ""
        lines.append(config_line(loc, f"{msg}{shown}", origins))
    return "\n".join(lines)


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Load the YAML file (explicit path, $EMOTION_WORKER_CONFIG, or config/worker.yaml if present),
    apply environment overrides (then `overrides`), validate. Raises ConfigError with one line
    per problem, each naming the file line or the variable its value came from."""
    named_by = "--config"
    if path is None:
        env_path = os.environ.get(f"{ENV_PREFIX}CONFIG")
        named_by = f"{ENV_PREFIX}CONFIG"
        path = Path(env_path) if env_path else (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    if path is not None and path.is_dir():
        raise ConfigError(f"config: {path} is a directory; {named_by} takes the settings file (a .yaml)")
    if path is not None and not path.is_file():
        by_variable = f"{named_by}: " if named_by != "--config" else ""
        raise ConfigError(f"config: {by_variable}file {path} not found")
    data: dict[str, Any] = {}
    origins: dict[Path_, Origin] = {}
    if path is not None:
        file = read_file(path)
        data = file.data
        origins.update(file_origins(file))
    env = read_environment(Settings, os.environ)
    deep_merge(data, env.data)
    origins.update(env.origins)
    deep_merge(data, overrides)
    problems = list(env.problems)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as err:
        problems.append(format_validation_error(err, origins))
    if problems:
        raise ConfigError("\n".join(problems))
    for old_key, new_key, _ in RENAMED:  # a renamed setting's value came from where its old key was set
        if old_key in origins:
            origins[new_key] = origins[old_key]
    settings._origins = origins
    settings._config_file = path.absolute() if path is not None else None
    return settings
