"""JAX tests run in float64 (equivariance at rounding level) unless a test casts to float32."""

import jax

jax.config.update("jax_enable_x64", True)
