"""Build tools that need a source checkout; not part of the shipped `harness` package."""
