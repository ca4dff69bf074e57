"""Pydantic schemas shared by every scalegmn package.

Importing this module needs only pydantic and numpy (no numpy arrays live inside the
models, no torch, no jax). Every model serialises to JSON and publishes a JSON Schema.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .activations import ACTIVATIONS, Activation, activation_group

# The nonlinearities the metanetwork's own MLPs may use: entries of the activation registry,
# which both backends read (`get_activation(name).torch_module` / `.equinox_function`).
MlpActivation = Literal["relu", "silu", "gelu", "tanh"]
if not set(get_args(MlpActivation)) <= set(ACTIVATIONS):  # pragma: no cover - a registry edit gone wrong
    raise ImportError(f"MLP activations {get_args(MlpActivation)} must all be in the activation registry")

"""The group of multipliers a hidden neuron admits (see `scalegmn.symmetry.group_of`)."""


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def to_json(self, **kwargs: Any) -> str:
        """Serialise to a JSON string."""
        return self.model_dump_json(**kwargs)

    @classmethod
    def from_json(cls, text: str | bytes) -> Any:
        """Parse and validate a JSON string."""
        return cls.model_validate_json(text)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON Schema of this model."""
        return cls.model_json_schema()


class DenseLayer(_Schema):
    """A fully connected layer `y = act(W x + b)`, weight `(out_features, in_features)`."""

    kind: Literal["dense"] = "dense"
    in_features: int = Field(ge=1)
    out_features: int = Field(ge=1)
    activation: Activation = "identity"
    bias: bool = True
    w0: float = Field(default=30.0, gt=0, description="SIREN frequency: sine computes sin(w0 * z)")
    negative_slope: float = Field(default=0.01, ge=0, description="LeakyReLU slope")

    @property
    def n_in(self) -> int:
        """Number of input neurons."""
        return self.in_features

    @property
    def n_out(self) -> int:
        """Number of output neurons."""
        return self.out_features

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """PyTorch layout of the weight."""
        return (self.out_features, self.in_features)


class ConvLayer(_Schema):
    """A 2-d convolution `y = act(conv(x, W) + b)`, weight `(out, in, kh, kw)`.

    `padding` is a symmetric `(ph, pw)` pair, `"valid"` (no padding) or `"same"`
    (TensorFlow's rule: the output has `ceil(size / stride)` pixels, extra padding
    goes to the bottom/right).
    """

    kind: Literal["conv"] = "conv"
    in_channels: int = Field(ge=1)
    out_channels: int = Field(ge=1)
    kernel_size: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] | Literal["same", "valid"] = (0, 0)
    activation: Activation = "identity"
    bias: bool = True
    w0: float = Field(default=30.0, gt=0)
    negative_slope: float = Field(default=0.01, ge=0)

    @field_validator("kernel_size", "stride")
    @classmethod
    def _positive(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 1:
            raise ValueError(f"must be positive, got {v}")
        return v

    @property
    def n_in(self) -> int:
        """Number of input channels (graph nodes)."""
        return self.in_channels

    @property
    def n_out(self) -> int:
        """Number of output channels (graph nodes)."""
        return self.out_channels

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """PyTorch layout of the kernel."""
        return (self.out_channels, self.in_channels, *self.kernel_size)

    def pads(self, h: int, w: int) -> tuple[int, int, int, int]:
        """Explicit `(top, bottom, left, right)` padding for an `h x w` input."""
        if self.padding == "valid":
            return (0, 0, 0, 0)
        if self.padding == "same":
            out = []
            for size, k, s in zip((h, w), self.kernel_size, self.stride, strict=True):
                n_out = -(-size // s)
                total = max((n_out - 1) * s + k - size, 0)
                out += [total // 2, total - total // 2]
            return (out[0], out[1], out[2], out[3])
        ph, pw = self.padding
        return (ph, ph, pw, pw)

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        """Spatial size of the output for an `h x w` input."""
        t, b, le, r = self.pads(h, w)
        oh = (h + t + b - self.kernel_size[0]) // self.stride[0] + 1
        ow = (w + le + r - self.kernel_size[1]) // self.stride[1] + 1
        if oh < 1 or ow < 1:
            raise ValueError(
                f"conv layer with kernel {self.kernel_size} cannot be applied to a {h}x{w} map"
            )
        return oh, ow


Layer = Annotated[DenseLayer | ConvLayer, Field(discriminator="kind")]


class NetworkSpec(_Schema):
    """The architecture of a feed-forward network: conv layers, then dense layers.

    Attributes:
        layers: parameterised layers in order; `layers[i].activation` is applied after layer i.
        input_shape: `(features,)` for an MLP, `(channels, height, width)` for a CNN.
        pooling: how the last conv map feeds the first dense layer: `"global_avg"` (average
            over space; one graph edge per channel/neuron pair) or `"flatten"` (PyTorch
            channel-major flatten; one edge per channel/neuron pair carrying `h*w` weights).
            Required when conv layers are followed by dense layers, otherwise `None`.
        output_offset: a constant added to the network's output (the DWS INRs add 0.5).
    """

    layers: list[Layer] = Field(min_length=1)
    input_shape: tuple[int, ...]
    pooling: Literal["global_avg", "flatten"] | None = None
    output_offset: float = 0.0

    @model_validator(mode="after")
    def _check(self) -> NetworkSpec:
        kinds = [layer.kind for layer in self.layers]
        n_conv = kinds.count("conv")
        if kinds[:n_conv] != ["conv"] * n_conv:
            raise ValueError(
                "conv layers must all come before dense layers; got order "
                + " -> ".join(kinds)
            )
        if n_conv:
            if len(self.input_shape) != 3:
                raise ValueError(
                    f"a CNN needs input_shape (channels, height, width); got {self.input_shape}"
                )
        elif len(self.input_shape) != 1:
            raise ValueError(f"an MLP needs input_shape (features,); got {self.input_shape}")
        if n_conv and n_conv < len(kinds):
            if self.pooling is None:
                raise ValueError(
                    f"layer {n_conv} is dense after a conv layer: set pooling='global_avg' "
                    "or pooling='flatten'"
                )
        elif self.pooling is not None:
            raise ValueError("pooling is only meaningful between conv and dense layers; set it to None")
        if self.input_shape[0] != self.layers[0].n_in:
            raise ValueError(
                f"layer 0 expects {self.layers[0].n_in} inputs but input_shape is {self.input_shape}"
            )
        hw: tuple[int, ...] = self.input_shape[1:]
        for i, layer in enumerate(self.layers):
            if i > 0:
                prev = self.layers[i - 1]
                want = prev.n_out
                if isinstance(layer, DenseLayer) and isinstance(prev, ConvLayer):
                    if self.pooling == "flatten":
                        want = prev.n_out * hw[0] * hw[1]
                if layer.n_in != want:
                    raise ValueError(
                        f"layer {i} ({layer.kind}) expects {layer.n_in} inputs, but layer {i - 1} "
                        f"provides {want}"
                    )
            if isinstance(layer, ConvLayer):
                hw = layer.output_hw(hw[0], hw[1])
        return self

    @property
    def n_layers(self) -> int:
        """Number of parameterised layers L."""
        return len(self.layers)

    @property
    def widths(self) -> list[int]:
        """Neurons (channels) per graph layer: `[n_0, n_1, ..., n_L]`."""
        return [self.layers[0].n_in] + [layer.n_out for layer in self.layers]

    @property
    def n_conv(self) -> int:
        """Number of conv layers."""
        return sum(1 for layer in self.layers if layer.kind == "conv")

    @property
    def flatten_hw(self) -> tuple[int, int] | None:
        """Spatial size of the map that is flattened (`pooling="flatten"` only)."""
        if self.pooling != "flatten":
            return None
        return self.feature_map_sizes()[self.n_conv]

    def feature_map_sizes(self) -> list[tuple[int, int]]:
        """Spatial size before each conv layer and after the last one."""
        if not self.n_conv:
            return []
        hw = (self.input_shape[1], self.input_shape[2])
        sizes = [hw]
        for layer in self.layers[: self.n_conv]:
            assert isinstance(layer, ConvLayer)
            hw = layer.output_hw(*hw)
            sizes.append(hw)
        return sizes

    def edge_vector_length(self, layer_index: int) -> int:
        """Length of the weight vector on one graph edge of layer `layer_index` (0-based)."""
        layer = self.layers[layer_index]
        if isinstance(layer, ConvLayer):
            return layer.kernel_size[0] * layer.kernel_size[1]
        if layer_index == self.n_conv and self.pooling == "flatten":
            h, w = self.flatten_hw  # type: ignore[misc]
            return h * w
        return 1

    @property
    def activations(self) -> list[str]:
        """The activation of every layer."""
        return [layer.activation for layer in self.layers]

    @property
    def hidden_groups(self) -> list[str]:
        """Multiplier group of each hidden layer `1..L-1` (from its activation)."""
        return [activation_group(layer.activation) for layer in self.layers[:-1]]

    def signature(self) -> str:
        """A stable string identifying the architecture (equal specs, equal strings)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    @classmethod
    def mlp(
        cls,
        widths: list[int],
        activation: str = "relu",
        last_activation: str = "identity",
        w0: float = 30.0,
        output_offset: float = 0.0,
        bias: bool = True,
    ) -> NetworkSpec:
        """An MLP with the given neuron counts `[n_0, ..., n_L]`.

        Example:
            ```python
            from scalegmn.weightgraph import NetworkSpec

            assert NetworkSpec.mlp([2, 32, 32, 1], activation="sine").widths == [2, 32, 32, 1]
            ```
        """
        if len(widths) < 2:
            raise ValueError(f"an MLP needs at least input and output widths, got {widths}")
        layers = [
            DenseLayer(
                in_features=a,
                out_features=b,
                activation=activation if i < len(widths) - 2 else last_activation,  # type: ignore[arg-type]
                w0=w0,
                bias=bias,
            )
            for i, (a, b) in enumerate(itertools.pairwise(widths))
        ]
        return cls(layers=list[DenseLayer | ConvLayer](layers), input_shape=(widths[0],), output_offset=output_offset)

    @classmethod
    def siren(
        cls, widths: tuple[int, ...] = (2, 32, 32, 1), w0: float = 30.0, output_offset: float = 0.0
    ) -> NetworkSpec:
        """A SIREN: sine activations on every hidden layer, linear output."""
        return cls.mlp(list(widths), activation="sine", w0=w0, output_offset=output_offset)

    @classmethod
    def small_cnn(
        cls,
        activation: str = "relu",
        channels: int = 16,
        n_conv: int = 3,
        in_channels: int = 1,
        image_size: int = 32,
        n_classes: int = 10,
    ) -> NetworkSpec:
        """The Small CNN Zoo architecture: 3x3 stride-2 convs, global average pool, dense."""
        layers: list[DenseLayer | ConvLayer] = []
        c_in = in_channels
        for _ in range(n_conv):
            layers.append(
                ConvLayer(
                    in_channels=c_in,
                    out_channels=channels,
                    kernel_size=(3, 3),
                    stride=(2, 2),
                    padding="same",
                    activation=activation,  # type: ignore[arg-type]
                )
            )
            c_in = channels
        layers.append(DenseLayer(in_features=c_in, out_features=n_classes))
        return cls(
            layers=layers, input_shape=(in_channels, image_size, image_size), pooling="global_avg"
        )


SymmetryMode = Literal["auto", "permutation", "sign", "scale", "nonzero", "hetero"]


class ScaleGMNConfig(_Schema):
    """Every option of the ScaleGMN model; both backends build the same model from it.

    Attributes:
        d_hidden: hidden width of node and edge states.
        n_layers: number of message-passing layers.
        d_out: output width of the invariant head.
        symmetry: `"permutation"` (the GMN baseline), `"sign"`, `"scale"` (positive scaling),
            `"nonzero"`, or `"auto"` / `"hetero"`: read the group of each hidden layer from
            each input network's spec (`"hetero"` is `"auto"` for batches that mix
            activations; the two behave identically).
        bidirectional: ScaleGMN-B (backward messages from successors too).
        readout: `"full_graph"` (any architecture), `"last_layer"` (output nodes in fixed
            order; needs one fixed architecture) or `"io_nodes"` (input and output nodes in
            fixed order, each set projected to `d_hidden` by `proj_in` / `proj_out`, then the
            MLP on both: the original implementation's bidirectional readout).
        head: `"invariant"` (a vector per network) or `"equivariant"` (a parameter update).
        d_node_in: node feature width of the graphs (1: the bias).
        d_edge_in: edge feature width (1 for MLPs, 9 for 3x3 kernels, `h*w` for flatten).
        message_receiver: include the receiver's state `h_i` in the message (the paper);
            `False` reproduces the original implementation's messages.
        edge_update: update edge states every layer.
        skip_connections: residual connections around each layer.
        dropout: dropout on invariant features (inside the ScaleInv MLPs and the readout).
        layer_norm: layer norm on the (unscaled) input/output-node states and inside the
            invariant MLPs, where it keeps the symmetry.
        sign_canon: how sign groups are made invariant: `"symmetrize"` (`MLP(x)+MLP(-x)`),
            `"canonicalize"` (multiply by the sign of the largest-magnitude entry) or
            `"symmetrize_phi"` (`MLP(rho(x)+rho(-x))` with a second MLP `rho` of width `d_in`,
            as the original implementation; `rho` exists where sign groups can occur).
        mlp_layers: hidden layers of every invariant MLP.
        mlp_hidden: width of those hidden layers (defaults to `d_hidden`).
        mlp_activation: nonlinearity of the invariant MLPs.
        positional_encoding: learnable per-node-type vectors (multiplied into hidden nodes,
            added to input/output nodes).
        max_in_nodes, max_out_nodes, max_hidden_layers: sizes of the positional tables.
        input_node_value: feature of input nodes (which have no bias) in the graph.
        readout_hidden: hidden width of the readout MLP (defaults to `d_hidden`).
        readout_layers: hidden layers of the readout MLP.
        edit_alpha_init: initial per-layer step `alpha` of the equivariant head.
        norm_eps: guard for the norm of a zero vector in positive-scaling canonicalisation.
        io_mlps: extra invariant MLPs of every ScaleEq (messages and node updates) for the
            rows of input and output nodes, which have no scaling symmetry: `0` shares the
            hidden nodes' MLP (`ScaleEq(x) = (gamma x) * MLP(x)` everywhere), `1` gives input
            and output nodes one MLP of their own (`io.0`), `2` one each (`io.0` for input
            nodes, `io.1` for output nodes). The original implementation's `num_mlps` 2 / 3.
        edge_inv: what the edge update reads of the node states: `"mlp"` an invariant MLP of
            their canonical form (`ScaleInv`), `"canon"` the canonical form itself (`h/||h||`
            for positive scaling, the sign-canonical `s h` for sign groups, `h` elsewhere).
        skip_linear: the node skip connection is a learned bias-free `d x d` map,
            `h <- S h + update`, instead of the identity (needs `skip_connections`).
        readout_io: how the `full_graph` readout reads input and output nodes: `"sum"` their
            sums, `"ordered"` every node in its fixed position (padded to `max_in_nodes` and
            `max_out_nodes`).
        layer_dropout: dropout on the node states after every layer (training only).
        backward_edge_state: ScaleGMN-B keeps a second edge state for the backward
            direction, with its own edge update (`edge_bwd`); needs `bidirectional` and
            `edge_update`.
        positional_features: append each row's node positional vector to the inputs of the
            invariant MLPs of messages and node updates (`AugScaleInv`); needs
            `positional_encoding`.
        per_group_inv: separate invariant MLPs (`inv_scale`, used by rows whose group has
            positive multipliers) beside the sign groups' `inv`, in messages, node updates and
            the `full_graph` readout; for `symmetry` `"auto"` / `"hetero"`.
        edge_positional_encoding: multiply edge states by learnable per-edge-type vectors
            (`pe_edge_*`); `False`: no edge tables.
        head_in_last_layer: equivariant head only: the last layer's node update writes one
            channel and its edge update `d_edge_in` channels, read as the bias and weight
            updates (no `head.node` / `head.edge` maps, no skip connection on that layer).
    """

    d_hidden: int = Field(default=128, ge=1)
    n_layers: int = Field(default=4, ge=1)
    d_out: int = Field(default=10, ge=1)
    symmetry: SymmetryMode = "auto"
    bidirectional: bool = False
    readout: Literal["full_graph", "last_layer", "io_nodes"] = "full_graph"
    head: Literal["invariant", "equivariant"] = "invariant"
    d_node_in: int = Field(default=1, ge=1)
    d_edge_in: int = Field(default=1, ge=1)
    message_receiver: bool = True
    edge_update: bool = True
    skip_connections: bool = True
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    layer_norm: bool = False
    sign_canon: Literal["symmetrize", "canonicalize", "symmetrize_phi"] = "symmetrize"
    mlp_layers: int = Field(default=1, ge=0)
    mlp_hidden: int | None = Field(default=None, ge=1)
    mlp_activation: MlpActivation = "silu"
    positional_encoding: bool = True
    max_in_nodes: int = Field(default=16, ge=1)
    max_out_nodes: int = Field(default=16, ge=1)
    max_hidden_layers: int = Field(default=16, ge=1)
    input_node_value: float = 0.0
    readout_hidden: int | None = Field(default=None, ge=1)
    readout_layers: int = Field(default=1, ge=0)
    edit_alpha_init: float = Field(default=1e-3, gt=0.0)
    norm_eps: float = Field(default=1e-12, gt=0.0)
    io_mlps: Literal[0, 1, 2] = 0
    edge_inv: Literal["mlp", "canon"] = "mlp"
    skip_linear: bool = False
    readout_io: Literal["sum", "ordered"] = "sum"
    layer_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    backward_edge_state: bool = False
    positional_features: bool = False
    per_group_inv: bool = False
    edge_positional_encoding: bool = True
    head_in_last_layer: bool = False

    @field_validator("dropout", "layer_dropout")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("dropout must be finite")
        return v

    @model_validator(mode="after")
    def _options_fit(self) -> ScaleGMNConfig:
        """Refuse option combinations that have no meaning, naming the fix."""
        if self.skip_linear and not self.skip_connections:
            raise ValueError("skip_linear=True needs skip_connections=True")
        if self.backward_edge_state and not (self.bidirectional and self.edge_update):
            raise ValueError("backward_edge_state=True needs bidirectional=True and edge_update=True")
        if self.positional_features and not self.positional_encoding:
            raise ValueError("positional_features=True needs positional_encoding=True")
        if self.per_group_inv and self.symmetry not in ("auto", "hetero"):
            raise ValueError(
                f"per_group_inv=True separates the MLPs of sign and scaling groups; with "
                f"symmetry={self.symmetry!r} there is one kind: use symmetry='auto' or 'hetero'"
            )
        if self.head_in_last_layer and self.head != "equivariant":
            raise ValueError("head_in_last_layer=True needs head='equivariant'")
        if self.readout_io == "ordered" and self.readout != "full_graph":
            raise ValueError("readout_io='ordered' is an option of readout='full_graph'")
        return self

    @property
    def mlp_width(self) -> int:
        """Width of the invariant MLPs' hidden layers."""
        return self.mlp_hidden or self.d_hidden

    @property
    def readout_width(self) -> int:
        """Width of the readout MLP's hidden layers."""
        return self.readout_hidden or self.d_hidden

    @classmethod
    def for_networks(cls, networks: Sequence[Any], **options: Any) -> ScaleGMNConfig:
        """A configuration whose input sizes are read from `networks`.

        Fills `d_node_in` (1: a node holds its bias) and `d_edge_in` (the longest edge
        vector: a conv kernel or a flattened feature map), and raises `max_in_nodes`,
        `max_out_nodes` and `max_hidden_layers` above their defaults where the networks
        need it. Every network is then checked against the result.

        Args:
            networks: the `Network`s (or their `NetworkSpec`s) the model will see.
            **options: any other field; a field given here overrides the derived value.

        Returns:
            The configuration.

        Raises:
            TypeError: an item that is neither a `Network` nor a `NetworkSpec`.
            ValueError: an empty list, or a network that does not fit the configuration
                (named by its index, with the fix).

        Example:
            ```python
            from scalegmn.weightgraph import NetworkSpec, ScaleGMNConfig, random_network

            nets = [random_network(NetworkSpec.small_cnn(), rng=k) for k in range(4)]
            cfg = ScaleGMNConfig.for_networks(nets, d_hidden=32, n_layers=2, d_out=10)
            assert cfg.d_edge_in == 9  # 3x3 kernels
            ```
        """
        networks = list(networks)
        if not networks:
            raise ValueError("ScaleGMNConfig.for_networks needs at least one network")
        specs: list[NetworkSpec] = []
        for k, n in enumerate(networks):
            spec = n if isinstance(n, NetworkSpec) else getattr(n, "spec", None)
            if not isinstance(spec, NetworkSpec):
                raise TypeError(
                    f"ScaleGMNConfig.for_networks: item {k} is {type(n).__name__}, not a Network "
                    "(convert modules with scalegmn.weightgraph.from_torch)"
                )
            specs.append(spec)
        default = cls.model_fields
        derived: dict[str, Any] = {
            "d_node_in": 1,
            "d_edge_in": max(_edge_need(s) for s in specs),
            "max_in_nodes": max(default["max_in_nodes"].default, *(s.widths[0] for s in specs)),
            "max_out_nodes": max(default["max_out_nodes"].default, *(s.widths[-1] for s in specs)),
            "max_hidden_layers": max(default["max_hidden_layers"].default,
                                     *(s.n_layers - 1 for s in specs)),
        }
        cfg = cls(**{**derived, **options})
        if cfg.readout in ("last_layer", "io_nodes"):
            outs = sorted({s.widths[-1] for s in specs})
            if len(outs) > 1:
                raise ValueError(
                    f"readout={cfg.readout!r} reads output neurons in a fixed order, but the "
                    f"networks have {outs} output neurons; use readout='full_graph'"
                )
        for k, spec in enumerate(specs):
            try:
                cfg.check_compatible(spec)
            except ValueError as err:
                raise ValueError(f"ScaleGMNConfig.for_networks: network {k}: {err}") from None
        return cfg

    def check_compatible(self, spec: NetworkSpec) -> None:
        """Raise a clear error if networks of `spec` cannot be fed to this model."""
        widths = spec.widths
        if self.positional_encoding or self.readout != "full_graph" or self.readout_io == "ordered":
            if widths[0] > self.max_in_nodes:
                raise ValueError(
                    f"the network has {widths[0]} input neurons but max_in_nodes="
                    f"{self.max_in_nodes}; raise max_in_nodes"
                )
            if widths[-1] > self.max_out_nodes:
                raise ValueError(
                    f"the network has {widths[-1]} output neurons but max_out_nodes="
                    f"{self.max_out_nodes}; raise max_out_nodes"
                )
            if spec.n_layers - 1 > self.max_hidden_layers:
                raise ValueError(
                    f"the network has {spec.n_layers - 1} hidden layers but max_hidden_layers="
                    f"{self.max_hidden_layers}; raise max_hidden_layers"
                )
        need = _edge_need(spec)
        if need > self.d_edge_in:
            raise ValueError(
                f"the network's graph has edge vectors of length {need} but d_edge_in="
                f"{self.d_edge_in}; set d_edge_in={need}"
            )
        if self.symmetry in ("sign", "scale", "nonzero"):
            from_spec = set(spec.hidden_groups)
            allowed = {"sign": {"sign"}, "scale": {"scale"}, "nonzero": {"nonzero"}}[self.symmetry]
            bad = [
                f"layer {i} ({spec.layers[i].activation}: {g})"
                for i, g in enumerate(spec.hidden_groups)
                if g not in allowed and g != "permutation"
            ]
            del from_spec
            if bad:
                raise ValueError(
                    f"symmetry={self.symmetry!r} does not match the network's hidden layers "
                    f"{', '.join(bad)}; use symmetry='auto'"
                )


def _edge_need(spec: NetworkSpec) -> int:
    """Longest edge vector of `spec`'s graph (the graph pads every edge to the largest kernel)."""
    need = max(spec.edge_vector_length(i) for i in range(spec.n_layers))
    kmax = max(
        (layer.kernel_size[0] * layer.kernel_size[1] for layer in spec.layers if isinstance(layer, ConvLayer)),
        default=1,
    )
    return max(need, kmax)
