"""Find a model on disk: a local directory, or a Hugging Face hub id through its cache."""

from __future__ import annotations

from pathlib import Path

from worker.errors import ModelError


def looks_like_hub_id(ref: str) -> bool:
    parts = ref.split("/")
    return len(parts) == 2 and all(parts) and not ref.startswith((".", "/", "~"))


def resolve_model_dir(ref: str, *, what: str, allow_patterns: list[str] | None = None) -> Path:
    """Return a local directory for `ref` (a path, or a hub id downloaded into the HF cache).

    HF_HUB_OFFLINE=1 (or TRANSFORMERS_OFFLINE=1) is honoured by huggingface_hub: then only the local
    cache is used.
    """
    path = Path(ref).expanduser()
    if path.is_dir():
        return path.resolve()
    if not looks_like_hub_id(ref):
        raise ModelError(
            f"{what} {ref!r}: no such directory, and it is not a hub id of the form 'owner/name'"
        )
    try:
        from huggingface_hub import constants, snapshot_download
    except ImportError as exc:  # pragma: no cover - huggingface_hub is a runtime dependency
        raise ModelError(f"{what} {ref!r}: huggingface_hub is not installed") from exc
    offline = bool(constants.HF_HUB_OFFLINE)  # HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE, as the hub reads them
    try:
        local = snapshot_download(repo_id=ref, allow_patterns=allow_patterns)
    except Exception as exc:
        mode = (
            "the local Hugging Face cache only (the hub is offline: HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set)"
            if offline else "the Hugging Face hub and the local cache"
        )
        raise ModelError(
            f"{what} {ref!r}: not a local directory, and {mode} could not provide it "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            "Fix: pass a local directory, run once with network access to fill the cache, "
            "or use the offline default model (see README, 'Models')."
        ) from exc
    return Path(local)
