"""Settings refused in one line each, naming the file line or the variable, before any model loads;
and where every effective value came from."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testkit.cli import run_cli
from worker.config import config_file_of, effective_settings, load_settings
from worker.errors import ConfigError
from worker.stream.kafka_check import check_client_configs


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.upper().startswith("EMOTION_WORKER_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_effective_settings_name_each_values_origin(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "w.yaml"
    cfg.write_text("kafka:\n  group_id: from-file\n  common:\n    sasl.password: hunter2\n"
                   "observe:\n  log_level: debug\n")
    clean_env.setenv("EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS", "kafka:29092")
    clean_env.setenv("EMOTION_WORKER_KAFKA__COMMON__SASL.USERNAME", "bob")
    clean_env.setenv("EMOTION_WORKER_MODEL__PROVIDERS", "CUDAExecutionProvider,CPUExecutionProvider")

    settings = load_settings(cfg)
    rows = {key: (value, origin) for key, value, origin in effective_settings(settings)}

    assert config_file_of(settings) == cfg.absolute()
    assert rows["kafka.bootstrap_servers"] == ("kafka:29092", "env EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS")
    assert rows["kafka.group_id"] == ("from-file", f"file {cfg.absolute()}")
    assert rows["kafka.common.sasl.password"] == ("***", f"file {cfg.absolute()}")
    assert rows["kafka.common.sasl.username"] == ("bob", "env EMOTION_WORKER_KAFKA__COMMON__SASL.USERNAME")
    assert rows["model.providers"] == ("[CUDAExecutionProvider, CPUExecutionProvider]",
                                       "env EMOTION_WORKER_MODEL__PROVIDERS")
    assert rows["observe.log_level"] == ("DEBUG", f"file {cfg.absolute()}")
    assert rows["kafka.input_topic"] == ("chat-messages", "default")
    assert rows["kafka.consumer"] == ("{}", "default")
    assert rows["model.token_budget"] == (str(settings.model.token_budget), "default")  # not a secret
    assert "hunter2" not in str(effective_settings(settings))
    # every leaf once, and nothing else: the sections' fields
    assert len(rows) == len(effective_settings(settings))


def test_no_file_no_env_is_all_defaults(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.chdir(tmp_path)  # no config/worker.yaml here
    settings = load_settings()
    assert config_file_of(settings) is None
    assert {origin for _, _, origin in effective_settings(settings)} == {"default"}


def test_command_line_model_override_is_its_origin(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    from worker.cli.options import settings_for

    clean_env.chdir(tmp_path)
    rows = {k: (v, o) for k, v, o in effective_settings(settings_for(None, embedder="/e", head="/h"))}
    assert rows["model.embedder"] == ("/e", "option --embedder")
    assert rows["model.head"] == ("/h", "option --head")


# ---- refused through the real command line, one line per problem, exit 2, before any model -------

NO_MODEL = "model:\n  embedder: /nonexistent/embedder\n  head: /nonexistent/head\n"


def refused(tmp_path: Path, text: str | None = NO_MODEL, env: dict[str, str] | None = None) -> list[str]:
    """`emotion-worker run --config FILE` (or none: from an empty directory); its error lines."""
    args = ["run"]
    if text is not None:
        cfg = tmp_path / "worker.yaml"
        cfg.write_text(text)
        args += ["--config", str(cfg)]
    res = run_cli(*args, env=env, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error: config: ")
    assert not any("model" in line and "not found" in line for line in lines)  # the model never came into it
    return [line.removeprefix("error: ") for line in lines]


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    lines = refused(tmp_path, "kafka:\n  bootstrap_servers: [oops\n" + NO_MODEL)
    assert len(lines) == 1
    assert lines[0].startswith(f"config: {tmp_path / 'worker.yaml'} line ")
    assert "not valid YAML" in lines[0] and "line 2" in lines[0]  # where the '[' was opened


def test_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    assert refused(tmp_path, "just a string\n") == [
        f"config: {tmp_path / 'worker.yaml'}: the file must be a mapping of sections (kafka:, model:, ...), "
        "not a string"]


def test_type_error_and_unknown_key_name_the_line_and_the_closest_key(tmp_path: Path) -> None:
    lines = refused(tmp_path, NO_MODEL + "  threads: lots\nkafka:\n  bootstrap_server: x:9092\n")
    cfg = tmp_path / "worker.yaml"
    assert lines == [
        f"config: kafka.bootstrap_server: unknown setting; did you mean kafka.bootstrap_servers? [{cfg} line 6]",
        f"config: model.threads: Input should be a valid integer, unable to parse string as an integer "
        f"(got 'lots') [{cfg} line 4]",
    ]


def test_unknown_librdkafka_property_refused_by_librdkafka_before_the_model(tmp_path: Path) -> None:
    lines = refused(tmp_path, NO_MODEL + "kafka:\n  common:\n    foo.bar: 1\n")
    assert lines == [f'config: kafka.common.foo.bar: librdkafka says: No such configuration property: "foo.bar" '
                     f"[{tmp_path / 'worker.yaml'} line 6]"]


def test_bad_consumer_value_and_bad_combination_one_line_each(tmp_path: Path) -> None:
    lines = refused(tmp_path, NO_MODEL + "kafka:\n  consumer:\n    fetch.min.bytes: lots\n"
                              "  producer:\n    max.in.flight: 50\n    sasl.password: hunter2\n")
    assert len(lines) == 2
    assert lines[0].startswith('config: kafka.consumer.fetch.min.bytes: librdkafka says: Invalid value for '
                               'configuration property "fetch.min.bytes"')
    assert lines[1].startswith("config: kafka.producer.max.in.flight: librdkafka says: `max.in.flight` must be "
                               "set <= 5 when `enable.idempotence` is true")


def test_librdkafka_property_from_a_variable_names_the_variable(tmp_path: Path) -> None:
    env = {"EMOTION_WORKER_KAFKA__PRODUCER__COMPRESSION.TYPE": "zip",
           "EMOTION_WORKER_MODEL__EMBEDDER": "/nonexistent", "EMOTION_WORKER_MODEL__HEAD": "/nonexistent"}
    lines = refused(tmp_path, text=None, env=env)
    assert lines == ['config: EMOTION_WORKER_KAFKA__PRODUCER__COMPRESSION.TYPE: librdkafka says: Invalid value "zip" '
                     'for configuration property "compression.codec"']


def test_bad_value_from_a_variable_names_the_variable(tmp_path: Path) -> None:
    lines = refused(tmp_path, env={"EMOTION_WORKER_MODEL__THREADS": "lots", "EMOTION_WORKER_KAFKA__CONSUMER": "[1]"})
    assert lines == [
        "config: EMOTION_WORKER_KAFKA__CONSUMER: expects a JSON object, e.g. {\"key\": \"value\"}, "
        "or one variable a key: EMOTION_WORKER_KAFKA__CONSUMER__<KEY>",
        "config: EMOTION_WORKER_MODEL__THREADS: Input should be a valid integer, unable to parse string as an "
        "integer (got 'lots')",
    ]


def test_misspelt_variable_is_refused_with_the_closest_name(tmp_path: Path) -> None:
    lines = refused(tmp_path, env={"EMOTION_WORKER_KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
                                   "EMOTION_WORKER_TOTALLY_UNRELATED_THING": "1"})
    assert lines[0] == ("config: EMOTION_WORKER_KAFKA_BOOTSTRAP_SERVERS: no such setting; "
                        "did you mean EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS?")
    assert lines[1].startswith("config: EMOTION_WORKER_TOTALLY_UNRELATED_THING: no such setting; variables are ")
    assert len(lines) == 2


def test_problems_of_file_and_environment_together_one_line_each(tmp_path: Path) -> None:
    lines = refused(tmp_path, NO_MODEL + "batching:\n  max_wait_ms: -1\n",
                    env={"EMOTION_WORKER_OBSERVE__PORT": "99999", "EMOTION_WORKER_OBSERVE__LOGLEVEL": "INFO"})
    assert [line.split(":")[1].strip() for line in lines] == [
        "EMOTION_WORKER_OBSERVE__LOGLEVEL", "batching.max_wait_ms", "EMOTION_WORKER_OBSERVE__PORT"]


# ---- accepted ----------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["CUDAExecutionProvider,CPUExecutionProvider",
                                 '["CUDAExecutionProvider", "CPUExecutionProvider"]',
                                 " CUDAExecutionProvider , CPUExecutionProvider "])
def test_list_from_a_variable(raw: str, tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.chdir(tmp_path)
    clean_env.setenv("EMOTION_WORKER_MODEL__PROVIDERS", raw)
    assert load_settings().model.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_single_bare_value_is_a_one_item_list(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.chdir(tmp_path)
    clean_env.setenv("EMOTION_WORKER_MODEL__PROVIDERS", "CUDAExecutionProvider")
    assert load_settings().model.providers == ["CUDAExecutionProvider"]
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  providers: CPUExecutionProvider\n")
    clean_env.delenv("EMOTION_WORKER_MODEL__PROVIDERS")
    assert load_settings(cfg).model.providers == ["CPUExecutionProvider"]


def test_choices_in_any_case(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("observe:\n  log_level: debug\nkafka:\n  assignment_strategy: Range\n  auto_offset_reset: LATEST\n"
                   "model:\n  graph_optimization: Extended\n  pooling: MEAN\n")
    clean_env.setenv("EMOTION_WORKER_OUTPUT__SCORES", "Passing")
    s = load_settings(cfg)
    assert (s.observe.log_level, s.kafka.assignment_strategy, s.kafka.auto_offset_reset) == ("DEBUG", "range", "latest")
    assert (s.model.graph_optimization, s.model.pooling, s.output.scores) == ("extended", "mean", "passing")
    cfg.write_text("observe:\n  log_level: chatty\n")
    with pytest.raises(ConfigError, match=r"^config: observe.log_level: Input should be 'DEBUG', 'INFO'"):
        load_settings(cfg)


def test_other_emotion_worker_variables_are_not_settings(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kafka:\n  group_id: g\n")
    clean_env.setenv("EMOTION_WORKER_CONFIG", str(cfg))
    clean_env.setenv("EMOTION_WORKER_TANSU", "/usr/bin/tansu")
    clean_env.setenv("EMOTION_WORKER_KAFKA__COMMON__SASL.PASSWORD", "s3cret")
    clean_env.setenv("EMOTION_WORKER_MODEL__THRESHOLD", "null")
    s = load_settings()
    assert s.kafka.group_id == "g" and s.kafka.common == {"sasl.password": "s3cret"} and s.model.threshold is None
    check_client_configs(s)  # librdkafka takes the shipped defaults and a password


def test_missing_file_named_by_the_variable(tmp_path: Path) -> None:
    assert refused(tmp_path, text=None, env={"EMOTION_WORKER_CONFIG": str(tmp_path / "nope.yaml")}) == [
        f"config: EMOTION_WORKER_CONFIG: file {tmp_path / 'nope.yaml'} not found"]
    res = run_cli("run", "--config", str(tmp_path), cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.strip() == (
        f"error: config: {tmp_path} is a directory; --config takes the settings file (a .yaml)")
