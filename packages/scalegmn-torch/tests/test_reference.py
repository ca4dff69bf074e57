"""The model against a literal transcription of `docs/model.md`.

The reference below builds every concatenation `[h_i, r_ji]` per edge and applies each
block exactly as written, from the state dict by name; the model splits the first Linears
into per-node and per-edge parts and fuses kernels. Both must agree to rounding.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor
from torch_testutil import make_model, mixed_specs, nets, rel_err, small_config, spec_for

from scalegmn.torch import collate
from scalegmn.weightgraph import GroupKind, Network, group_kind, to_graph

ACT = {"relu": F.relu, "silu": F.silu, "gelu": F.gelu, "tanh": torch.tanh}
CONTINUOUS = (GroupKind.SCALE, GroupKind.NONZERO)
FLIPS = (GroupKind.SIGN, GroupKind.NONZERO)


def mlp(P: dict[str, Tensor], name: str, x: Tensor, cfg) -> Tensor:  # type: ignore[no-untyped-def]
    k = 0
    while f"{name}.lin.{k + 1}.weight" in P:
        x = F.linear(x, P[f"{name}.lin.{k}.weight"], P[f"{name}.lin.{k}.bias"])
        if f"{name}.norm.{k}.weight" in P:
            x = F.layer_norm(x, x.shape[-1:], P[f"{name}.norm.{k}.weight"], P[f"{name}.norm.{k}.bias"], 1e-5)
        x = ACT[cfg.mlp_activation](x)
        k += 1
    return F.linear(x, P[f"{name}.lin.{k}.weight"], P[f"{name}.lin.{k}.bias"])


def scale_inv(P, name, x, g, cfg):  # type: ignore[no-untyped-def]
    out = []
    for row, gi in zip(x, g.tolist(), strict=True):
        u = row / max(row.norm(), cfg.norm_eps) if gi in CONTINUOUS else row
        if gi in FLIPS:
            if cfg.sign_canon == "symmetrize":
                out.append(mlp(P, name, u, cfg) + mlp(P, name, -u, cfg))
            else:
                v = u[u.abs().argmax()]
                s = 1.0 if v == 0 else float(torch.sign(v))
                out.append(mlp(P, name, s * u, cfg))
        else:
            out.append(mlp(P, name, u, cfg))
    return torch.stack(out)


def scale_eq(P, name, x, g, cfg):  # type: ignore[no-untyped-def]
    return F.linear(x, P[f"{name}.gamma.weight"]) * scale_inv(P, f"{name}.inv", x, g, cfg)


def reference(model, networks: list[Network]) -> Tensor | tuple[list[Tensor], list[Tensor]]:  # type: ignore[no-untyped-def]
    cfg = model.config
    P = dict(model.state_dict())
    outs = []
    edits = []
    for net in networks:
        gr = to_graph(net)
        lay = gr.layout
        spec = net.spec
        x = torch.tensor(gr.node_features)
        xe = torch.tensor(gr.edge_features)
        role = torch.tensor(lay.node_role)
        pos, lyr = torch.tensor(lay.node_pos), torch.tensor(lay.node_layer)
        src, dst = (torch.tensor(a) for a in lay.edge_index)
        grp = torch.full((len(role),), GroupKind.PERMUTATION, dtype=torch.long)
        for i in range(len(role)):
            if role[i] == 1:
                auto = group_kind(spec.layers[int(lyr[i]) - 1].activation)
                grp[i] = auto if cfg.symmetry in ("auto", "hetero") else GroupKind.from_label(cfg.symmetry)
        xin = torch.where((role == 0)[:, None], torch.full_like(x, cfg.input_node_value), x)
        h = F.linear(xin, P["node_proj.weight"])
        xe_pad = F.pad(xe, (0, cfg.d_edge_in - xe.shape[1]))
        e = F.linear(xe_pad, P["edge_proj.weight"])
        if cfg.positional_encoding:
            for i in range(len(h)):
                if role[i] == 0:
                    h[i] = h[i] + P["pe_in"][pos[i]]
                elif role[i] == 1:
                    h[i] = h[i] * P["pe_hidden"][lyr[i] - 1]
                else:
                    h[i] = h[i] + P["pe_out"][pos[i]]
            for k in range(len(e)):
                j, i, ll = int(src[k]), int(dst[k]), int(lay.edge_layer[k])
                if role[j] == 0:
                    e[k] = e[k] * P["pe_edge_in"][pos[j]]
                elif role[i] == 2:
                    e[k] = e[k] * P["pe_edge_out"][pos[i]]
                else:
                    e[k] = e[k] * P["pe_edge_hidden"][ll - 2]
        N, d = len(h), cfg.d_hidden
        for t in range(cfg.n_layers):
            pre = f"layers.{t}"
            r = F.linear(h[src], P[f"{pre}.fwd.rescale.a.weight"]) * F.linear(e, P[f"{pre}.fwd.rescale.b.weight"])
            z = torch.cat([h[dst], r], -1) if cfg.message_receiver else r
            m = scale_eq(P, f"{pre}.fwd.msg", z, grp[dst], cfg)
            M = torch.zeros(N, d, dtype=h.dtype).index_add(0, dst, m)
            parts = [h, M]
            if cfg.bidirectional:
                rb = F.linear(h[dst], P[f"{pre}.bwd.rescale.a.weight"]) * F.linear(e, P[f"{pre}.bwd.rescale.b.weight"])
                n = h.square().sum(-1)
                cont = (grp == GroupKind.SCALE) | (grp == GroupKind.NONZERO)
                c = torch.where(cont[src], n[src], 1.0) / torch.where(
                    cont[dst], n[dst].clamp_min(cfg.norm_eps**2), 1.0)
                rb = rb * c[:, None]
                zb = torch.cat([h[src], rb], -1) if cfg.message_receiver else rb
                mb = scale_eq(P, f"{pre}.bwd.msg", zb, grp[src], cfg)
                parts.append(torch.zeros(N, d, dtype=h.dtype).index_add(0, src, mb))
            hn = scale_eq(P, f"{pre}.upd", torch.cat(parts, -1), grp, cfg)
            if cfg.skip_connections:
                hn = hn + h
            if f"{pre}.edge.gamma.weight" in P:
                inv = scale_inv(P, f"{pre}.edge.inv", hn, grp, cfg)
                en = F.linear(e, P[f"{pre}.edge.gamma.weight"]) * mlp(P, f"{pre}.edge.mlp", torch.cat([inv[src], inv[dst]], -1), cfg)
                e = en + e if cfg.skip_connections else en
            h = hn
        if cfg.head == "equivariant":
            alpha = P["head.alpha"]
            dn = F.linear(h, P["head.node.weight"])
            node = x.clone()
            for i in range(N):
                if role[i] != 0:
                    node[i] = node[i] + alpha[lyr[i] - 1] * dn[i]
            de = F.linear(e, P["head.edge.weight"][: xe.shape[1]]) * torch.tensor(lay.edge_mask)
            edge = xe + alpha[torch.tensor(lay.edge_layer) - 1][:, None] * de
            edits.append((node, edge))
            continue
        if cfg.readout == "last_layer":
            flat = F.pad(h[role == 2], (0, 0, 0, cfg.max_out_nodes - int((role == 2).sum()))).flatten()
            outs.append(mlp(P, "readout.mlp", flat, cfg))
        else:
            hid = role == 1
            s_h = scale_inv(P, "readout.inv", h[hid], grp[hid], cfg).sum(0) if hid.any() else torch.zeros(d, dtype=h.dtype)
            outs.append(mlp(P, "readout.mlp", torch.cat([s_h, h[role == 0].sum(0), h[role == 2].sum(0)]), cfg))
    if cfg.head == "equivariant":
        return [a for a, _ in edits], [b for _, b in edits]
    return torch.stack(outs)


configs = st.fixed_dictionaries({
    "symmetry": st.sampled_from(["auto", "permutation", "scale", "sign", "nonzero"]),
    "bidirectional": st.booleans(),
    "message_receiver": st.booleans(),
    "edge_update": st.booleans(),
    "skip_connections": st.booleans(),
    "sign_canon": st.sampled_from(["symmetrize", "canonicalize"]),
    "mlp_layers": st.integers(0, 2),
    "layer_norm": st.booleans(),
    "mlp_activation": st.sampled_from(["silu", "relu", "gelu", "tanh"]),
    "positional_encoding": st.booleans(),
    "readout": st.sampled_from(["full_graph", "last_layer"]),
    "head": st.sampled_from(["invariant", "equivariant"]),
    "input_node_value": st.sampled_from([0.0, 1.0]),
})

ACTIVATION_FOR = {"scale": "relu", "sign": "tanh", "nonzero": "identity"}


@settings(max_examples=25, deadline=None)
@given(kw=configs, kind=st.sampled_from(["mlp", "cnn", "flatten", "mixed"]), seed=st.integers(0, 10**6))
def test_model_matches_literal_reference(kw: dict, kind: str, seed: int) -> None:
    cfg = small_config(**kw, d_hidden=5, mlp_hidden=4)
    activation = ACTIVATION_FOR.get(cfg.symmetry, "tanh")
    if kind == "mixed":
        networks = [nets(s, 1, seed=k + seed)[0] for k, s in enumerate(mixed_specs())
                    if cfg.symmetry not in ACTIVATION_FOR]
        if not networks:
            networks = nets(spec_for("mlp", activation), 2, seed=seed)
    else:
        networks = nets(spec_for(kind, activation), 2, seed=seed)
    model = make_model(cfg, seed=seed % 1000)
    ref = reference(model, networks)
    with torch.no_grad():
        out = model(collate(networks, torch.float64))
    if cfg.head == "invariant":
        assert rel_err(out, ref) < 1e-12
        return
    ref_nodes, ref_edges = ref
    node = torch.cat(ref_nodes)
    if out.edge_features.dim() == 3:  # dense layout
        assert rel_err(out.node_features.reshape(-1, 1), node) < 1e-12
        assert rel_err(out.edge_features.reshape(-1, out.edge_features.shape[-1]), torch.cat(ref_edges)) < 1e-12
    else:
        assert rel_err(out.node_features, node) < 1e-12
        d_e = out.edge_features.shape[1]
        edges = torch.cat([F.pad(x, (0, d_e - x.shape[1])) for x in ref_edges])
        assert rel_err(out.edge_features, edges) < 1e-12


def test_reference_catches_a_missing_normalisation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: a model that skips `x / ||x||` differs from the reference."""
    from scalegmn.torch import blocks

    cfg = small_config(symmetry="scale")
    networks = nets(spec_for("mlp", "relu"), 2)
    model = make_model(cfg)
    ref = reference(model, networks)
    model.fused = False
    monkeypatch.setattr(blocks, "norm_factor", lambda sq, grp, eps: None)
    with torch.no_grad():
        out = model(collate(networks, torch.float64))
    assert rel_err(out, ref) > 1e-3
