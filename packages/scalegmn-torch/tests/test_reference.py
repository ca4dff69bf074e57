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
from torch_testutil import (
    OPTION_CASES,
    make_model,
    mixed_specs,
    nets,
    option_config,
    options,
    rel_err,
    small_config,
    spec_for,
)

from scalegmn.torch import collate
from scalegmn.weightgraph import GroupKind, Network, NetworkSpec, group_kind, to_graph

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


def has(P, name):  # type: ignore[no-untyped-def]
    """Whether the MLP `name` exists."""
    return f"{name}.lin.0.weight" in P


def scale_inv(P, base, x, g, cfg, roles=None, pos=None, inv="inv"):  # type: ignore[no-untyped-def]
    """ScaleInv of the rows `x` with the MLPs `{base}.{inv}` (and `{base}.rho`,
    `{base}.inv_scale`, `{base}.io.{k}` where they exist); `roles` / `pos` of the receivers."""
    name = f"{base}.{inv}"
    n_io = 0
    while has(P, f"{base}.io.{n_io}"):
        n_io += 1
    out = []
    for k, (row, gi) in enumerate(zip(x, g.tolist(), strict=True)):
        p = None if pos is None else pos[k]

        def aug(v, p=p):  # type: ignore[no-untyped-def]
            return v if p is None else torch.cat([v, p])

        role = None if roles is None else int(roles[k])
        if n_io and role == 0:
            out.append(mlp(P, f"{base}.io.0", aug(row), cfg))
            continue
        if n_io and role == 2:
            out.append(mlp(P, f"{base}.io.{n_io - 1}", aug(row), cfg))
            continue
        u = row / max(row.norm(), cfg.norm_eps) if gi in CONTINUOUS else row
        if gi in FLIPS:
            if cfg.sign_canon == "symmetrize_phi" and has(P, f"{base}.rho"):
                sym = mlp(P, f"{base}.rho", u, cfg) + mlp(P, f"{base}.rho", -u, cfg)
                out.append(mlp(P, name, aug(sym), cfg))
            elif cfg.sign_canon in ("symmetrize", "symmetrize_phi"):
                out.append(mlp(P, name, aug(u), cfg) + mlp(P, name, aug(-u), cfg))
            else:
                out.append(mlp(P, name, aug(sign_canonical(u)), cfg))
        elif gi == GroupKind.SCALE and has(P, f"{base}.inv_scale"):
            out.append(mlp(P, f"{base}.inv_scale", aug(u), cfg))
        else:
            out.append(mlp(P, name, aug(u), cfg))
    return torch.stack(out)


def sign_canonical(u: Tensor) -> Tensor:
    """`s u` with `s` the sign of the first largest-magnitude entry (1 for zero)."""
    v = u[u.abs().argmax()]
    s = 1.0 if v == 0 else float(torch.sign(v))
    return s * u


def canon(h, g, cfg):  # type: ignore[no-untyped-def]
    """`edge_inv="canon"`: the canonical form of each row."""
    out = []
    for row, gi in zip(h, g.tolist(), strict=True):
        c = row / max(row.norm(), cfg.norm_eps) if gi in CONTINUOUS else row
        out.append(sign_canonical(c) if gi in FLIPS else c)
    return torch.stack(out)


def scale_eq(P, name, x, g, cfg, roles=None, pos=None):  # type: ignore[no-untyped-def]
    return F.linear(x, P[f"{name}.gamma.weight"]) * scale_inv(P, name, x, g, cfg, roles, pos)


def edge_update(P, name, e, hn, grp, src, dst, cfg):  # type: ignore[no-untyped-def]
    """`(gamma e) * mlp([c_j, c_i])` with `c` the ScaleInv `{name}.inv` or the canonical form."""
    inv = scale_inv(P, name, hn, grp, cfg) if has(P, f"{name}.inv") else canon(hn, grp, cfg)
    return F.linear(e, P[f"{name}.gamma.weight"]) * mlp(P, f"{name}.mlp", torch.cat([inv[src], inv[dst]], -1), cfg)


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
        npe = None
        if cfg.positional_features:
            npe = torch.stack([P["pe_in"][pos[i]] if role[i] == 0 else P["pe_hidden"][lyr[i] - 1]
                               if role[i] == 1 else P["pe_out"][pos[i]] for i in range(len(h))])
        if cfg.positional_encoding:
            for i in range(len(h)):
                if role[i] == 0:
                    h[i] = h[i] + P["pe_in"][pos[i]]
                elif role[i] == 1:
                    h[i] = h[i] * P["pe_hidden"][lyr[i] - 1]
                else:
                    h[i] = h[i] + P["pe_out"][pos[i]]
        if "pe_edge_in" in P:
            for k in range(len(e)):
                j, i, ll = int(src[k]), int(dst[k]), int(lay.edge_layer[k])
                if role[j] == 0:
                    e[k] = e[k] * P["pe_edge_in"][pos[j]]
                elif role[i] == 2:
                    e[k] = e[k] * P["pe_edge_out"][pos[i]]
                else:
                    e[k] = e[k] * P["pe_edge_hidden"][ll - 2]
        N, d = len(h), cfg.d_hidden
        e_b = e  # the backward edge state (backward_edge_state)
        for t in range(cfg.n_layers):
            pre = f"layers.{t}"
            head_here = cfg.head_in_last_layer and t == cfg.n_layers - 1
            r = F.linear(h[src], P[f"{pre}.fwd.rescale.a.weight"]) * F.linear(e, P[f"{pre}.fwd.rescale.b.weight"])
            z = torch.cat([h[dst], r], -1) if cfg.message_receiver else r
            m = scale_eq(P, f"{pre}.fwd.msg", z, grp[dst], cfg, role[dst], None if npe is None else npe[dst])
            M = torch.zeros(N, d, dtype=h.dtype).index_add(0, dst, m)
            parts = [h, M]
            if cfg.bidirectional:
                eb = e_b if cfg.backward_edge_state else e
                rb = F.linear(h[dst], P[f"{pre}.bwd.rescale.a.weight"]) * F.linear(eb, P[f"{pre}.bwd.rescale.b.weight"])
                n = h.square().sum(-1)
                cont = (grp == GroupKind.SCALE) | (grp == GroupKind.NONZERO)
                c = torch.where(cont[src], n[src], 1.0) / torch.where(
                    cont[dst], n[dst].clamp_min(cfg.norm_eps**2), 1.0)
                rb = rb * c[:, None]
                zb = torch.cat([h[src], rb], -1) if cfg.message_receiver else rb
                mb = scale_eq(P, f"{pre}.bwd.msg", zb, grp[src], cfg, role[src], None if npe is None else npe[src])
                parts.append(torch.zeros(N, d, dtype=h.dtype).index_add(0, src, mb))
            hn = scale_eq(P, f"{pre}.upd", torch.cat(parts, -1), grp, cfg, role, npe)
            skip = cfg.skip_connections and not head_here
            if skip:
                hn = hn + (F.linear(h, P[f"{pre}.skip.weight"]) if cfg.skip_linear else h)
            if f"{pre}.edge.gamma.weight" in P:
                he = h if head_here else hn  # the head layer's edge update reads its input states
                en = edge_update(P, f"{pre}.edge", e, he, grp, src, dst, cfg)
                if cfg.backward_edge_state:
                    ebn = edge_update(P, f"{pre}.edge_bwd", e_b, he, grp, src, dst, cfg)
                    e_b = ebn + e_b if skip else ebn
                e = en + e if skip else en
            h = hn
        if cfg.head == "equivariant":
            alpha = P["head.alpha"]
            dn = h if cfg.head_in_last_layer else F.linear(h, P["head.node.weight"])
            node = x.clone()
            for i in range(N):
                if role[i] != 0:
                    node[i] = node[i] + alpha[lyr[i] - 1] * dn[i]
            de = e[:, : xe.shape[1]] if cfg.head_in_last_layer else F.linear(e, P["head.edge.weight"][: xe.shape[1]])
            de = de * torch.tensor(lay.edge_mask)
            edge = xe + alpha[torch.tensor(lay.edge_layer) - 1][:, None] * de
            edits.append((node, edge))
            continue
        flat_in = F.pad(h[role == 0], (0, 0, 0, cfg.max_in_nodes - int((role == 0).sum()))).flatten()
        flat = F.pad(h[role == 2], (0, 0, 0, cfg.max_out_nodes - int((role == 2).sum()))).flatten()
        if cfg.readout == "last_layer":
            outs.append(mlp(P, "readout.mlp", flat, cfg))
        elif cfg.readout == "io_nodes":
            z = torch.cat([F.linear(flat, P["readout.proj_out.weight"], P["readout.proj_out.bias"]),
                           F.linear(flat_in, P["readout.proj_in.weight"], P["readout.proj_in.bias"])])
            outs.append(mlp(P, "readout.mlp", z, cfg))
        else:
            hid = role == 1
            s_h = scale_inv(P, "readout", h[hid], grp[hid], cfg).sum(0) if hid.any() else torch.zeros(d, dtype=h.dtype)
            io = [flat_in, flat] if cfg.readout_io == "ordered" else [h[role == 0].sum(0), h[role == 2].sum(0)]
            outs.append(mlp(P, "readout.mlp", torch.cat([s_h, *io]), cfg))
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
    check_against_reference(small_config(**kw, d_hidden=5, mlp_hidden=4), kind, seed)


def check_against_reference(cfg, kind: str, seed: int) -> None:  # type: ignore[no-untyped-def]
    """The model on two networks of `kind` (or a mixed batch) equals `reference`."""
    activation = ACTIVATION_FOR.get(cfg.symmetry, "tanh")
    if kind == "hetero" and cfg.symmetry not in ACTIVATION_FOR:  # one shape, a dense batch
        networks = [nets(NetworkSpec.mlp([3, 5, 4, 2], activation=a), 1, seed=seed + k)[0]
                    for k, a in enumerate(["relu", "tanh", "identity", "gelu"])]
    elif kind in ("mixed", "hetero"):
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


# ----------------------------------------------------------------------------- the new options

@settings(max_examples=30, deadline=None)
@given(kw=options, kind=st.sampled_from(["mlp", "cnn", "flatten", "mixed"]), seed=st.integers(0, 10**6))
def test_options_match_literal_reference(kw: dict, kind: str, seed: int) -> None:
    """Every new option (`docs/model.md`) against the transcription, dense and sparse."""
    check_against_reference(option_config(kw), kind, seed)


@pytest.mark.parametrize("kind", ["mlp", "cnn", "mixed", "hetero"])
@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_each_option_matches_literal_reference(case: str, kind: str) -> None:
    kw = OPTION_CASES[case]
    if kw.get("symmetry") == "sign" and kind in ("mixed", "hetero"):
        pytest.skip("one sign-symmetric architecture")
    check_against_reference(small_config(**kw, d_hidden=5, mlp_hidden=4), kind, 7)
