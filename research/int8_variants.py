"""Other dynamic-int8 recipes against fp32: label-set agreement on dev with the offline model.

    python -m research.int8_variants --dev DEV.tsv --train TRAIN.tsv default full-range unsigned smooth:0.5 \
        nbits:32,0 nbits:32,4
    python -m research.int8_variants --dev DEV.tsv --head DIR default   # another head on the same embedder

- `default`: what `emotion-worker export --int8` writes (signed, per-channel, reduced range);
- `full-range`: signed 8-bit weights without the reduced range (AVX2 without VNNI may saturate);
- `unsigned`: unsigned 8-bit weights, full range (optimum's `avx2` preset's weight type);
- `smooth:ALPHA`: SmoothQuant-style smoothing before the default recipe. Each MatMul input's
  channels are divided by s = max|X|^ALPHA / max|W|^(1-ALPHA) (X measured on 300 train texts,
  W over the MatMuls sharing that input) and the weights' rows multiplied by s, which is exact in
  fp32, so activation outliers move into the per-channel-quantised weights;
- `nbits:BLOCK,LEVEL`: onnxruntime's block-wise 8-bit `MatMulNBits` (symmetric, BLOCK weights per
  scale). LEVEL 0 computes in fp32 from the dequantised weights, so only the weights are rounded:
  the finest int8 weight grid onnxruntime offers, and a bound on what any int8-weight recipe can
  agree; LEVEL 4 also quantises activations to int8, per block of BLOCK inputs;
- `weights:BITS`: the default recipe's weight grid alone, simulated in fp32: each weight column
  rounded to signed BITS bits with one scale per output channel (7 is int8's reduced range, what
  `export --int8` uses; 8 the full range), activations left in fp32.

Every MatMul with constant weights is quantised. Writes nothing; prints one line per variant.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from transformers import AutoTokenizer

from research.int8_roles import Reference, arguments
from worker.train.dataset import read_split

CALIBRATION_TEXTS = 300


def weight_groups(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """MatMuls with constant weights, grouped by their shared activation input."""
    inits = {i.name for i in model.graph.initializer}
    groups: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits:
            groups.setdefault(node.input[0], []).append(node)
    return groups


def activation_max(model_dir: Path, inputs: list[str], train: Path) -> dict[str, np.ndarray]:
    """Per-channel max |x| of the given tensors over calibration train texts, one text per call
    (no padding rows)."""
    model = onnx.load(str(model_dir / "model.onnx"))
    for name in inputs:
        model.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = [i.name for i in session.get_inputs()]
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    texts = read_split(train).texts
    pick = np.random.default_rng(0).choice(len(texts), CALIBRATION_TEXTS, replace=False)
    peak = {name: np.zeros(0, dtype=np.float32) for name in inputs}
    for i in pick:
        enc = tokenizer([texts[i]], return_tensors="np", truncation=True, max_length=256)
        for name, out in zip(inputs, session.run(inputs, {k: enc[k].astype(np.int64) for k in feeds}), strict=True):
            channel = np.abs(out).reshape(-1, out.shape[-1]).max(axis=0)
            peak[name] = channel if peak[name].size == 0 else np.maximum(peak[name], channel)
    return peak


def smooth(src: Path, out: Path, alpha: float, train: Path) -> None:
    model = onnx.load(str(src / "model.onnx"))
    groups = weight_groups(model)
    peak = activation_max(src, list(groups), train)
    inits = {i.name: i for i in model.graph.initializer}
    for x, matmuls in groups.items():
        weights = [numpy_helper.to_array(inits[m.input[1]]) for m in matmuls]
        w_peak = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        s = (np.maximum(peak[x], 1e-5) ** alpha / np.maximum(w_peak, 1e-5) ** (1 - alpha)).astype(np.float32)
        inv = numpy_helper.from_array(1 / s, f"{x}/smooth_inv")
        model.graph.initializer.append(inv)
        at = list(model.graph.node).index(matmuls[0])
        model.graph.node.insert(at, helper.make_node("Mul", [x, inv.name], [f"{x}/smoothed"], name=f"{x}/smooth"))
        for m, w in zip(matmuls, weights, strict=True):
            m.input[0] = f"{x}/smoothed"
            inits[m.input[1]].CopyFrom(numpy_helper.from_array(w * s[:, None], m.input[1]))
    onnx.save(model, str(out / "model.onnx"))


def nbits(src: Path, out: Path, block: int, level: int) -> None:
    # needs the onnx-ir package (pip install onnx-ir), which the project does not otherwise use
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)  # a line per node otherwise
    config = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=True, accuracy_level=level, bits=8)
    quantizer = MatMulNBitsQuantizer(onnx.load(str(src / "model.onnx")), algo_config=config)
    quantizer.process()
    quantizer.model.save_model_to_file(str(out / "model.onnx"), use_external_data_format=False)


def round_weights(src: Path, out: Path, bits: int) -> None:
    model = onnx.load(str(src / "model.onnx"))
    inits = {i.name: i for i in model.graph.initializer}
    top = 2 ** (bits - 1) - 1
    for matmuls in weight_groups(model).values():
        for m in matmuls:
            w = numpy_helper.to_array(inits[m.input[1]])
            scale = np.maximum(np.abs(w).max(axis=0, keepdims=True), 1e-12) / top
            rounded = (np.clip(np.round(w / scale), -top - 1, top) * scale).astype(np.float32)
            inits[m.input[1]].CopyFrom(numpy_helper.from_array(rounded, m.input[1]))
    onnx.save(model, str(out / "model.onnx"))


def main(argv: list[str] | None = None) -> int:
    ap = arguments(__doc__.split("\n", 1)[0])
    ap.add_argument("--train", type=Path, help="GoEmotions train split: calibration texts for smooth:ALPHA")
    args = ap.parse_args(argv)
    ref = Reference(args.model, args.head, args.dev)
    source = args.model
    for spec in args.variants:
        with tempfile.TemporaryDirectory() as tmp:
            fp32, q = Path(tmp) / "fp32", Path(tmp) / "q"
            shutil.copytree(source, fp32)
            shutil.copytree(source, q)
            weight_type, reduce_range = QuantType.QInt8, True
            if spec.startswith("weights:"):
                round_weights(source, q, int(spec.split(":", 1)[1]))
                print(ref.compare(spec, q), flush=True)
                continue
            if spec.startswith("nbits:"):
                block, level = (int(v) for v in spec.split(":", 1)[1].split(","))
                nbits(source, q, block, level)
                print(ref.compare(spec, q), flush=True)
                continue
            if spec == "full-range":
                reduce_range = False
            elif spec == "unsigned":
                weight_type, reduce_range = QuantType.QUInt8, False
            elif spec.startswith("smooth:"):
                if args.train is None:
                    raise SystemExit("smooth:ALPHA needs --train")
                smooth(source, fp32, float(spec.split(":", 1)[1]), args.train)
                print(ref.compare(f"{spec}, fp32 after smoothing (must agree 1.0)", fp32), flush=True)
            elif spec != "default":
                raise SystemExit(f"unknown variant {spec!r}")
            quantize_dynamic(str(fp32 / "model.onnx"), str(q / "model.onnx"), weight_type=weight_type,
                             op_types_to_quantize=["MatMul"], per_channel=True, reduce_range=reduce_range)
            print(ref.compare(spec, q), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
