"""Write a head in the reference format: input `logits` (N, hidden) float32, one output per label
named after it, each (N, 2) = [P(not label), P(label)]."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from worker.labels import LABELS


def build_head(layers: list[tuple[np.ndarray, np.ndarray]], hidden: int,
               output_order: list[str] | None = None) -> bytes:
    """layers: [(W (in, out), b (out,)), ...]; ReLU between layers, sigmoid at the end.
    Outputs are named after the labels; output_order only changes their position in the graph."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = []
    inits = []
    current = "logits"
    for k, (w, b) in enumerate(layers):
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"W{k}"))
        inits.append(numpy_helper.from_array(b.astype(np.float32), f"b{k}"))
        nodes.append(helper.make_node("MatMul", [current, f"W{k}"], [f"mm{k}"]))
        nodes.append(helper.make_node("Add", [f"mm{k}", f"b{k}"], [f"z{k}"]))
        current = f"z{k}"
        if k < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [current], [f"h{k}"]))
            current = f"h{k}"
    nodes.append(helper.make_node("Sigmoid", [current], ["probs"]))
    inits.append(numpy_helper.from_array(np.array([1.0], dtype=np.float32), "one"))
    nodes.append(helper.make_node("Sub", ["one", "probs"], ["not_probs"]))
    outputs = []
    for label in output_order or LABELS:
        j = LABELS.index(label)
        idx = f"idx{j}"
        inits.append(numpy_helper.from_array(np.array([j], dtype=np.int64), idx))
        nodes.append(helper.make_node("Gather", ["probs", idx], [f"p{j}"], axis=1))
        nodes.append(helper.make_node("Gather", ["not_probs", idx], [f"q{j}"], axis=1))
        nodes.append(helper.make_node("Concat", [f"q{j}", f"p{j}"], [label], axis=1))
        outputs.append(helper.make_tensor_value_info(label, TensorProto.FLOAT, ["N", 2]))
    graph = helper.make_graph(
        nodes,
        "emotion_head",
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", hidden])],
        outputs,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="emotion-worker")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def write_head(
    out_dir: Path,
    layers: list[tuple[np.ndarray, np.ndarray]],
    thresholds: dict[str, float],
    *,
    metadata: dict[str, object] | None = None,
    output_order: list[str] | None = None,
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    hidden = int(layers[0][0].shape[0])
    (out_dir / "model.onnx").write_bytes(build_head(layers, hidden, output_order))
    (out_dir / "thresholds.json").write_text(json.dumps({k: thresholds[k] for k in LABELS}) + "\n")
    if metadata is not None:
        (out_dir / "training.json").write_text(json.dumps(metadata, indent=2) + "\n")
