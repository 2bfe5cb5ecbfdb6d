"""An embedder's identity: a name and a fingerprint of the weights it was built from, kept in
embedder.json beside its model.onnx.

`export`, `export --default` and `fine-tune` write it; int8 quantisation copies it (the int8 variant
is the same embedder). A head records the identity of the embedder it was trained on, so a pairing
can be checked at start (worker/model_pairing.py). The fingerprint is of the inputs (the source
weights, plus the adapters for a fine-tuned build), not of the exported graph: rebuilding the same
model on another machine or torch version gives the same identity.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from worker.engine.resolve import looks_like_hub_id
from worker.errors import ModelError

IDENTITY_FILE = "embedder.json"
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


@dataclass(frozen=True)
class EmbedderIdentity:
    name: str
    fingerprint: str | None = None  # None: known by name only (a hub id, the reference pair)

    def same_as(self, other: EmbedderIdentity) -> bool:
        """The fingerprints decide where both sides have one; else the names."""
        if self.fingerprint and other.fingerprint:
            return self.fingerprint == other.fingerprint
        return self.name.lower() == other.name.lower()

    def describe(self) -> str:
        return f"{self.name} (weights {self.fingerprint})" if self.fingerprint else self.name

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, **({"fingerprint": self.fingerprint} if self.fingerprint else {})}

    @classmethod
    def from_json(cls, data: object) -> EmbedderIdentity | None:
        if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"]:
            return None
        fingerprint = data.get("fingerprint")
        return cls(data["name"], fingerprint if isinstance(fingerprint, str) and fingerprint else None)


def files_digest(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def weights_fingerprint(model_dir: Path) -> str | None:
    """The fingerprint of a Hugging Face model directory's weights (safetensors, else PyTorch bins)."""
    for pattern in WEIGHT_PATTERNS:
        files = sorted(model_dir.glob(pattern))
        if files:
            return files_digest(files)
    return None


def combined_fingerprint(*parts: str | None) -> str:
    return hashlib.sha256("+".join(p or "-" for p in parts).encode()).hexdigest()[:16]


def write_identity(embedder_dir: Path, identity: EmbedderIdentity) -> Path:
    path = embedder_dir / IDENTITY_FILE
    path.write_text(json.dumps(identity.as_json(), indent=2) + "\n")
    return path


def read_identity(embedder: str) -> EmbedderIdentity | None:
    """The identity of an embedder as configured (a directory or a hub id); None where it has none
    (an export from before embedder.json, a model made elsewhere)."""
    path = Path(embedder).expanduser()
    if not path.is_dir():
        return EmbedderIdentity(embedder) if looks_like_hub_id(embedder) else None
    record = path / IDENTITY_FILE
    if record.is_file():
        try:
            identity = EmbedderIdentity.from_json(json.loads(record.read_text()))
        except (OSError, ValueError):
            identity = None
        if identity is None:
            raise ModelError(f"{record} is not a valid embedder identity (a JSON object with a 'name'): "
                             "re-export the embedder, or delete the file")
        return identity
    # An export from before embedder.json: its export.json names a hub source (e.g. BAAI/bge-small-en).
    try:
        source = json.loads((path / "export.json").read_text()).get("source")
    except (OSError, ValueError, AttributeError):
        return None
    return EmbedderIdentity(source) if isinstance(source, str) and looks_like_hub_id(source) else None
