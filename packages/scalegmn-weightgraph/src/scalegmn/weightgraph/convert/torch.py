"""PyTorch modules to `Network` and back (torch is imported only when these are used)."""

from __future__ import annotations

from copy import deepcopy as copy_module
from typing import Any

import numpy as np
import torch
from torch import nn

from ..activations import REGISTRY, get_activation, torch_entry
from ..errors import UnsupportedLayerError
from ..network import Network
from ..schemas import ConvLayer, DenseLayer
from ._spec import build_spec
from ._verify import verify_same_function


def _torch_activation_names() -> str:
    names = []
    for entry in REGISTRY.values():
        if entry.torch is not None:
            fixed = ", ".join(f"{k}={v!r}" for k, v in entry.torch_fixed.items())
            names.append(entry.torch.rpartition(".")[2] + (f"({fixed})" if fixed else ""))
    return ", ".join(names)


SUPPORTED = (
    "nn.Linear, nn.Conv2d (dilation 1, groups 1, zero padding), nn.ZeroPad2d before a Conv2d, "
    f"{_torch_activation_names()}, Identity, "
    "AdaptiveAvgPool2d(1), Flatten, Dropout (a no-op at inference)"
)


class Sine(nn.Module):
    """`sin(w0 * x)`, the SIREN activation."""

    def __init__(self, w0: float = 30.0) -> None:
        super().__init__()
        self.w0 = float(w0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.w0 * x)


class AddConstant(nn.Module):
    """Adds a constant to the output (the DWS INRs' `+ 0.5`)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = float(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.value


def _leaves(module: nn.Module, prefix: str = "", root: bool = True) -> list[tuple[str, nn.Module]]:
    """Layers in registration order: containers and the root module are opened, any other
    module with children (attention, recurrent, residual blocks) stays whole and is refused."""
    children = list(module.named_children())
    opened = isinstance(module, nn.Sequential | nn.ModuleList) or (
        root and children and not isinstance(module, nn.Linear | nn.Conv2d) and type(module).__module__ != nn.Module.__module__
        and not type(module).__module__.startswith("torch.")
    )
    if not opened:
        return [(prefix or type(module).__name__, module)]
    out = []
    for name, child in children:
        out += _leaves(child, f"{prefix}.{name}" if prefix else name, root=False)
    return out


def _activation_of(m: nn.Module, path: str) -> tuple[str, dict[str, float]] | None:
    if hasattr(m, "w0") and "sine" in type(m).__name__.lower():
        return "sine", {"w0": float(m.w0)}  # type: ignore[arg-type]
    entry = torch_entry(m)
    if entry is None:
        return None
    bad = {k: getattr(m, k) for k, v in entry.torch_fixed.items() if getattr(m, k) != v}
    if bad:
        got = ", ".join(f"{k}={v!r}" for k, v in bad.items())
        need = ", ".join(f"{k}={v!r}" for k, v in entry.torch_fixed.items())
        raise UnsupportedLayerError(f"{path}: {type(m).__name__} with {got} is not supported; "
                                    f"{entry.name} needs {need}")
    return entry.name, {p: float(getattr(m, p)) for p in entry.params}


def from_torch(module: nn.Module, input_shape: tuple[int, ...] | None = None,
               activation: str | None = None) -> Network:
    """A `Network` from a PyTorch module, exactly.

    Accepts an `nn.Sequential` (nested allowed) of the layers in `SUPPORTED`, or a plain module
    whose layers are found in registration order (e.g. a SIREN holding `nn.Linear`s and a
    `w0` attribute, with sine applied in `forward`: pass `activation="sine"` or give the
    module a `w0`; an MLP applying ReLU functionally: pass `activation="relu"`).

    The module's `forward` is not read, so the result is checked: the module (a float64 copy,
    in eval mode) and the network are run on a few seeded random inputs and must agree to
    rounding. A constant added after the last layer becomes the `output_offset`.

    Args:
        module: the module.
        input_shape: `(C, H, W)`; needed only when a dense layer follows a flatten (it sizes
            that layer). MLPs infer it; a CNN with global average pooling (or none) gets the
            smallest square map of at least 8 pixels its convs accept, which changes neither
            its parameters nor its graph.
        activation: hidden activation for modules that apply it functionally.

    Raises:
        UnsupportedLayerError: naming the module path and class, and listing what is supported;
            or naming the module whose `forward` computes something its layers do not show
            (a residual block, a functional activation without `activation=`).
    """
    if not isinstance(module, nn.Module):
        raise UnsupportedLayerError(f"from_torch expects a torch.nn.Module, got {type(module).__name__}")
    leaves = _leaves(module)
    has_act = any(_activation_of(m, p) for p, m in leaves)
    functional = activation
    if functional is None and not has_act and hasattr(module, "w0"):
        functional = "sine"
    layers: list[dict[str, Any]] = []
    weights: list[np.ndarray] = []
    biases: list[np.ndarray] = []
    pooling: str | None = None
    pending_pad: tuple[int, int, int, int] | None = None
    offset = 0.0
    for path, m in leaves:
        act = _activation_of(m, path)
        if act is not None:
            if not layers or "activation" in layers[-1]:
                raise UnsupportedLayerError(f"{path}: activation {type(m).__name__} without a preceding layer")
            layers[-1]["activation"] = act[0]
            layers[-1].update(act[1])
        elif isinstance(m, nn.Linear):
            if layers and layers[-1]["kind"] == "conv" and pooling is None:
                raise UnsupportedLayerError(f"{path}: a Linear after a Conv2d needs AdaptiveAvgPool2d(1) or Flatten between")
            layers.append({"kind": "dense", "in_features": m.in_features, "out_features": m.out_features,
                           "bias": m.bias is not None})
            weights.append(m.weight.detach().cpu().numpy())
            biases.append(m.bias.detach().cpu().numpy() if m.bias is not None else np.zeros(m.out_features, dtype=weights[-1].dtype))
        elif isinstance(m, nn.Conv2d):
            if m.dilation != (1, 1) or m.groups != 1 or m.padding_mode != "zeros":
                raise UnsupportedLayerError(
                    f"{path}: Conv2d with dilation={m.dilation}, groups={m.groups}, padding_mode={m.padding_mode!r}; "
                    f"supported: {SUPPORTED}"
                )
            if layers and layers[-1]["kind"] == "dense":
                raise UnsupportedLayerError(f"{path}: a Conv2d after a Linear is not a feed-forward CNN we support")
            pad: Any = m.padding if isinstance(m.padding, str) else tuple(m.padding)
            entry: dict[str, Any] = {"kind": "conv", "in_channels": m.in_channels, "out_channels": m.out_channels,
                                     "kernel_size": tuple(m.kernel_size), "stride": tuple(m.stride),
                                     "bias": m.bias is not None}
            if pending_pad is not None:
                if pad not in ((0, 0), "valid"):
                    raise UnsupportedLayerError(f"{path}: ZeroPad2d followed by a padded Conv2d")
                entry["explicit_pads"] = pending_pad
                pending_pad = None
            else:
                entry["padding"] = pad
            layers.append(entry)
            weights.append(m.weight.detach().cpu().numpy())
            biases.append(m.bias.detach().cpu().numpy() if m.bias is not None else np.zeros(m.out_channels, dtype=weights[-1].dtype))
        elif isinstance(m, nn.ZeroPad2d):
            le, r, t, b = (int(v) for v in m.padding)
            pending_pad = (t, b, le, r)
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            if m.output_size not in (1, (1, 1)):
                raise UnsupportedLayerError(f"{path}: AdaptiveAvgPool2d({m.output_size}); only global pooling (1) is supported")
            pooling = "global_avg"
        elif isinstance(m, nn.Flatten):
            if pooling is None and layers and layers[-1]["kind"] == "conv":
                pooling = "flatten"
        elif isinstance(m, nn.Identity | nn.Dropout):
            continue
        elif isinstance(m, AddConstant):
            offset = m.value
        else:
            raise UnsupportedLayerError(
                f"{path}: {type(m).__name__} is not supported; supported: {SUPPORTED}"
            )
    if not layers:
        raise UnsupportedLayerError(f"{type(module).__name__} has no Linear or Conv2d layers")
    if functional is not None:
        for lay in layers[:-1]:
            lay.setdefault("activation", functional)
            if functional == "sine" and hasattr(module, "w0"):
                lay.setdefault("w0", float(module.w0))  # type: ignore[arg-type]
    spec = build_spec(layers, input_shape, pooling, offset)
    hint = "" if isinstance(module, nn.Sequential) else (
        "; write it as an nn.Sequential, or pass activation=... if it applies one activation functionally"
    )
    run, dtype = _runner(module)
    return verify_same_function(type(module).__name__, Network(spec, weights, biases), run, dtype, hint)


def _runner(module: nn.Module) -> tuple[Any, np.dtype]:
    """The module as a numpy function in eval mode (dropout off), without gradients.

    A float64 CPU copy when the module can be copied; otherwise the module itself in its own
    dtype and device (its train/eval flags are restored afterwards).
    """
    try:
        target = copy_module(module).to(device="cpu", dtype=torch.float64)
    except Exception:  # a module holding something deepcopy cannot copy: run it as it is
        target = module
    p = next(target.parameters())
    flags = {m: m.training for m in target.modules()}

    def run(x: np.ndarray) -> np.ndarray:
        target.eval()
        try:
            with torch.no_grad():
                return target(torch.from_numpy(x).to(device=p.device, dtype=p.dtype)).cpu().double().numpy()
        finally:
            for m, flag in flags.items():
                m.train(flag)

    return run, torch.empty((), dtype=p.dtype).numpy().dtype


def _act_module(layer: DenseLayer | ConvLayer) -> nn.Module | None:
    return get_activation(layer.activation).torch_module(layer)  # type: ignore[no-any-return]


def to_torch(network: Network) -> nn.Sequential:
    """An `nn.Sequential` computing the same function as `network` (parameters copied, same dtype)."""
    spec = network.spec
    mods: list[nn.Module] = []
    hw = spec.input_shape[1:]
    dtype = torch.from_numpy(np.zeros(1, dtype=network.dtype)).dtype
    for i, (layer, w, b) in enumerate(zip(spec.layers, network.weights, network.biases, strict=True)):
        if isinstance(layer, ConvLayer):
            t, bo, le, r = layer.pads(*hw)
            pad: Any = layer.padding
            if layer.padding == "same" and (max(layer.stride) > 1 or t != bo or le != r):
                # torch has no 'same' for strided convs and copies the input for uneven pads:
                # spell TensorFlow's rule out
                mods.append(nn.ZeroPad2d((le, r, t, bo)))
                pad = (0, 0)
            m: nn.Module = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                     stride=layer.stride, padding=pad, bias=layer.bias, dtype=dtype)
            hw = layer.output_hw(*hw)
        else:
            if i == spec.n_conv and i > 0:
                mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten()] if spec.pooling == "global_avg" else [nn.Flatten()]
            m = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias, dtype=dtype)
        with torch.no_grad():
            lin: Any = m
            lin.weight.copy_(torch.from_numpy(np.array(w)))
            if layer.bias:
                lin.bias.copy_(torch.from_numpy(np.array(b)))
        mods.append(m)
        act = _act_module(layer)
        if act is not None:
            mods.append(act)
    if spec.output_offset:
        mods.append(AddConstant(spec.output_offset))
    return nn.Sequential(*mods)
