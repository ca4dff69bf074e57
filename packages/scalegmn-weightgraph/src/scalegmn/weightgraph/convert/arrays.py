"""State dicts, nfn-style array lists, and flat vectors with a layout table (TensorFlow layout)."""

from __future__ import annotations

import ast
import csv
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import NetworkError
from ..network import Network
from ..schemas import ConvLayer, DenseLayer, NetworkSpec


def _to_numpy(x: Any) -> NDArray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def from_state_dict(
    state_dict: Mapping[str, Any], spec: NetworkSpec, key_format: str = "seq.{i}.{param}",
    strict: bool = True,
) -> Network:
    """A `Network` of `spec` from a state dict whose keys follow `key_format`.

    Args:
        state_dict: name -> tensor or array (PyTorch layout).
        spec: the architecture.
        key_format: key pattern with `{i}` (layer index) and `{param}` (`weight`/`bias`), e.g. the
            DWS INRs' `seq.{i}.{param}`.
        strict: refuse keys that are not parameters of `spec` (entries named `label` are ignored).

    Raises:
        NetworkError: missing or unexpected keys, wrong shapes, non-finite values.
    """
    ws, bs, used = [], [], set()
    for i, layer in enumerate(spec.layers):
        wk = key_format.format(i=i, param="weight")
        bk = key_format.format(i=i, param="bias")
        if wk not in state_dict:
            raise NetworkError(f"state dict has no key {wk!r} for layer {i}; keys: {sorted(state_dict)[:8]}")
        ws.append(_to_numpy(state_dict[wk]))
        used.add(wk)
        if bk in state_dict:
            bs.append(_to_numpy(state_dict[bk]))
            used.add(bk)
        elif layer.bias:
            raise NetworkError(f"state dict has no key {bk!r} for layer {i}")
        else:
            bs.append(np.zeros(layer.n_out, dtype=ws[-1].dtype))
    extra = sorted(k for k in state_dict if k not in used and k != "label")
    if strict and extra:
        raise NetworkError(f"state dict has unexpected keys {extra[:8]} for a {spec.n_layers}-layer spec")
    return Network(spec, ws, bs)


def to_state_dict(network: Network, key_format: str = "seq.{i}.{param}") -> dict[str, NDArray]:
    """The parameters as a state dict of numpy arrays (PyTorch layout) with keys `key_format`."""
    out: dict[str, NDArray] = {}
    for i, (w, b) in enumerate(zip(network.weights, network.biases, strict=True)):
        out[key_format.format(i=i, param="weight")] = np.array(w)
        if network.spec.layers[i].bias:
            out[key_format.format(i=i, param="bias")] = np.array(b)
    return out


def from_arrays(
    weights: Sequence[Any], biases: Sequence[Any], spec: NetworkSpec | None = None,
    activation: str = "relu",
) -> Network:
    """A `Network` from lists of arrays in the nfn layout (`(out, in[, kh, kw])`, biases `(out,)`).

    Without `spec`, an MLP is inferred from the shapes (hidden `activation`, linear output);
    conv networks need a spec.

    Raises:
        NetworkError: no layers, unequal numbers of weights and biases, or shapes that do not chain.
    """
    if len(weights) == 0:
        raise NetworkError("from_arrays needs one weight array per layer; got none (an empty list)")
    if len(weights) != len(biases):
        raise NetworkError(f"from_arrays got {len(weights)} weight arrays but {len(biases)} bias arrays")
    ws = [_to_numpy(w) for w in weights]
    bs = [_to_numpy(b).reshape(-1) for b in biases]
    if spec is None:
        if any(w.ndim != 2 for w in ws):
            raise NetworkError("conv weights need an explicit spec (pooling and input size are not in the arrays)")
        widths = [ws[0].shape[1]] + [w.shape[0] for w in ws]
        for i in range(1, len(ws)):
            if ws[i].shape[1] != ws[i - 1].shape[0]:
                raise NetworkError(f"layer {i} has {ws[i].shape[1]} inputs but layer {i - 1} has {ws[i - 1].shape[0]} outputs")
        spec = NetworkSpec.mlp(widths, activation=activation)
    return Network(spec, ws, bs)


def to_arrays(network: Network) -> tuple[list[NDArray], list[NDArray]]:
    """`(weights, biases)` as lists of numpy arrays in the nfn layout."""
    return [np.array(w) for w in network.weights], [np.array(b) for b in network.biases]


@dataclass(frozen=True)
class LayoutRow:
    """One row of a Small-CNN-Zoo `layout.csv`: a variable and its slice of the flat vector."""

    varname: str
    start: int
    end: int
    shape: tuple[int, ...]


def parse_layout_csv(path_or_text: str | os.PathLike[str]) -> list[LayoutRow]:
    """Parse a `layout.csv` (`varname,start_idx,end_idx,shape`; shape like `(3, 3, 1, 16)`).

    Raises:
        NetworkError: naming the file and row for a malformed row, a slice whose length is not
            the product of its shape, or rows that are not contiguous.
    """
    where = "layout.csv"
    if isinstance(path_or_text, os.PathLike) or (isinstance(path_or_text, str) and "\n" not in path_or_text):
        where = str(path_or_text)
        text = Path(path_or_text).read_text()
    else:
        text = str(path_or_text)
    reader = csv.DictReader(io.StringIO(text))
    need = {"varname", "start_idx", "end_idx", "shape"}
    if reader.fieldnames is None or not need <= set(reader.fieldnames):
        raise NetworkError(f"{where}: header must have columns {sorted(need)}, got {reader.fieldnames}")
    rows: list[LayoutRow] = []
    for k, r in enumerate(reader, start=2):
        try:
            shape = tuple(int(s) for s in ast.literal_eval(r["shape"]))
            row = LayoutRow(r["varname"], int(r["start_idx"]), int(r["end_idx"]), shape)
        except (ValueError, SyntaxError, TypeError) as e:
            raise NetworkError(f"{where}, line {k}: cannot parse {dict(r)}: {e}") from None
        if row.end - row.start != int(np.prod(shape)):
            raise NetworkError(
                f"{where}, line {k}: {row.varname} spans {row.end - row.start} values but its shape {shape} "
                f"has {int(np.prod(shape))}"
            )
        if rows and row.start != rows[-1].end:
            raise NetworkError(f"{where}, line {k}: {row.varname} starts at {row.start}, the previous row ends at {rows[-1].end}")
        rows.append(row)
    return rows


def small_cnn_zoo_layout(spec: NetworkSpec) -> list[LayoutRow]:
    """The layout rows of `spec` in the Small CNN Zoo's TensorFlow layout (kernel, then bias, per layer)."""
    rows: list[LayoutRow] = []
    start = 0
    for i, layer in enumerate(spec.layers):
        if isinstance(layer, ConvLayer):
            kshape: tuple[int, ...] = (*layer.kernel_size, layer.in_channels, layer.out_channels)
            name = f"sequential/conv2d_{i}" if i else "sequential/conv2d"
        else:
            kshape = (layer.in_features, layer.out_features)
            d = i - spec.n_conv
            name = f"sequential/dense_{d}" if d else "sequential/dense"
        for suffix, shape in (("kernel:0", kshape), ("bias:0", (layer.n_out,))):
            n = int(np.prod(shape))
            rows.append(LayoutRow(f"{name}/{suffix}", start, start + n, shape))
            start += n
    return rows


def _pairs(layout: Iterable[LayoutRow], spec: NetworkSpec) -> list[tuple[LayoutRow, LayoutRow | None]]:
    rows = list(layout)
    kernels = [r for r in rows if r.varname.endswith("kernel:0")]
    biases = [r for r in rows if r.varname.endswith("bias:0")]
    if len(kernels) != spec.n_layers:
        raise NetworkError(f"layout has {len(kernels)} kernels but the spec has {spec.n_layers} layers")
    if len(biases) not in (0, spec.n_layers):
        raise NetworkError(f"layout has {len(biases)} biases for {spec.n_layers} layers")
    return [(k, biases[i] if biases else None) for i, k in enumerate(kernels)]


def _tf_kernel_shape(layer: DenseLayer | ConvLayer) -> tuple[int, ...]:
    if isinstance(layer, ConvLayer):
        return (*layer.kernel_size, layer.in_channels, layer.out_channels)
    return (layer.in_features, layer.out_features)


def from_flat(vector: Any, layout: Iterable[LayoutRow], spec: NetworkSpec) -> Network:
    """A `Network` from one flat parameter vector in TensorFlow layout (conv `(kh, kw, in, out)`,
    dense `(in, out)`), sliced by `layout` rows (`parse_layout_csv`).

    Raises:
        NetworkError: a vector of the wrong length, or a row whose shape does not fit its layer.
    """
    v = _to_numpy(vector).reshape(-1)
    pairs = _pairs(layout, spec)
    end = max(max(k.end, b.end if b else 0) for k, b in pairs)
    if v.size < end:
        raise NetworkError(f"vector has {v.size} values but the layout needs {end}")
    ws, bs = [], []
    for i, ((k, b), layer) in enumerate(zip(pairs, spec.layers, strict=True)):
        want = _tf_kernel_shape(layer)
        if tuple(k.shape) != want:
            raise NetworkError(f"layout row {k.varname}: shape {k.shape} but layer {i} needs {want} (TensorFlow layout)")
        w = v[k.start:k.end].reshape(k.shape)
        ws.append(np.ascontiguousarray(w.transpose(3, 2, 0, 1) if w.ndim == 4 else w.T))
        bs.append(v[b.start:b.end].copy() if b is not None else np.zeros(layer.n_out, v.dtype))
    return Network(spec, ws, bs)


def to_flat(network: Network, layout: Iterable[LayoutRow] | None = None) -> NDArray:
    """The flat TensorFlow-layout vector of `network` (inverse of `from_flat`)."""
    rows = list(layout) if layout is not None else small_cnn_zoo_layout(network.spec)
    pairs = _pairs(rows, network.spec)
    end = max(max(k.end, b.end if b else 0) for k, b in pairs)
    v = np.zeros(end, dtype=network.dtype)
    for (k, b), w, bias in zip(pairs, network.weights, network.biases, strict=True):
        v[k.start:k.end] = (w.transpose(2, 3, 1, 0) if w.ndim == 4 else w.T).reshape(-1)
        if b is not None:
            v[b.start:b.end] = bias
    return v
