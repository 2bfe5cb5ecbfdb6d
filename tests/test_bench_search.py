"""The benchmark's sizing search (benchmarks/worker_e2e.p99_bound): the highest load at which every
run keeps its end-to-end p99 under the bound. Its logic alone, on given p99s; the runs themselves are
the benchmark's (a real broker and worker, minutes each). And the benchmark scripts' own mistakes
(benchmarks/entry.py): one line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks.worker_e2e import BOUND_FRACTIONS, Load, p99_bound
from testkit.kafka import ROOT


def _runs_with_p99(p99_by_fraction: dict[float, list[float | None]],
                   ) -> tuple[Callable[[Load], dict[str, Any]], list[str]]:
    """A stand-in for a load run (the search's logic only): each fraction's p99s in turn; None: a
    run where not every message came back."""
    left = {k: list(v) for k, v in p99_by_fraction.items()}
    calls: list[str] = []

    def run(load: Load) -> dict[str, Any]:
        calls.append(load.name)
        p99 = left[load.fraction or 0.0].pop(0)
        rate = 1000 * (load.fraction or 0.0)
        if p99 is None:
            return {"rate_per_s": rate, "n": 5, "sent": 10, "p99_ms": 50.0}
        return {"rate_per_s": rate, "n": 10, "sent": 10, "p99_ms": p99}

    return run, calls


def test_p99_bound_steps_down_until_every_run_keeps_under_the_bound() -> None:
    run, calls = _runs_with_p99({0.45: [90.0, 130.0], 0.4: [None], 0.35: [80.0, 95.0]})
    half = [{"rate_per_s": 500.0, "n": 10, "sent": 10, "p99_ms": 99.0},
            {"rate_per_s": 500.0, "n": 10, "sent": 10, "p99_ms": 140.0}]
    bound = p99_bound(run, half, 10.0)
    assert bound["fraction_of_backlog"] == 0.35 and bound["rate_per_s"] == 350.0
    # a failed first run ends a step at once; an incomplete run counts as failed
    assert calls == ["bound_45_1", "bound_45_2", "bound_40_1", "bound_35_1", "bound_35_2"]
    assert [t["p99_ms"] for t in bound["tried"]] == [[99.0, 140.0], [90.0, 130.0], [None], [80.0, 95.0]]


def test_p99_bound_at_half_load_needs_no_more_runs_and_none_below_the_last_step() -> None:
    run, calls = _runs_with_p99({})
    ok = {"rate_per_s": 500.0, "n": 10, "sent": 10, "p99_ms": 60.0}
    assert p99_bound(run, [ok, ok], 10.0)["fraction_of_backlog"] == 0.5 and calls == []
    run, calls = _runs_with_p99({f: [200.0] for f in BOUND_FRACTIONS})
    bound = p99_bound(run, [], 10.0)
    assert bound["fraction_of_backlog"] is None and len(calls) == len(BOUND_FRACTIONS)


@pytest.mark.parametrize("command", [["bench", "--only-worker"], ["engine_batch_sizes"], ["profile_worker"]])
def test_a_benchmark_given_a_missing_data_file_says_so_in_one_line(command: list[str], tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", f"benchmarks.{command[0]}", *command[1:], "--data",
                          str(tmp_path / "nope.tsv")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == f"error: labelled split {tmp_path / 'nope.tsv'} not found"
