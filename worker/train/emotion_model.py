"""The model fine-tuning trains: a Hugging Face encoder with LoRA adapters on its linear layers,
pooled as the base model says (mean or CLS), L2-normalised, then a linear head with a learned logit
scale. What ships is small: the adapters (fp16) and the head. `merged_encoder` turns the base
weights plus adapters back into a plain encoder, the same way in training and in a rebuild.

Needs the 'train' extra (torch, peft)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from worker.labels import LABELS

# Every linear layer of a BERT-style encoder block: attention Q/K/V and output, FFN in and out.
LORA_TARGETS = (r".*encoder\.layer\.\d+\."
                r"(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)")
ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter.json"


@dataclass(frozen=True)
class AdapterSpec:
    base: str  # hub id or directory of the base encoder
    pooling: str  # "mean" or "cls", from the base model's config
    rank: int
    alpha: int
    dropout: float = 0.0

    def lora_config(self) -> Any:
        from peft import LoraConfig

        return LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=LORA_TARGETS,
                          bias="none")


def load_base(base: str) -> nn.Module:
    from transformers import AutoModel

    return AutoModel.from_pretrained(base)  # type: ignore[no-any-return]


class EmotionModel(nn.Module):
    def __init__(self, spec: AdapterSpec, logit_scale: float = 20.0) -> None:
        super().__init__()
        from peft import get_peft_model

        self.spec = spec
        self.encoder = get_peft_model(load_base(spec.base), spec.lora_config())
        hidden = int(self.encoder.config.hidden_size)
        self.head = nn.Linear(hidden, len(LABELS))
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)))

    def embed(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        if self.spec.pooling == "cls":
            vec = hidden[:, 0]
        else:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            vec = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(vec, dim=-1)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits (N, 28)."""
        return self.logit_scale * self.head(self.embed(ids, mask))  # type: ignore[no-any-return]

    def adapter_state(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.encoder).items()}

    def load_adapter_state(self, state: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.encoder, {k: v.float() for k, v in state.items()})

    def head_layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The head with the logit scale folded in, as (W (hidden, 28), b): the reference format's layers."""
        scale = float(self.logit_scale.detach())
        w = (self.head.weight.detach().float().numpy().T * scale).astype(np.float32)
        b = (self.head.bias.detach().float().numpy() * scale).astype(np.float32)
        return [(w, b)]


def save_adapter(out_dir: Path, spec: AdapterSpec, state: dict[str, torch.Tensor]) -> None:
    """The adapters in fp16 (what ships) and the spec that rebuilds the encoder from them."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in sorted(state.items())}, str(out_dir / ADAPTER_WEIGHTS))
    (out_dir / ADAPTER_CONFIG).write_text(json.dumps(asdict(spec), indent=2) + "\n")


def load_adapter(adapter_dir: Path, base: str | None = None) -> tuple[AdapterSpec, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    spec = AdapterSpec(**json.loads((adapter_dir / ADAPTER_CONFIG).read_text()))
    if base is not None:
        spec = AdapterSpec(base=base, pooling=spec.pooling, rank=spec.rank, alpha=spec.alpha, dropout=spec.dropout)
    return spec, load_file(str(adapter_dir / ADAPTER_WEIGHTS))


def as_shipped(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adapters rounded as they are stored (fp16), back in fp32: what a rebuild will use."""
    return {k: v.half().float() for k, v in state.items()}


def merged_encoder(spec: AdapterSpec, state: dict[str, torch.Tensor], out_dir: Path) -> Path:
    """Base weights + adapters merged into a plain Hugging Face encoder at out_dir (with the base's
    tokenizer and pooling files), ready for the ONNX export."""
    import shutil

    from peft import get_peft_model, set_peft_model_state_dict

    model = get_peft_model(load_base(spec.base), spec.lora_config())
    set_peft_model_state_dict(model, {k: v.float() for k, v in state.items()})
    merged = model.merge_and_unload()
    merged.eval().save_pretrained(out_dir)
    base_dir = Path(spec.base)
    if not base_dir.is_dir():
        from worker.engine.resolve import resolve_model_dir

        base_dir = resolve_model_dir(spec.base, what="base encoder")
    for item in base_dir.iterdir():
        if item.name.startswith("tokenizer") or item.name in ("vocab.txt", "special_tokens_map.json", "modules.json",
                                                              "sentence_bert_config.json"):
            shutil.copyfile(item, out_dir / item.name)
    pooling = {"pooling_mode_cls_token": spec.pooling == "cls", "pooling_mode_mean_tokens": spec.pooling == "mean"}
    (out_dir / "1_Pooling").mkdir(exist_ok=True)
    (out_dir / "1_Pooling" / "config.json").write_text(json.dumps(pooling) + "\n")
    return out_dir
