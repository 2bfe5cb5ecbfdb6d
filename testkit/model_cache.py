"""A disk cache of built test models, keyed by content: the builder's parameters, the source of the
code that builds them and the versions of the libraries it uses. An entry is built in a staging
folder and renamed into place only when complete, with a manifest of its files' SHA-256; an entry
whose files do not match its manifest is discarded and rebuilt, so a partial or damaged entry is
never used. Callers get a copy, so a test that edits its model cannot change the cache.

Where: $TEST_MODEL_CACHE, else .cache/test-models in the repository."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from pathlib import Path
from types import ModuleType

Source = Callable[..., object] | ModuleType  # code whose text is part of the key
MANIFEST = "cache-manifest.json"
REPO = Path(__file__).resolve().parent.parent


def cache_root() -> Path:
    return Path(os.environ.get("TEST_MODEL_CACHE") or REPO / ".cache" / "test-models")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def cache_key(kind: str, params: Mapping[str, object], sources: Iterable[Source],
              packages: Iterable[str]) -> str:
    h = hashlib.sha256(json.dumps({"kind": kind, "params": params}, sort_keys=True).encode())
    for src in sources:
        h.update(inspect.getsource(src).encode())
    for package in packages:
        h.update(f"\0{package}=={_version(package)}".encode())
    return h.hexdigest()[:24]


def _file_digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}


def is_complete(entry: Path) -> bool:
    """The entry exists and its files are exactly those of its manifest, byte for byte."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and bool(manifest) and _file_digests(entry) == manifest


def _discard(entry: Path) -> None:
    trash = entry.with_name(f".trash-{entry.name}-{uuid.uuid4().hex[:8]}")
    try:
        entry.rename(trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _build(entry: Path, build: Callable[[Path], object]) -> None:
    staging = entry.parent / f".staging-{entry.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        built = staging / "model"
        build(built)
        (built / MANIFEST).write_text(json.dumps(_file_digests(built), indent=1, sort_keys=True))
        try:
            built.rename(entry)
        except OSError:
            if not is_complete(entry):  # another run's entry, not complete: ours replaces it
                _discard(entry)
                built.rename(entry)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def cached(kind: str, params: Mapping[str, object], build: Callable[[Path], object], out_dir: Path, *,
           sources: Iterable[Source] = (), packages: Iterable[str] = (),
           root: Path | None = None) -> Path:
    """Copy the cached result of `build(folder)` for these parameters into out_dir, building it
    first where the cache has no complete entry. Returns out_dir."""
    entry = (root or cache_root()) / f"{kind}-{cache_key(kind, params, sources, packages)}"
    if not is_complete(entry):
        if entry.exists():
            _discard(entry)
        _build(entry, build)
    shutil.copytree(entry, out_dir, ignore=shutil.ignore_patterns(MANIFEST), dirs_exist_ok=True)
    return out_dir
