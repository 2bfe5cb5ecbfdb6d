"""Length-sorted batches cut by a token budget, each padded only to its own longest text."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Batch:
    indices: list[int]  # positions in the caller's input order
    ids: np.ndarray  # (n, longest) int64
    mask: np.ndarray  # (n, longest) int64


def plan_batches(
    lengths: list[int], *, max_batch_size: int, token_budget: int
) -> list[list[int]]:
    """Group input positions into batches of similar length.

    A batch's cost is n * longest (its padded size); it stays within token_budget unless a single
    text alone is longer, and never holds more than max_batch_size texts.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[i]  # sorted ascending: the newcomer is the longest so far
        if current and (len(current) >= max_batch_size or (len(current) + 1) * longest > token_budget):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def pad_batch(token_ids: list[list[int]], indices: list[int], pad_id: int) -> Batch:
    longest = max(len(token_ids[i]) for i in indices)
    ids = np.full((len(indices), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(indices), longest), dtype=np.int64)
    for row, i in enumerate(indices):
        seq = token_ids[i]
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return Batch(indices=indices, ids=ids, mask=mask)


def iter_batches(
    token_ids: list[list[int]], *, max_batch_size: int, token_budget: int, pad_id: int
) -> Iterator[Batch]:
    lengths = [len(t) for t in token_ids]
    for indices in plan_batches(lengths, max_batch_size=max_batch_size, token_budget=token_budget):
        yield pad_batch(token_ids, indices, pad_id)
