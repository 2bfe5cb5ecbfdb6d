"""Settings and `check` polish, through the real command line in-process: a key written twice,
librdkafka property names from variable names, deprecated settings in `check`, model.providers
refused before anything starts, `check --json` without brokers, and the start-up line's origins."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import onnxruntime as ort
import orjson
import pytest

from testkit.cli import CliResult, run_cli
from worker.app import load_engine
from worker.config import deprecations, load_settings
from worker.observe.startup import startup_line

UNREACHABLE = "127.0.0.1:1"


def one_error(res: CliResult) -> str:
    """The single stderr line of a refused command (exit 2, no traceback)."""
    assert "Traceback" not in res.stderr + res.stdout
    assert res.returncode == 2, res.stdout + res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: "), res.stderr
    return lines[0].removeprefix("error: ")


def check_json(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[CliResult, dict[str, object]]:
    """`check --json` against no broker: exit 2, one line on stderr, one JSON document on stdout."""
    res = run_cli("check", "--json", "--timeout", "0.5", *args,
                  env={"EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS": UNREACHABLE, **env}, cwd=tmp_path)
    assert one_error(res).startswith(f"cannot reach brokers {UNREACHABLE}")
    return res, orjson.loads(res.stdout)


def settings_rows(doc: dict[str, object]) -> dict[str, tuple[str, str]]:
    configuration = doc["configuration"]
    assert isinstance(configuration, dict)
    return {row["key"]: (row["value"], row["origin"]) for row in configuration["settings"]}


# ---- 8: a key written twice ----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("kafka:\n  bootstrap_servers: a:9092\nmodel:\n  threads: 2\nkafka:\n  group_id: g\n",
     "line 5: kafka is set twice (first at line 1)"),
    ("kafka:\n  group_id: a\n  common:\n    sasl.username: u\n    sasl.username: v\n",
     "line 5: kafka.common.sasl.username is set twice (first at line 4)"),
])
def test_a_key_written_twice_is_refused_naming_both_lines(tmp_path: Path, text: str, expected: str) -> None:
    cfg = tmp_path / "w.yaml"
    cfg.write_text(text)
    for command in ("check", "run"):
        line = one_error(run_cli(command, "--config", str(cfg), env={}, cwd=tmp_path))
        assert line == f"config: {cfg} {expected}; only the last would count: merge the two into one"


def test_a_yaml_merge_key_is_not_a_duplicate(tmp_path: Path) -> None:
    cfg = tmp_path / "w.yaml"
    cfg.write_text("base: &base\n  group_id: g\nkafka:\n  <<: *base\n  input_topic: t\n")
    # loaded past the duplicate check: only the unknown top-level key `base` is refused
    line = one_error(run_cli("check", "--config", str(cfg), env={}, cwd=tmp_path))
    assert line.startswith("config: base: unknown setting")


# ---- 9: librdkafka property names from variable names ------------------------------------------------


def test_underscores_in_a_variable_name_are_the_property_dots(tmp_path: Path) -> None:
    env = {"EMOTION_WORKER_KAFKA__COMMON__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
           "EMOTION_WORKER_KAFKA__COMMON__SASL_MECHANISM": "PLAIN",
           "EMOTION_WORKER_KAFKA__COMMON__SASL_USERNAME": "bob",
           "EMOTION_WORKER_KAFKA__COMMON__SASL_PASSWORD": "hunter2",
           "EMOTION_WORKER_KAFKA__CONSUMER__FETCH.MIN.BYTES": "2"}  # the dotted form, via `env`, still works
    res, doc = check_json(tmp_path, env)
    rows = settings_rows(doc)
    assert rows["kafka.common.sasl.password"] == ("***", "env EMOTION_WORKER_KAFKA__COMMON__SASL_PASSWORD")
    assert rows["kafka.common.security.protocol"] == ("SASL_PLAINTEXT",
                                                      "env EMOTION_WORKER_KAFKA__COMMON__SECURITY_PROTOCOL")
    assert rows["kafka.consumer.fetch.min.bytes"] == ("2", "env EMOTION_WORKER_KAFKA__CONSUMER__FETCH.MIN.BYTES")
    assert doc["client_properties"] == {"ok": True}  # librdkafka took sasl.password & co.
    assert "hunter2" not in res.stdout + res.stderr


def test_keys_in_the_file_and_other_mappings_are_used_as_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "w.yaml"
    cfg.write_text(f"kafka:\n  bootstrap_servers: {UNREACHABLE}\n  common:\n    sasl_password: x\n")
    res = run_cli("check", "--config", str(cfg), "--timeout", "0.5", env={}, cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert 'No such configuration property: "sasl_password"' in res.stdout
    # onnxruntime's session entries have underscores of their own
    for name in list(os.environ):
        if name.startswith("EMOTION_WORKER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EMOTION_WORKER_MODEL__SESSION_CONFIG__SESSION.INTRA_OP.ALLOW_SPINNING", "0")
    assert load_settings().model.session_config == {"session.intra_op.allow_spinning": "0"}


# ---- 10: deprecated settings in check ------------------------------------------------------------


def test_check_lists_deprecated_settings_only_when_set_with_runs_line(tmp_path: Path) -> None:
    _, doc = check_json(tmp_path, {})
    rows = settings_rows(doc)
    assert "batching.max_in_flight" not in rows and "model.batch_size" not in rows
    assert rows["kafka.max_in_flight"] == ("1000", "default")
    assert doc["configuration"]["deprecations"] == []  # type: ignore[index]

    cfg = tmp_path / "w.yaml"
    cfg.write_text("batching:\n  max_in_flight: 50\n")
    res = run_cli("check", "--config", str(cfg), "--timeout", "0.5",
                  env={"EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS": UNREACHABLE}, cwd=tmp_path)
    assert res.returncode == 2
    (line,) = deprecations(load_settings(cfg))  # the line `run` logs
    assert line.startswith("config: batching.max_in_flight is deprecated: it is now kafka.max_in_flight")
    assert line in res.stdout.splitlines()
    table = {parts[0]: parts[1:] for parts in (row.split() for row in res.stdout.splitlines()) if parts}
    assert table["batching.max_in_flight"] == ["50", "file", str(cfg)]
    assert table["kafka.max_in_flight"] == ["50", "file", str(cfg)]


# ---- 11: model.providers -------------------------------------------------------------------------


def test_an_unknown_provider_is_refused_with_the_settings_and_the_closest_name(tmp_path: Path) -> None:
    env = {"EMOTION_WORKER_MODEL__PROVIDERS": "CPUExecutionProvder"}
    for command in (["run"], ["classify", "hi"], ["tail"]):
        assert one_error(run_cli(*command, env=env, cwd=tmp_path)) == (
            "config: EMOTION_WORKER_MODEL__PROVIDERS: unknown execution provider 'CPUExecutionProvder'; "
            "did you mean CPUExecutionProvider?")
    cfg = tmp_path / "w.yaml"
    cfg.write_text("model:\n  threads: 2\n  providers: [cuda]\n")
    assert one_error(run_cli("run", "--config", str(cfg), env={}, cwd=tmp_path)) == (
        f"config: model.providers: unknown execution provider 'cuda'; did you mean CUDAExecutionProvider? "
        f"[{cfg} line 3]")


def test_a_provider_name_in_any_case_is_accepted(tmp_path: Path) -> None:
    _, doc = check_json(tmp_path, {"EMOTION_WORKER_MODEL__PROVIDERS": "cpuexecutionprovider"})
    assert settings_rows(doc)["model.providers"] == ("[CPUExecutionProvider]", "env EMOTION_WORKER_MODEL__PROVIDERS")


@pytest.fixture
def lacking() -> str:
    """A provider onnxruntime knows that this build does not have."""
    name = next((p for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider", "CoreMLExecutionProvider")
                 if p not in ort.get_available_providers()), None)
    if name is None:
        pytest.skip("this onnxruntime build has every provider tried")
    return name


def test_a_provider_this_build_lacks_is_refused_before_the_metrics_server_and_the_model(
        tmp_path: Path, lacking: str) -> None:
    available = ", ".join(ort.get_available_providers())
    expected = (f"config: EMOTION_WORKER_MODEL__PROVIDERS: {lacking} is not in this onnxruntime build (it has "
                f"{available}): ")
    with socket.socket() as taken:  # the metrics port is in use: had the server started first, that would be said
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {"EMOTION_WORKER_MODEL__PROVIDERS": f"{lacking},CPUExecutionProvider",
               "EMOTION_WORKER_OBSERVE__HOST": "127.0.0.1",
               "EMOTION_WORKER_OBSERVE__PORT": str(taken.getsockname()[1]),
               "EMOTION_WORKER_MODEL__EMBEDDER": "/nonexistent/embedder",  # had the model loaded, "not found"
               "EMOTION_WORKER_MODEL__HEAD": "/nonexistent/head",
               "EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS": UNREACHABLE}
        run = one_error(run_cli("run", env=env, cwd=tmp_path))
    assert run.startswith(expected) and run.endswith("or set model.providers to [CPUExecutionProvider]")
    assert one_error(run_cli("classify", "hi", env=env, cwd=tmp_path)) == run  # before the model

    # check: a problem of the model section (the cluster is not reached: exit 2, the document still printed)
    _, doc = check_json(tmp_path, {"EMOTION_WORKER_MODEL__PROVIDERS": lacking})
    assert any(p.startswith(expected) for p in doc["problems"])  # type: ignore[attr-defined]


# ---- 12: check --json without brokers --------------------------------------------------------------


def test_check_json_without_brokers_is_one_document_with_the_problem(tmp_path: Path) -> None:
    res, doc = check_json(tmp_path, {"EMOTION_WORKER_MODEL__EMBEDDER": "/nonexistent/e",
                                     "EMOTION_WORKER_MODEL__HEAD": "/nonexistent/h"})
    problems = doc["problems"]
    assert isinstance(problems, list)
    assert problems[0] == one_error(res)
    assert doc["brokers"] == {"input": {"bootstrap_servers": UNREACHABLE, "reachable": False,
                                        "error": problems[0]}}
    assert "topics" not in doc and "group" not in doc
    assert any(p.startswith("model embedder /nonexistent/e: missing") for p in problems)  # still checked
    assert res.stdout.strip().startswith("{") and res.stdout.strip().endswith("}")

    # the sections on screen: the same problems, then the same one line
    res = run_cli("check", "--timeout", "0.5", env={"EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS": UNREACHABLE},
                  cwd=tmp_path)
    assert one_error(res).startswith(f"cannot reach brokers {UNREACHABLE}")
    assert f"brokers: {UNREACHABLE} did not answer (so topics and group are not checked)" in res.stdout
    assert "result: 1 problem" in res.stdout


# ---- 13: the start-up line says where brokers, topics and group came from ------------------------------


def test_startup_line_names_the_origins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        tiny_encoder: Path, tiny_head: Path) -> None:
    for name in list(os.environ):
        if name.startswith("EMOTION_WORKER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "w.yaml"
    cfg.write_text(f"kafka:\n  group_id: from-file\n  dead_letter_topic: dlq\n  output_topic: out\n"
                   f"model:\n  embedder: {tiny_encoder}\n  head: {tiny_head}\n")
    monkeypatch.setenv("EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS", "kafka:19092")
    monkeypatch.setenv("EMOTION_WORKER_KAFKA__INPUT_TOPIC", "in")
    settings = load_settings(cfg)
    engine = load_engine(settings)
    parts = startup_line(settings, engine).split("; ")
    assert parts[1] == "brokers kafka:19092 from env EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS"
    assert parts[2] == (f"topics in -> out (dead letters dlq), input topic from env EMOTION_WORKER_KAFKA__INPUT_TOPIC, "
                        f"output and dead-letter topics from file {cfg}")
    assert parts[3] == f"group from-file from file {cfg}"

    monkeypatch.delenv("EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS")
    monkeypatch.delenv("EMOTION_WORKER_KAFKA__INPUT_TOPIC")
    cfg.write_text(f"model:\n  embedder: {tiny_encoder}\n  head: {tiny_head}\n")
    parts = startup_line(load_settings(cfg), engine).split("; ")
    assert parts[1:4] == ["brokers localhost:9092 (default)",
                          "topics chat-messages -> chat-emotions (dead letters chat-messages-dlq)",
                          "group emotion-worker"]
