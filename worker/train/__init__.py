"""Training and evaluating heads on GoEmotions (optional `train` extra)."""
