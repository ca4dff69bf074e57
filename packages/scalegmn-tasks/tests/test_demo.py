"""`scalegmn demo --quick`: the whole pipeline (zoo, three models, table, plot) as a smoke run."""

from __future__ import annotations

import json

import pytest

from scalegmn.tasks.demo import run_demo


def test_quick_demo_runs_end_to_end(tmp_path):
    results = run_demo(tmp_path / "demo", quick=True, workers=1, progress=False, threads=1, jobs=1)
    assert set(results) == {"ScaleGMN-B", "GMN (permutation only)", "MLP on weights"}
    for r in results.values():
        assert 0.0 <= r["test_acc"] <= 1.0 and r["history"]
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert saved.keys() == results.keys()
    assert (tmp_path / "demo" / "demo.png").stat().st_size > 0
    # a second run reuses the zoo instead of building it again; training two runs side by
    # side (the GMN and the MLP in a second process) gives the same models as one after the other
    again = run_demo(tmp_path / "demo", quick=True, workers=1, progress=False, threads=1, jobs=2)
    assert list(again) == list(results)
    for name, r in results.items():
        assert [row["loss"] for row in again[name]["history"]] == [row["loss"] for row in r["history"]], name
        assert again[name]["test_acc"] == r["test_acc"], name
    rows = [json.loads(line) for line in (tmp_path / "demo" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * sum(len(r["history"]) for r in results.values())  # whole rows from both processes


def test_demo_rejects_other_job_counts(tmp_path):
    with pytest.raises(ValueError, match="jobs=3"):
        run_demo(tmp_path / "demo", quick=True, jobs=3)
