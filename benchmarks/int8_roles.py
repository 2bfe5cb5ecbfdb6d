"""Which MatMuls int8 can touch: label-set agreement with fp32 when only one role is quantised.

    python -m benchmarks.int8_roles qkv attn_out ffn1 ffn2 qkv+attn_out+ffn1

Offline model (all-MiniLM-L6-v2 + the shipped head) on the full dev split; each argument is a set
of roles joined by '+', quantised as `emotion-worker export --int8` does (dynamic, signed,
per-channel, reduced range) and compared with fp32. Writes nothing; prints one line per variant.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from worker.engine.engine import Engine, EngineOptions
from worker.model_choice import DEFAULT_HEAD_DIR
from worker.train.dataset import read_split
from worker.train.metrics import report

ROLES = {"qkv": r"attention/self/(query|key|value)", "attn_out": r"attention/output/dense",
         "ffn1": r"intermediate/dense", "ffn2": r"layer\.\d+/output/dense"}


DEV = Path("../shared/data/go_emotions/dev.tsv")
SOURCE = Path("models/all-MiniLM-L6-v2-onnx")


class Reference:
    """The fp32 offline model's probabilities and label sets on dev, to compare variants with."""

    def __init__(self, head: Path = DEFAULT_HEAD_DIR) -> None:
        self.head = head
        self.dev = read_split(DEV)
        self.probs, self.labels = self.run(SOURCE)

    def run(self, model_dir: Path) -> tuple[np.ndarray, np.ndarray]:
        engine = Engine(EngineOptions(embedder=str(model_dir), head=str(self.head), cache_size=0))
        probs, _, _ = engine.probabilities(self.dev.texts)
        return probs, probs >= engine.thresholds.vector

    def compare(self, name: str, model_dir: Path) -> str:
        probs, pred = self.run(model_dir)
        f1 = report(self.dev.targets, pred).macro()["f1"]
        return (f"{name}: label sets agree {(pred == self.labels).all(axis=1).mean():.4f}, "
                f"mean |dP| {np.abs(probs - self.probs).mean():.4f}, macro F1 {f1:.4f}")


def main(argv: list[str]) -> int:
    ref = Reference()
    matmuls = [n.name for n in onnx.load(str(SOURCE / "model.onnx")).graph.node if n.op_type == "MatMul"]
    for spec in argv:
        nodes = [n for n in matmuls if any(re.search(ROLES[r], n) for r in spec.split("+"))]
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "q"
            shutil.copytree(SOURCE, out)
            quantize_dynamic(str(SOURCE / "model.onnx"), str(out / "model.onnx"), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul"], per_channel=True, reduce_range=True,
                             nodes_to_quantize=nodes)
            print(ref.compare(f"{spec} ({len(nodes)} MatMuls)", out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
