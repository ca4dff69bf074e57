"""Node groups: which invariant map each node (or edge message) uses.

Group codes are `scalegmn.weightgraph.GroupKind` (see `docs/model.md`): permutation (trivial),
scale (`q > 0`), sign (`q = +-1`), nonzero (`q != 0`). A `Grp` describes the groups of a set
of rows either as Python constants (one group for all rows: the fast path, no masks) or as
float masks that broadcast against the rows' feature tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from scalegmn.weightgraph import GroupKind, group_kind
from torch import Tensor

# the model's `symmetry` modes that impose one group on every hidden node
_MODE_CODE = {k.label: k for k in (GroupKind.SCALE, GroupKind.SIGN, GroupKind.NONZERO)}


def group_code(activation: str) -> int:
    """The group code (a `GroupKind`) of a hidden neuron followed by `activation`."""
    return group_kind(activation)


@dataclass(frozen=True)
class Grp:
    """The groups of a set of rows.

    Attributes:
        norm: `True`/`False` when every row is (not) normalised by its norm, else a float
            mask (1.0 where the row's group is scale or nonzero) shaped like the rows with a
            trailing 1.
        flip: the same for sign symmetrisation/canonicalisation (sign or nonzero).
        inp: the same for rows whose receiver is an input node (read with `io_mlps`).
        out: the same for rows whose receiver is an output node (read with `io_mlps`).
        pos: the receivers' positional vectors `[..., d]` (with `positional_features`), else
            `None`.
    """

    norm: bool | Tensor
    flip: bool | Tensor
    inp: bool | Tensor = False
    out: bool | Tensor = False
    pos: Tensor | None = None

    @staticmethod
    def const(code: int) -> Grp:
        """All rows in group `code`."""
        kind = GroupKind(code)
        return Grp(kind.continuous, kind.flips)

    @staticmethod
    def from_codes(codes: Tensor, dtype: torch.dtype) -> Grp:
        """Per-row groups from integer codes of shape `[..., 1]`."""
        norm = ((codes == GroupKind.SCALE) | (codes == GroupKind.NONZERO)).to(dtype)
        flip = ((codes == GroupKind.SIGN) | (codes == GroupKind.NONZERO)).to(dtype)
        return Grp(norm, flip)

    def map(self, fn: Callable[[Tensor], Tensor]) -> Grp:
        """Apply an index/broadcast function to the masks (for gathering onto edges)."""

        def f(m: bool | Tensor) -> bool | Tensor:
            return fn(m) if isinstance(m, Tensor) else m

        return Grp(f(self.norm), f(self.flip), f(self.inp), f(self.out),
                   None if self.pos is None else fn(self.pos))

    @property
    def any_norm(self) -> bool:
        """Whether any row may be normalised."""
        return isinstance(self.norm, Tensor) or self.norm

    @property
    def any_flip(self) -> bool:
        """Whether any row may be sign-symmetrised."""
        return isinstance(self.flip, Tensor) or self.flip

    @property
    def any_io(self) -> bool:
        """Whether any row's receiver may be an input or output node."""
        return isinstance(self.inp, Tensor) or isinstance(self.out, Tensor) or self.inp or self.out


def effective_codes(symmetry: str, auto_codes: Tensor, role: Tensor) -> Tensor:
    """Apply the model's `symmetry` mode to the `"auto"` group codes of nodes.

    Args:
        symmetry: `ScaleGMNConfig.symmetry`.
        auto_codes: `[..., N]` groups read from each network's activations.
        role: `[N]` or `[..., N]` node roles (0 input, 1 hidden, 2 output).

    Returns:
        `[..., N]` the group codes the model uses.
    """
    if symmetry == "permutation":
        return torch.zeros_like(auto_codes)
    if symmetry in _MODE_CODE:
        return torch.where(role == 1, _MODE_CODE[symmetry], GroupKind.PERMUTATION).expand_as(auto_codes).clone()
    return auto_codes


def effective_const(symmetry: str, auto_code: int, role: int) -> int:
    """`effective_codes` for one Python code."""
    if symmetry == "permutation":
        return GroupKind.PERMUTATION
    if symmetry in _MODE_CODE:
        return _MODE_CODE[symmetry] if role == 1 else GroupKind.PERMUTATION
    return auto_code
