"""Schemas refuse non-finite numbers (`Infinity`, `NaN` from JSON or YAML) with a validation error."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from scalegmn.weightgraph import NetworkSpec, ScaleGMNConfig
from scalegmn.weightgraph.schemas import DenseLayer


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_numbers_are_refused(bad: float) -> None:
    ScaleGMNConfig(d_node_in=1, d_edge_in=1, input_node_value=1.5)  # control: a finite value passes
    with pytest.raises(ValidationError, match="input_node_value"):
        ScaleGMNConfig(d_node_in=1, d_edge_in=1, input_node_value=bad)
    with pytest.raises(ValidationError, match="output_offset"):
        NetworkSpec.model_validate({**NetworkSpec.mlp((2, 3, 1)).model_dump(), "output_offset": bad})
    with pytest.raises(ValidationError, match="w0"):
        DenseLayer(in_features=2, out_features=2, activation="sine", w0=bad)


def test_infinity_in_json_is_refused() -> None:
    text = ScaleGMNConfig(d_node_in=1, d_edge_in=1).to_json()
    ScaleGMNConfig.from_json(text)
    with pytest.raises(ValueError, match="input_node_value"):
        ScaleGMNConfig.from_json(text.replace('"input_node_value":0.0', '"input_node_value":Infinity'))
