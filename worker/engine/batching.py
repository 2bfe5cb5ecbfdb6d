"""Length-sorted batches, cut where padding would cost more than another model call; each is padded
only to its own longest text."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from worker.engine.options import CALL_OVERHEAD_TOKENS


@dataclass(frozen=True)
class Batch:
    indices: list[int]  # positions in the caller's input order
    ids: np.ndarray  # (n, longest) int64
    mask: np.ndarray  # (n, longest) int64


def plan_batches(
    lengths: list[int], *, max_batch_size: int, token_budget: int,
    call_overhead_tokens: int = CALL_OVERHEAD_TOKENS, min_batches: int = 1,
) -> list[list[int]]:
    """Group input positions into batches of similar length, at the least total cost.

    Texts are sorted by length and cut into runs; a run costs its padded size (n * longest) plus
    call_overhead_tokens, the fixed cost of one model call. The cut points are chosen by dynamic
    programming, so a small mixed batch is split where padding would cost more than another call,
    and similar lengths stay together. A run never holds more than max_batch_size texts and stays
    within token_budget unless a single text alone is longer. With min_batches > 1 (calls that run
    side by side) the costliest runs are halved until there are that many, texts permitting.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: least cost of the first j sorted texts
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = lengths[order[j - 1]]
        for size in range(1, min(max_batch_size, j) + 1):
            if size > 1 and size * longest > token_budget:
                break
            cost = best[j - size] + call_overhead_tokens + size * longest
            if cost < best[j]:
                best[j], cut[j] = cost, j - size
    batches: list[list[int]] = []
    j = n
    while j > 0:
        batches.append(order[cut[j]:j])
        j = cut[j]
    batches.reverse()
    while len(batches) < min_batches:
        k = max(range(len(batches)), key=lambda b: len(batches[b]) * lengths[batches[b][-1]])
        if len(batches[k]) < 2:
            break
        half = len(batches[k]) // 2
        batches[k:k + 1] = [batches[k][:half], batches[k][half:]]
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
    token_ids: list[list[int]], *, max_batch_size: int, token_budget: int, pad_id: int,
    call_overhead_tokens: int = CALL_OVERHEAD_TOKENS, min_batches: int = 1,
) -> Iterator[Batch]:
    lengths = [len(t) for t in token_ids]
    for indices in plan_batches(lengths, max_batch_size=max_batch_size, token_budget=token_budget,
                                call_overhead_tokens=call_overhead_tokens, min_batches=min_batches):
        yield pad_batch(token_ids, indices, pad_id)
