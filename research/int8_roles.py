"""Which MatMuls int8 can touch: label-set agreement with fp32 when only one role is quantised.

    python -m research.int8_roles --dev ../shared/data/go_emotions/dev.tsv qkv attn_out ffn1 ffn2 qkv+attn_out+ffn1

An embedder (default: the offline all-MiniLM-L6-v2 export) and a head (default: the frozen-MiniLM baseline head)
on a GoEmotions split (the full dev split); each argument is a set
of roles joined by '+', quantised as `emotion-worker export --int8` does (dynamic, signed,
per-channel, reduced range) and compared with fp32. Writes nothing; prints one line per variant.
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from worker.engine.engine import Engine, EngineOptions
from worker.evaluate import agreement
from worker.model_choice import FROZEN_HEAD_DIR
from worker.train.dataset import read_split
from worker.train.metrics import report

ROLES = {"qkv": r"attention/self/(query|key|value)", "attn_out": r"attention/output/dense",
         "ffn1": r"intermediate/dense", "ffn2": r"layer\.\d+/output/dense"}


def arguments(description: str) -> argparse.ArgumentParser:
    """The paths every int8 probe takes."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--dev", type=Path, required=True, help="GoEmotions split to compare on, e.g. dev.tsv")
    ap.add_argument("--model", type=Path, default=Path("models/all-MiniLM-L6-v2-onnx"), help="fp32 embedder")
    ap.add_argument("--head", type=Path, default=FROZEN_HEAD_DIR, help="head (default: the frozen baseline)")
    ap.add_argument("variants", nargs="+")
    return ap


class Reference:
    """The fp32 model's probabilities on a split, to compare variants with."""

    def __init__(self, source: Path, head: Path, split: Path) -> None:
        self.source = source
        self.head = head
        self.split = read_split(split)
        self.probs, self.thresholds = self.run(source)

    def run(self, model_dir: Path) -> tuple[np.ndarray, np.ndarray]:
        engine = Engine(EngineOptions(embedder=str(model_dir), head=str(self.head), cache_size=0))
        probs, _, _ = engine.probabilities(self.split.texts)
        return probs, engine.thresholds.vector

    def compare(self, name: str, model_dir: Path) -> str:
        probs, _ = self.run(model_dir)
        f1 = report(self.split.targets, probs >= self.thresholds).macro()["f1"]
        same = agreement(self.probs, probs, self.thresholds)
        return (f"{name}: label sets agree {same['label_sets_identical']:.4f}, "
                f"mean |dP| {same['mean_abs_dp']:.4f}, macro F1 {f1:.4f}")


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__.split("\n", 1)[0]).parse_args(argv)
    ref = Reference(args.model, args.head, args.dev)
    source = args.model
    matmuls = [n.name for n in onnx.load(str(source / "model.onnx")).graph.node if n.op_type == "MatMul"]
    for spec in args.variants:
        nodes = [n for n in matmuls if any(re.search(ROLES[r], n) for r in spec.split("+"))]
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "q"
            shutil.copytree(source, out)
            quantize_dynamic(str(source / "model.onnx"), str(out / "model.onnx"), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul"], per_channel=True, reduce_range=True,
                             nodes_to_quantize=nodes)
            print(ref.compare(f"{spec} ({len(nodes)} MatMuls)", out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
