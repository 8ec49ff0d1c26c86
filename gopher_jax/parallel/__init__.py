"""Device meshes, logical-axis rules and pipeline schedules (`gopher_jax.parallel.pipeline`)."""
