"""A killed `scalegmn zoo build --workers 2` leaves no worker process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first, then the parent pid)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and (st := _stat(int(d.name))) is not None and int(st[1]) == pid:
            out.append(int(d.name))
    return out


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")  # a zombie has stopped; only its exit status is left


def _is_worker(pid: int) -> bool:
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGINT])
def test_killed_build_leaves_no_worker(tmp_path, sig):
    cmd = [sys.executable, "-m", "scalegmn.tasks.cli", "zoo", "build", "inr", str(tmp_path / "zoo"),
           "--source", "digits", "--count", "64", "--steps", "100000", "--workers", "2", "--shard-size", "4",
           "--batch-size", "4", "--no-compile", "--quiet"]
    # Ctrl-C's default action for the build, as in a terminal: a test run started in the
    # background of a non-interactive shell inherits SIGINT ignored, and so would the build
    build = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy(),
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    helpers: list[int] = []
    try:
        deadline = time.monotonic() + 180  # the workers import torch first: slow on a loaded machine
        workers: list[int] = []
        while time.monotonic() < deadline and len(workers) < 2:
            assert build.poll() is None, build.stderr.read().decode() if build.stderr else ""
            workers = [p for p in _children(build.pid) if _is_worker(p)]
            time.sleep(0.2)
        assert len(workers) == 2, "the build did not start two workers"
        time.sleep(1.0)  # let them start fitting
        helpers = _children(build.pid)  # the workers and multiprocessing's resource tracker
        assert all(_alive(p) for p in workers)
        os.kill(build.pid, sig)
        code = build.wait(timeout=60)
        assert code != 0
        if sig == signal.SIGTERM:
            assert code == 128 + signal.SIGTERM
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in helpers):
            time.sleep(0.1)
        left = [p for p in helpers if _alive(p)]
        assert not left, f"processes {left} outlived the build killed with {sig.name}"
    finally:  # whatever happened, nothing this test started keeps running
        for p in [*helpers, *_children(build.pid)]:
            if _alive(p):
                os.kill(p, signal.SIGKILL)
        if build.poll() is None:
            build.kill()
            build.wait()
