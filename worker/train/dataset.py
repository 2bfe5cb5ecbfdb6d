"""Labelled splits in GoEmotions format: text <TAB> comma-separated label ids <TAB> comment id, no header.

Any such file is read (a user's own labelled data too); every problem is one line naming the file
and line. The published GoEmotions files are recognised by their sha256 (the shared data's README
lists them): only there are the parsed rows checked against the published count, which catches a
reader bug on the real data without refusing a user's own `dev.tsv`.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worker.errors import WorkerError
from worker.labels import LABELS

FORMAT = "text, tab, comma-separated label ids 0-27, tab, an id; no header"
# sha256 of the published GoEmotions files -> (split, rows): the row count is checked for these only.
PUBLISHED = {
    "1c254a142be5c00e80d819b9ae1bbd36d94b2eeb8f4b1271846508d57e57d9c5": ("train", 43_410),
    "575489c079c9de1097062a01738f998590d6b7ead66dd1c9fd1d2ba01fd8bc62": ("dev", 5_426),
}


@dataclass(frozen=True)
class Split:
    name: str
    texts: list[str]
    targets: np.ndarray  # (N, 28) uint8 multi-hot
    path: Path


def split_paths(data_dir: Path, option: str = "--data") -> tuple[Path, Path]:
    """DATA_DIR/train.tsv and DATA_DIR/dev.tsv, or one line saying which is missing."""
    if not data_dir.is_dir():
        raise WorkerError(f"{option} {data_dir}: no such directory (give one with train.tsv and dev.tsv: {FORMAT})")
    paths = data_dir / "train.tsv", data_dir / "dev.tsv"
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise WorkerError(f"{option} {data_dir}: no {' and no '.join(missing)} there (the directory needs train.tsv "
                          f"and dev.tsv: {FORMAT})")
    return paths


def read_split(path: Path, *, check_rows: bool = True) -> Split:
    """Read a labelled split. `check_rows`: if the file is a published GoEmotions split, check that
    every published row was parsed."""
    raw = _read_bytes(path)
    text = _decode(path, raw)
    texts: list[str] = []
    rows: list[list[int]] = []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    try:
        for lineno, record in enumerate(reader, 1):
            text_col, label_ids = _parse_record(path, lineno, record)
            texts.append(text_col)
            rows.append(label_ids)
    except csv.Error as exc:
        raise WorkerError(f"{path}:{reader.line_num}: cannot be read as TSV ({exc}); expected {FORMAT}") from exc
    if not texts:
        raise WorkerError(f"{path}: no rows; expected {FORMAT}")
    published = PUBLISHED.get(hashlib.sha256(raw).hexdigest())
    if check_rows and published is not None and len(texts) != published[1]:
        raise WorkerError(f"{path}: this is the published GoEmotions {published[0]} split, which has {published[1]} "
                          f"rows, but {len(texts)} were read: a bug in the reader, please report it")
    targets = np.zeros((len(texts), len(LABELS)), dtype=np.uint8)
    for r, label_ids in enumerate(rows):
        targets[r, label_ids] = 1
    return Split(name=path.stem, texts=texts, targets=targets, path=path)


def _read_bytes(path: Path) -> bytes:
    if path.is_dir():
        raise WorkerError(f"{path} is a directory: give a labelled TSV file ({FORMAT})")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise WorkerError(f"labelled split {path} not found") from None
    except OSError as exc:
        raise WorkerError(f"cannot read {path}: {exc.strerror or exc}") from None


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")  # a leading byte-order mark (some editors write one) is dropped
    except UnicodeDecodeError as exc:
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        lineno = raw.count(b"\n", 0, exc.start) + 1
        raise WorkerError(f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                          f"{exc.start - line_start + 1}): save the file as UTF-8") from None


def _parse_record(path: Path, lineno: int, record: list[str]) -> tuple[str, list[int]]:
    if len(record) != 3:
        raise WorkerError(f"{path}:{lineno}: expected 3 tab-separated columns, got {len(record)} ({FORMAT})")
    text, ids, _comment_id = record
    try:
        label_ids = [int(x) for x in ids.split(",") if x.strip() != ""]
    except ValueError:
        raise WorkerError(f"{path}:{lineno}: bad label ids {ids!r}: comma-separated numbers 0-27") from None
    if not label_ids or any(not 0 <= i < len(LABELS) for i in label_ids):
        raise WorkerError(f"{path}:{lineno}: label ids {ids!r} outside 0-27 (admiration=0 ... neutral=27)")
    return text, label_ids
