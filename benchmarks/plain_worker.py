"""What a user would write instead of this worker: the loop a competent engineer writes in an afternoon.

    python -m benchmarks.plain_worker --bootstrap HOST:PORT --input IN --output OUT --group G \\
        --embedder models/emotion-minilm-onnx --head worker/models/emotion-minilm/head

confluent-kafka `consume(32, timeout=0.1)`, the model's own fast tokenizer (tokenizer.json, padded to the
batch's longest, truncated at --max-length), one onnxruntime session on the same ONNX encoder
(default session options), the pooling its 1_Pooling config names and L2 normalisation in numpy,
the head's ONNX session and its thresholds.json, one JSON result per message (id, labels, all 28
scores rounded to 4 decimals, as the worker writes by default) to the output topic with the
input's key, then `flush()` and a synchronous commit per batch. Input that is not a JSON object
with a string "text" is skipped. SIGTERM or SIGINT stops it after the batch in hand; it then says
where its time went (consume, model, produce + flush, commit).
The benchmark (benchmarks/bench.py --only-worker) measures its backlog throughput against the
worker's on the same texts and model.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import numpy as np
import onnxruntime as ort
from confluent_kafka import Consumer, Producer
from tokenizers import Tokenizer


class PlainModel:
    """Tokenizer + encoder session + pooling + head session, as a user would wire them."""

    def __init__(self, embedder: Path, head: Path, max_length: int) -> None:
        self.tokenizer = Tokenizer.from_file(str(embedder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.enable_padding(pad_id=self.tokenizer.token_to_id("[PAD]") or 0)
        self.encoder = ort.InferenceSession(str(embedder / "model.onnx"), providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.encoder.get_inputs()}
        pooling = embedder / "1_Pooling" / "config.json"
        self.mean = pooling.is_file() and bool(json.loads(pooling.read_text()).get("pooling_mode_mean_tokens"))
        self.head = ort.InferenceSession(str(head / "model.onnx"), providers=["CPUExecutionProvider"])
        self.labels = [o.name for o in self.head.get_outputs()]  # one (N, 2) output per label, named after it
        thresholds = json.loads((head / "thresholds.json").read_text())
        self.thresholds = np.array([thresholds[label] for label in self.labels], dtype=np.float32)

    def probabilities(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        (hidden,) = self.encoder.run(["last_hidden_state"], {k: v for k, v in feeds.items() if k in self.input_names})
        if self.mean:
            m = mask[:, :, None].astype(np.float32)
            vectors = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        else:
            vectors = hidden[:, 0]
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        outputs = self.head.run(None, {"logits": vectors.astype(np.float32)})
        return np.stack([out[:, 1] for out in outputs], axis=1)

    def result(self, message_id: object, probs: np.ndarray) -> dict[str, object]:
        order = np.argsort(-probs)
        return {"id": message_id,
                "labels": [self.labels[j] for j in order if probs[j] >= self.thresholds[j]],
                "scores": {label: round(float(p), 4) for label, p in zip(self.labels, probs, strict=True)}}


def run(args: argparse.Namespace) -> int:
    model = PlainModel(args.embedder, args.head, args.max_length)
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.group,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "session.timeout.ms": args.session_timeout_ms,
                         "heartbeat.interval.ms": max(args.session_timeout_ms // 4, 100)})
    producer = Producer({"bootstrap.servers": args.bootstrap, "enable.idempotence": True, "linger.ms": 5})
    consumer.subscribe([args.input])
    running = True

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("plain worker: consuming", args.input, flush=True)
    spent = dict.fromkeys(("consume", "model", "produce + flush", "commit"), 0.0)
    done = batches = 0
    while running:
        t0 = time.perf_counter()
        messages = consumer.consume(32, timeout=0.1)
        spent["consume"] += time.perf_counter() - t0
        if not messages:
            continue
        batch = []
        for message in messages:
            if message.error() is not None:
                print("plain worker: consume error", message.error(), file=sys.stderr, flush=True)
                continue
            try:
                doc = json.loads(message.value() or b"")
                text = doc["text"]
            except (ValueError, KeyError, TypeError):
                continue
            if isinstance(text, str):
                batch.append((message, doc, text))
        t1 = time.perf_counter()
        texts = [text for _, _, text in batch]
        probs = model.probabilities(texts) if texts else np.empty((0, len(model.labels)), dtype=np.float32)
        t2 = time.perf_counter()
        for (message, doc, _), p in zip(batch, probs, strict=True):
            value = json.dumps(model.result(doc.get("id"), p))
            producer.produce(args.output, value=value.encode(), key=message.key())
        producer.flush()
        t3 = time.perf_counter()
        consumer.commit(asynchronous=False)
        spent["model"] += t2 - t1
        spent["produce + flush"] += t3 - t2
        spent["commit"] += time.perf_counter() - t3
        done += len(batch)
        batches += 1
    producer.flush()
    consumer.close()
    print(f"plain worker: {done} messages in {batches} batches; seconds: "
          + ", ".join(f"{name} {s:.2f}" for name, s in spent.items()), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--group", default="plain-worker")
    ap.add_argument("--embedder", type=Path, required=True, help="ONNX encoder directory (tokenizer.json beside it)")
    ap.add_argument("--head", type=Path, required=True, help="head directory (model.onnx, thresholds.json)")
    ap.add_argument("--session-timeout-ms", type=int, default=45_000,
                    help="the group session timeout (librdkafka's default; the benchmark's local broker holds a new "
                         "group's first join for half of it, so the benchmark passes the worker's test value)")
    ap.add_argument("--max-length", type=int, default=512, help="tokens (the worker's model.max_length default)")
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    from benchmarks.entry import run as run_script

    run_script(main)
