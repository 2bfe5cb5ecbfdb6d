"""GoEmotions splits: text <TAB> comma-separated label ids <TAB> comment id, no header."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worker.errors import WorkerError
from worker.labels import LABELS

EXPECTED_ROWS = {"train": 43_410, "dev": 5_426, "test": 5_427}


@dataclass(frozen=True)
class Split:
    name: str
    texts: list[str]
    targets: np.ndarray  # (N, 28) uint8 multi-hot


def read_split(path: Path, *, check_rows: bool = True) -> Split:
    if not path.is_file():
        raise WorkerError(f"GoEmotions split {path} not found")
    texts: list[str] = []
    rows: list[list[int]] = []
    with path.open(newline="", encoding="utf-8") as fh:
        for lineno, record in enumerate(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if len(record) != 3:
                raise WorkerError(f"{path}:{lineno}: expected 3 tab-separated columns, got {len(record)}")
            text, ids, _comment_id = record
            try:
                label_ids = [int(x) for x in ids.split(",") if x != ""]
            except ValueError as exc:
                raise WorkerError(f"{path}:{lineno}: bad label ids {ids!r}") from exc
            if not label_ids or any(not 0 <= i < len(LABELS) for i in label_ids):
                raise WorkerError(f"{path}:{lineno}: label ids {ids!r} outside 0..27")
            texts.append(text)
            rows.append(label_ids)
    name = path.stem
    expected = EXPECTED_ROWS.get(name)
    if check_rows and expected is not None and len(texts) != expected:
        raise WorkerError(f"{path}: parsed {len(texts)} rows, the dataset README says {expected}")
    targets = np.zeros((len(texts), len(LABELS)), dtype=np.uint8)
    for r, label_ids in enumerate(rows):
        targets[r, label_ids] = 1
    return Split(name=name, texts=texts, targets=targets)
