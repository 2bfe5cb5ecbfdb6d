"""Settings: file, environment overrides, one clear line per problem, no secrets in errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.config import load_settings, redact
from worker.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_config_is_valid_and_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS", "kafka:29092")
    monkeypatch.setenv("EMOTION_WORKER_BATCHING__MAX_BATCH_SIZE", "32")
    monkeypatch.setenv("EMOTION_WORKER_KAFKA__CONSUMER", '{"fetch.min.bytes": 1}')
    s = load_settings(ROOT / "config" / "worker.yaml")
    assert s.kafka.bootstrap_servers == "kafka:29092"
    assert s.batching.max_batch_size == 32
    assert s.kafka.consumer == {"fetch.min.bytes": "1"}
    assert s.kafka.input_topic == "chat-messages"  # from the file


def test_every_problem_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("batching:\n  max_batch_size: 0\nmodel:\n  threads: lots\nkafka:\n  nonsense: 1\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    lines = str(err.value).splitlines()
    assert len(lines) == 3
    assert any(line.startswith("config: batching.max_batch_size:") for line in lines)
    assert any(line.startswith("config: model.threads:") for line in lines)
    assert any(line.startswith("config: kafka.nonsense:") for line in lines)


def test_reserved_properties_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text('kafka:\n  consumer:\n    enable.auto.commit: true\n  producer:\n    acks: "1"\n')
    with pytest.raises(ConfigError, match=r"enable\.auto\.commit is set by the worker"):
        load_settings(cfg)


def test_sasl_validation_never_prints_the_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOTION_WORKER_KAFKA__COMMON",
                       '{"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", '
                       '"sasl.password": "hunter2-secret"}')
    with pytest.raises(ConfigError) as err:
        load_settings(ROOT / "config" / "worker.yaml")
    assert "needs sasl.username and sasl.password" in str(err.value)
    assert "hunter2" not in str(err.value)
    assert redact({"sasl.password": "x", "ssl.key.password": "y", "sasl.username": "u"}) == {
        "sasl.password": "***", "ssl.key.password": "***", "sasl.username": "u"}


def test_unknown_label_threshold(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  label_thresholds:\n    happiness: 0.3\n")
    with pytest.raises(ConfigError, match="unknown labels"):
        load_settings(cfg)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml")
