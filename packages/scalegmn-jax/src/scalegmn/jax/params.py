"""Parameter names and shapes of the model (`docs/model.md`), shared with the torch backend."""

from __future__ import annotations

import math

import numpy as np

import jax
import jax.numpy as jnp
from scalegmn.weightgraph import ScaleGMNConfig


def _mlp(shapes: dict[str, tuple[int, ...]], name: str, n_in: int, n_out: int, layers: int,
         width: int, norm: bool) -> None:
    dims = [n_in] + [width] * layers + [n_out]
    for k in range(len(dims) - 1):
        shapes[f"{name}.lin.{k}.weight"] = (dims[k + 1], dims[k])
        shapes[f"{name}.lin.{k}.bias"] = (dims[k + 1],)
        if norm and k < len(dims) - 2:
            shapes[f"{name}.norm.{k}.weight"] = (dims[k + 1],)
            shapes[f"{name}.norm.{k}.bias"] = (dims[k + 1],)


def param_shapes(cfg: ScaleGMNConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter of the model by its checkpoint name, with its shape (torch layout)."""
    d = cfg.d_hidden
    s: dict[str, tuple[int, ...]] = {
        "node_proj.weight": (d, cfg.d_node_in),
        "edge_proj.weight": (d, cfg.d_edge_in),
    }
    if cfg.positional_encoding:
        s.update({
            "pe_in": (cfg.max_in_nodes, d), "pe_hidden": (cfg.max_hidden_layers, d),
            "pe_out": (cfg.max_out_nodes, d), "pe_edge_in": (cfg.max_in_nodes, d),
            "pe_edge_hidden": (cfg.max_hidden_layers, d), "pe_edge_out": (cfg.max_out_nodes, d),
        })

    def mlp(name: str, n_in: int, n_out: int) -> None:
        _mlp(s, name, n_in, n_out, cfg.mlp_layers, cfg.mlp_width, cfg.layer_norm)

    def scale_eq(name: str, n_in: int) -> None:
        s[f"{name}.gamma.weight"] = (d, n_in)
        mlp(f"{name}.inv", n_in, d)

    z = 2 * d if cfg.message_receiver else d
    for t in range(cfg.n_layers):
        p = f"layers.{t}"
        dirs = ["fwd", "bwd"] if cfg.bidirectional else ["fwd"]
        for direction in dirs:
            s[f"{p}.{direction}.rescale.a.weight"] = (d, d)
            s[f"{p}.{direction}.rescale.b.weight"] = (d, d)
            scale_eq(f"{p}.{direction}.msg", z)
        scale_eq(f"{p}.upd", (3 if cfg.bidirectional else 2) * d)
        last = t == cfg.n_layers - 1
        if cfg.edge_update and not (last and cfg.head == "invariant"):
            s[f"{p}.edge.gamma.weight"] = (d, d)
            mlp(f"{p}.edge.inv", d, d)
            mlp(f"{p}.edge.mlp", 2 * d, d)
    if cfg.head == "equivariant":
        s["head.node.weight"] = (1, d)
        s["head.edge.weight"] = (cfg.d_edge_in, d)
        s["head.alpha"] = (cfg.max_hidden_layers + 1,)
    elif cfg.readout == "full_graph":
        mlp("readout.inv", d, d)
        _mlp(s, "readout.mlp", 3 * d, cfg.d_out, cfg.readout_layers, cfg.readout_width, cfg.layer_norm)
    else:
        _mlp(s, "readout.mlp", cfg.max_out_nodes * d, cfg.d_out, cfg.readout_layers,
             cfg.readout_width, cfg.layer_norm)
    return s


def init_params(cfg: ScaleGMNConfig, key: jax.Array, dtype: jnp.dtype = jnp.float32) -> dict[str, jax.Array]:
    """Initial parameters: PyTorch-style uniform Linears, LayerNorm ones/zeros, positional
    tables near one (multiplied) or zero (added), `head.alpha` at `edit_alpha_init`."""
    shapes = param_shapes(cfg)
    keys = jax.random.split(key, len(shapes))
    out: dict[str, jax.Array] = {}
    for (name, shape), k in zip(shapes.items(), keys, strict=True):
        if name == "head.alpha":
            out[name] = jnp.full(shape, cfg.edit_alpha_init, dtype)
        elif name.startswith("pe_"):
            base = 1.0 if name in ("pe_hidden", "pe_edge_in", "pe_edge_hidden", "pe_edge_out") else 0.0
            out[name] = base + 0.1 * jax.random.normal(k, shape, dtype)
        elif ".norm." in name:
            out[name] = jnp.ones(shape, dtype) if name.endswith("weight") else jnp.zeros(shape, dtype)
        else:
            fan_in = shape[1] if len(shape) == 2 else shapes[name.replace(".bias", ".weight")][1]
            bound = 1.0 / math.sqrt(fan_in)
            out[name] = jax.random.uniform(k, shape, dtype, -bound, bound)
    return out


def as_numpy(params: dict[str, jax.Array]) -> dict[str, np.ndarray]:
    """Parameters as contiguous numpy arrays (for safetensors)."""
    return {k: np.ascontiguousarray(np.asarray(v)) for k, v in params.items()}
