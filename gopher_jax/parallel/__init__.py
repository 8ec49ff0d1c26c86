"""Device meshes, logical-axis rules and (later) pipeline schedules."""
