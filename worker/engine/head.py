"""The emotion head contract: input `logits` (N, hidden) float32; one (N, 2) output per label,
named after it, column 1 = P(label). Outputs are mapped by name, never by position."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from worker.engine.session import RuntimeOptions, open_session
from worker.errors import ModelError
from worker.labels import LABELS, label_mismatch

HEAD_INPUT = "logits"


class Head:
    def __init__(self, model_dir: Path, runtime: RuntimeOptions) -> None:
        path = model_dir / "model.onnx"
        if not path.is_file():
            raise ModelError(f"head directory {model_dir} has no model.onnx")
        # The head is tiny: one thread avoids contending with the encoder's threads.
        self.session = open_session(path, runtime, threads=1)
        inputs = self.session.get_inputs()
        if [i.name for i in inputs] != [HEAD_INPUT]:
            raise ModelError(
                f"head {model_dir}: expected one input named {HEAD_INPUT!r}, "
                f"found {[i.name for i in inputs]}"
            )
        width = inputs[0].shape[1] if len(inputs[0].shape) == 2 else None
        self.input_width: int | None = width if isinstance(width, int) else None
        mismatch = label_mismatch([o.name for o in self.session.get_outputs()])
        if mismatch:
            raise ModelError(f"head {model_dir}: outputs must be the 28 GoEmotions labels; {mismatch}")
        self.output_names = list(LABELS)

    def check_width(self, hidden: int) -> None:
        if self.input_width is not None and self.input_width != hidden:
            raise ModelError(
                f"head expects {self.input_width}-wide embeddings but the embedder produces "
                f"{hidden}: this head was trained for another embedder"
            )

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, hidden) -> (N, 28) P(label), columns in LABELS order."""
        outs = self.session.run(self.output_names, {HEAD_INPUT: embeddings.astype(np.float32)})
        for name, out in zip(self.output_names, outs, strict=True):
            if out.ndim != 2 or out.shape[1] != 2:
                raise ModelError(f"head output {name!r} has shape {out.shape}, expected (N, 2)")
        return np.stack([out[:, 1] for out in outs], axis=1).astype(np.float32)
