"""Training losses for multi-label emotion tagging, on logits (N, 28) and 0/1 targets (N, 28)."""

from __future__ import annotations

from typing import Any, Literal

LossName = Literal["bce", "asl"]


def asymmetric_loss(logits: Any, targets: Any, *, gamma_neg: float = 4.0, gamma_pos: float = 0.0,
                    clip: float = 0.05, eps: float = 1e-8) -> Any:
    """Asymmetric loss (Ridnik et al., 2021), averaged over all N x 28 entries like BCE's mean.

    Positives: -(1 - p)^gamma_pos log p. Negatives, with the probability shifted down by `clip`
    (p_m = max(p - clip, 0)): -p_m^gamma_neg log(1 - p_m). Easy negatives, most of the 28 labels
    of most texts, then weigh little, and the rare labels' positives weigh more."""
    import torch

    p = torch.sigmoid(logits)
    p_neg = (p - clip).clamp(min=0) if clip > 0 else p
    pos = targets * (1 - p).pow(gamma_pos) * torch.log(p.clamp(min=eps))
    neg = (1 - targets) * p_neg.pow(gamma_neg) * torch.log((1 - p_neg).clamp(min=eps))
    return -(pos + neg).mean()


def loss_function(name: LossName) -> Any:
    """The loss as a callable (logits, targets) -> scalar tensor."""
    import torch

    if name == "bce":
        return torch.nn.BCEWithLogitsLoss()
    if name == "asl":
        return asymmetric_loss
    raise ValueError(f"unknown loss {name!r}: bce or asl")
