"""Find a model on disk: a local directory, or a Hugging Face hub id through its cache."""

from __future__ import annotations

import errno
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
        # One listing call: when the hub is out of reach it falls back to the cache at once (the
        # per-file downloads, which retry with backoff, only start once the hub has answered).
        local = snapshot_download(repo_id=ref, allow_patterns=allow_patterns)
    except Exception as exc:
        unreachable = _unreachable_reason(exc)
        if offline:
            mode = "it is not in the local Hugging Face cache (the hub is offline: HF_HUB_OFFLINE or " \
                   "TRANSFORMERS_OFFLINE is set)"
        elif unreachable:
            mode = f"the Hugging Face hub cannot be reached ({unreachable}) and the local cache does not have it"
        else:
            mode = f"the Hugging Face hub and the local cache could not provide it ({_first_line(exc)})"
        raise ModelError(
            f"{what} {ref!r}: not a local directory, and {mode}. "
            "Fix: pass a local directory, run once with network access to fill the cache, "
            "or use the offline default model (see README, 'Models')."
        ) from exc
    return Path(local)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


_UNREACHABLE_MARKERS = (("Name or service not known", "host name not resolved"),
                        ("NameResolutionError", "host name not resolved"),
                        ("Temporary failure in name resolution", "host name not resolved"),
                        ("Connection refused", "connection refused"),
                        ("Network is unreachable", "network unreachable"),
                        ("timed out", "timed out"))
_CONNECTION_ERRORS = ("ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "ConnectError")


def _unreachable_reason(exc: BaseException) -> str | None:
    """Why the hub could not be reached, in a few words, if a connection failure is behind `exc`.
    The whole chain of causes is read: the HTTP clients wrap the socket's error in their own, whose
    text does not always repeat it."""
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and all(cause is not seen for seen in chain):
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    if not any(isinstance(c, (ConnectionError, TimeoutError)) or type(c).__name__ in _CONNECTION_ERRORS
               for c in chain):
        return None
    if any(getattr(c, "errno", None) == errno.ECONNREFUSED for c in chain):
        return "connection refused"
    text = " ".join(str(c) for c in chain)
    return next((reason for marker, reason in _UNREACHABLE_MARKERS if marker in text), "connection failed")
