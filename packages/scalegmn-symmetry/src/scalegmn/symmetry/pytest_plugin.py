"""pytest fixtures for equivariance tests; enable with `pytest_plugins = ["scalegmn.symmetry.pytest_plugin"]`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from scalegmn.weightgraph import NetworkSpec

from .groups import GroupElement, sample_element


@pytest.fixture
def symmetry_rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """A numpy Generator seeded from the test's name (reproducible per test)."""
    return np.random.default_rng(abs(hash(request.node.nodeid)) % 2**32)


@pytest.fixture
def element_sampler(symmetry_rng: np.random.Generator) -> Callable[..., GroupElement]:
    """`sampler(spec, **kw)` draws group elements from the test's generator."""

    def sampler(spec: NetworkSpec, **kw: object) -> GroupElement:
        return sample_element(spec, symmetry_rng, **kw)  # type: ignore[arg-type]

    return sampler
