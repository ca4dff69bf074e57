"""The symmetry groups of feed-forward networks and their elements."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import product
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from scalegmn.weightgraph import GroupKind, NetworkSpec, group_kind

Group = Literal["scale", "sign", "nonzero", "permutation"]


def group_of(activation: str) -> Group:
    """The multiplier group of a hidden neuron followed by `activation`.

    Read from the activation registry (`scalegmn.weightgraph.activations`): `"scale"`
    (q > 0): relu, leaky_relu; `"sign"` (q = +-1): tanh, sine, hardtanh, softsign;
    `"nonzero"` (q != 0): identity; `"permutation"` (q = 1): sigmoid, gelu, silu, softplus,
    elu, relu6.

    Example:
        ```python
        from scalegmn.symmetry import group_of

        assert (group_of("relu"), group_of("tanh"), group_of("relu6")) == ("scale", "sign", "permutation")
        ```
    """
    return group_kind(activation).label  # type: ignore[return-value]


def layer_groups(spec: NetworkSpec) -> list[Group]:
    """The group of each hidden layer `1..L-1` of `spec` (one entry per hidden layer)."""
    return [group_of(a) for a in spec.activations[:-1]]


def allowed(group: str, q: NDArray) -> NDArray[np.bool_]:
    """Which multipliers `q` the group admits (elementwise)."""
    q = np.asarray(q)
    if group == "scale":
        return q > 0
    if group == "sign":
        return np.abs(q) == 1
    if group == "nonzero":
        return (q != 0) & np.isfinite(q)
    return q == 1


@dataclass(frozen=True)
class GroupElement:
    """A permutation and a multiplier vector per hidden layer, plus an optional SIREN phase.

    The action on layer `l` (see `act`): new neuron `k` is old neuron `perms[l][k]`, scaled by
    `multipliers[l][perms[l][k]]` (multipliers are indexed by the OLD neuron). Before that,
    `phases[l][i] = k` adds `k * pi / w0` to the bias of sine neuron `i` and, for odd `k`,
    flips the sign of its outgoing weights.

    Attributes:
        perms: one integer permutation per hidden layer.
        multipliers: one float vector per hidden layer.
        phases: `None`, or one integer vector per hidden layer (sine layers only).
    """

    perms: tuple[NDArray[np.int64], ...]
    multipliers: tuple[NDArray[np.float64], ...]
    phases: tuple[NDArray[np.int64], ...] | None = None

    def __post_init__(self) -> None:
        if len(self.perms) != len(self.multipliers):
            raise ValueError("perms and multipliers need one entry per hidden layer each")
        for i, (p, q) in enumerate(zip(self.perms, self.multipliers, strict=True)):
            if p.shape != q.shape or sorted(p.tolist()) != list(range(len(p))):
                raise ValueError(f"hidden layer {i + 1}: perm must be a permutation of len(multipliers)")

    @property
    def widths(self) -> list[int]:
        """Neurons of each hidden layer."""
        return [len(p) for p in self.perms]

    def check(self, spec: NetworkSpec) -> None:
        """Raise if this element does not fit the hidden layers of `spec`."""
        want = spec.widths[1:-1]
        if self.widths != want:
            raise ValueError(f"element has hidden widths {self.widths}, the network has {want}")

    def in_group(self, spec: NetworkSpec) -> bool:
        """Whether every multiplier is allowed by its layer's activation (phases by sine layers)."""
        self.check(spec)
        ok = all(bool(np.all(allowed(g, q))) for g, q in zip(layer_groups(spec), self.multipliers, strict=True))
        if self.phases is not None:
            ok = ok and all(
                a == "sine" or not np.any(k) for a, k in zip(spec.activations[:-1], self.phases, strict=True)
            )
        return ok

    def compose(self, other: GroupElement) -> GroupElement:
        """`self . other`: apply `other` first, then `self` (no phase parts)."""
        if self.phases is not None or other.phases is not None:
            raise ValueError("elements with SIREN phases do not compose; apply them in turn with act")
        perms, mults = [], []
        for ps, qs, po, qo in zip(self.perms, self.multipliers, other.perms, other.multipliers, strict=True):
            q = qo.astype(np.float64).copy()
            q[po] *= qs
            perms.append(po[ps])
            mults.append(q)
        return GroupElement(tuple(perms), tuple(mults))

    def inverse(self) -> GroupElement:
        """The element that undoes this one (no phase parts)."""
        if self.phases is not None:
            raise ValueError("elements with SIREN phases have no inverse here; use the negated phase")
        return GroupElement(
            tuple(np.argsort(p).astype(np.int64) for p in self.perms),
            tuple(1.0 / q[p] for p, q in zip(self.perms, self.multipliers, strict=True)),
        )

    def describe(self) -> str:
        """A one-line summary (multiplier range, permuted layers)."""
        qs = np.concatenate([np.abs(q) for q in self.multipliers]) if self.multipliers else np.ones(1)
        n_perm = sum(int(np.any(p != np.arange(len(p)))) for p in self.perms)
        return f"|q| in [{qs.min():.3g}, {qs.max():.3g}], {n_perm} of {len(self.perms)} hidden layers permuted"


def compose(g: GroupElement, h: GroupElement) -> GroupElement:
    """`g . h`: apply `h` first, then `g`."""
    return g.compose(h)


def inverse(g: GroupElement) -> GroupElement:
    """The inverse element."""
    return g.inverse()


def identity_element(spec: NetworkSpec) -> GroupElement:
    """The identity of the group of `spec`."""
    ws = spec.widths[1:-1]
    return GroupElement(tuple(np.arange(w) for w in ws), tuple(np.ones(w) for w in ws))


def sample_element(
    spec: NetworkSpec,
    rng: np.random.Generator | int | None = None,
    *,
    permute: bool = True,
    scale: bool = True,
    extreme: bool = False,
    log_range: tuple[float, float] = (-1.0, 1.0),
    phase: bool = False,
    group: str | None = None,
) -> GroupElement:
    """Draw a random element of the symmetry group of `spec`.

    Args:
        spec: the architecture.
        rng: a numpy Generator or a seed.
        permute: draw random permutations (else identity).
        scale: draw multipliers allowed by each hidden layer's activation (else ones):
            scale: log-uniform in `10**log_range`; sign: +-1; nonzero: random sign times
            log-uniform; permutation-only layers: 1.
        extreme: widen positive/nonzero multipliers to `[1e-3, 1e3]` and force both ends in.
        log_range: base-10 log range of magnitudes when not extreme.
        phase: add SIREN phase shifts (integers in -2..2) on sine layers.
        group: draw the multipliers of this group (`"scale"`, `"sign"`, `"nonzero"`,
            `"permutation"`) on every hidden layer instead of each layer's own: for negative
            controls, elements outside the network's group (check with `in_group`).
    """
    rng = np.random.default_rng(rng)
    perms, mults, phases = [], [], []
    lo, hi = (-3.0, 3.0) if extreme else log_range
    groups = layer_groups(spec) if group is None else [GroupKind.from_label(group).label] * (spec.n_layers - 1)
    for g, act, w in zip(groups, spec.activations[:-1], spec.widths[1:-1], strict=True):
        perms.append(rng.permutation(w).astype(np.int64) if permute else np.arange(w))
        q = np.ones(w)
        if scale:
            mag = 10.0 ** rng.uniform(lo, hi, size=w)
            if extreme and w >= 2:
                mag[rng.choice(w, 2, replace=False)] = [1e-3, 1e3]
            sgn = rng.choice([-1.0, 1.0], size=w)
            q = {"scale": mag, "sign": sgn, "nonzero": sgn * mag}.get(g, q)
        mults.append(q.astype(np.float64))
        phases.append(rng.integers(-2, 3, size=w) if phase and act == "sine" else np.zeros(w, np.int64))
    return GroupElement(tuple(perms), tuple(mults), tuple(phases) if phase else None)


def all_sign_elements(spec: NetworkSpec, max_elements: int = 4096) -> Iterator[GroupElement]:
    """Every sign pattern of the sign-group hidden neurons (no permutation), exhaustively.

    Raises:
        ValueError: if there would be more than `max_elements` patterns.
    """
    groups = layer_groups(spec)
    ws = spec.widths[1:-1]
    slots = [(li, k) for li, (g, w) in enumerate(zip(groups, ws, strict=True)) if g == "sign" for k in range(w)]
    if 2 ** len(slots) > max_elements:
        raise ValueError(f"{2 ** len(slots)} sign patterns exceed max_elements={max_elements}")
    for signs in product((1.0, -1.0), repeat=len(slots)):
        mults = [np.ones(w) for w in ws]
        for (li, k), s in zip(slots, signs, strict=True):
            mults[li][k] = s
        yield GroupElement(tuple(np.arange(w) for w in ws), tuple(mults))
