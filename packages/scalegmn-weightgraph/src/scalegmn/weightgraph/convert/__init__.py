"""Converters between `Network` and the ways people store networks (all exact)."""
