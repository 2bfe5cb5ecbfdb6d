"""The 28 GoEmotions labels, in dataset id order (0..27)."""

LABELS: tuple[str, ...] = (
    "admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion",
    "curiosity", "desire", "disappointment", "disapproval", "disgust", "embarrassment",
    "excitement", "fear", "gratitude", "grief", "joy", "love", "nervousness", "optimism",
    "pride", "realization", "relief", "remorse", "sadness", "surprise", "neutral",
)


def label_mismatch(names: list[str]) -> str | None:
    """None when `names` are exactly the 28 labels (any order); else what is missing and unexpected."""
    missing = [label for label in LABELS if label not in names]
    extra = [n for n in names if n not in LABELS]
    if not missing and not extra:
        return None
    return f"missing {missing or 'none'}, unexpected {extra or 'none'}"
