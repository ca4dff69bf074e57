"""Exceptions raised by scalegmn.weightgraph (all subclass `ValueError`)."""

from __future__ import annotations


class NetworkError(ValueError):
    """Parameters that do not match their spec, or are not finite."""


class UnsupportedLayerError(ValueError):
    """A module or layer kind that cannot be converted to a `Network`."""


class GraphError(ValueError):
    """A graph that does not match the spec it is decoded with."""
