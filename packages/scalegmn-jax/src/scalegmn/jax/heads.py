"""The model's outputs: the invariant readout and the equivariant head (`readout`, `head` in `docs/model.md`)."""

from __future__ import annotations

from typing import Any

import equinox as eqx
from jaxtyping import Array, Float

import jax.numpy as jnp
from scalegmn.weightgraph import ScaleGMNConfig

from .layer import has_rho
from .nn import MLP, DropoutKeys, InitKeys, Linear, scale_inv_options


class Readout(eqx.Module):
    """Invariant readout: `mlp` of the output nodes' states (`last_layer`), of the sums of
    ScaleInv (`inv`) over hidden nodes and of the states of input and output nodes
    (`full_graph`; in order with `readout_io="ordered"`), or of the projections `proj_in`,
    `proj_out` of the input and output nodes' states in order (`io_nodes`). `rho`
    (`symmetrize_phi`) and `inv_scale` (`per_group_inv`) are options of `inv`.

    Args:
        cfg: the model configuration.
        keys: initialisation keys (the options' parameters draw from `keys.extra`).
        dtype: parameter dtype.
    """

    inv: MLP | None
    mlp: MLP
    rho: MLP | None
    inv_scale: MLP | None
    proj_in: Linear | None
    proj_out: Linear | None

    def __init__(self, cfg: ScaleGMNConfig, *, keys: InitKeys, dtype: jnp.dtype = jnp.float32) -> None:
        d = cfg.d_hidden
        full = cfg.readout == "full_graph"

        def inv_mlp(k: InitKeys) -> MLP:
            return MLP(d, cfg.mlp_width, d, cfg.mlp_layers, cfg.mlp_activation, cfg.layer_norm, cfg.dropout,
                       keys=k, dtype=dtype)

        self.inv = inv_mlp(keys) if full else None
        if not full:
            d_in = cfg.max_out_nodes * d if cfg.readout == "last_layer" else 2 * d
        elif cfg.readout_io == "ordered":
            d_in = d + (cfg.max_in_nodes + cfg.max_out_nodes) * d
        else:
            d_in = 3 * d
        self.mlp = MLP(d_in, cfg.readout_width, cfg.d_out, cfg.readout_layers,
                       cfg.mlp_activation, cfg.layer_norm, cfg.dropout, keys=keys, dtype=dtype)
        new = keys.extra
        self.rho = inv_mlp(new) if full and has_rho(cfg) else None
        self.inv_scale = inv_mlp(new) if full and cfg.per_group_inv else None
        io = cfg.readout == "io_nodes"
        self.proj_in = Linear(cfg.max_in_nodes * d, d, keys=new, dtype=dtype) if io else None
        self.proj_out = Linear(cfg.max_out_nodes * d, d, keys=new, dtype=dtype) if io else None

    def __call__(self, h: Array, g: Any, role: Array, grp: Array, cfg: ScaleGMNConfig,
                 keys: DropoutKeys) -> Float[Array, "B d_out"]:
        """The readout of the final node states `h` in the layout `g` (`role`, `grp` per node)."""
        if self.proj_in is not None:
            assert self.proj_out is not None
            flat_in, flat_out = g.input_nodes(h, cfg.max_in_nodes), g.output_nodes(h, cfg.max_out_nodes)
            return self.mlp(jnp.concatenate([self.proj_out(flat_out), self.proj_in(flat_in)], -1), keys)
        if self.inv is None:
            return self.mlp(g.output_nodes(h, cfg.max_out_nodes), keys)
        v = scale_inv_options(self.inv, h, grp, cfg.norm_eps, cfg.sign_canon, keys, self.rho, self.inv_scale)
        if cfg.readout_io == "ordered":
            hidden = g.graph_sum(jnp.where((role == 1)[:, None], v, 0.0))
            flat = [hidden, g.input_nodes(h, cfg.max_in_nodes), g.output_nodes(h, cfg.max_out_nodes)]
            return self.mlp(jnp.concatenate(flat, -1), keys)
        sums = [g.graph_sum(jnp.where((role == r)[:, None], x, 0.0)) for r, x in ((1, v), (0, h), (2, h))]
        return self.mlp(jnp.concatenate(sums, -1), keys)


class EquivariantHead(eqx.Module):
    """Equivariant head: edits `x + alpha_l * (node h)` and `e + alpha_l * (edge e)` per layer `l`.

    With `head_in_last_layer` there are no maps `node`, `edge`: the last layer wrote the
    edits' channels (`h` one channel, `e` `d_edge_in` channels).

    Args:
        cfg: the model configuration.
        keys: initialisation keys.
        dtype: parameter dtype.
    """

    node: Linear | None
    edge: Linear | None
    alpha: Float[Array, " n_alpha"]

    def __init__(self, cfg: ScaleGMNConfig, *, keys: InitKeys, dtype: jnp.dtype = jnp.float32) -> None:
        if cfg.head_in_last_layer:
            self.node = self.edge = None
            keys.skip(2)
        else:
            self.node = Linear(cfg.d_hidden, 1, bias=False, keys=keys, dtype=dtype)
            self.edge = Linear(cfg.d_hidden, cfg.d_edge_in, bias=False, keys=keys, dtype=dtype)
        keys()
        self.alpha = jnp.full((cfg.max_hidden_layers + 1,), cfg.edit_alpha_init, dtype)

    def __call__(self, batch: Any, h: Array, e: Any, g: Any) -> tuple[Array, Array]:
        """The edited `(node_features, edge_features)` of `batch`, in its layout."""
        x, xe = batch.node_features, batch.edge_features
        role, lyr = batch.node_role, batch.node_layer
        step = self.alpha[jnp.clip(lyr - 1, 0, None)][:, None] * (h if self.node is None else self.node(h))
        node = x + jnp.where((role == 0)[:, None], 0.0, step)
        n = xe.shape[-1]
        w_out = None if self.edge is None else self.edge.weight[:n]
        scale = self.alpha[lyr[batch.dst] - 1][:, None] * batch.edge_mask

        def edit(ee: Array, s: Array) -> Array:
            return s * (ee[..., :n] if w_out is None else ee @ w_out.T)

        de = g.emap(edit, e, g.shared(scale))
        return node, xe + g.edges_out(de)
