"""train-head: embed GoEmotions train/dev with an embedder, fit a multi-label head, tune a
threshold per label on dev, and write the head in the reference format."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from worker.engine.embedder import Embedder
from worker.engine.session import RuntimeOptions
from worker.engine.thresholds import Thresholds
from worker.model_pairing import RECORD_KEY, identity_record
from worker.train.dataset import read_split, split_paths
from worker.train.embed_cache import cached_embeddings
from worker.train.head_onnx import write_head
from worker.train.metrics import report, tune_thresholds

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadConfig:
    kind: str = "linear"  # "linear" (one logistic regression per label) or "mlp"
    c: float = 1.0  # inverse L2 strength for linear
    class_weight: str | None = None  # None or "balanced" (linear only)
    hidden: int = 512  # mlp hidden units
    alpha: float = 1e-3  # mlp L2
    max_iter: int = 200
    seed: int = 0


Layers = list[tuple[np.ndarray, np.ndarray]]


def fit(config: HeadConfig, x: np.ndarray, y: np.ndarray) -> Layers:
    if config.kind == "linear":
        from sklearn.linear_model import LogisticRegression

        weights = np.zeros((x.shape[1], y.shape[1]), dtype=np.float32)
        bias = np.zeros(y.shape[1], dtype=np.float32)
        for j in range(y.shape[1]):
            clf = LogisticRegression(C=config.c, class_weight=config.class_weight, max_iter=config.max_iter,
                                     random_state=config.seed)
            clf.fit(x, y[:, j])
            weights[:, j] = clf.coef_[0]
            bias[j] = clf.intercept_[0]
        return [(weights, bias)]
    if config.kind == "mlp":
        from sklearn.neural_network import MLPClassifier

        mlp = MLPClassifier(hidden_layer_sizes=(config.hidden,), alpha=config.alpha, max_iter=config.max_iter,
                            early_stopping=True, validation_fraction=0.1, n_iter_no_change=8,
                            random_state=config.seed)
        mlp.fit(x, y)
        return [(w.astype(np.float32), b.astype(np.float32))
                for w, b in zip(mlp.coefs_, mlp.intercepts_, strict=True)]
    raise ValueError(f"unknown head kind {config.kind!r}: use linear or mlp")


def predict(layers: Layers, x: np.ndarray) -> np.ndarray:
    h = x.astype(np.float32)
    for k, (w, b) in enumerate(layers):
        h = h @ w + b
        if k < len(layers) - 1:
            h = np.maximum(h, 0)
    return np.asarray(1.0 / (1.0 + np.exp(-h)), dtype=np.float32)


@dataclass(frozen=True)
class Trained:
    config: HeadConfig
    layers: Layers
    thresholds: dict[str, float]
    dev_macro_f1: float
    dev_macro_f1_at_05: float


def train(config: HeadConfig, x_train: np.ndarray, y_train: np.ndarray, x_dev: np.ndarray,
          y_dev: np.ndarray) -> Trained:
    layers = fit(config, x_train, y_train)
    probs = predict(layers, x_dev)
    thresholds = tune_thresholds(y_dev, probs)
    vec = Thresholds(thresholds).vector
    tuned = report(y_dev, probs >= vec).macro()["f1"]
    fixed = report(y_dev, probs >= 0.5).macro()["f1"]
    log.info("%s: dev macro F1 %.4f (tuned thresholds), %.4f (0.5)", config, tuned, fixed)
    return Trained(config, layers, thresholds, tuned, fixed)


def load_embeddings(embedder_dir: Path, data_dir: Path, cache_dir: Path, pooling: str = "auto"
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    train_path, dev_path = split_paths(data_dir)
    train_split, dev_split = read_split(train_path), read_split(dev_path)  # a bad file is said before embedding
    embedder = Embedder(embedder_dir, RuntimeOptions(), pooling=pooling)
    x_train = cached_embeddings(embedder, train_split.texts, cache_dir, desc="train")
    x_dev = cached_embeddings(embedder, dev_split.texts, cache_dir, desc="dev")
    return x_train, train_split.targets, x_dev, dev_split.targets


def train_and_write(configs: list[HeadConfig], embedder_dir: Path, data_dir: Path, out_dir: Path,
                    cache_dir: Path, pooling: str = "auto") -> tuple[Trained, list[Trained]]:
    """Train every config, keep the one with the best dev macro F1 (tuned thresholds), write it."""
    x_train, y_train, x_dev, y_dev = load_embeddings(embedder_dir, data_dir, cache_dir, pooling)
    results = [train(c, x_train, y_train, x_dev, y_dev) for c in configs]
    best = max(results, key=lambda r: r.dev_macro_f1)
    write_head(out_dir, best.layers, best.thresholds, metadata={
        "embedder": str(embedder_dir),
        RECORD_KEY: identity_record(embedder_dir),  # the worker refuses this head with another embedder
        "config": asdict(best.config),
        "dev_macro_f1_tuned": round(best.dev_macro_f1, 4),
        "dev_macro_f1_at_0.5": round(best.dev_macro_f1_at_05, 4),
        "candidates": [{"config": asdict(r.config), "dev_macro_f1_tuned": round(r.dev_macro_f1, 4),
                        "dev_macro_f1_at_0.5": round(r.dev_macro_f1_at_05, 4)} for r in results],
        "note": "thresholds tuned on the GoEmotions dev split; test split never used",
    })
    return best, results
