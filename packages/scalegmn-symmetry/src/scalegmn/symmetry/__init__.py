"""scalegmn.symmetry: the scaling groups of networks, their actions, canonicalisation.

Needs numpy, pydantic and hypothesis (for `scalegmn.symmetry.testing`); no torch, no jax.
"""

from __future__ import annotations

from .action import act, act_on_graph
from .canonical import canonicalize, normalize_inputs
from .groups import (
    GroupElement,
    all_sign_elements,
    allowed,
    compose,
    group_of,
    identity_element,
    inverse,
    layer_groups,
    sample_element,
)

__all__ = [
    "GroupElement",
    "act",
    "act_on_graph",
    "all_sign_elements",
    "allowed",
    "canonicalize",
    "compose",
    "group_of",
    "identity_element",
    "inverse",
    "layer_groups",
    "normalize_inputs",
    "sample_element",
]
