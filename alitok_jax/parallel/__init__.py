"""Device meshes, sharding and multi-process start-up."""
