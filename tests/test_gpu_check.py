"""`benchmarks/gpu_check.py` in smoke mode: it runs every section, passes, writes its JSON, and
(negative control) exits nonzero when one check is made to fail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("jax")

pytestmark = [pytest.mark.parity, pytest.mark.slow]
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp_path / "check.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # smoke mode on the CPU even on a GPU machine
    proc = subprocess.run([sys.executable, str(SCRIPT), "--json", str(out), *args], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=600, check=False)
    assert out.is_file(), proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc, json.loads(out.read_text())


def test_smoke_mode_passes_every_section(tmp_path: Path) -> None:
    proc, doc = _run(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.splitlines()[0].startswith("gpu_check: SMOKE MODE on cpu")
    assert doc["mode"] == "smoke" and doc["ok"] is True and not doc["injected_failure"]
    checks = doc["checks"]
    assert all(c["ok"] for c in checks)
    by_section = {s: [c for c in checks if c["section"] == s] for s in ("equivariance", "parity", "benchmark",
                                                                          "training")}
    assert all(by_section.values()), {s: len(v) for s, v in by_section.items()}
    eq = by_section["equivariance"]
    controls = [c for c in eq if c["check"].startswith("control:")]
    assert len(controls) == 12 and all(c["value"] > 1e-4 for c in controls)
    for c in eq:
        if not c["check"].startswith("control:"):
            assert c["value"] <= (1e-10 if c["check"].endswith("float64") else 1e-5), c
    for c in by_section["parity"]:
        assert c["value"] <= (1e-10 if c["check"].endswith("float64") else 1e-5), c
    rows = doc["sections"]["benchmark"]["result"]["rows"]
    assert {r["config"] for r in rows} == {"inr-mnist-scalegmn", "inr-mnist-scalegmn-b",
                                           "genpred-cifar10gs-relu-scalegmn", "genpred-cifar10gs-relu-scalegmn-b"}
    assert all(r["networks_per_s"] > 0 and r["gflop_per_network"] > 0 for r in rows)
    train = doc["sections"]["training"]["result"]
    assert len(train["losses"]) == 2


def test_an_injected_failure_fails_the_run(tmp_path: Path) -> None:
    proc, doc = _run(tmp_path, "--inject-failure", "--only", "equivariance")
    assert proc.returncode == 1
    assert doc["ok"] is False and doc["injected_failure"] is True
    failed = [c for c in doc["checks"] if not c["ok"]]
    assert len(failed) == 1 and failed[0]["section"] == "equivariance" and failed[0]["value"] > 1e-4
    assert "FAIL" in proc.stdout
