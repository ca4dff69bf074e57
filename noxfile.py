"""Automation for the scalegmn monorepo: one session per package, plus docs, lint, bench."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]

ROOT = Path(__file__).parent
TORCH_PIN = "torch==2.13.0"
PKG = {name: f"packages/scalegmn-{name}" for name in ("weightgraph", "symmetry", "torch", "jax", "tasks")}
TEST_TOOLS = ["pytest>=8", "hypothesis>=6.100"]

if "PIP_FIND_LINKS" in os.environ and "UV_FIND_LINKS" not in os.environ:
    # uv does not read pip's find-links; the CPU torch wheel may only be found there.
    os.environ["UV_FIND_LINKS"] = os.environ["PIP_FIND_LINKS"]


def _editable(*names: str) -> list[str]:
    out: list[str] = []
    for n in names:
        out += ["-e", PKG[n]]
    return out


def _pytest(session: nox.Session, *paths: str) -> None:
    env = {"HYPOTHESIS_PROFILE": os.environ.get("HYPOTHESIS_PROFILE", "ci")}
    session.run("python", "-m", "pytest", *paths, *session.posargs, env=env)


@nox.session
def tests(session: nox.Session) -> None:
    """Every test of every package and the cross-package tests (the README's test command)."""
    session.install("-r", "requirements-dev.txt")
    # The parity tests compile many JAX programs; at the end of the long run of every other test,
    # XLA's compiler has crashed (segmentation fault) there, so they run in a process of their own.
    _pytest(session, "packages", "tests", "--ignore=tests/test_parity.py")
    _pytest(session, "tests/test_parity.py")


@nox.session(name="tests-weightgraph")
def tests_weightgraph(session: nox.Session) -> None:
    """scalegmn-weightgraph alone (numpy + pydantic), converters with torch and equinox."""
    session.install(TORCH_PIN)
    session.install("-e", f"{PKG['weightgraph']}[torch,equinox]", *TEST_TOOLS)
    _pytest(session, PKG["weightgraph"])


@nox.session(name="tests-symmetry")
def tests_symmetry(session: nox.Session) -> None:
    """scalegmn-symmetry without torch or jax."""
    session.install(*_editable("weightgraph", "symmetry"), *TEST_TOOLS)
    _pytest(session, PKG["symmetry"])


@nox.session(name="tests-torch")
def tests_torch(session: nox.Session) -> None:
    """The PyTorch backend (torch pinned first so that pip never picks a CUDA build)."""
    session.install(TORCH_PIN)
    session.install(*_editable("weightgraph", "symmetry", "torch"), *TEST_TOOLS)
    _pytest(session, PKG["torch"])


@nox.session(name="tests-jax")
def tests_jax(session: nox.Session) -> None:
    """The JAX backend, in an environment without torch."""
    session.install(*_editable("weightgraph", "symmetry", "jax"), *TEST_TOOLS)
    out = session.run("python", "-c", "import importlib.util as u; print(u.find_spec('torch') is None)", silent=True)
    if "True" not in str(out):
        session.error("torch is installed in the tests-jax environment; it must not be")
    _pytest(session, PKG["jax"])


@nox.session(name="tests-tasks")
def tests_tasks(session: nox.Session) -> None:
    """scalegmn-tasks (zoos, loaders, training, command line)."""
    session.install(TORCH_PIN)
    session.install(*_editable("weightgraph", "symmetry", "torch", "tasks"), *TEST_TOOLS)
    _pytest(session, PKG["tasks"])


@nox.session
def parity(session: nox.Session) -> None:
    """torch <-> jax parity tests (outputs, gradients, checkpoints)."""
    session.install("-r", "requirements-dev.txt")
    session.run("python", "-m", "pytest", "tests", "-m", "parity", *session.posargs, success_codes=[0, 5])


ISOLATION_SETS: dict[str, tuple[list[str], set[str]]] = {
    # set name: (packages, distributions that must NOT be installed)
    "weightgraph": (["weightgraph"], {"torch", "jax", "jaxlib", "equinox", "hypothesis"}),
    "symmetry": (["weightgraph", "symmetry"], {"torch", "jax", "jaxlib"}),
    "jax": (["weightgraph", "symmetry", "jax"], {"torch", "torch-geometric", "torch_geometric"}),
    "torch": (["weightgraph", "symmetry", "torch"], {"jax", "jaxlib", "equinox"}),
}
WEIGHTGRAPH_ALLOWED = {
    "scalegmn-weightgraph", "numpy", "pydantic", "pydantic-core", "pydantic_core",
    "annotated-types", "typing-extensions", "typing_extensions", "typing-inspection",
    "pip", "setuptools", "wheel",
}


@nox.session(python=False)
def isolation(session: nox.Session) -> None:
    """Install each package set into a fresh venv and check what came with it."""
    selected = session.posargs or list(ISOLATION_SETS)
    rows = []
    for name in selected:
        pkgs, forbidden = ISOLATION_SETS[name]
        with tempfile.TemporaryDirectory() as tmp:
            venv = Path(tmp) / "venv"
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            py = str(venv / "bin" / "python")
            extra = [TORCH_PIN] if "torch" in pkgs else []
            cmd = [py, "-m", "pip", "install", "-q", *extra, *[str(ROOT / PKG[p]) for p in pkgs]]
            session.log(" ".join(cmd[3:]))
            subprocess.run(cmd, check=True)
            listed = json.loads(subprocess.run([py, "-m", "pip", "list", "--format=json"], check=True,
                                               capture_output=True, text=True).stdout)
            names = {d["name"].lower() for d in listed}
            bad = sorted(names & forbidden)
            if bad:
                session.error(f"set {name!r} installed forbidden distributions: {bad}")
            if name == "weightgraph":
                extra_names = sorted(names - {n.lower() for n in WEIGHTGRAPH_ALLOWED})
                if extra_names:
                    session.error(f"scalegmn-weightgraph alone pulled in unexpected packages: {extra_names}")
            probe = ("import sys, scalegmn.weightgraph; "
                     "bad=[m for m in ('torch','jax') if m in sys.modules]; "
                     "assert not bad, f'importing scalegmn.weightgraph imported {bad}'")
            subprocess.run([py, "-c", probe], check=True)
            rows.append((name, len(names), ", ".join(sorted(names))))
    for name, n, names in rows:
        print(f"{name:12s} {n:3d} distributions: {names}")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation strictly (every package's API rendered)."""
    session.install("-r", "requirements-dev.txt")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the packages, tests and scripts."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "packages", "tests", "noxfile.py", "examples")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy over the packages' sources."""
    session.install("-r", "requirements-dev.txt")
    session.run("mypy", *[f"{p}/src/scalegmn" for p in PKG.values()])


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: `scalegmn demo` (MNIST-5k INR zoo, ScaleGMN-B vs GMN vs MLP, table and plot).

    Arguments after `--` go to the command, e.g. `nox -s demo -- --quick --out /tmp/demo`.
    """
    session.install("-r", "requirements-dev.txt")
    session.run("scalegmn", "demo", *session.posargs)


@nox.session
def example(session: nox.Session) -> None:
    """A small end-to-end conversion example on a real network (train, convert, decode, compare)."""
    session.install("-r", "requirements-dev.txt")
    session.run("python", "examples/convert_network.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: training-step throughput per backend (table + JSON)."""
    session.install("-r", "requirements-dev.txt")
    session.run("python", "benchmarks/bench.py", *session.posargs)


@nox.session(name="gpu_check")
def gpu_check(session: nox.Session) -> None:
    """The GPU check (`benchmarks/gpu_check.py`): equivariance and parity on the device, the step
    benchmark at the presets' sizes, two preset epochs; exits nonzero on any failure.

    This session's environment gets the pinned CPU torch, so here the check runs in smoke
    mode (what CI runs). On a GPU machine run the script in an environment with CUDA builds
    of torch and jaxlib (docs/install.md): `python benchmarks/gpu_check.py`.
    """
    session.install("-r", "requirements-dev.txt")
    session.run("python", "benchmarks/gpu_check.py", *session.posargs)
