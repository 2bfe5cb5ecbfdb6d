"""Settings refused in one line each, naming the file line or the variable, before any model loads;
and where every effective value came from."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from worker.config import config_file_of, effective_settings, load_settings


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
