"""`scalegmn demo --quick`: the whole pipeline (zoo, three models, table, plot) as a smoke run."""

from __future__ import annotations

import json

from scalegmn.tasks.demo import run_demo


def test_quick_demo_runs_end_to_end(tmp_path):
    results = run_demo(tmp_path / "demo", quick=True, workers=1, progress=False, threads=1)
    assert set(results) == {"ScaleGMN-B", "GMN (permutation only)", "MLP on weights"}
    for r in results.values():
        assert 0.0 <= r["test_acc"] <= 1.0 and r["history"]
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert saved.keys() == results.keys()
    assert (tmp_path / "demo" / "demo.png").stat().st_size > 0
    # a second run reuses the zoo instead of building it again
    again = run_demo(tmp_path / "demo", quick=True, workers=1, progress=False, threads=1)
    assert again["ScaleGMN-B"]["test_acc"] == results["ScaleGMN-B"]["test_acc"]
