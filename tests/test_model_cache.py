"""The test-model cache: built once per content, never a partial or damaged entry, copies only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import testkit.model_cache as model_cache
from testkit.model_cache import MANIFEST, cache_key, cached, is_complete
from testkit.models import build_random_encoder

from .conftest import TINY


class Builder:
    """Writes a small model folder and counts its calls."""

    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    def __call__(self, out: Path) -> None:
        self.calls += 1
        (out / "sub").mkdir(parents=True)
        (out / "model.onnx").write_bytes(b"weights" * 100)
        (out / "sub" / "config.json").write_text('{"a": 1}')
        if self.fail:
            raise RuntimeError("builder broke half way")


def entries(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if not p.name.startswith("."))


def test_built_once_then_copied(tmp_path: Path) -> None:
    root, build = tmp_path / "cache", Builder()
    a = cached("toy", {"n": 1}, build, tmp_path / "a", root=root)
    b = cached("toy", {"n": 1}, build, tmp_path / "b", root=root)
    assert build.calls == 1
    assert (a / "model.onnx").read_bytes() == (b / "model.onnx").read_bytes() == b"weights" * 100
    assert (b / "sub" / "config.json").read_text() == '{"a": 1}' and not (b / MANIFEST).exists()
    (a / "model.onnx").write_bytes(b"edited by a test")  # a copy: the cache keeps its bytes
    assert (cached("toy", {"n": 1}, build, tmp_path / "c", root=root) / "model.onnx").read_bytes() == b"weights" * 100
    assert build.calls == 1
    cached("toy", {"n": 2}, build, tmp_path / "d", root=root)
    assert build.calls == 2 and len(entries(root)) == 2
    assert not [p for p in root.iterdir() if p.name.startswith(".")], "staging folders left behind"


@pytest.mark.parametrize("damage", ["truncated", "extra file", "no manifest", "bad manifest"])
def test_damaged_entry_is_rebuilt(tmp_path: Path, damage: str) -> None:
    root, build = tmp_path / "cache", Builder()
    cached("toy", {}, build, tmp_path / "a", root=root)
    entry, = entries(root)
    if damage == "truncated":
        (entry / "model.onnx").write_bytes(b"weig")
    elif damage == "extra file":
        (entry / "sub" / "stray.bin").write_bytes(b"?")
    elif damage == "no manifest":
        (entry / MANIFEST).unlink()
    else:
        (entry / MANIFEST).write_text("{not json")
    assert not is_complete(entry)
    out = cached("toy", {}, build, tmp_path / "b", root=root)
    assert build.calls == 2 and is_complete(entry)
    assert (out / "model.onnx").read_bytes() == b"weights" * 100 and not (out / "sub" / "stray.bin").exists()


def test_failed_build_leaves_no_entry(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="half way"):
        cached("toy", {}, Builder(fail=True), tmp_path / "a", root=root)
    assert list(root.iterdir()) == []
    build = Builder()
    cached("toy", {}, build, tmp_path / "b", root=root)
    assert build.calls == 1 and json.loads((entries(root)[0] / MANIFEST).read_text())


def test_key_covers_parameters_source_and_versions() -> None:
    def one(out: Path) -> None:
        out.mkdir()

    def two(out: Path) -> None:
        out.mkdir(parents=True)

    base = cache_key("encoder", {"hidden": 32}, [one], ["numpy"])
    assert base == cache_key("encoder", {"hidden": 32}, [one], ["numpy"])
    assert base != cache_key("encoder", {"hidden": 64}, [one], ["numpy"])
    assert base != cache_key("bert", {"hidden": 32}, [one], ["numpy"])
    assert base != cache_key("encoder", {"hidden": 32}, [two], ["numpy"])
    assert base != cache_key("encoder", {"hidden": 32}, [one], ["numpy", "no-such-package-installed"])


def test_session_encoder_comes_from_the_cache(tiny_encoder: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The session's tiny encoder is cached: the same parameters again never build (no torch)."""
    def no_build(*_: object) -> None:
        raise AssertionError("rebuilt a cached encoder")

    monkeypatch.setattr(model_cache, "_build", no_build)
    again = build_random_encoder(tmp_path / "again", **TINY)
    assert (again / "model.onnx").read_bytes() == (tiny_encoder / "model.onnx").read_bytes()
    assert (again / "tokenizer.json").is_file()
