"""How a micro-batch is cut into model calls: by cost, within the size and token caps."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.engine.batching import plan_batches


def cost(lengths: list[int], batches: list[list[int]], overhead: int) -> int:
    return sum(overhead + len(b) * max(lengths[i] for i in b) for b in batches)


def test_short_and_long_texts_go_to_separate_calls() -> None:
    lengths = [60, 5, 5, 5, 5, 61, 5, 5, 5, 5, 5, 5]
    batches = plan_batches(lengths, max_batch_size=16, token_budget=4096, call_overhead_tokens=24)
    assert sorted(sorted(lengths[i] for i in b) for b in batches) == [[5] * 10, [60, 61]]


def test_similar_lengths_share_one_call() -> None:
    batches = plan_batches([40, 41, 39, 40, 42, 40], max_batch_size=16, token_budget=4096, call_overhead_tokens=24)
    assert len(batches) == 1


def test_no_overhead_means_no_padding_and_huge_overhead_means_fewest_calls() -> None:
    lengths = [3, 9, 27, 81]
    assert len(plan_batches(lengths, max_batch_size=16, token_budget=4096, call_overhead_tokens=0)) == 4
    assert len(plan_batches(lengths, max_batch_size=16, token_budget=4096, call_overhead_tokens=10**6)) == 1


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(1, 600), min_size=1, max_size=80), max_batch=st.integers(1, 32),
       budget=st.integers(64, 4096), overhead=st.integers(0, 200))
def test_plan_is_a_valid_partition_no_costlier_than_greedy(lengths: list[int], max_batch: int, budget: int,
                                                            overhead: int) -> None:
    batches = plan_batches(lengths, max_batch_size=max_batch, token_budget=budget, call_overhead_tokens=overhead)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert 1 <= len(b) <= max_batch
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= budget
        assert [lengths[i] for i in b] == sorted(lengths[i] for i in b)
    # The greedy cut (fill each call to its caps, in length order) is one feasible plan: never beaten by it.
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    greedy: list[list[int]] = [[]]
    for i in order:
        cur = greedy[-1]
        if cur and (len(cur) >= max_batch or (len(cur) + 1) * lengths[i] > budget):
            greedy.append([])
        greedy[-1].append(i)
    assert cost(lengths, batches, overhead) <= cost(lengths, greedy, overhead)
