"""fine-tune: train the encoder (LoRA adapters) and a linear head end to end on GoEmotions train,
evaluate on dev each epoch, keep the best epoch by dev macro F1, and write what the engine loads:

    OUTPUT/embedder/   ONNX encoder + tokenizer + pooling config (base weights + adapters, merged)
    OUTPUT/head/       the reference head format: model.onnx (input `logits`, 28 (N, 2) outputs by
                       label, logit scale folded in) + thresholds.json (tuned on dev)
    OUTPUT/adapter/    the adapters (fp16) and their spec: with the base weights, all a rebuild needs
    OUTPUT/training.json  recipe, seed, per-epoch dev metrics, time; reference_probs.npy for checks

Seeded and deterministic on CPU; CUDA when torch sees a GPU. Needs the 'train' and 'build' (or 'export') extras.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worker.engine.batching import pad_batch
from worker.engine.embedder_identity import (
    EmbedderIdentity,
    combined_fingerprint,
    files_digest,
    read_identity,
    weights_fingerprint,
)
from worker.engine.thresholds import Thresholds
from worker.labels import LABELS
from worker.train.dataset import Split, read_split, split_paths
from worker.train.losses import LossName, loss_function
from worker.train.metrics import SHRINK, held_out_macro_f1, report, tune_thresholds

log = logging.getLogger(__name__)

REFERENCE_TEXTS = 256  # dev texts whose probabilities are kept, to check a rebuilt model against


@dataclass(frozen=True)
class Recipe:
    epochs: int = 3
    batch_size: int = 32
    lr_encoder: float = 5e-4  # the LoRA adapters
    lr_head: float = 2e-3  # head and logit scale
    weight_decay: float = 0.01
    warmup: float = 0.06  # share of the steps, then linear decay to 0
    grad_clip: float = 1.0
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    logit_scale: float = 20.0
    max_length: int = 128
    seed: int = 0
    eval_batch_size: int = 128
    loss: LossName = "bce"
    average_last: int = 0  # >= 2: also try the mean of the last K epochs' weights; kept if dev says better


@dataclass(frozen=True)
class Epoch:
    epoch: int
    train_loss: float
    dev_macro_f1: float  # thresholds tuned on dev
    dev_macro_f1_at_05: float
    seconds: float


def set_seed(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def tokenize(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    enc = tokenizer(texts, truncation=True, max_length=max_length, padding=False)
    return [list(ids) for ids in enc["input_ids"]]


def bucketed_batches(lengths: list[int], batch_size: int, rng: random.Random, pool: int = 50) -> list[list[int]]:
    """Length-bucketed batches: shuffle, sort each pool of `pool` batches' worth by length, cut it
    into batches, shuffle the batches. Similar lengths share a batch; the order still varies."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    span = batch_size * pool
    batches: list[list[int]] = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start:start + span], key=lambda i: lengths[i])
        batches += [chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def pad(ids: list[list[int]], rows: list[int], pad_id: int) -> tuple[Any, Any]:
    """The engine's padding (each batch to its own longest text), as torch tensors."""
    import torch

    batch = pad_batch(ids, rows, pad_id)
    return torch.from_numpy(batch.ids), torch.from_numpy(batch.mask)


def predict(model: Any, ids: list[list[int]], pad_id: int, batch_size: int, device: str) -> np.ndarray:
    import torch

    model.eval()
    probs = np.zeros((len(ids), len(LABELS)), dtype=np.float32)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            x, mask = pad(ids, rows, pad_id)
            probs[rows] = torch.sigmoid(model(x.to(device), mask.to(device))).float().cpu().numpy()
    model.train()
    return probs


def dev_scores(targets: np.ndarray, probs: np.ndarray) -> tuple[float, float, dict[str, float]]:
    thresholds = tune_thresholds(targets, probs)
    vec = Thresholds(thresholds).vector
    return report(targets, probs >= vec).macro()["f1"], report(targets, probs >= 0.5).macro()["f1"], thresholds


def fine_tune(base: str, data_dir: Path, output: Path, recipe: Recipe, *, check_rows: bool = True,
              progress: bool = True, base_name: str | None = None) -> dict[str, Any]:
    """`base_name`: what the outputs record as the base (a hub id, say, where `base` is a local copy)."""
    train_path, dev_path = split_paths(data_dir)
    # The data first: a bad file is said in one line before torch loads.
    train, dev = (read_split(path, check_rows=check_rows) for path in (train_path, dev_path))
    import torch
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from worker.engine.embedder import read_pooling
    from worker.engine.resolve import resolve_model_dir
    from worker.train.emotion_model import AdapterSpec, EmotionModel

    started = time.monotonic()
    set_seed(recipe.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    base_dir = Path(base) if Path(base).is_dir() else resolve_model_dir(base, what="base encoder")
    spec = AdapterSpec(base=base, pooling=read_pooling(base_dir), rank=recipe.lora_rank, alpha=recipe.lora_alpha,
                       dropout=recipe.lora_dropout)
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))  # type: ignore[no-untyped-call]
    pad_id = int(tokenizer.pad_token_id or 0)
    train_ids = tokenize(tokenizer, train.texts, recipe.max_length)
    dev_ids = tokenize(tokenizer, dev.texts, recipe.max_length)
    model = EmotionModel(spec, recipe.logit_scale).to(device)
    model.train()
    head_params = [*model.head.parameters(), model.logit_scale]
    optimizer = torch.optim.AdamW([
        {"params": [p for p in model.encoder.parameters() if p.requires_grad], "lr": recipe.lr_encoder},
        {"params": head_params, "lr": recipe.lr_head},
    ], weight_decay=recipe.weight_decay)
    rng = random.Random(recipe.seed)
    steps_per_epoch = -(-len(train_ids) // recipe.batch_size)
    total = steps_per_epoch * recipe.epochs
    warmup = max(1, int(total * recipe.warmup))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup))))
    targets = torch.tensor(train.targets, dtype=torch.float32)
    loss_fn = loss_function(recipe.loss)
    history: list[Epoch] = []
    best: tuple[float, int, dict[str, Any]] | None = None
    recent: list[dict[str, Any]] = []  # the last `average_last` epochs' weights
    bar = tqdm(total=total, desc="fine-tune", unit="step", disable=not progress)
    for epoch in range(1, recipe.epochs + 1):
        t0, losses = time.monotonic(), []
        for rows in bucketed_batches([len(i) for i in train_ids], recipe.batch_size, rng):
            x, mask = pad(train_ids, rows, pad_id)
            loss = loss_fn(model(x.to(device), mask.to(device)), targets[rows].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{np.mean(losses[-50:]):.4f}")
        probs = predict(model, dev_ids, pad_id, recipe.eval_batch_size, device)
        tuned, at_05, _ = dev_scores(dev.targets, probs)
        history.append(Epoch(epoch, float(np.mean(losses)), tuned, at_05, time.monotonic() - t0))
        log.info("epoch %d: train loss %.4f, dev macro F1 %.4f (tuned), %.4f (0.5)", epoch, np.mean(losses), tuned,
                 at_05)
        state = {"adapter": model.adapter_state(), "head": copy.deepcopy(model.head.state_dict()),
                 "scale": model.logit_scale.detach().clone()}
        if best is None or tuned > best[0]:
            best = (tuned, epoch, state)
        if recipe.average_last >= 2:
            recent = [*recent, state][-recipe.average_last:]
    bar.close()
    assert best is not None
    best_f1, best_epoch, state = best
    selected, average_f1 = f"epoch {best_epoch}", None
    if len(recent) >= 2:  # checkpoint averaging: kept only where dev says it beats the best epoch
        averaged = average_states(recent)
        load_state(model, averaged)
        average_f1, _, _ = dev_scores(dev.targets, predict(model, dev_ids, pad_id, recipe.eval_batch_size, device))
        log.info("mean of the last %d epochs' weights: dev macro F1 %.4f (tuned)", len(recent), average_f1)
        if average_f1 > best_f1:
            state, selected = averaged, f"mean of epochs {epoch - len(recent) + 1}-{epoch}"
    model = model.cpu()
    load_state(model, state)
    recorded = AdapterSpec(base=base_name or base, pooling=spec.pooling, rank=spec.rank, alpha=spec.alpha,
                           dropout=spec.dropout)
    info = write_outputs(model, recorded, output, dev, recipe, load_from=base)
    info.update(recipe=asdict(recipe), seed=recipe.seed, base=base_name or base, best_epoch=best_epoch, device=device,
                selected=selected, average_dev_macro_f1=average_f1,
                epochs=[asdict(e) for e in history], seconds=round(time.monotonic() - started, 1),
                train_rows=len(train.texts), dev_rows=len(dev.texts))
    (output / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.copyfile(output / "training.json", output / "head" / "training.json")
    return info


def average_states(states: list[dict[str, Any]]) -> dict[str, Any]:
    """The element-wise mean of several epochs' adapter, head and logit-scale weights."""
    import torch

    def mean(tensors: list[Any]) -> Any:
        return torch.stack([t.float() for t in tensors]).mean(dim=0)

    return {"adapter": {k: mean([s["adapter"][k] for s in states]) for k in states[0]["adapter"]},
            "head": {k: mean([s["head"][k] for s in states]) for k in states[0]["head"]},
            "scale": mean([s["scale"] for s in states])}


def load_state(model: Any, state: dict[str, Any]) -> None:
    import torch

    model.load_adapter_state(state["adapter"])
    model.head.load_state_dict(state["head"])
    with torch.no_grad():
        model.logit_scale.copy_(state["scale"])


def write_outputs(model: Any, spec: Any, output: Path, dev: Split, recipe: Recipe, load_from: str) -> dict[str, Any]:
    """Adapters (as shipped, fp16), the merged encoder exported to ONNX, the head; thresholds tuned
    on dev with the exported model itself, so the figures are those of what ships."""
    from worker.train.emotion_model import as_shipped, save_adapter
    from worker.train.head_onnx import write_head

    shipped = as_shipped(model.adapter_state())
    save_adapter(output / "adapter", spec, shipped)
    build_embedder(output / "adapter", output / "embedder", base=load_from)
    identity = read_identity(str(output / "embedder"))
    write_head(output / "head", model.head_layers(), dict.fromkeys(LABELS, 0.5))
    probs = onnx_probabilities(output / "embedder", output / "head", dev.texts)
    tuned, at_05, thresholds = dev_scores(dev.targets, probs)
    write_head(output / "head", model.head_layers(), thresholds)
    np.save(output / "reference_probs.npy", probs[:REFERENCE_TEXTS])
    vec = Thresholds(thresholds).vector
    weighted = report(dev.targets, probs >= vec).weighted()["f1"]
    # The head's pairing record: the worker refuses it with any other embedder (worker/model_pairing.py).
    return {"dev_macro_f1": tuned, "dev_macro_f1_at_05": at_05, "dev_weighted_f1": weighted,
            "thresholds_shrink": SHRINK, "dev_macro_f1_held_out": held_out_macro_f1(dev.targets, probs),
            "embedder_identity": identity.as_json() if identity else None}


def fine_tuned_identity(adapter_dir: Path, base: str | None = None) -> EmbedderIdentity:
    """What a build of these adapters on that base (default: the one adapter.json names) is: named
    after the recorded base and the adapters, fingerprinted from the base weights and the adapters'
    file (inputs, not the export: a rebuild elsewhere has the same identity)."""
    from worker.engine.resolve import resolve_model_dir
    from worker.train.emotion_model import ADAPTER_CONFIG, ADAPTER_WEIGHTS

    recorded = json.loads((adapter_dir / ADAPTER_CONFIG).read_text())["base"]
    base = base or recorded
    base_dir = Path(base) if Path(base).is_dir() else resolve_model_dir(base, what="base encoder")
    adapters = files_digest([adapter_dir / ADAPTER_WEIGHTS])
    return EmbedderIdentity(f"{recorded} + adapters {adapters[:8]}",
                            combined_fingerprint(weights_fingerprint(base_dir), adapters))


def build_embedder(adapter_dir: Path, output: Path, base: str | None = None) -> Path:
    """Base weights + the adapters -> the ONNX embedder directory (what `export --default` runs)."""
    from worker.engine.export import export_encoder
    from worker.train.emotion_model import load_adapter, merged_encoder

    spec, state = load_adapter(adapter_dir, base)
    with tempfile.TemporaryDirectory(prefix="emotion-merged-") as tmp:
        merged = merged_encoder(spec, state, Path(tmp) / "merged")
        export_encoder(str(merged), output, identity=fine_tuned_identity(adapter_dir, base))
    (output / "export.json").write_text(json.dumps({"base": spec.base, "adapter": str(adapter_dir)}, indent=2) + "\n")
    return output


def onnx_probabilities(embedder: Path, head: Path, texts: list[str]) -> np.ndarray:
    """What the worker computes, with its default settings."""
    from worker.engine.engine import Engine, EngineOptions

    engine = Engine(EngineOptions(embedder=str(embedder), head=str(head), cache_size=0))
    probs, _, _ = engine.probabilities(texts)
    return probs
