"""The model's outputs: the invariant readout and the equivariant head (`readout`, `head` in `docs/model.md`)."""

from __future__ import annotations

from typing import Any

import equinox as eqx
from jaxtyping import Array, Float

import jax.numpy as jnp
from scalegmn.weightgraph import ScaleGMNConfig

from .nn import MLP, DropoutKeys, InitKeys, Linear, scale_inv


class Readout(eqx.Module):
    """Invariant readout: `mlp` of the output nodes' states (`last_layer`), or of the sums of
    ScaleInv (`inv`) over hidden nodes and of the states of input and output nodes (`full_graph`).

    Args:
        cfg: the model configuration.
        keys: initialisation keys.
        dtype: parameter dtype.
    """

    inv: MLP | None
    mlp: MLP

    def __init__(self, cfg: ScaleGMNConfig, *, keys: InitKeys, dtype: jnp.dtype = jnp.float32) -> None:
        d = cfg.d_hidden
        full = cfg.readout == "full_graph"
        self.inv = (MLP(d, cfg.mlp_width, d, cfg.mlp_layers, cfg.mlp_activation, cfg.layer_norm, cfg.dropout,
                        keys=keys, dtype=dtype) if full else None)
        self.mlp = MLP(3 * d if full else cfg.max_out_nodes * d, cfg.readout_width, cfg.d_out, cfg.readout_layers,
                       cfg.mlp_activation, cfg.layer_norm, cfg.dropout, keys=keys, dtype=dtype)

    def __call__(self, h: Array, g: Any, role: Array, grp: Array, cfg: ScaleGMNConfig,
                 keys: DropoutKeys) -> Float[Array, "B d_out"]:
        """The readout of the final node states `h` in the layout `g` (`role`, `grp` per node)."""
        if self.inv is None:
            return self.mlp(g.output_nodes(h, cfg.max_out_nodes), keys)
        v = scale_inv(self.inv, h, grp, cfg.norm_eps, cfg.sign_canon == "symmetrize", keys)
        sums = [g.graph_sum(jnp.where((role == r)[:, None], x, 0.0)) for r, x in ((1, v), (0, h), (2, h))]
        return self.mlp(jnp.concatenate(sums, -1), keys)


class EquivariantHead(eqx.Module):
    """Equivariant head: edits `x + alpha_l * (node h)` and `e + alpha_l * (edge e)` per layer `l`.

    Args:
        cfg: the model configuration.
        keys: initialisation keys.
        dtype: parameter dtype.
    """

    node: Linear
    edge: Linear
    alpha: Float[Array, " n_alpha"]

    def __init__(self, cfg: ScaleGMNConfig, *, keys: InitKeys, dtype: jnp.dtype = jnp.float32) -> None:
        self.node = Linear(cfg.d_hidden, 1, bias=False, keys=keys, dtype=dtype)
        self.edge = Linear(cfg.d_hidden, cfg.d_edge_in, bias=False, keys=keys, dtype=dtype)
        keys()
        self.alpha = jnp.full((cfg.max_hidden_layers + 1,), cfg.edit_alpha_init, dtype)

    def __call__(self, batch: Any, h: Array, e: Any, g: Any) -> tuple[Array, Array]:
        """The edited `(node_features, edge_features)` of `batch`, in its layout."""
        x, xe = batch.node_features, batch.edge_features
        role, lyr = batch.node_role, batch.node_layer
        step = self.alpha[jnp.clip(lyr - 1, 0, None)][:, None] * self.node(h)
        node = x + jnp.where((role == 0)[:, None], 0.0, step)
        w_out = self.edge.weight[: xe.shape[-1]]
        scale = self.alpha[lyr[batch.dst] - 1][:, None] * batch.edge_mask
        de = g.emap(lambda ee, s: s * (ee @ w_out.T), e, g.shared(scale))
        return node, xe + g.edges_out(de)

