"""Build a `NetworkSpec` from the layer descriptions a framework reader collects."""

from __future__ import annotations

from typing import Any

from ..errors import UnsupportedLayerError
from ..schemas import ConvLayer, DenseLayer, NetworkSpec


def build_spec(
    layers: list[dict[str, Any]],
    input_shape: tuple[int, ...] | None,
    pooling: str | None,
    output_offset: float = 0.0,
) -> NetworkSpec:
    """The spec of layers read in order from a framework model.

    Each entry has `kind` (`"dense"` or `"conv"`) and the layer's fields. A conv entry may carry
    `explicit_pads = (top, bottom, left, right)` instead of `padding`: pads written out by the
    framework, which must be TensorFlow's "same" rule for the map they meet (they become
    `padding="same"`).

    Without `input_shape`, a conv network whose parameters do not depend on the map size (no
    flatten before a dense layer, no explicit pads) gets `nominal_input_shape`.

    Raises:
        UnsupportedLayerError: a conv network that needs `input_shape` and has none, or explicit
            pads that are not "same" padding.
    """
    if not layers:
        raise UnsupportedLayerError("the model has no Linear or Conv2d layers")
    n_conv = sum(1 for lay in layers if lay["kind"] == "conv")
    if n_conv and input_shape is None:
        if pooling == "flatten" and n_conv < len(layers):
            raise UnsupportedLayerError(
                "a dense layer after a flatten is sized by the image: pass input_shape=(channels, height, width)"
            )
        if any("explicit_pads" in lay for lay in layers):
            raise UnsupportedLayerError("explicit padding depends on the map size: pass input_shape=(channels, height, width)")
        input_shape = nominal_input_shape(layers)
    shape = tuple(input_shape) if input_shape is not None else (layers[0]["in_features"],)
    hw = shape[1:]
    built: list[DenseLayer | ConvLayer] = []
    for lay in layers:
        fields = {k: v for k, v in lay.items() if k not in ("kind", "explicit_pads")}
        if lay["kind"] == "dense":
            built.append(DenseLayer(**fields))
            continue
        if "explicit_pads" in lay:
            conv = ConvLayer(**fields, padding="same")
            if conv.pads(*hw) != tuple(lay["explicit_pads"]):
                raise UnsupportedLayerError(
                    f"explicit padding {lay['explicit_pads']} (top, bottom, left, right) is not TensorFlow "
                    f"'same' padding for a {hw[0]}x{hw[1]} map"
                )
        else:
            conv = ConvLayer(**fields)
        hw = conv.output_hw(*hw)
        built.append(conv)
    return NetworkSpec(
        layers=built,
        input_shape=shape,
        pooling=pooling if n_conv and n_conv < len(built) else None,  # type: ignore[arg-type]
        output_offset=output_offset,
    )


def nominal_input_shape(layers: list[dict[str, Any]], least: int = 8) -> tuple[int, int, int]:
    """The smallest square input, at least `least` pixels, that every conv layer accepts.

    Raises:
        UnsupportedLayerError: if no map up to 4096 pixels fits.
    """
    convs = [ConvLayer(**{k: v for k, v in lay.items() if k != "kind"}) for lay in layers if lay["kind"] == "conv"]
    for size in range(least, 4097):
        hw = (size, size)
        try:
            for conv in convs:
                hw = conv.output_hw(*hw)
        except ValueError:
            continue
        return (convs[0].in_channels, size, size)
    raise UnsupportedLayerError("no input size up to 4096x4096 fits these conv layers: pass input_shape")
