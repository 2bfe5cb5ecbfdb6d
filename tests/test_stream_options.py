"""The options boundary: settings are read in one place, defaults are written once, no name means
two things, and renamed settings keep working with one deprecation line each."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from worker.config import ModelSettings, Settings, deprecations, effective_settings, load_settings
from worker.engine.options import EngineOptions
from worker.model_choice import engine_options
from worker.stream.assemble import loop_options, output_options, processing_options

STREAM = Path(__file__).parent.parent / "worker" / "stream"
# Modules allowed to read settings: the assembly, and the librdkafka configuration built from them.
READS_SETTINGS = {"assemble.py", "kafka_conf.py", "kafka_check.py"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    return names | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}


def test_only_the_assembly_reads_settings_in_the_stream() -> None:
    readers = {p.name for p in STREAM.glob("*.py") if "worker.config" in imported_modules(p)}
    assert readers <= READS_SETTINGS, f"stream modules reading Settings: {sorted(readers - READS_SETTINGS)}"


def test_stream_types_come_from_one_module_that_imports_no_step() -> None:
    steps = {f"worker.stream.{p.stem}" for p in STREAM.glob("*.py")} - {"worker.stream.types"}
    assert not imported_modules(STREAM / "types.py") & steps
    for p in STREAM.glob("*.py"):
        tree = ast.parse(p.read_text())
        aliases = [t.id for node in ast.walk(tree) if isinstance(node, ast.Assign) for t in node.targets
                   if isinstance(t, ast.Name) and t.id in {"Header", "PartitionId", "Outcome"}]
        assert not aliases or p.name == "types.py", f"{p.name} defines {aliases} again"


def test_model_settings_defaults_are_the_engines() -> None:
    options, _ = engine_options(ModelSettings(embedder="e", head="h"))
    assert options == EngineOptions(embedder="e", head="h")


def test_each_part_gets_its_own_options_from_the_settings() -> None:
    s = Settings.model_validate({"kafka": {"max_in_flight": 7, "commit_interval_ms": 250},
                                 "batching": {"max_batch_size": 64, "max_wait_ms": 20},
                                 "output": {"scores": "passing"}, "shutdown_timeout_s": 4,
                                 "model": {"call_batch_size": 8, "embedder": "e", "head": "h"}})
    loop = loop_options(s)
    assert (loop.max_in_flight, loop.commit_interval_s, loop.revoke_timeout_s) == (7, 0.25, 4)
    assert (processing_options(s).max_batch_size, processing_options(s).max_wait_s) == (64, 0.02)
    assert output_options(s).scores == "passing"
    assert engine_options(s.model)[0].call_batch_size == 8  # texts per model call, not messages per micro-batch


def test_new_names_give_no_deprecation_line(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kafka:\n  max_in_flight: 50\nmodel:\n  call_batch_size: 4\n")
    s = load_settings(cfg)
    assert (s.kafka.max_in_flight, s.model.call_batch_size, deprecations(s)) == (50, 4, [])


def test_old_names_still_work_with_one_line_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kafka:\n  max_in_flight: 50\nmodel:\n  batch_size: 4\n")
    monkeypatch.setenv("EMOTION_WORKER_BATCHING__MAX_IN_FLIGHT", "800")  # the old key over the file's new one
    s = load_settings(cfg)
    assert s.kafka.max_in_flight == 800 and s.model.call_batch_size == 4
    assert deprecations(s) == [
        "config: model.batch_size is deprecated: it is now model.call_batch_size (texts per model call); "
        "its value 4 is used",
        "config: batching.max_in_flight is deprecated: it is now kafka.max_in_flight (the consumer's in-flight "
        "bound); its value 800 is used"]
    origins = {key: origin for key, _, origin in effective_settings(s)}
    assert origins["kafka.max_in_flight"] == "env EMOTION_WORKER_BATCHING__MAX_IN_FLIGHT"
    assert origins["model.call_batch_size"] == f"file {cfg.absolute()}"
