"""What a user runs: one module per command, each a thin layer over the library."""
