"""`ScaleGMN` in JAX/equinox: the model of `docs/model.md` as a tree of equinox modules.

The tree mirrors the torch modules (`scalegmn.jax.nn`, `.layer`, `.heads`); a parameter's
checkpoint name is its key path in the tree, so checkpoints move between backends with no
table of names. The two graph layouts the layers run on are defined here.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import numpy as np
from einops import rearrange
from jaxtyping import Array, Float

import jax
import jax.numpy as jnp
from scalegmn.weightgraph import GroupKind, ScaleGMNConfig

from .batch import DenseGraphBatch, GraphBatch
from .heads import EquivariantHead, Readout
from .layer import GMNLayer
from .nn import DropoutKeys, InitKeys, Linear

_MODE_CODE = {k.label: k for k in GroupKind}


def _segment_sum(x: Array, seg: Array, n: int) -> Array:
    return jax.ops.segment_sum(x, seg, num_segments=n)


CHUNK_ROWS = 2048
"""Edges per chunk of the dense layout's per-edge work (`_Dense._blockwise`)."""


def _chunk_size(B: int, rows_per_net: int) -> int:
    """Networks per chunk: the largest divisor of `B` with at most `CHUNK_ROWS` edges (>= 1)."""
    c = max(1, min(B, CHUNK_ROWS // max(rows_per_net, 1)))
    while B % c:
        c -= 1
    return c


class _Segments:
    """Message passing on a disjoint union: an edge value is one `[E, ...]` array; gathers and
    segment sums over `src`/`dst`."""

    def __init__(self, b: GraphBatch) -> None:
        self.b, self.n = b, b.node_features.shape[0]

    def emap(self, f: Callable[..., Array], *xs: Array) -> Array:
        return f(*xs)

    def edges_in(self, xe: Array) -> Array:
        return xe

    def edges_out(self, e: Array) -> Array:
        return e

    def shared(self, x: Array) -> Array:
        return x

    def at_src(self, x: Array) -> Array:
        return x[self.b.src]

    def at_dst(self, x: Array) -> Array:
        return x[self.b.dst]

    def aggregate(self, at: str, f: Callable[..., Array], *xs: Array) -> Array:
        """`f` on the edges, summed at each edge's target (`at="dst"`) or source (`"src"`)."""
        return _segment_sum(f(*xs), self.b.dst if at == "dst" else self.b.src, self.n)

    def graph_sum(self, x: Array) -> Array:
        return _segment_sum(x, self.b.node_batch, self.b.n_graphs)

    def output_nodes(self, h: Array, max_out: int) -> Array:
        return self._ordered(h, 2, max_out)

    def input_nodes(self, h: Array, max_in: int) -> Array:
        return self._ordered(h, 0, max_in)

    def _ordered(self, h: Array, role: int, n_max: int) -> Array:
        """The states of the nodes of `role` in order, zero-padded to `n_max`, flattened: `[B, n_max d]`."""
        b, B = self.b, self.b.n_graphs
        slot = jnp.where(b.node_role == role, b.node_batch * n_max + b.node_pos, B * n_max)
        return rearrange(_segment_sum(h, slot, B * n_max + 1)[:-1], "(b n) d -> b (n d)", b=B)

    def node_shared(self, x: Array) -> Array:
        """A per-node array of the graph (`[N, ...]`) in the layout of node states."""
        return x


class _Dense:
    """Message passing on stacked graphs of one shape.

    An edge value is a tuple of per-layer blocks `[B, n_l, n_{l-1}, ...]`, never one
    concatenated array: gathers are broadcastable views (`[B, 1, n_{l-1}, ...]` from the
    sources, `[B, n_l, 1, ...]` from the targets) that XLA fuses into their consumers, and
    aggregations are sums over one axis of a block, so no per-edge tensor is copied, padded
    or concatenated.
    """

    def __init__(self, b: DenseGraphBatch, chunk: bool) -> None:
        self.w = b.widths
        self.B = b.node_features.shape[0]
        self.no = [0, *itertools.accumulate(self.w)]
        self.eo = [0, *itertools.accumulate(self.w[k] * self.w[k - 1] for k in range(1, len(self.w)))]
        self.chunk = chunk

    def _nodes(self, x: Array, k: int) -> Array:
        return x[:, self.no[k]:self.no[k + 1]]

    def _full(self, m: Array, k: int) -> Array:
        return jnp.broadcast_to(m, (m.shape[0], self.w[k], self.w[k - 1], *m.shape[3:]))

    def _blockwise(self, f: Callable[..., Array], k: int, blocks: Sequence[Array]) -> Array:
        """`f` on block `k`, a few networks at a time when the block is large.

        Arrays with a leading batch axis are split into chunks of about `CHUNK_ROWS` edges;
        the others (leading axis 1) are shared by all chunks. Each chunk runs under
        `jax.checkpoint`, so the backward pass recomputes its per-edge temporaries instead of
        keeping them: they stay in cache, at the price of a second forward pass over them.
        """
        B = self.B
        c = _chunk_size(B, self.w[k] * self.w[k - 1]) if self.chunk else B
        if c >= B:
            return f(*blocks)
        split = [i for i, x in enumerate(blocks) if x.shape[0] == B]

        def one(xs: list[Array]) -> Array:
            args = list(blocks)
            for i, x in zip(split, xs, strict=True):
                args[i] = x
            return f(*args)

        out = jax.lax.map(jax.checkpoint(one), [rearrange(blocks[i], "(n c) ... -> n c ...", c=c) for i in split])
        return rearrange(out, "n c ... -> (n c) ...")

    def emap(self, f: Callable[..., Array], *xs: tuple[Array, ...]) -> tuple[Array, ...]:
        return tuple(self._blockwise(lambda *a, k=k: self._full(f(*a), k), k, blocks)
                     for k, blocks in enumerate(zip(*xs, strict=True), 1))

    def aggregate(self, at: str, f: Callable[..., Array], *xs: tuple[Array, ...]) -> Array:
        """`f` on the edges, summed at each edge's target (`at="dst"`) or source (`"src"`)."""
        axis = 2 if at == "dst" else 1
        sums = [self._blockwise(lambda *a, k=k: self._full(f(*a), k).sum(axis), k, blocks)
                for k, blocks in enumerate(zip(*xs, strict=True), 1)]
        zeros = jnp.zeros((self.B, self.w[0] if at == "dst" else self.w[-1], *sums[0].shape[2:]), sums[0].dtype)
        return jnp.concatenate([zeros, *sums] if at == "dst" else [*sums, zeros], 1)

    def edges_in(self, xe: Array) -> tuple[Array, ...]:
        """`[B, E, ...]` (layer blocks, target-major) to per-layer blocks."""
        w, eo = self.w, self.eo
        return tuple(rearrange(xe[:, eo[k - 1]:eo[k]], "b (t s) ... -> b t s ...", t=w[k], s=w[k - 1])
                     for k in range(1, len(w)))

    def edges_out(self, e: tuple[Array, ...]) -> Array:
        """Per-layer blocks back to the batch's `[B, E, ...]` layout."""
        return jnp.concatenate([rearrange(x, "b t s ... -> b (t s) ...") for x in e], 1)

    def shared(self, x: Array) -> tuple[Array, ...]:
        """A per-edge array of the one shared graph (`[E, ...]`) as blocks `[1, n_l, n_{l-1}, ...]`."""
        return self.edges_in(x[None])

    def at_src(self, x: Array) -> tuple[Array, ...]:
        return tuple(self._nodes(x, k - 1)[:, None] for k in range(1, len(self.w)))

    def at_dst(self, x: Array) -> tuple[Array, ...]:
        return tuple(self._nodes(x, k)[:, :, None] for k in range(1, len(self.w)))

    def graph_sum(self, x: Array) -> Array:
        return x.sum(1)

    def output_nodes(self, h: Array, max_out: int) -> Array:
        return self._ordered(h, len(self.w) - 1, max_out)

    def input_nodes(self, h: Array, max_in: int) -> Array:
        return self._ordered(h, 0, max_in)

    def _ordered(self, h: Array, k: int, n_max: int) -> Array:
        """The states of graph layer `k` in order, zero-padded to `n_max`, flattened: `[B, n_max d]`."""
        out = self._nodes(h, k)
        out = jnp.pad(out, ((0, 0), (0, n_max - out.shape[1]), (0, 0)))
        return rearrange(out, "b n d -> b (n d)")

    def node_shared(self, x: Array) -> Array:
        """A per-node array of the shared graph (`[N, ...]`) as `[1, N, ...]`."""
        return x[None]


def _param_name(path: Sequence[Any]) -> str:
    """A key path in the module tree as a checkpoint name (`layers.0.fwd.msg.gamma.weight`)."""
    return jax.tree_util.keystr(tuple(path), simple=True, separator=".")


def parameters(tree: Any) -> dict[str, Any]:
    """The leaves of a `ScaleGMN`, or of a tree of its shape (gradients, updates), by checkpoint name.

    Args:
        tree: a `ScaleGMN` or a pytree with its structure.

    Returns:
        `{name: leaf}`, the names being the key paths (`layers.0.fwd.msg.gamma.weight`).
    """
    return {_param_name(p): v for p, v in jax.tree_util.tree_leaves_with_path(tree)}


class ScaleGMN(eqx.Module):
    """ScaleGMN / ScaleGMN-B (`config.bidirectional`) in JAX.

    `model(batch)` is inference (no dropout); `model(batch, key=k)` is training mode. The
    fields are the torch model's children (`node_proj`, `edge_proj`, the `pe_*` tables,
    `layers`, `readout` or `head`), so `model.params` (every parameter by its key path) has
    the torch `state_dict` keys and checkpoints move between backends unchanged.

    Args:
        config: the model configuration.
        key: initialisation key (default `jax.random.key(0)`).
        dtype: parameter dtype.
        params: parameters by checkpoint name (e.g. a torch `state_dict` as arrays) instead
            of an initialisation.

    Raises:
        TypeError: `config` is not a `ScaleGMNConfig`.
        ValueError: `params` whose names or shapes are not the configuration's.

    Example:
        ```python
        import jax
        from scalegmn.weightgraph import NetworkSpec, random_network
        from scalegmn.jax import ScaleGMN, ScaleGMNConfig, collate

        model = ScaleGMN(ScaleGMNConfig(d_hidden=8, n_layers=2, d_out=3), key=jax.random.key(0))
        nets = [random_network(NetworkSpec.mlp([2, 4, 1], "relu"), rng=i, dtype="float32") for i in range(2)]
        assert model(collate(nets)).shape == (2, 3)
        # a parameter's checkpoint name is its path in the module tree
        assert model.params["layers.0.fwd.msg.gamma.weight"] is model.layers[0].fwd.msg.gamma.weight
        ```
    """

    node_proj: Linear
    edge_proj: Linear
    pe_in: Array | None
    pe_hidden: Array | None
    pe_out: Array | None
    pe_edge_in: Array | None
    pe_edge_hidden: Array | None
    pe_edge_out: Array | None
    layers: tuple[GMNLayer, ...]
    readout: Readout | None
    head: EquivariantHead | None
    config: ScaleGMNConfig = eqx.field(static=True)

    def __init__(self, config: ScaleGMNConfig, *, key: Array | None = None,
                 dtype: jnp.dtype = jnp.float32, params: Mapping[str, Any] | None = None) -> None:
        if not isinstance(config, ScaleGMNConfig):
            raise TypeError(f"ScaleGMN expects a ScaleGMNConfig, got {type(config).__name__}")
        self.config = cfg = config
        if params is not None:
            _refuse(cfg)
            built = _from_params(config, params)
            for f in dataclasses.fields(built):
                setattr(self, f.name, getattr(built, f.name))
            return
        _refuse(cfg)
        root = key if key is not None else jax.random.key(0)
        keys = InitKeys(jax.random.split(root, _n_params(cfg)), extra=jax.random.fold_in(root, _OPTIONS_STREAM))
        for name, value in _children(cfg, keys, dtype).items():
            setattr(self, name, value)

    @property
    def params(self) -> dict[str, Array]:
        """Every parameter by its checkpoint name (its key path in the tree: the torch `state_dict` key)."""
        return parameters(self)

    def __call__(self, batch: GraphBatch | DenseGraphBatch, *, key: Array | None = None
                 ) -> Float[Array, "B d_out"] | tuple[Array, Array]:
        """Apply the model to a batch from `collate` (compiled with `eqx.filter_jit`).

        Args:
            batch: a `GraphBatch` or `DenseGraphBatch`.
            key: dropout key (training mode), or `None` (inference).

        Returns:
            `[B, d_out]` for the invariant head; `(node_features, edge_features)` edited, in
            the batch's layout, for the equivariant head.
        """
        if not isinstance(batch, GraphBatch | DenseGraphBatch):
            raise TypeError(f"ScaleGMN expects a batch from scalegmn.jax.collate, got {type(batch).__name__}")
        for spec in batch.specs:
            self.config.check_compatible(spec)
        dt = self.node_proj.weight.dtype
        if batch.node_features.dtype != dt:
            raise TypeError(f"the batch is {batch.node_features.dtype} but the model is {dt}: "
                            f"use collate(networks, dtype={dt})")
        return _core_jit(self, dataclasses.replace(batch, specs=()), key)

    def core(self, b: GraphBatch | DenseGraphBatch, key: Array | None = None
             ) -> Float[Array, "B d_out"] | tuple[Array, Array]:
        """`__call__` without the input checks and not compiled (pure; for use inside `jax.jit`)."""
        cfg = self.config
        # Chunks run in a loop: dropout keys cannot be drawn inside it, so dropout runs unchunked.
        g: Any = _Dense(b, key is None or cfg.dropout == 0) if isinstance(b, DenseGraphBatch) else _Segments(b)
        keys = DropoutKeys(key if cfg.dropout > 0 or cfg.layer_dropout > 0 else None)
        role = b.node_role
        # Node index arrays are of the shared graph ([N]; the union's for a GraphBatch); feature
        # arrays carry the batch axis first in the dense layout and broadcast against these.
        if cfg.symmetry in ("auto", "hetero"):
            grp = b.node_group
        else:
            grp = jnp.broadcast_to(jnp.where(role == 1, _MODE_CODE[cfg.symmetry], GroupKind.PERMUTATION),
                                   b.node_group.shape)
        x = b.node_features
        h = self.node_proj(jnp.where((role == 0)[:, None], jnp.asarray(cfg.input_node_value, x.dtype), x))
        xe = b.edge_features
        w_edge = self.edge_proj.weight[:, :xe.shape[-1]]  # the zero padding to d_edge_in adds nothing
        pos = None
        if cfg.positional_encoding:
            add, mul, pe_e = self._positions(b)
            h = h * mul + add
        if cfg.positional_encoding and cfg.edge_positional_encoding:
            e = g.emap(lambda a, pe: (a @ w_edge.T) * pe, g.edges_in(xe), g.shared(pe_e))
        else:
            e = g.emap(lambda a: a @ w_edge.T, g.edges_in(xe))
        if cfg.positional_features:
            pos = g.node_shared(self._node_vectors(b))
        io = jnp.broadcast_to(io_index(cfg, role), grp.shape) if cfg.io_mlps else None
        e_bwd = e if cfg.backward_edge_state else None
        p_drop = cfg.layer_dropout
        for layer in self.layers:
            h, e, e_bwd = layer(h, e, g, grp, keys, io=io, pos=pos, e_bwd=e_bwd)
            sub = keys() if p_drop > 0 else None
            if sub is not None:
                keep = jax.random.bernoulli(sub, 1.0 - p_drop, h.shape)
                h = jnp.where(keep, h / (1.0 - p_drop), 0.0)
        if self.head is not None:
            return self.head(b, h, e, g)
        assert self.readout is not None
        return self.readout(h, g, role, grp, cfg, keys)

    def _node_vectors(self, b: GraphBatch | DenseGraphBatch) -> Array:
        """Each node's positional vector `[N, d]`: `pe_in[i]`, `pe_hidden[l - 1]` or `pe_out[i]` (`positional_features`)."""
        cfg = self.config
        assert self.pe_in is not None and self.pe_hidden is not None and self.pe_out is not None
        role, pos, lyr = b.node_role, b.node_pos, b.node_layer
        n_in, n_hid, n_out = cfg.max_in_nodes - 1, cfg.max_hidden_layers - 1, cfg.max_out_nodes - 1
        return jnp.where((role == 0)[:, None], self.pe_in[jnp.clip(pos, 0, n_in)],
                         jnp.where((role == 2)[:, None], self.pe_out[jnp.clip(pos, 0, n_out)],
                                   self.pe_hidden[jnp.clip(lyr - 1, 0, n_hid)]))

    def _positions(self, b: GraphBatch | DenseGraphBatch) -> tuple[Array, Array, Array | None]:
        """Positional encodings: added to nodes `[N, d]`, multiplying nodes `[N, d]`, multiplying
        edges `[E, d]` (`None` without `edge_positional_encoding`)."""
        cfg = self.config
        assert self.pe_in is not None and self.pe_hidden is not None and self.pe_out is not None
        role, pos, lyr, src, dst = b.node_role, b.node_pos, b.node_layer, b.src, b.dst
        n_in, n_hid, n_out = cfg.max_in_nodes - 1, cfg.max_hidden_layers - 1, cfg.max_out_nodes - 1
        add = jnp.where((role == 0)[:, None], self.pe_in[jnp.clip(pos, 0, n_in)],
                        jnp.where((role == 2)[:, None], self.pe_out[jnp.clip(pos, 0, n_out)], 0.0))
        mul = jnp.where((role == 1)[:, None], self.pe_hidden[jnp.clip(lyr - 1, 0, n_hid)], 1.0)
        if self.pe_edge_in is None:
            return add, mul, None
        assert self.pe_edge_hidden is not None and self.pe_edge_out is not None
        pe_e = jnp.where(
            (role[src] == 0)[:, None], self.pe_edge_in[jnp.clip(pos[src], 0, n_in)],
            jnp.where((role[dst] == 2)[:, None], self.pe_edge_out[jnp.clip(pos[dst], 0, n_out)],
                      self.pe_edge_hidden[jnp.clip(lyr[dst] - 2, 0, n_hid)]))
        return add, mul, pe_e


def _children(cfg: ScaleGMNConfig, keys: InitKeys, dtype: jnp.dtype) -> dict[str, Any]:
    """The fields of a new `ScaleGMN`, parameters made (and keys drawn) in the order of `docs/model.md`."""
    d = cfg.d_hidden
    out: dict[str, Any] = {"node_proj": Linear(cfg.d_node_in, d, bias=False, keys=keys, dtype=dtype),
                           "edge_proj": Linear(cfg.d_edge_in, d, bias=False, keys=keys, dtype=dtype)}
    # Tables near one multiply, near zero add.
    tables = {"pe_in": (cfg.max_in_nodes, 0.0), "pe_hidden": (cfg.max_hidden_layers, 1.0),
              "pe_out": (cfg.max_out_nodes, 0.0), "pe_edge_in": (cfg.max_in_nodes, 1.0),
              "pe_edge_hidden": (cfg.max_hidden_layers, 1.0), "pe_edge_out": (cfg.max_out_nodes, 1.0)}
    for name, (n, base) in tables.items():
        k = keys() if cfg.positional_encoding else None  # a table left out keeps its key
        keep = cfg.edge_positional_encoding or not name.startswith("pe_edge")
        out[name] = base + 0.1 * jax.random.normal(k, (n, d), dtype) if k is not None and keep else None
    last_edge = cfg.edge_update and cfg.head == "equivariant"
    out["layers"] = tuple(GMNLayer(cfg, cfg.edge_update and (t < cfg.n_layers - 1 or last_edge), keys=keys, dtype=dtype,
                                   head_layer=cfg.head_in_last_layer and t == cfg.n_layers - 1)
                          for t in range(cfg.n_layers))
    out["readout"] = Readout(cfg, keys=keys, dtype=dtype) if cfg.head == "invariant" else None
    out["head"] = EquivariantHead(cfg, keys=keys, dtype=dtype) if cfg.head == "equivariant" else None
    return out


def io_index(cfg: ScaleGMNConfig, role: Array) -> Array:
    """The io MLP of the rows received by each node (`io_mlps`): `0` input, `io_mlps - 1` output, `-1` none.

    Args:
        cfg: the configuration.
        role: `[N]` node roles (0 input, 1 hidden, 2 output).

    Returns:
        `[N]` indices into `ScaleEq.io`.
    """
    return jnp.where(role == 0, 0, jnp.where(role == 2, cfg.io_mlps - 1, -1))


_OPTIONS_STREAM = 0x5CA1E
"""`fold_in` constant of the key stream of the non-default options' parameters (`InitKeys.extra`)."""


def _refuse(cfg: ScaleGMNConfig) -> None:
    """Raise `NotImplementedError` for the option combinations this backend does not build."""
    if cfg.sign_canon == "symmetrize_phi" and cfg.symmetry == "nonzero":
        raise NotImplementedError(
            "sign_canon='symmetrize_phi' with symmetry='nonzero': rho exists only for symmetry "
            "'sign', 'auto' or 'hetero'; use symmetry='auto' (identity activations are nonzero groups)")
    if cfg.head_in_last_layer and not cfg.edge_update:
        raise NotImplementedError("head_in_last_layer=True needs edge_update=True (the last layer's edge "
                                  "update writes the weight edits)")


@functools.lru_cache(maxsize=64)
def _n_params(config: ScaleGMNConfig) -> int:
    """The number of parameters (keys to draw) of the model of `config`."""
    keys = InitKeys(None)
    eqx.filter_eval_shape(lambda: _children(config, keys, jnp.float32))
    return keys.count


def _core(model: ScaleGMN, batch: GraphBatch | DenseGraphBatch, key: Array | None) -> Any:
    return model.core(batch, key)


_core_jit = eqx.filter_jit(_core)


@functools.lru_cache(maxsize=64)
def _structure(config: ScaleGMNConfig) -> tuple[Any, tuple[str, ...], tuple[tuple[int, ...], ...]]:
    """The module tree of `config` without arrays: its treedef, parameter names and shapes."""
    skeleton = eqx.filter_eval_shape(lambda: ScaleGMN(config))
    leaves, treedef = jax.tree_util.tree_flatten_with_path(skeleton)
    return treedef, tuple(_param_name(p) for p, _ in leaves), tuple(tuple(v.shape) for _, v in leaves)


def _from_params(config: ScaleGMNConfig, params: Mapping[str, Any]) -> ScaleGMN:
    treedef, names, shapes = _structure(config)
    if set(params) != set(names):
        missing, extra = sorted(set(names) - set(params)), sorted(set(params) - set(names))
        raise ValueError(f"parameters do not fit the config: missing {missing}, unexpected {extra}")
    for name, shape in zip(names, shapes, strict=True):
        if tuple(np.shape(params[name])) != shape:
            raise ValueError(f"parameter {name} has shape {tuple(np.shape(params[name]))}, the config needs {shape}")
    model: ScaleGMN = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(params[n]) for n in names])
    return model


def param_shapes(config: ScaleGMNConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter of the model of `config` by its checkpoint name, with its shape (torch layout)."""
    _, names, shapes = _structure(config)
    return dict(zip(names, shapes, strict=True))


def init_params(config: ScaleGMNConfig, key: Array, dtype: jnp.dtype = jnp.float32) -> dict[str, Array]:
    """Initial parameters by checkpoint name: `ScaleGMN(config, key=key, dtype=dtype).params`."""
    return ScaleGMN(config, key=key, dtype=dtype).params


def forward(params: Mapping[str, Array], cfg: ScaleGMNConfig, b: GraphBatch | DenseGraphBatch,
            key: Array | None = None) -> Array | tuple[Array, Array]:
    """The model's function of its parameters by checkpoint name (pure; for `jax.grad` over a dict).

    Args:
        params: every parameter by name (`ScaleGMN.params`).
        cfg: the configuration.
        b: a batch from `collate`.
        key: dropout key, or `None`.

    Returns:
        As `ScaleGMN.__call__`.
    """
    return ScaleGMN(cfg, params=params).core(b, key)
