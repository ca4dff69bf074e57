"""`ScaleGMN`: the model of `docs/model.md` as a `torch.nn.Module`."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable
from typing import Any, cast

from einops import rearrange

import torch
import torch.nn.functional as F
from scalegmn.weightgraph import ScaleGMNConfig
from torch import Tensor, nn

from .batch import BatchError, DenseGraphs, Graphs, SparseGraphs, from_pyg
from .blocks import MLP, general_inv, scale_inv
from .groups import Grp, effective_codes, effective_const
from .layer import EdgeBlock, GMNLayer, Need, has_rho

_PE_NOISE = 0.01


class ScaleGMN(nn.Module):
    """Scale equivariant graph metanetwork (ScaleGMN, and ScaleGMN-B when bidirectional).

    Args:
        config: the model configuration; parameter names follow `docs/model.md`.

    Example:
        ```python
        from scalegmn.weightgraph import NetworkSpec, random_network
        from scalegmn.torch import ScaleGMN, ScaleGMNConfig, collate

        nets = [random_network(NetworkSpec.siren(), rng=k) for k in range(3)]
        model = ScaleGMN(ScaleGMNConfig(d_hidden=8, n_layers=2, d_out=4))
        assert model(collate(nets)).shape == (3, 4)
        ```
    """

    def __init__(self, config: ScaleGMNConfig) -> None:
        super().__init__()
        if not isinstance(config, ScaleGMNConfig):
            raise TypeError(f"ScaleGMN expects a ScaleGMNConfig, got {type(config).__name__}")
        self.config = cfg = config
        _check_options(cfg)
        d = cfg.d_hidden
        self.node_proj = nn.Linear(cfg.d_node_in, d, bias=False)
        self.edge_proj = nn.Linear(cfg.d_edge_in, d, bias=False)
        if cfg.positional_encoding:
            def table(n: int, base: float) -> nn.Parameter:
                return nn.Parameter(base + _PE_NOISE * torch.randn(n, d))

            self.pe_in = table(cfg.max_in_nodes, 0.0)
            self.pe_hidden = table(cfg.max_hidden_layers, 1.0)
            self.pe_out = table(cfg.max_out_nodes, 0.0)
            if cfg.edge_positional_encoding:
                self.pe_edge_in = table(cfg.max_in_nodes, 1.0)
                self.pe_edge_hidden = table(cfg.max_hidden_layers, 1.0)
                self.pe_edge_out = table(cfg.max_out_nodes, 1.0)
        last_edge = cfg.edge_update and cfg.head == "equivariant"
        self.layers: nn.ModuleList = nn.ModuleList(
            GMNLayer(cfg, cfg.edge_update and (t < cfg.n_layers - 1 or last_edge),
                     last=t == cfg.n_layers - 1)
            for t in range(cfg.n_layers)
        )
        # `readout` / `head` are plain containers: their children are read through the typed
        # accessors below, and their attribute names are the checkpoint's parameter names.
        if cfg.head == "invariant":
            self.readout = nn.Module()
            if cfg.readout == "full_graph":
                def inv_mlp() -> MLP:
                    return MLP(d, cfg.mlp_width, d, cfg.mlp_layers, cfg.mlp_activation,
                               cfg.layer_norm, cfg.dropout)

                self.readout.inv = inv_mlp()
                if has_rho(cfg):
                    self.readout.rho = inv_mlp()
                if cfg.per_group_inv:
                    self.readout.inv_scale = inv_mlp()
                d_ro = (3 * d if cfg.readout_io == "sum"
                        else d + (cfg.max_in_nodes + cfg.max_out_nodes) * d)
            elif cfg.readout == "io_nodes":
                self.readout.proj_in = nn.Linear(cfg.max_in_nodes * d, d)
                self.readout.proj_out = nn.Linear(cfg.max_out_nodes * d, d)
                d_ro = 2 * d
            else:
                d_ro = cfg.max_out_nodes * d
            self.readout.mlp = MLP(d_ro, cfg.readout_width, cfg.d_out, cfg.readout_layers,
                                   cfg.mlp_activation, cfg.layer_norm, cfg.dropout)
        else:
            self.head = nn.Module()
            if not cfg.head_in_last_layer:
                self.head.node = nn.Linear(d, 1, bias=False)
                self.head.edge = nn.Linear(d, cfg.d_edge_in, bias=False)
            self.head.alpha = nn.Parameter(torch.full((cfg.max_hidden_layers + 1,), cfg.edit_alpha_init))
        self._checked: set[str] = set()
        self.fused = True
        """Use the fused per-edge kernels on dense batches where they apply (same results)."""

    # ------------------------------------------------------------------ typed children
    def _layers(self) -> Iterable[GMNLayer]:
        return cast(Iterable[GMNLayer], self.layers)

    def _readout_inv(self) -> MLP:
        """The node ScaleInv of the `full_graph` readout."""
        return cast(MLP, self.readout.inv)

    def _readout_mlp(self) -> MLP:
        return cast(MLP, self.readout.mlp)

    def _readout_inv_rows(self, h: Tensor, grp: Grp) -> Tensor:
        """The `full_graph` readout's ScaleInv of node states (with `rho` / `inv_scale`)."""
        cfg = self.config
        ro = self.readout
        rho = cast(MLP, ro.rho) if hasattr(ro, "rho") else None
        inv_scale = cast(MLP, ro.inv_scale) if hasattr(ro, "inv_scale") else None
        if rho is None and inv_scale is None:
            return scale_inv(self._readout_inv(), h, grp, cfg.norm_eps,
                             cfg.sign_canon != "canonicalize")
        return general_inv(self._readout_inv(), h, Grp(grp.norm, grp.flip), cfg.norm_eps,
                           cfg.sign_canon, rho=rho, inv_scale=inv_scale)

    def _io_readout(self, flat_in: Tensor, flat_out: Tensor) -> Tensor:
        """`readout="io_nodes"`: `MLP([proj_out(flat_out), proj_in(flat_in)])`."""
        ro = self.readout
        x = torch.cat([cast(nn.Linear, ro.proj_out)(flat_out), cast(nn.Linear, ro.proj_in)(flat_in)], -1)
        return self._readout_mlp()(x)

    def _head_node(self) -> nn.Linear:
        return cast(nn.Linear, self.head.node)

    def _head_edge(self) -> nn.Linear:
        return cast(nn.Linear, self.head.edge)

    def _head_alpha(self) -> nn.Parameter:
        return cast(nn.Parameter, self.head.alpha)

    # ------------------------------------------------------------------ checks
    def check_batch(self, batch: Graphs) -> None:
        """Raise a clear error if `batch` cannot be fed to this model.

        Raises:
            TypeError: not a batch from `collate`, or a dtype other than the model's.
            ValueError: a network that does not fit the configuration.
        """
        if not isinstance(batch, DenseGraphs | SparseGraphs):
            raise TypeError(
                f"ScaleGMN expects a batch from scalegmn.torch.collate, got {type(batch).__name__}"
            )
        cfg = self.config
        p = self.node_proj.weight
        if batch.node_features.dtype != p.dtype:
            raise TypeError(
                f"the batch is {batch.node_features.dtype} but the model is {p.dtype}: use "
                f"collate(networks, dtype={p.dtype}) or model.to({p.dtype})"
            )
        if batch.node_features.shape[-1] != cfg.d_node_in:
            raise BatchError(
                f"node features have width {batch.node_features.shape[-1]} but d_node_in="
                f"{cfg.d_node_in}"
            )
        if batch.d_edge > cfg.d_edge_in:
            raise BatchError(
                f"edge vectors have length {batch.d_edge} but d_edge_in={cfg.d_edge_in}; "
                f"set d_edge_in={batch.d_edge}"
            )
        for k, spec in enumerate(batch.specs):
            key = spec.model_dump_json()
            if key in self._checked:
                continue
            try:
                cfg.check_compatible(spec)
            except ValueError as err:
                raise BatchError(f"network {k} of the batch: {err}") from None
            self._checked.add(key)

    # ------------------------------------------------------------------ forward
    def forward(self, batch: Graphs | Any) -> Tensor | Graphs | Any:
        """Run the model.

        Args:
            batch: a `DenseGraphs` or `SparseGraphs` from `collate` (never modified), or a
                PyTorch Geometric batch (run by `forward_pyg`).

        Returns:
            `[B, d_out]` for `head="invariant"`; for `head="equivariant"` the edited graphs,
            a batch of the same layout (decode with `.to_networks()`).
        """
        if not isinstance(batch, DenseGraphs | SparseGraphs) and _is_pyg(batch):
            return self.forward_pyg(batch)
        self.check_batch(batch)
        return self.core(batch, self.fused)

    def forward_pyg(self, batch: Any) -> Any:
        """Run the model on a `torch_geometric.data.Batch`, layer by layer as `ScaleGMNConv`s.

        The same function as `forward` (the layers share this model's parameters); the
        messages are gathered and summed by PyTorch Geometric's `MessagePassing`.

        Args:
            batch: a `Batch` of `to_pyg_data(network)` graphs (what PyG's `DataLoader`
                yields), or `SparseGraphs.to_pyg()`; never modified.

        Returns:
            `[B, d_out]` for `head="invariant"`; for `head="equivariant"` a copy of `batch`
            whose `x` and `edge_attr` are the edited graphs.

        Example:
            ```python
            from torch_geometric.loader import DataLoader
            from scalegmn.weightgraph import NetworkSpec, random_network
            from scalegmn.torch import ScaleGMN, ScaleGMNConfig, to_pyg_data

            nets = [random_network(NetworkSpec.mlp([2, 8, 1]), rng=k) for k in range(8)]
            model = ScaleGMN(ScaleGMNConfig.for_networks(nets, d_hidden=8, n_layers=2, d_out=3))
            for batch in DataLoader([to_pyg_data(n) for n in nets], batch_size=4):
                out = model.forward_pyg(batch)  # [4, 3]
            ```
        """
        convs = self.pyg_convs()  # refuses the options the PyG layer does not carry
        del convs
        b = from_pyg(batch)
        self.check_batch(b)
        out = self._forward_sparse(b, pyg=True)
        if isinstance(out, SparseGraphs):
            edited = batch.clone()
            edited.x, edited.edge_attr = out.node_features, out.edge_features
            return edited
        return out

    def pyg_convs(self) -> list[Any]:
        """The layers as `ScaleGMNConv` (`torch_geometric.nn.MessagePassing`) modules.

        They hold this model's layers (not copies), so they train with the model; they are
        not registered as children, which keeps the checkpoint's parameter names.
        """
        from .pyg import ScaleGMNConv

        convs = self.__dict__.get("_convs")
        if convs is None or any(c.layer is not lay for c, lay in zip(convs, self._layers(), strict=True)):
            convs = [ScaleGMNConv(lay) for lay in self._layers()]
            self.__dict__["_convs"] = convs
        return convs

    def core(self, batch: Graphs, fused: bool = True) -> Tensor | Graphs:
        """`forward` without the input checks (the part that `compile_model` compiles).

        Args:
            batch: a checked batch.
            fused: allow the fused dense kernels.
        """
        if isinstance(batch, DenseGraphs):
            return self._forward_dense(batch, fused)
        return self._forward_sparse(batch)

    def _run(self, h: list[Tensor], e: list[Tensor], grp: list[Grp],
             blocks: list[EdgeBlock], fused: bool) -> tuple[list[Tensor], list[Tensor]]:
        """The layers. Each computes only what the head reads in the end (`_head_sets`; the
        one node set of the disjoint-union layout is always read)."""
        needs = self._needs(len(h) - 1, blocks)
        fused = (fused and all(isinstance(g.norm, bool) for g in grp)
                 and all(isinstance(g.flip, bool) for g in grp))
        p = self.config.layer_dropout
        e_b: list[Tensor] | None = None
        for t, layer in enumerate(self._layers()):
            h, e, e_b = layer.step(h, e, e_b, grp, blocks, fused=fused and layer.fusable(),
                                   need=needs[t])
            if p > 0 and self.training:
                h = [F.dropout(hk, p, True) for hk in h]
        return h, e

    def _run_sparse(self, h: Tensor, e: Tensor, grp: list[Grp], src: Tensor, dst: Tensor
                    ) -> tuple[Tensor, Tensor]:
        n = h.shape[0]

        def to_dst(m: Tensor) -> Tensor:
            return m.new_zeros(n, m.shape[-1]).index_add(0, dst, m)

        def to_src(m: Tensor) -> Tensor:
            return m.new_zeros(n, m.shape[-1]).index_add(0, src, m)

        blk = EdgeBlock(0, 0, lambda t: t.index_select(0, src), lambda t: t.index_select(0, dst),
                        to_src, to_dst)
        hs, es = self._run([h], [e], grp, [blk], False)
        return hs[0], es[0]

    def _forward_dense(self, b: DenseGraphs, fused: bool) -> Tensor | DenseGraphs:
        cfg = self.config
        L = b.n_layers
        roles = [0] + [1] * (L - 1) + [2]
        grp = []
        for k in range(L + 1):
            code = b.layer_codes[k]
            if code is not None:
                grp.append(Grp.const(effective_const(cfg.symmetry, code, roles[k])))
            else:
                codes = b.node_group[:, b.node_offsets[k]][:, None, None]
                codes = effective_codes(cfg.symmetry, codes, codes.new_full((), roles[k]))  # on the batch's device
                grp.append(Grp.from_codes(codes, b.node_features.dtype))
        if cfg.io_mlps or cfg.positional_features:
            grp = [dataclasses.replace(
                g, inp=k == 0 and cfg.io_mlps > 0, out=k == L and cfg.io_mlps > 0,
                pos=self._pos_dense(k, L, b.widths[k]) if cfg.positional_features else None)
                for k, g in enumerate(grp)]
        wn = self.node_proj.weight
        h = []
        for k in range(L + 1):
            x = b.layer_nodes(k)
            if k == 0:
                x = torch.full_like(x, cfg.input_node_value)
            hk = F.linear(x, wn)
            if cfg.positional_encoding:
                n = b.widths[k]
                hk = hk + self.pe_in[:n] if k == 0 else (hk + self.pe_out[:n] if k == L else hk * self.pe_hidden[k - 1])
            h.append(hk)
        we = self.edge_proj.weight[:, : b.d_edge]
        e = []
        for l in range(1, L + 1):  # noqa: E741
            el = F.linear(b.layer_edges(l), we)
            if cfg.positional_encoding and cfg.edge_positional_encoding:
                if l == 1:
                    el = el * self.pe_edge_in[: b.widths[0]]
                elif l == L:
                    el = el * self.pe_edge_out[: b.widths[L], None]
                else:
                    el = el * self.pe_edge_hidden[l - 2]
            e.append(el)
        blocks = [
            EdgeBlock(k - 1, k, _src_dense, _dst_dense, _sum_src_dense, _sum_dst_dense)
            for k in range(1, L + 1)
        ]
        h, e = self._run(h, e, grp, blocks, fused)
        if cfg.head == "equivariant":
            return self._edit_dense(b, h, e)
        flat_out = rearrange(F.pad(h[L], (0, 0, 0, cfg.max_out_nodes - b.widths[L])), "b n d -> b (n d)")
        if cfg.readout == "last_layer":
            return self._readout_mlp()(flat_out)
        flat_in = rearrange(F.pad(h[0], (0, 0, 0, cfg.max_in_nodes - b.widths[0])), "b n d -> b (n d)")
        if cfg.readout == "io_nodes":
            return self._io_readout(flat_in, flat_out)
        hid = [self._readout_inv_rows(h[k], grp[k]).sum(1) for k in range(1, L)]
        hidden = torch.stack(hid).sum(0) if hid else h[0].new_zeros(h[0].shape[0], cfg.d_hidden)
        if cfg.readout_io == "ordered":
            out = torch.cat([hidden, flat_in, flat_out], -1)
        else:
            out = torch.cat([hidden, h[0].sum(1), h[L].sum(1)], -1)
        return self._readout_mlp()(out)

    def _head_sets(self, L: int) -> frozenset[int] | None:
        """The graph layers whose final node states the head reads (`None`: all of them)."""
        cfg = self.config
        if cfg.head == "invariant" and cfg.readout == "last_layer":
            return frozenset({L})
        if cfg.head == "invariant" and cfg.readout == "io_nodes":
            return frozenset({0, L})
        return None

    def _needs(self, L: int, blocks: list[EdgeBlock]) -> list[Need | None]:
        """What each layer's outputs must hold for the head (`None`: everything)."""
        layers = list(self._layers())
        sets = self._head_sets(L)
        if sets is None:
            return [None] * len(layers)
        need = Need(sets, frozenset())
        out: list[Need | None] = []
        for layer in reversed(layers):
            out.append(need)
            need = layer.need_before(need, blocks)
        return out[::-1]

    def _pos_dense(self, k: int, L: int, n: int) -> Tensor:
        """The positional vectors of graph layer `k` (`positional_features`): `[n or 1, d]`."""
        if k == 0:
            return self.pe_in[:n]
        if k == L:
            return self.pe_out[:n]
        return self.pe_hidden[k - 1 : k]

    def _edit_dense(self, b: DenseGraphs, h: list[Tensor], e: list[Tensor]) -> DenseGraphs:
        L = b.n_layers
        alpha = self._head_alpha()
        in_layer = self.config.head_in_last_layer
        nodes = [b.layer_nodes(0)]
        for k in range(1, L + 1):
            dn = h[k] if in_layer else F.linear(h[k], self._head_node().weight)
            nodes.append(b.layer_nodes(k) + alpha[k - 1] * dn)
        edges = []
        for l in range(1, L + 1):  # noqa: E741
            mask = b.edge_mask[b.edge_offsets[l - 1]].to(e[l - 1].dtype)
            if in_layer:
                de = e[l - 1][..., : b.d_edge] * mask
            else:
                de = F.linear(e[l - 1], self._head_edge().weight[: b.d_edge]) * mask
            edges.append(rearrange(b.layer_edges(l) + alpha[l - 1] * de, "b t s c -> b (t s) c"))
        return b.with_features(torch.cat(nodes, 1), torch.cat(edges, 1))

    def _forward_sparse(self, b: SparseGraphs, pyg: bool = False) -> Tensor | SparseGraphs:
        cfg = self.config
        dtype = b.node_features.dtype
        role = b.node_role
        codes = effective_codes(cfg.symmetry, b.node_group, role)
        grp = [Grp.from_codes(codes[:, None], dtype)]
        if cfg.io_mlps:
            grp = [dataclasses.replace(grp[0], inp=(role == 0)[:, None].to(dtype),
                                       out=(role == 2)[:, None].to(dtype))]
        if cfg.positional_features:
            tab = torch.cat([self.pe_in, self.pe_hidden, self.pe_out])
            idx = torch.where(role == 0, b.node_pos,
                              torch.where(role == 1, cfg.max_in_nodes + b.node_layer - 1,
                                          cfg.max_in_nodes + cfg.max_hidden_layers + b.node_pos))
            grp = [dataclasses.replace(grp[0], pos=tab[idx])]
        x = torch.where((role == 0)[:, None], torch.full_like(b.node_features, cfg.input_node_value),
                        b.node_features)
        h = F.linear(x, self.node_proj.weight)
        src, dst = b.edge_index[0], b.edge_index[1]
        e = F.linear(b.edge_features, self.edge_proj.weight[:, : b.d_edge])
        if cfg.positional_encoding:
            pos, lay = b.node_pos, b.node_layer
            add_tab = torch.cat([self.pe_in, self.pe_out, self.pe_in.new_zeros(1, cfg.d_hidden)])
            add_idx = torch.where(role == 0, pos, torch.where(role == 2, cfg.max_in_nodes + pos,
                                                              cfg.max_in_nodes + cfg.max_out_nodes))
            mul_tab = torch.cat([self.pe_hidden, self.pe_hidden.new_ones(1, cfg.d_hidden)])
            mul_idx = torch.where(role == 1, lay - 1, cfg.max_hidden_layers)
            h = h * mul_tab[mul_idx] + add_tab[add_idx]
        if cfg.positional_encoding and cfg.edge_positional_encoding:
            pos = b.node_pos
            er = b.edge_role
            e_tab = torch.cat([self.pe_edge_in, self.pe_edge_hidden, self.pe_edge_out])
            e_idx = torch.where(
                er == 0, pos[src],
                torch.where(er == 1, cfg.max_in_nodes + b.edge_layer - 2,
                            cfg.max_in_nodes + cfg.max_hidden_layers + pos[dst]),
            )
            e = e * e_tab[e_idx]
        if pyg:
            p = cfg.layer_dropout
            for conv in self.pyg_convs():
                h, e = conv(h, b.edge_index, e, codes)
                if p > 0 and self.training:
                    h = F.dropout(h, p, True)
        else:
            h, e = self._run_sparse(h, e, grp, src, dst)
        B = len(b)
        if cfg.head == "equivariant":
            alpha = self._head_alpha()
            in_layer = cfg.head_in_last_layer
            dn = h if in_layer else F.linear(h, self._head_node().weight)
            dn = dn * alpha[(b.node_layer - 1).clamp_min(0)][:, None]
            node = b.node_features + torch.where((role == 0)[:, None], torch.zeros_like(dn), dn)
            de = e[:, : b.d_edge] if in_layer else F.linear(e, self._head_edge().weight[: b.d_edge])
            de = de * b.edge_mask.to(dtype)
            edge = b.edge_features + alpha[b.edge_layer - 1][:, None] * de
            return b.with_features(node, edge)

        def ordered(r: int, n: int) -> Tensor:
            flat = b.node_batch * n + b.node_pos
            sel = role == r
            out = h.new_zeros(B * n, cfg.d_hidden).index_add(0, flat[sel], h[sel])
            return rearrange(out, "(b n) d -> b (n d)", b=B)

        if cfg.readout == "last_layer":
            return self._readout_mlp()(ordered(2, cfg.max_out_nodes))
        if cfg.readout == "io_nodes":
            return self._io_readout(ordered(0, cfg.max_in_nodes), ordered(2, cfg.max_out_nodes))
        inv = self._readout_inv_rows(h, grp[0])
        parts = []
        for r, v in ((1, inv), (0, h), (2, h)):
            sel = role == r
            parts.append(h.new_zeros(B, cfg.d_hidden).index_add(0, b.node_batch[sel], v[sel]))
        if cfg.readout_io == "ordered":
            parts[1:] = [ordered(0, cfg.max_in_nodes), ordered(2, cfg.max_out_nodes)]
        return self._readout_mlp()(torch.cat(parts, -1))


def _check_options(cfg: ScaleGMNConfig) -> None:
    """Refuse option combinations the model does not define, with the fix."""
    if cfg.sign_canon == "symmetrize_phi" and cfg.symmetry == "nonzero":
        raise ValueError(
            "sign_canon='symmetrize_phi' creates rho only for symmetry 'sign', 'auto' or 'hetero'; "
            "with symmetry='nonzero' use sign_canon='symmetrize' or 'canonicalize'"
        )
    if cfg.head_in_last_layer and not cfg.edge_update:
        raise ValueError(
            "head_in_last_layer=True reads the weight update from the last layer's edge update: "
            "set edge_update=True"
        )


def _is_pyg(batch: Any) -> bool:
    """Whether `batch` is a PyTorch Geometric `Data` / `Batch` (without importing PyG)."""
    return any(c.__module__.startswith("torch_geometric.") for c in type(batch).__mro__)


def _src_dense(x: Tensor) -> Tensor:
    return rearrange(x, "... s c -> ... 1 s c")


def _dst_dense(x: Tensor) -> Tensor:
    return rearrange(x, "... t c -> ... t 1 c")


def _sum_src_dense(x: Tensor) -> Tensor:
    return x.sum(-3)


def _sum_dst_dense(x: Tensor) -> Tensor:
    return x.sum(-2)


def compile_model(model: ScaleGMN, **options: Any) -> Callable[[Graphs], Tensor | Graphs]:
    """A `torch.compile`d forward of `model` (same parameters, same results).

    The compiled function runs the unfused computation, which the compiler fuses itself;
    it is recompiled for each new batch shape.

    Args:
        model: the model.
        **options: passed to `torch.compile` (default `dynamic=False`).

    Returns:
        A function `batch -> output` like `model(batch)`.
    """
    options.setdefault("dynamic", False)
    core = torch.compile(functools.partial(model.core, fused=False), **options)

    def run(batch: Graphs) -> Tensor | Graphs:
        model.check_batch(batch)
        return core(batch)

    return run
