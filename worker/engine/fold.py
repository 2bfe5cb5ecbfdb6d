"""Fold pooling, L2 normalisation and the emotion head into the encoder's ONNX graph, so that one
session call turns token ids into the 28 label probabilities.

The folded graph computes exactly what the separate path does (encoder, then numpy pooling and
normalisation, then the head session): the head's outputs are still read by name, column 1 of
each, and stacked in LABELS order into one output, `probabilities` (N, 28).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, compose, helper, numpy_helper, version_converter

from worker.labels import LABELS

PROBABILITIES = "probabilities"
HEAD_PREFIX = "head/"
MIN_OPSET = 13  # ReduceSum/Unsqueeze with axes as an input


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _at_opset(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    if _default_opset(model) == version:
        return model
    return version_converter.convert_version(model, version)


def _pooling_nodes(hidden: str, hidden_type: int, mask: str, pooling: str, out: str,
                   ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """hidden (N, S, H) and attention_mask (N, S) -> L2-normalised (N, H) float32 named `out`."""
    p = "fold/"
    consts = [
        numpy_helper.from_array(np.array(0, dtype=np.int64), p + "zero"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), p + "axis1"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), p + "axis2"),
        numpy_helper.from_array(np.array(1e-9, dtype=np.float32), p + "min_count"),
        numpy_helper.from_array(np.array(1e-12, dtype=np.float32), p + "min_norm"),
    ]
    nodes: list[onnx.NodeProto] = []
    if hidden_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [hidden], [p + "hidden"], to=TensorProto.FLOAT))
        hidden = p + "hidden"
    if pooling == "cls":
        nodes.append(helper.make_node("Gather", [hidden, p + "zero"], [p + "vec"], axis=1))
    elif pooling == "mean":
        nodes += [
            helper.make_node("Cast", [mask], [p + "maskf"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", [p + "maskf", p + "axis2"], [p + "mask3"]),
            helper.make_node("Mul", [hidden, p + "mask3"], [p + "masked"]),
            helper.make_node("ReduceSum", [p + "masked", p + "axis1"], [p + "sum"], keepdims=0),
            helper.make_node("ReduceSum", [p + "mask3", p + "axis1"], [p + "count"], keepdims=0),
            helper.make_node("Max", [p + "count", p + "min_count"], [p + "count1"]),
            helper.make_node("Div", [p + "sum", p + "count1"], [p + "vec"]),
        ]
    else:
        raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
    nodes += [
        helper.make_node("Mul", [p + "vec", p + "vec"], [p + "sq"]),
        helper.make_node("ReduceSum", [p + "sq", p + "axis1"], [p + "sumsq"], keepdims=1),
        helper.make_node("Sqrt", [p + "sumsq"], [p + "norm"]),
        helper.make_node("Max", [p + "norm", p + "min_norm"], [p + "norm1"]),
        helper.make_node("Div", [p + "vec", p + "norm1"], [out]),
    ]
    return nodes, consts


def _stack_nodes(head_outputs: dict[str, str]) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Column 1 of each label's (N, 2) output, in LABELS order, as one (N, 28): the outputs are
    concatenated to (N, 56) and the odd columns gathered (two operators rather than 29)."""
    p = "fold/"
    odd = np.arange(1, 2 * len(LABELS), 2, dtype=np.int64)
    consts = [numpy_helper.from_array(odd, p + "odd_columns")]
    nodes = [
        helper.make_node("Concat", [head_outputs[label] for label in LABELS], [p + "pairs"], axis=1),
        helper.make_node("Gather", [p + "pairs", p + "odd_columns"], [PROBABILITIES], axis=1),
    ]
    return nodes, consts


def fold_head(encoder_file: Path, token_output: str, pooling: str, head_file: Path) -> bytes:
    """One ONNX model: the encoder's inputs in, `probabilities` (N, 28) out. Raises on any model
    the fold cannot join (the engine then keeps the two sessions)."""
    encoder = onnx.load(str(encoder_file))
    head = onnx.load(str(head_file))
    opset = max(_default_opset(encoder), _default_opset(head), MIN_OPSET)
    encoder = _at_opset(encoder, opset)
    head = compose.add_prefix(_at_opset(head, opset), HEAD_PREFIX)
    head_input = head.graph.input[0].name
    head_outputs = {o.name[len(HEAD_PREFIX):]: o.name for o in head.graph.output}
    missing = [label for label in LABELS if label not in head_outputs]
    if missing:
        raise ValueError(f"head lacks outputs {missing}")
    hidden = next(o for o in encoder.graph.output if o.name == token_output)
    pool_nodes, pool_consts = _pooling_nodes(hidden.name, hidden.type.tensor_type.elem_type,
                                             "attention_mask", pooling, head_input)
    stack_nodes, stack_consts = _stack_nodes(head_outputs)
    # Built in place on the encoder's graph: its weights are never copied (memory at load time).
    graph = encoder.graph
    graph.node.extend([*pool_nodes, *head.graph.node, *stack_nodes])
    graph.initializer.extend([*pool_consts, *head.graph.initializer, *stack_consts])
    graph.sparse_initializer.extend(head.graph.sparse_initializer)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, ["batch", len(LABELS)]))
    graph.name = "encoder_with_emotion_head"
    imports: dict[str, int] = {}
    for model in (encoder, head):
        for o in model.opset_import:
            domain = "" if o.domain == "ai.onnx" else o.domain
            imports[domain] = max(imports.get(domain, 0), o.version)
    del encoder.opset_import[:]
    encoder.opset_import.extend(helper.make_opsetid(d, v) for d, v in imports.items())
    encoder.ir_version = max(encoder.ir_version, head.ir_version)
    encoder.functions.extend(head.functions)
    encoder.producer_name = "emotion-worker fold"
    return bytes(encoder.SerializeToString())
