"""Device meshes, sharding, multi-process start-up and host transfers."""
