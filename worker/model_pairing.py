"""Refuse a head with an embedder it was not trained on: its scores would be meaningless (the plain
all-MiniLM-L6-v2 under the fine-tuned head blurs every score to 0.3-0.5), and nothing else says so.

A head's record of its embedder is `embedder_identity` in its training.json (written by fine-tune
and train-head; the shipped heads carry theirs), or for the reference head its known pair. The
embedder's identity is its embedder.json (worker/engine/embedder_identity.py). A mismatch stops the
start with one line, unless `model.allow_mismatch` (then one warning line). Where either side has
no record (a model made before records, or elsewhere; the tests' random models) nothing can be
checked: one info line says so, and the pair is used.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from worker.engine.embedder_identity import EmbedderIdentity, read_identity
from worker.errors import ModelError

log = logging.getLogger(__name__)

RECORD_KEY = "embedder_identity"  # in a head's training.json
# Heads known by hub id, with no training.json of ours: the reference pair.
KNOWN_HEADS = {
    "SamLowe/bge-small-en-go_emotions-classifier-onnx": EmbedderIdentity("BAAI/bge-small-en"),
}


def known_head(head: str) -> EmbedderIdentity | None:
    """A known head by hub id, or by its Hugging Face cache directory (models--owner--name)."""
    parts = set(Path(head).parts)
    for hub_id, identity in KNOWN_HEADS.items():
        if head == hub_id or f"models--{hub_id.replace('/', '--')}" in parts:
            return identity
    return None


def head_record(head: str) -> EmbedderIdentity | None:
    """The embedder a head (directory or hub id) records it was trained on; None where it records none."""
    known = known_head(head)
    if known is not None:
        return known
    path = Path(head).expanduser() / "training.json"
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return EmbedderIdentity.from_json(info.get(RECORD_KEY)) if isinstance(info, dict) else None


def identity_record(embedder_dir: Path) -> dict[str, str] | None:
    """What a head trained on `embedder_dir` records (None when the embedder has no identity)."""
    identity = read_identity(str(embedder_dir))
    return identity.as_json() if identity is not None else None


def check_pairing(embedder: str, head: str, *, allow_mismatch: bool = False) -> None:
    """Raise ModelError (one line) when the head was trained on another embedder; see the module doc."""
    wanted = head_record(head)
    have = read_identity(embedder)
    if wanted is None or have is None:
        missing = (f"the head {head} records no embedder it was trained on" if wanted is None
                   else f"the embedder {embedder} has no identity (embedder.json; re-export it to add one)")
        log.info("model pairing not checked: %s", missing)
        return
    if wanted.same_as(have):
        return
    problem = (f"the head {head} was trained on the embedder {wanted.describe()}, but the embedder {embedder} is "
               f"{have.describe()}: its scores would be meaningless")
    if allow_mismatch:
        log.warning("%s; used anyway (model.allow_mismatch is true)", problem)
        return
    raise ModelError(f"{problem}. Use the head's own embedder, or set model.allow_mismatch: true "
                     "(EMOTION_WORKER_MODEL__ALLOW_MISMATCH=true) to load them anyway")
