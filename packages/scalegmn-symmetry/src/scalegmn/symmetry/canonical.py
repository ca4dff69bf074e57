"""Canonical members of a network's orbit, and group-respecting input normalisation."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from scalegmn.weightgraph import Network

from .action import _as_block
from .groups import group_of


def _rows(blk: NDArray) -> NDArray:
    return blk.reshape(blk.shape[0], -1)


def _tie_sign(row: NDArray) -> float:
    """Sign of the entry of largest magnitude (first on ties), 1 for a zero row."""
    if not np.any(row):
        return 1.0
    return float(np.sign(row[int(np.argmax(np.abs(row)))]))


def canonicalize(
    network: Network,
    *,
    sort: bool = False,
    scale: bool = True,
    sign: bool = True,
    phase: bool = True,
) -> Network:
    """Map a network to a canonical member of its orbit, keeping its function exactly.

    Hidden layers are processed from the input side; per hidden neuron, by activation:

    * sine: phase first (`phase=True`): the bias `b` is shifted by `k * pi / w0` with
      `k = round(b * w0 / pi)` into `[-pi / (2 w0), pi / (2 w0)]`, and for odd `k` the
      neuron's outgoing weights flip sign; then as tanh.
    * tanh and other sign-group activations (`sign=True`): the neuron is flipped (incoming
      weights and bias, and outgoing weights) so that its bias is positive; a zero bias
      defers to the incoming weight of largest magnitude.
    * relu / leaky_relu (`scale=True`): norm balancing: the incoming weights and bias are
      divided by their joint Euclidean norm and the outgoing weights multiplied by it
      (dead neurons with zero norm are left alone).
    * identity: both (norm balancing, then the sign rule).
    * others: nothing.

    With `sort=True` the neurons of each hidden layer are then sorted by (bias, incoming
    weights), lexicographically, so that `canonicalize(act(g, n), sort=True)` equals
    `canonicalize(n, sort=True)` for every `g` of the group (exactly for permutations and
    sign flips, to rounding for scalings and phases). Output layers are never touched.

    Args:
        network: the network.
        sort: also fix the order of hidden neurons.
        scale: balance norms of positive/nonzero-scaling neurons.
        sign: apply the sign rule to sign/nonzero-group neurons.
        phase: canonicalise SIREN biases into one period.

    Returns:
        A network with the same function.
    """
    spec = network.spec
    ws = [np.array(w) for w in network.weights]
    bs = [np.array(b) for b in network.biases]
    for i in range(spec.n_layers - 1):
        layer = spec.layers[i]
        grp = group_of(layer.activation)
        blk_in = _as_block(spec, i, ws[i]).copy()
        nxt = _as_block(spec, i + 1, ws[i + 1]).copy()
        b = bs[i]
        tail = (slice(None),) + (None,) * (nxt.ndim - 2)
        if layer.activation == "sine" and phase:
            k = np.round(b * layer.w0 / np.pi)
            b = b - (k * np.pi / layer.w0).astype(b.dtype)
            flip = np.where(np.mod(k, 2) == 1, -1.0, 1.0).astype(nxt.dtype)
            nxt = nxt * flip[(None, *tail)]
        if grp in ("scale", "nonzero") and scale:
            norm = np.sqrt(np.sum(_rows(blk_in) ** 2, axis=1) + b**2)
            s = np.where(norm > 0, norm, 1.0).astype(b.dtype)
            blk_in = blk_in / s[(slice(None),) + (None,) * (blk_in.ndim - 1)]
            b = b / s
            nxt = nxt * s[(None, *tail)]
        if grp in ("sign", "nonzero") and sign:
            rows = _rows(blk_in)
            sg = np.array(
                [np.sign(b[j]) if b[j] != 0 else _tie_sign(rows[j]) for j in range(len(b))], dtype=b.dtype
            )
            blk_in = blk_in * sg[(slice(None),) + (None,) * (blk_in.ndim - 1)]
            b = b * sg
            nxt = nxt * sg[(None, *tail)]
        if sort:
            keys = np.concatenate([b[:, None], _rows(blk_in)], axis=1)
            order = np.lexsort(keys.T[::-1])
            blk_in, b, nxt = blk_in[order], b[order], nxt[:, order]
        ws[i] = blk_in.reshape(ws[i].shape)
        bs[i] = b
        ws[i + 1] = nxt.reshape(ws[i + 1].shape)
    return Network(spec, ws, bs)


def normalize_inputs(network: Network, eps: float = 1e-12) -> Network:
    """Group-respecting normalisation of a metanetwork's input (not function-preserving).

    Positive and non-zero scaling layers are norm-balanced (`canonicalize(scale=True,
    sign=False, phase=False)`); then every layer's weights and its biases are divided by their
    root mean square (one scalar each). The property that holds: for every `g` in the group,
    `normalize_inputs(act(g, n)) == act(g', normalize_inputs(n))` where `g'` keeps the
    permutations and the signs of `g` and drops its positive magnitudes (exactly for
    permutations and sign flips, to rounding for scalings). So a permutation-only or
    sign-equivariant metanetwork sees inputs of one scale, whatever the network's scaling.

    Args:
        network: the network.
        eps: floor of the RMS (a zero layer stays zero).
    """
    n = canonicalize(network, scale=True, sign=False, phase=False)
    ws, bs = [], []
    for w, b in zip(n.weights, n.biases, strict=True):
        rw = max(float(np.sqrt(np.mean(w.astype(np.float64) ** 2))), eps)
        rb = max(float(np.sqrt(np.mean(b.astype(np.float64) ** 2))), eps)
        ws.append(w / np.asarray(rw, dtype=w.dtype))
        bs.append(b / np.asarray(rb, dtype=b.dtype))
    return Network(n.spec, ws, bs)
