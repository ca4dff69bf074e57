"""Test-wide settings: hypothesis profiles (select with HYPOTHESIS_PROFILE=dev|ci|nightly)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_common = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("dev", max_examples=30, **_common)
# CI draws the same examples every run (a red CI is then reproducible, never luck); dev and
# nightly keep exploring new ones.
settings.register_profile("ci", max_examples=20, print_blob=True, derandomize=True, **_common)
settings.register_profile("nightly", max_examples=300, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
